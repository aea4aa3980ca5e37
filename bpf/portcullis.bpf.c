// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Portcullis data plane: drop packets whose source address is blocked, before
 * the kernel allocates a socket buffer for them.
 *
 * Verdict, in order: allowlisted source -> pass; a block on the exact address or
 * on a prefix holding it that is permanent or not yet expired -> drop; a live
 * throttle on the address or a prefix holding it -> drop above its rate, pass
 * below; anything else passes. An expired block or throttle passes whether or
 * not a sweep has removed it yet, so expiry never waits for user space.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <xdp/xdp_helpers.h>

#include "portcullis.h"

/* max_entries are placeholders: the control plane sets them before loading. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct portcullis_block);
} blocks_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct portcullis_addr_v6);
	__type(value, struct portcullis_block);
} blocks_v6 SEC(".maps");

/*
 * Prefix blocks: hash maps keyed by length and masked address, looked up once per length in
 * use (trie_sizes.prefix_lengths_*). An LPM trie deepens as it fills; these do not.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct portcullis_lpm_v4);
	__type(value, struct portcullis_prefix_block);
} prefixes_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct portcullis_lpm_v6);
	__type(value, struct portcullis_prefix_block);
} prefixes_v6 SEC(".maps");

/* The control plane's counts of prefix blocks per length; the data plane reads only the bits. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORTCULLIS_PREFIX_LENGTH_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} prefix_lengths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct portcullis_lpm_v4);
	__type(value, struct portcullis_allow);
} allow_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct portcullis_lpm_v6);
	__type(value, struct portcullis_allow);
} allow_v6 SEC(".maps");

/* Throttles, sized like the block maps; looked up only when no live block matched. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct portcullis_throttle);
} throttles_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct portcullis_addr_v6);
	__type(value, struct portcullis_throttle);
} throttles_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct portcullis_lpm_v4);
	__type(value, struct portcullis_prefix_throttle);
} throttle_prefixes_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct portcullis_lpm_v6);
	__type(value, struct portcullis_prefix_throttle);
} throttle_prefixes_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PORTCULLIS_STATS_SLOTS);
	__type(key, __u32);
	__type(value, struct portcullis_stats);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct portcullis_trie_sizes);
} trie_sizes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PORTCULLIS_TALLY_SLOTS);
	__type(key, __u32);
	__type(value, struct portcullis_drop_tally);
} drop_tallies SEC(".maps");

/* Read and written by the control plane only; declared here so it is created and pinned with the rest. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct portcullis_meta);
} meta SEC(".maps");

extern const unsigned int CONFIG_HZ __kconfig __weak;

#define VLAN_HLEN 4
struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* The outcome of looking a source up in one kind of block. */
enum match {
	NO_BLOCK,     /* nothing matched; from a throttle: under its rate, pass */
	BLOCK_EXPIRED, /* only blocks (or throttles) that have expired matched */
	BLOCK_LIVE,   /* a permanent or unexpired block matched, or a throttle over its rate: drop */
	NO_MATCH,     /* from the throttle lookups: no throttle matched */
};

static __always_inline int same_key(const struct portcullis_tally_key *a, const struct portcullis_tally_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2];
}

static __always_inline void add_to_block(struct portcullis_block *block, __u64 packets, __u64 bytes)
{
	__sync_fetch_and_add(&block->dropped_packets, packets);
	__sync_fetch_and_add(&block->dropped_bytes, bytes);
}

/*
 * Adds a tally to the block it counts before another key takes its slot. The
 * block is looked up again (it was found by another packet); when it has been
 * removed, its final count was read with this tally in it, and the tally goes.
 */
static __always_inline void flush_tally(struct portcullis_drop_tally *t)
{
	struct portcullis_block *block = NULL;

	switch (t->key.map) {
	case PORTCULLIS_TALLY_EXACT_V4:
		block = bpf_map_lookup_elem(&blocks_v4, t->key.addr);
		break;
	case PORTCULLIS_TALLY_EXACT_V6:
		block = bpf_map_lookup_elem(&blocks_v6, t->key.addr);
		break;
	case PORTCULLIS_TALLY_PREFIX_V4: /* the block is the first member of the prefix value */
		block = bpf_map_lookup_elem(&prefixes_v4, &t->key.prefixlen);
		break;
	case PORTCULLIS_TALLY_PREFIX_V6:
		block = bpf_map_lookup_elem(&prefixes_v6, &t->key.prefixlen);
		break;
	}
	if (block)
		add_to_block(block, t->packets, t->bytes);
}

