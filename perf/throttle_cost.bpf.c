// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The bucket alternatives perf/throttle_cost.py measures, one per -DVARIANT=N, each
 * behind the same parse and hash lookup the data plane makes for a throttled source:
 *   0 lookup only (no bucket): the floor
 *   1 one-word GCRA, compare-and-exchange, shared entry: Portcullis's choice
 *   2 token count with atomic consume and a compare-and-exchange refill, shared entry
 *   3 token bucket under bpf_spin_lock, shared entry
 *   4 one-word GCRA per CPU (PERCPU_HASH), plain stores, each CPU at rate / CPUs
 * All count drops on the entry the way they would in the data plane (atomically when shared),
 * and read bpf_jiffies64 once per packet. The entry is created by the first packet.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef VARIANT
#define VARIANT 1
#endif
#define RATE 1000ull   /* packets per second */
#define BURST 100ull
#define HZ 250ull      /* only scales the ticks; the cost does not depend on it */

struct bucket {
#if VARIANT == 3
	struct bpf_spin_lock lock;
	__u32 pad;
#endif
	__u64 tat;      /* variants 1, 4: ticks; 2, 3: tokens × HZ */
	__u64 last;     /* variants 2, 3: the jiffy of the last refill */
	__u64 epoch;
	__u64 passed;
	__u64 dropped;
	__u64 dropped_bytes;
};

struct {
#if VARIANT == 4
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
#else
	__uint(type, BPF_MAP_TYPE_HASH);
#endif
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct bucket);
} buckets SEC(".maps");

static __always_inline int gcra(struct bucket *b, __u64 jiffies, __u64 rate, int atomic)
{
	__u64 now = (jiffies - b->epoch) * rate, tat = b->tat, next;
	int i;

	for (i = 0; i < 4; i++) {
		__u64 seen;

		next = (tat > now ? tat : now) + HZ;
		if (next - now > BURST * HZ)
			return 0;
		if (!atomic) {
			b->tat = next;
			return 1;
		}
		seen = __sync_val_compare_and_swap(&b->tat, tat, next);
		if (seen == tat)
			return 1;
		tat = seen;
	}
	return 0;
}

SEC("xdp")
int throttle_cost(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u64 len = data_end - data, jiffies;
	struct bucket *b;
	__u32 key;
	int pass = 1;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	key = ip->saddr;
	b = bpf_map_lookup_elem(&buckets, &key);
	if (!b) {
		struct bucket fresh = { .epoch = bpf_jiffies64(), .last = bpf_jiffies64(), .tat = BURST * HZ };

#if VARIANT == 1 || VARIANT == 4
		fresh.tat = 0;
#endif
		bpf_map_update_elem(&buckets, &key, &fresh, BPF_NOEXIST);
		return XDP_PASS;
	}
#if VARIANT == 0
	return XDP_DROP;
#else
	jiffies = bpf_jiffies64();
#if VARIANT == 1
	pass = gcra(b, jiffies, RATE, 1);
#elif VARIANT == 4
	pass = gcra(b, jiffies, RATE / 2, 0); /* the rate shared by this machine's CPUs */
#elif VARIANT == 2
	{
		__u64 last = b->last;

		/* One CPU wins the refill of the jiffies since the last one. */
		if (jiffies > last && __sync_val_compare_and_swap(&b->last, last, jiffies) == last) {
			__u64 add = (jiffies - last) * RATE, tokens = b->tat;

			__sync_fetch_and_add(&b->tat, tokens + add > BURST * HZ ? BURST * HZ - tokens : add);
		}
		if ((__s64)__sync_fetch_and_add(&b->tat, -HZ) < (__s64)HZ) {
			__sync_fetch_and_add(&b->tat, HZ);
			pass = 0;
		}
	}
#elif VARIANT == 3
	bpf_spin_lock(&b->lock);
	if (jiffies > b->last) {
		b->tat += (jiffies - b->last) * RATE;
		if (b->tat > BURST * HZ)
			b->tat = BURST * HZ;
		b->last = jiffies;
	}
	if (b->tat >= HZ)
		b->tat -= HZ;
	else
		pass = 0;
	bpf_spin_unlock(&b->lock);
#endif
#if VARIANT == 4
	if (pass) {
		b->passed++;
		return XDP_PASS;
	}
	b->dropped++;
	b->dropped_bytes += len;
	return XDP_DROP;
#else
	if (pass) {
		__sync_fetch_and_add(&b->passed, 1);
		return XDP_PASS;
	}
	__sync_fetch_and_add(&b->dropped, 1);
	__sync_fetch_and_add(&b->dropped_bytes, len);
	return XDP_DROP;
#endif
#endif
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
