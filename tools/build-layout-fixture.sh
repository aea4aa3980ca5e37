#!/usr/bin/env bash
# Builds an old layout's XDP object that the upgrade tests (Tests/PortcullisBPFTests/UpgradeTests.swift)
# load and pin as an old Portcullis would have, before they open the pins with today's code.
#
# The objects are committed (Tests/PortcullisBPFTests/Fixtures/portcullis-layoutN.bpf.o) on purpose:
# each is the frozen data plane that hosts of that layout really run, and the upgrade must work on
# exactly those pins. Rebuilding them on every test run would tie the tests to whatever clang, libbpf
# headers and git history the machine happens to have (a shallow clone has none of these commits),
# and a compiler upgrade could silently change what "the old program" is. Run this script only to
# regenerate one on purpose, then review and commit the new object.
#
# It takes bpf/portcullis.h and bpf/portcullis.bpf.c from the last commit with that
# PORTCULLIS_LAYOUT_VERSION (3: d5cc0c9, 5: ee9c9c5) and compiles them with the clang the build
# uses (the Swift toolchain's, which the EmbedBPFObject plugin runs) and the flags of
# bpf/build-object.sh at that commit, which it checks are still the ones it uses:
#   clang -O2 -g -Wall -Werror -target bpf -mcpu=v3 -I bpf -I /usr/include/<multiarch> -c portcullis.bpf.c
# plus -fdebug-prefix-map, which only rewrites the temporary directory's path in the debug info and
# BTF line info to /layoutN, so that running it again gives the same bytes.
#
#   tools/build-layout-fixture.sh LAYOUT [CLANG]
set -euo pipefail

layout=${1:-}
case $layout in
    3) commit=d5cc0c9 ;;
    5) commit=ee9c9c5 ;;
    *) echo "usage: tools/build-layout-fixture.sh 3|5 [CLANG]" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/Tests/PortcullisBPFTests/Fixtures/portcullis-layout$layout.bpf.o

clang=${2:-${CLANG:-}}
if [[ -z $clang ]]; then
    if command -v swift >/dev/null; then
        clang=$(dirname "$(command -v swift)")/clang
    fi
    [[ -n $clang && -x $clang ]] || clang=$(command -v clang || true)
fi
[[ -n $clang && -x $clang ]] || { echo "error: no clang found (source tools/setup.sh, or pass CLANG)" >&2; exit 1; }

git -C "$root" cat-file -e "$commit^{commit}" 2>/dev/null \
    || { echo "error: commit $commit is not in this clone (fetch the full history)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-layout$layout.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/bpf"
for file in portcullis.h portcullis.bpf.c build-object.sh; do  # the script only to check its flags
    git -C "$root" show "$commit:bpf/$file" > "$work/bpf/$file"
done
grep -q "^#define PORTCULLIS_LAYOUT_VERSION $layout\$" "$work/bpf/portcullis.h" \
    || { echo "error: bpf/portcullis.h at $commit is not layout $layout" >&2; exit 1; }

flags='-O2 -g -Wall -Werror -target bpf -mcpu=v3'
grep -qF -- "\"\$clang\" $flags \\" "$work/bpf/build-object.sh" \
    || { echo "error: bpf/build-object.sh at $commit does not use the flags '$flags'; update this script" >&2; exit 1; }
multiarch=$(gcc -print-multiarch 2>/dev/null || echo "$(uname -m)-linux-gnu")
[[ -f /usr/include/bpf/bpf_helpers.h ]] || { echo "error: install libbpf-dev (bpf/bpf_helpers.h)" >&2; exit 1; }
# shellcheck disable=SC2086 # $flags is a list of flags
(cd "$work" && "$clang" $flags -fdebug-prefix-map="$work"=/layout$layout \
    -I "$work/bpf" -I "/usr/include/$multiarch" \
    -c "$work/bpf/portcullis.bpf.c" -o "$work/portcullis.bpf.o")

mkdir -p "$(dirname "$out")"
cp "$work/portcullis.bpf.o" "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote ${out#"$root"/} ($(stat -c %s "$out") bytes, $("$clang" --version | head -1), from $commit)"