/*
 * Counts a drop on this CPU's tally for the key when its slot has it or can take
 * it, else on the block (see struct portcullis_drop_tally). A flood from one
 * source thus writes a line of its own CPU's, and the shared block once in
 * PORTCULLIS_TALLY_FLUSH packets.
 */
static __always_inline void count_drop(struct portcullis_block *block, const struct portcullis_tally_key *key,
				       __u64 len)
{
	__u32 slot = portcullis_tally_slot(key);
	struct portcullis_drop_tally *t = bpf_map_lookup_elem(&drop_tallies, &slot);

	if (t) {
		if (same_key(&t->key, key)) {
			t->misses = 0;
			t->packets++;
			t->bytes += len;
			if (t->packets >= PORTCULLIS_TALLY_FLUSH) {
				add_to_block(block, t->packets, t->bytes);
				t->packets = 0;
				t->bytes = 0;
			}
			return;
		}
		if (t->packets == 0 || ++t->misses >= PORTCULLIS_TALLY_EVICT_AFTER) {
			if (t->packets)
				flush_tally(t);
			t->key = *key;
			t->packets = 1;
			t->bytes = len;
			t->misses = 0;
			return;
		}
	}
	add_to_block(block, 1, len);
}

/*
 * Whether a matched block still applies; counts the drop on it when it does.
 * The clock is read only here, once a block has matched.
 */
static __always_inline enum match check_block(struct portcullis_block *block, __u64 len,
					      const struct portcullis_tally_key *key)
{
	__u64 expires = block->expires_jiffies;

	if (expires != PORTCULLIS_PERMANENT && bpf_jiffies64() >= expires)
		return BLOCK_EXPIRED;
	count_drop(block, key, len);
	return BLOCK_LIVE;
}

/*
 * An LPM lookup (the prefix throttles) answers with the longest prefix holding
 * the source only. When that one has expired (and no sweep removed it yet), a
 * shorter live prefix around it must still apply, so look again for prefixes
 * shorter than the one that answered. They nest only so deep in practice; the
 * bound keeps the verifier's job finite.
 */
#define PREFIX_NESTING_MAX 8


/*
 * The prefix blocks holding an IPv4 source, longest first: one hash lookup per length in
 * use. An expired one lets a shorter live one drop.
 */
static __always_inline enum match check_prefix_lengths_v4(__be32 saddr, __u64 lengths, __u64 len)
{
	struct portcullis_lpm_v4 key;
	struct portcullis_tally_key tally = { .map = PORTCULLIS_TALLY_PREFIX_V4 };
	enum match result = NO_BLOCK;
	int i;

	for (i = 0; i < 33 && lengths; i++) {
		__u32 plen = 63 - __builtin_clzll(lengths);
		__u32 masked = plen ? saddr & bpf_htonl(0xffffffffu << (32 - plen)) : 0;
		struct portcullis_prefix_block *entry;

		lengths &= ~(1ull << plen);
		key.prefixlen = plen;
		__builtin_memcpy(key.addr, &masked, sizeof(masked));
		entry = bpf_map_lookup_elem(&prefixes_v4, &key);
		if (!entry)
			continue;
		tally.prefixlen = plen;
		__builtin_memcpy(tally.addr, &masked, sizeof(masked));
		if (check_block(&entry->block, len, &tally) == BLOCK_LIVE)
			return BLOCK_LIVE;
		result = BLOCK_EXPIRED;
	}
	return result;
}

/* What check_prefix_lengths_v6 hands each round of bpf_loop. */
struct lengths_v6 {
	__u32 addr[4];
	__u64 bits[3];
	__u64 len;
	enum match result;
};

/*
 * One length of IPv6 prefixes, the longest left in `bits`, as a bpf_loop callback: the
 * verifier checks it once, where an open-coded loop over 129 lengths would have it walk
 * every path of every round. Returns 1 (stop) on a live block or when no length is left.
 */
