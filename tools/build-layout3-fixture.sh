#!/usr/bin/env bash
# Builds the layout-3 XDP object that the upgrade test (Tests/PortcullisBPFTests/UpgradeTests.swift)
# loads and pins as an old Portcullis would have, before it opens the pins with today's code.
#
# The object is committed (Tests/PortcullisBPFTests/Fixtures/portcullis-layout3.bpf.o) on purpose:
# it is the frozen data plane that layout-3 hosts really run, and the upgrade must work on exactly
# those pins. Rebuilding it on every test run would tie the test to whatever clang, libbpf headers
# and git history the machine happens to have (a shallow clone has no commit d5cc0c9), and a
# compiler upgrade could silently change what "the old program" is. Run this script only to
# regenerate it on purpose, then review and commit the new object.
#
# It takes bpf/portcullis.h and bpf/portcullis.bpf.c from commit d5cc0c9 (the last commit with
# PORTCULLIS_LAYOUT_VERSION 3) and compiles them with the clang the build uses (the Swift
# toolchain's, which the EmbedBPFObject plugin runs) and the flags of bpf/build-object.sh at that
# commit, which it checks are still the ones it uses:
#   clang -O2 -g -Wall -Werror -target bpf -mcpu=v3 -I bpf -I /usr/include/<multiarch> -c portcullis.bpf.c
# plus -fdebug-prefix-map, which only rewrites the temporary directory's path in the debug info and
# BTF line info to /layout3, so that running it again gives the same bytes.
#
#   tools/build-layout3-fixture.sh [CLANG]
set -euo pipefail

commit=d5cc0c9
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/Tests/PortcullisBPFTests/Fixtures/portcullis-layout3.bpf.o

clang=${1:-${CLANG:-}}
if [[ -z $clang ]]; then
    if command -v swift >/dev/null; then
        clang=$(dirname "$(command -v swift)")/clang
    fi
    [[ -n $clang && -x $clang ]] || clang=$(command -v clang || true)
fi
[[ -n $clang && -x $clang ]] || { echo "error: no clang found (source tools/setup.sh, or pass CLANG)" >&2; exit 1; }

git -C "$root" cat-file -e "$commit^{commit}" 2>/dev/null \
    || { echo "error: commit $commit is not in this clone (fetch the full history)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-layout3.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/bpf"
for file in portcullis.h portcullis.bpf.c build-object.sh; do  # the script only to check its flags
    git -C "$root" show "$commit:bpf/$file" > "$work/bpf/$file"
done
grep -q '^#define PORTCULLIS_LAYOUT_VERSION 3$' "$work/bpf/portcullis.h" \
    || { echo "error: bpf/portcullis.h at $commit is not layout 3" >&2; exit 1; }

flags='-O2 -g -Wall -Werror -target bpf -mcpu=v3'
grep -qF -- "\"\$clang\" $flags \\" "$work/bpf/build-object.sh" \
    || { echo "error: bpf/build-object.sh at $commit does not use the flags '$flags'; update this script" >&2; exit 1; }
multiarch=$(gcc -print-multiarch 2>/dev/null || echo "$(uname -m)-linux-gnu")
[[ -f /usr/include/bpf/bpf_helpers.h ]] || { echo "error: install libbpf-dev (bpf/bpf_helpers.h)" >&2; exit 1; }
# shellcheck disable=SC2086 # $flags is a list of flags
(cd "$work" && "$clang" $flags -fdebug-prefix-map="$work"=/layout3 \
    -I "$work/bpf" -I "/usr/include/$multiarch" \
    -c "$work/bpf/portcullis.bpf.c" -o "$work/portcullis.bpf.o")

mkdir -p "$(dirname "$out")"
cp "$work/portcullis.bpf.o" "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote ${out#"$root"/} ($(stat -c %s "$out") bytes, $("$clang" --version | head -1), from $commit)"
