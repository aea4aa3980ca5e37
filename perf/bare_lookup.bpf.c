// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The fast path's reference: the least an XDP blocker can do. It parses Ethernet
 * and IPv4 (or IPv6), looks the source up in one hash map and drops on a hit;
 * no VLANs, no expiry, no counters, no allowlist. perf/fast_path.py measures
 * Portcullis against it in the same run. The maps are hashes without
 * preallocation, as Portcullis's block maps are, so the two pay for the same
 * kind of lookup; their size is set when perf/fast_path.py loads the object.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8);
} bare_v4 SEC(".maps");

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
		return bpf_map_lookup_elem(&bare_v4, &ip->saddr) ? XDP_DROP : XDP_PASS;
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