static long check_one_length_v6(__u64 round, struct lengths_v6 *state)
{
	struct portcullis_lpm_v6 key;
	struct portcullis_tally_key tally;
	struct portcullis_prefix_block *entry;
	__u32 word, bit, plen, part[4];
	int k;

	if (state->bits[2])
		word = 2;
	else if (state->bits[1])
		word = 1;
	else if (state->bits[0])
		word = 0;
	else
		return 1;
	bit = 63 - __builtin_clzll(state->bits[word]);
	state->bits[word] &= ~(1ull << bit);
	plen = word * 64 + bit;
#pragma unroll
	for (k = 0; k < 4; k++) {
		__s32 left = (__s32)plen - 32 * k;

		part[k] = left <= 0 ? 0 : left >= 32 ? state->addr[k] : state->addr[k] & bpf_htonl(0xffffffffu << (32 - left));
	}
	key.prefixlen = plen;
	__builtin_memcpy(key.addr, part, sizeof(part));
	entry = bpf_map_lookup_elem(&prefixes_v6, &key);
	if (!entry)
		return 0;
	tally.map = PORTCULLIS_TALLY_PREFIX_V6;
	tally.prefixlen = plen;
	__builtin_memcpy(tally.addr, part, sizeof(part));
	if (check_block(&entry->block, state->len, &tally) == BLOCK_LIVE) {
		state->result = BLOCK_LIVE;
		return 1;
	}
	state->result = BLOCK_EXPIRED;
	return 0;
}

/* The same for IPv6, lengths 128 down to 0. */
static __always_inline enum match check_prefix_lengths_v6(const struct in6_addr *saddr, const __u64 *lengths,
							  __u64 len)
{
	struct lengths_v6 state = { .len = len, .result = NO_BLOCK };

	__builtin_memcpy(state.addr, saddr, sizeof(state.addr));
	__builtin_memcpy(state.bits, lengths, sizeof(state.bits));
	bpf_loop(129, check_one_length_v6, &state, 0);
	return state.result;
}

/* Counts the verdict: an expired match is counted apart from a source nothing blocks. */
static __always_inline int verdict(enum match result, __u64 len, struct portcullis_stats *st)
{
	if (result == BLOCK_LIVE) {
		st->dropped++;
		st->dropped_bytes += len;
		return XDP_DROP;
	}
	if (result == BLOCK_EXPIRED)
		st->passed_expired++;
	else
		st->passed++;
	return XDP_PASS;
}

/* What a packet is, as far as a --new-connections throttle cares. */
struct l4 {
	__u8 protocol;  /* IPPROTO_*, or IPPROTO_RAW when no transport header follows the IP header directly */
	void *header;   /* the transport header; may run past data_end */
};

/*
 * Whether a packet may open a connection: a TCP segment with SYN and without
 * ACK, or anything that is not a TCP segment the program can read (UDP, ICMP,
 * fragments, extension headers, a truncated header), which carries no sign of
 * belonging to an established connection. Only a --new-connections throttle
 * asks, so the transport header is read only for a throttled source.
 */
static __always_inline int opens_connection(const struct l4 *l4, void *data_end)
{
	struct tcphdr *tcp = l4->header;

	if (l4->protocol != IPPROTO_TCP || (void *)(tcp + 1) > data_end)
		return 1;
	return tcp->syn && !tcp->ack;
}

/* The bucket's attempts to win the compare-and-exchange against other CPUs before it drops. */
#define THROTTLE_CAS_ATTEMPTS 4

/*
 * Polices one packet with a matched throttle (see struct portcullis_throttle):
 * BLOCK_LIVE drops it, NO_BLOCK passes it, BLOCK_EXPIRED says the throttle no
 * longer applies. The clock is read here only, once a throttle has matched.
 */
static __always_inline enum match police(struct portcullis_throttle *t, __u64 len, const struct l4 *l4,
					 void *data_end)
{
	__u64 jiffies = bpf_jiffies64();
	__u64 expires = t->expires_jiffies;
	__u64 now, tat, next;
	int i;

	if (expires != PORTCULLIS_PERMANENT && jiffies >= expires)
		return BLOCK_EXPIRED;
	if ((t->flags & PORTCULLIS_THROTTLE_NEW_CONNECTIONS) && !opens_connection(l4, data_end))
		goto pass;
	now = (jiffies - t->epoch_jiffies) * t->rate;
	tat = t->tat;
	for (i = 0; i < THROTTLE_CAS_ATTEMPTS; i++) {
		__u64 seen;

		next = (tat > now ? tat : now) + t->packet_ticks;
		if (next - now > t->burst_ticks)
			break;
		seen = __sync_val_compare_and_swap(&t->tat, tat, next);
		if (seen == tat)
			goto pass;
		tat = seen;
	}
	/* Over the rate, or every attempt lost to other CPUs passing packets of this source. */
	__sync_fetch_and_add(&t->dropped_packets, 1);
	__sync_fetch_and_add(&t->dropped_bytes, len);
	return BLOCK_LIVE;
pass:
	__sync_fetch_and_add(&t->passed_packets, 1);
	return NO_BLOCK;
}

