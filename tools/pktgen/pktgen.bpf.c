// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The packet generator's XDP program, run with BPF_PROG_TEST_RUN in live-frame
 * mode (BPF_F_TEST_XDP_LIVE_FRAMES): for every repetition it writes the next
 * source address into the template frame and returns XDP_TX, which transmits
 * the frame out of the interface named in the run's context. Nothing is parsed:
 * the frame is the generator's own template, with the IP header at offset 14.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct pktgen_config {
	__u32 family;     /* 4 or 6 */
	__u32 spread;     /* how many source addresses, counted from base */
	__u32 random;     /* 1: a random one of them each time; 0: in turn */
	__u32 pad;
	__u8 base[16];    /* first source address, network order (IPv4 in the first 4 bytes) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pktgen_config);
} pktgen_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} pktgen_sequence SEC(".maps");

static __always_inline __u16 ipv4_checksum(__u16 *header)
{
	__u32 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < 10; i++)
		sum += header[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

SEC("xdp")
int pktgen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pktgen_config *config;
	__u32 zero = 0, offset;
	__u64 *sequence;

	config = bpf_map_lookup_elem(&pktgen_config, &zero);
	sequence = bpf_map_lookup_elem(&pktgen_sequence, &zero);
	if (!config || !sequence || config->spread == 0)
		return XDP_ABORTED;
	offset = config->random ? bpf_get_prandom_u32() % config->spread : (__u32)((*sequence)++ % config->spread);

	if (config->family == 4) {
		__u8 *ip = data + 14;
		__u32 base;

		if ((void *)(ip + 20) > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(&base, config->base, 4);
		base = bpf_htonl(bpf_ntohl(base) + offset);
		__builtin_memcpy(ip + 12, &base, 4);
		*(__u16 *)(ip + 10) = 0;
		*(__u16 *)(ip + 10) = ipv4_checksum((__u16 *)ip);
		return XDP_TX;
	}
	if (config->family == 6) {
		__u8 *ip = data + 14;
		__u32 low;

		if ((void *)(ip + 40) > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(ip + 8, config->base, 16);
		__builtin_memcpy(&low, config->base + 12, 4);
		low = bpf_htonl(bpf_ntohl(low) + offset);
		__builtin_memcpy(ip + 20, &low, 4);
		return XDP_TX;
	}
	return XDP_ABORTED;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
