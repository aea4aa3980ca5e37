#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input (Fuzz/) with libFuzzer and AddressSanitizer, for a bounded
# time each; CI runs it after the tests (tools/quickstart.sh test).
#
#   tools/fuzz.sh [--seconds N] [TARGET...]
#
# TARGET is one of ar-message, block-file, xml, yaml-config, log-header (default: all), N the
# seconds each target is fuzzed (default 30). Each run starts from a scratch copy of the committed
# corpus and regressions, so the repository is never written to. A crash, a broken invariant, a
# timeout or running out of memory fails the run; the input is kept under .build-fuzz/findings/
# and printed in hex, because CI's machine does not outlive the log.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(ar-message block-file xml yaml-config log-header)
seconds=30
targets=()
while (($#)); do
    case $1 in
        --seconds)
            [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --seconds needs a whole number of seconds, got '${2:-}'" >&2; exit 2; }
            seconds=$2; shift 2 ;;
        -h|--help)
            sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *)
            [[ " ${all_targets[*]} " == *" $1 "* ]] || { echo "fuzz.sh: no fuzz target '$1' (targets: ${all_targets[*]})" >&2; exit 2; }
            targets+=("$1"); shift ;;
    esac
done
((${#targets[@]})) || targets=("${all_targets[@]}")

source tools/setup.sh

# Debian's gold aborts on the sanitized objects (an internal error formatting a DWARF location),
# so the fuzzers are linked with the toolchain's lld.
build=(swift build --package-path Fuzz --scratch-path .build-fuzz -c release
       -Xswiftc -sanitize=fuzzer,address -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld)
echo "fuzz.sh: building the fuzz targets with libFuzzer and AddressSanitizer"
scratch=$(mktemp -d /tmp/portcullis-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
if ! "${build[@]}" >"$scratch/build.log" 2>&1; then
    grep -vE "^\[[0-9]+/[0-9]+\] (Compiling|Write|Emitting)" "$scratch/build.log" | tail -40 >&2
    echo "fuzz.sh: the fuzz targets did not build" >&2
    exit 1
fi
bin=$("${build[@]}" --show-bin-path)
findings=.build-fuzz/findings

failed=()
for target in "${targets[@]}"; do
    corpus=$scratch/$target/corpus
    artifacts=$scratch/$target/artifacts
    mkdir -p "$corpus" "$artifacts"
    cp Fuzz/Corpus/"$target"/* "$corpus"/
    if [[ -d Fuzz/Regressions/$target ]]; then
        cp Fuzz/Regressions/"$target"/* "$corpus"/
    fi
    log=$scratch/$target/log
    echo "fuzz.sh: $target for ${seconds}s from $(ls "$corpus" | wc -l) inputs"
    # -timeout: one input may take 10 s (the parsers answer in milliseconds; a hang is a finding).
    # -rss_limit_mb and -malloc_limit_mb: a parser that reads without bound is a finding, too.
    # -max_len: long enough for nesting and size limits to be reached, short enough to keep speed.
    status=0
    # Swift's own crash backtracer reads memory ASan has poisoned; libFuzzer reports the crash.
    SWIFT_BACKTRACE=enable=no timeout --kill-after=30 $((seconds + 120)) \
        "$bin/fuzz-$target" "$corpus" \
        -dict=Fuzz/Dictionaries/"$target".dict \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -max_len=65536 -artifact_prefix="$artifacts/" -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb)" "$log" | sed "s/^/    /" || true
    if ((status != 0)) || compgen -G "$artifacts/*" >/dev/null; then
        failed+=("$target")
        echo "fuzz.sh: $target FAILED (exit $status); libFuzzer's report:" >&2
        grep -vE "^#[0-9]+|^INFO:|^\"|^###### " "$log" | tail -60 >&2
        mkdir -p "$findings/$target"
        for input in "$artifacts"/*; do
            [[ -e $input ]] || continue
            cp "$input" "$findings/$target/"
            echo "fuzz.sh: kept $findings/$target/$(basename "$input") ($(stat -c %s "$input") bytes); its first 512 bytes:" >&2
            head -c 512 "$input" | od -An -tx1 -v >&2
        done
    fi
done

if ((${#failed[@]})); then
    cat >&2 <<EOF
fuzz.sh: fuzzing found problems in: ${failed[*]}
Reproduce with: $bin/fuzz-TARGET FILE
Once fixed, add FILE to Fuzz/Regressions/TARGET/ under a name that says what it broke: the tests
replay every regression, and each fuzz run starts from them.
EOF
    exit 1
fi
echo "fuzz.sh: no crash, hang or broken invariant in ${targets[*]} (${seconds}s each)"