/* A shorter live throttle around an expired one still applies (see PREFIX_NESTING_MAX). */
static __always_inline enum match police_prefixes(void *trie, void *lpm, __u64 len, const struct l4 *l4,
						  void *data_end)
{
	__u32 *prefixlen = lpm;
	enum match result = BLOCK_EXPIRED;
	int i;

	for (i = 0; i < PREFIX_NESTING_MAX; i++) {
		struct portcullis_prefix_throttle *entry = bpf_map_lookup_elem(trie, lpm);

		if (!entry)
			return i == 0 ? NO_MATCH : BLOCK_EXPIRED;
		result = police(&entry->throttle, len, l4, data_end);
		if (result != BLOCK_EXPIRED || entry->prefixlen == 0)
			return result;
		*prefixlen = entry->prefixlen - 1;
	}
	return result;
}

/*
 * The verdict of a source no live block matched: policed by its throttle if it
 * has one (the exact address before prefixes), else `result` counted as before.
 */
static __always_inline int throttle_verdict(enum match result, void *exact, void *key, void *trie, void *lpm,
					    __u32 exact_count, __u32 trie_count, __u64 len,
					    const struct l4 *l4, void *data_end, struct portcullis_stats *st)
{
	enum match policed = NO_MATCH;

	if (exact_count) {
		struct portcullis_throttle *t = bpf_map_lookup_elem(exact, key);

		if (t)
			policed = police(t, len, l4, data_end);
	}
	if ((policed == NO_MATCH || policed == BLOCK_EXPIRED) && trie_count) {
		enum match prefixes = police_prefixes(trie, lpm, len, l4, data_end);

		if (prefixes != NO_MATCH)
			policed = prefixes;
	}
	switch (policed) {
	case BLOCK_LIVE:
		st->dropped++;
		st->dropped_throttled++;
		st->dropped_bytes += len;
		return XDP_DROP;
	case NO_BLOCK:
		st->passed_throttled++;
		return XDP_PASS;
	case BLOCK_EXPIRED:
		result = BLOCK_EXPIRED;
		break;
	default:
		break;
	}
	return verdict(result, len, st);
}

static __always_inline int verdict_v4(__be32 saddr, __u64 len, struct portcullis_stats *st,
				      const struct portcullis_trie_sizes *sizes, const struct l4 *l4, void *data_end)
{
	struct portcullis_lpm_v4 lpm = { .prefixlen = 32 };
	struct portcullis_block *block;
	enum match result = NO_BLOCK;

	__builtin_memcpy(lpm.addr, &saddr, sizeof(saddr));
	if (sizes->allow_v4 && bpf_map_lookup_elem(&allow_v4, &lpm)) {
		st->passed_allowed++;
		return XDP_PASS;
	}
	block = bpf_map_lookup_elem(&blocks_v4, &saddr);
	if (block) {
		struct portcullis_tally_key tally = { .map = PORTCULLIS_TALLY_EXACT_V4, .prefixlen = 32 };

		__builtin_memcpy(tally.addr, &saddr, sizeof(saddr));
		result = check_block(block, len, &tally);
	}
	/* An expired exact block must not hide a live prefix block around it. */
	if (result != BLOCK_LIVE && sizes->prefixes_v4) {
		enum match prefixes = check_prefix_lengths_v4(saddr, sizes->prefix_lengths_v4, len);

		if (prefixes != NO_BLOCK)
			result = prefixes;
	}
	if (result == BLOCK_LIVE || !(sizes->throttles_v4 | sizes->throttle_prefixes_v4))
		return verdict(result, len, st);
	lpm.prefixlen = 32;
	return throttle_verdict(result, &throttles_v4, &saddr, &throttle_prefixes_v4, &lpm, sizes->throttles_v4,
				sizes->throttle_prefixes_v4, len, l4, data_end, st);
}

