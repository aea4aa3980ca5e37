// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The fast path's reference: the least an XDP blocker can do. It parses Ethernet
 * and IPv4 (or IPv6), looks the source up in one hash map and drops on a hit;
 * no VLANs, no expiry, no counters, no allowlist. perf/fast_path.py measures
 * Portcullis against it in the same run. The maps are hashes without
 * preallocation, as Portcullis's block maps are, so the two pay for the same
 * kind of lookup; their size is set when perf/fast_path.py loads the object.
 *
 * Built with -DCOUNT_DROPS=1 it also counts each hit's packets and bytes in the
 * entry, atomically, as Portcullis's block maps do; with -DCOUNT_DROPS=2 the
 * map is per-CPU and each core counts in its own copy, as xdp-filter's are. The
 * two variants show what a per-entry counter costs when several cores drop
 * from one source.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef COUNT_DROPS
#define COUNT_DROPS 0
#endif

#if COUNT_DROPS
struct counts {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, COUNT_DROPS == 2 ? BPF_MAP_TYPE_PERCPU_HASH : BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counts);
} bare_v4 SEC(".maps");
#else
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8);
} bare_v4 SEC(".maps");
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct in6_addr);
	__type(value, __u8);
} bare_v6 SEC(".maps");

SEC("xdp")
int bare_lookup(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return XDP_PASS;
#if COUNT_DROPS
		struct counts *counts = bpf_map_lookup_elem(&bare_v4, &ip->saddr);

		if (!counts)
			return XDP_PASS;
#if COUNT_DROPS == 2
		counts->packets++;
		counts->bytes += data_end - data;
#else
		__sync_fetch_and_add(&counts->packets, 1);
		__sync_fetch_and_add(&counts->bytes, data_end - data);
#endif
		return XDP_DROP;
#else
		return bpf_map_lookup_elem(&bare_v4, &ip->saddr) ? XDP_DROP : XDP_PASS;
#endif
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		return bpf_map_lookup_elem(&bare_v6, &ip6->saddr) ? XDP_DROP : XDP_PASS;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
