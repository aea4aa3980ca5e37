#!/usr/bin/env bash
# What each clock an XDP program can read costs per packet, measured side by
# side through BPF_PROG_TEST_RUN: the measurement behind Portcullis's choice of
# bpf_jiffies64 for block expiry. Needs root, bpffs, bpftool and the Swift
# toolchain's clang (tools/setup.sh installs the rest).
#   perf/clock-cost.sh [REPEAT]
set -euo pipefail
repeat=${1:-5000000}
clang=$(dirname "$(command -v swift)")/clang
work=$(mktemp -d)
pin=/sys/fs/bpf/portcullis-perf-clock-$$
cleanup() { rm -f "$pin"; rm -rf "$work"; }
trap cleanup EXIT
command -v bpftool >/dev/null || { echo "clock-cost: needs bpftool (apt-get install bpftool)" >&2; exit 1; }

# A minimal UDP/IPv4 frame between documentation addresses.
printf '\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00\x45\x00\x00\x2e\x00\x00\x40\x00\x40\x11\x00\x00\xcb\x00\x71\x09\xc6\x33\x64\x01%026d' 0 > "$work/frame.bin"

cost() {
    cat > "$work/probe.c" <<PROGRAM
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int probe(struct xdp_md *ctx) { volatile __u64 t = $1; return t == 1 ? XDP_DROP : XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
PROGRAM
    "$clang" -O2 -target bpf -I "/usr/include/$(gcc -print-multiarch)" -c "$work/probe.c" -o "$work/probe.o"
    bpftool prog load "$work/probe.o" "$pin"
    local best=999999 ns
    for _ in 1 2 3; do
        ns=$(bpftool prog run pinned "$pin" data_in "$work/frame.bin" repeat "$repeat" | sed -n 's/.*average): \([0-9]*\)ns/\1/p')
        ((ns < best)) && best=$ns
    done
    rm -f "$pin"
    echo "$best"
}

empty=$(cost 0)
printf '%-26s %8s %10s\n' "clock read per packet" "ns/pkt" "added"
printf '%-26s %8s %10s\n' "none (empty program)" "$empty" "-"
for helper in bpf_jiffies64 bpf_ktime_get_coarse_ns bpf_ktime_get_ns bpf_ktime_get_boot_ns; do
    ns=$(cost "$helper()")
    printf '%-26s %8s %+8dns\n' "$helper" "$ns" $((ns - empty))
done
echo "(best of 3 runs of $repeat repetitions each; $(nproc) cores, kernel $(uname -r))"