static __always_inline int verdict_v6(const struct in6_addr *saddr, __u64 len,
				      struct portcullis_stats *st, const struct portcullis_trie_sizes *sizes,
				      const struct l4 *l4, void *data_end)
{
	struct portcullis_lpm_v6 lpm = { .prefixlen = 128 };
	struct portcullis_block *block;
	enum match result = NO_BLOCK;

	__builtin_memcpy(lpm.addr, saddr, sizeof(lpm.addr));
	if (sizes->allow_v6 && bpf_map_lookup_elem(&allow_v6, &lpm)) {
		st->passed_allowed++;
		return XDP_PASS;
	}
	block = bpf_map_lookup_elem(&blocks_v6, lpm.addr);
	if (block) {
		struct portcullis_tally_key tally = { .map = PORTCULLIS_TALLY_EXACT_V6, .prefixlen = 128 };

		__builtin_memcpy(tally.addr, lpm.addr, sizeof(tally.addr));
		result = check_block(block, len, &tally);
	}
	if (result != BLOCK_LIVE && sizes->prefixes_v6) {
		enum match prefixes = check_prefix_lengths_v6(saddr, sizes->prefix_lengths_v6, len);

		if (prefixes != NO_BLOCK)
			result = prefixes;
	}
	if (result == BLOCK_LIVE || !(sizes->throttles_v6 | sizes->throttle_prefixes_v6))
		return verdict(result, len, st);
	lpm.prefixlen = 128;
	return throttle_verdict(result, &throttles_v6, lpm.addr, &throttle_prefixes_v6, &lpm, sizes->throttles_v6,
				sizes->throttle_prefixes_v6, len, l4, data_end, st);
}

SEC("xdp")
int portcullis_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	struct ethhdr *eth = data;
	struct portcullis_trie_sizes *sizes;
	struct portcullis_stats *st;
	__u32 slot = ctx->ingress_ifindex;
	__u32 zero = 0;
	__u16 proto;
	void *cursor;
	int i;

	if (slot >= PORTCULLIS_STATS_SLOTS)
		slot = 0;
	st = bpf_map_lookup_elem(&stats, &slot);
	sizes = bpf_map_lookup_elem(&trie_sizes, &zero);
	if (!st || !sizes)
		return XDP_PASS;
	st->seen++;

	if ((void *)(eth + 1) > data_end) {
		st->parse_failed++;
		return XDP_PASS;
	}
	proto = eth->h_proto;
	cursor = eth + 1;

#pragma unroll
	for (i = 0; i < 2; i++) {
		struct vlan_hdr *vlan = cursor;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > data_end) {
			st->parse_failed++;
			return XDP_PASS;
		}
		proto = vlan->encapsulated_proto;
		cursor = vlan + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cursor;
		struct l4 l4;

		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5) {
			st->parse_failed++;
			return XDP_PASS;
		}
		/* A later fragment carries no transport header. */
		l4.protocol = ip->frag_off & bpf_htons(0x1fff) ? IPPROTO_RAW : ip->protocol;
		l4.header = cursor + ip->ihl * 4;
		return verdict_v4(ip->saddr, len, st, sizes, &l4, data_end);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cursor;
		struct l4 l4;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6) {
			st->parse_failed++;
			return XDP_PASS;
		}
		l4.protocol = ip6->nexthdr;
		l4.header = ip6 + 1;
		return verdict_v6(&ip6->saddr, len, st, sizes, &l4, data_end);
	}
	/* A third VLAN tag, or anything that is not IP, is none of our business. */
	st->not_ip++;
	return XDP_PASS;
}

/*
 * Read by libxdp when the program shares an interface through its dispatcher:
 * the run priority, and that the next program runs only on XDP_PASS (what is
 * dropped stays dropped). Exclusive attachments ignore it.
 */
struct {
	__uint(priority, PORTCULLIS_XDP_RUN_PRIORITY);
	__uint(XDP_PASS, 1);
} XDP_RUN_CONFIG(portcullis_xdp);

/*
 * A function of its own, not inlined, so that the sample's layout is described
 * in the object's BTF, where the layout tests compare it with Swift's.
 */
static __noinline int fill_clock_sample(struct portcullis_clock_sample *sample)
{
	if (!sample)
		return XDP_ABORTED;
	sample->monotonic_ns = bpf_ktime_get_ns();
	sample->jiffies = bpf_jiffies64();
	sample->config_hz = CONFIG_HZ;
	return XDP_PASS;
}

/*
 * Never attached: the control plane runs it with BPF_PROG_TEST_RUN to read the
 * kernel's jiffies and CLOCK_MONOTONIC at the same instant.
 */
SEC("xdp")
int portcullis_clock(struct xdp_md *ctx)
{
	struct portcullis_clock_sample sample = {};
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int verdict;

	if (data + sizeof(sample) > data_end)
		return XDP_ABORTED;
	verdict = fill_clock_sample(&sample);
	__builtin_memcpy(data, &sample, sizeof(sample));
	return verdict;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
