/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one definition of every layout shared by the XDP program (portcullis.bpf.c)
 * and the Swift control plane (Sources/CLibbpf). Change a layout here and bump
 * PORTCULLIS_LAYOUT_VERSION: the control plane refuses to reuse pins made with
 * another layout instead of misreading them.
 */
#ifndef PORTCULLIS_H
#define PORTCULLIS_H

#include <linux/types.h>

#define PORTCULLIS_LAYOUT_VERSION 6
#define PORTCULLIS_MAGIC 0x70637573u /* "pcus" */

/*
 * Expiry of a block, in the kernel's jiffies (bpf_jiffies64). Jiffies are the
 * cheapest clock an XDP program can read, and the program reads one for every
 * packet from a blocked source. The control plane converts to and from wall-clock
 * time with the jiffies the clock probe program reads in the kernel and the tick
 * rate stored in portcullis_meta.
 */
#define PORTCULLIS_PERMANENT 0ull

/*
 * Value of the exact block maps. Only what the XDP program reads and counts: the
 * record of a block (who, why, since when) lives in the control plane's ledger,
 * which is also what restores the maps after a reboot.
 */
struct portcullis_block {
	__u64 expires_jiffies; /* PORTCULLIS_PERMANENT or the first jiffy it no longer applies */
	__u64 dropped_packets; /* added to atomically, a tally at a time (struct portcullis_drop_tally) */
	__u64 dropped_bytes;
};

/*
 * Per-CPU drop tallies, so that a flood from one source on many cores does not
 * have every core add to the same block's counters: an atomic add to a cache line
 * that other cores write too costs each of them a transfer of the line, and their
 * number caps what all of them drop together. Each CPU keeps PORTCULLIS_TALLY_SLOTS
 * tallies; a block's drops go to the slot portcullis_tally_slot() picks for its key
 * while that slot tallies it, and into the block itself otherwise. A tally is added
 * to its block (one atomic add for PORTCULLIS_TALLY_FLUSH packets) when it reaches
 * PORTCULLIS_TALLY_FLUSH, and when another key takes the slot, which happens once
 * PORTCULLIS_TALLY_EVICT_AFTER packets of other keys have met it. A block's count is
 * therefore its own counters plus the tallies of its key on every CPU, which is
 * what the control plane reads. A tally whose block was removed is dropped when its
 * slot is taken, unless the same key is blocked again first, which then counts the
 * fewer than PORTCULLIS_TALLY_FLUSH packets each CPU had not added yet.
 */
#define PORTCULLIS_TALLY_SLOTS_LOG2 4
#define PORTCULLIS_TALLY_SLOTS (1u << PORTCULLIS_TALLY_SLOTS_LOG2)
#define PORTCULLIS_TALLY_FLUSH 64
#define PORTCULLIS_TALLY_EVICT_AFTER 16

/* Which block map holds a tally's key. */
enum portcullis_tally_map {
	PORTCULLIS_TALLY_FREE = 0,
	PORTCULLIS_TALLY_EXACT_V4 = 1,
	PORTCULLIS_TALLY_EXACT_V6 = 2,
	PORTCULLIS_TALLY_PREFIX_V4 = 3,
	PORTCULLIS_TALLY_PREFIX_V6 = 4,
};

/*
 * The key of the block a tally counts. From prefixlen on it is the key of the
 * prefix maps (struct portcullis_lpm_v4 or _v6), so the program looks a prefix
 * block up with it as it is; an exact key is the address at addr.
 */
struct portcullis_tally_key {
	__u32 map;       /* enum portcullis_tally_map */
	__u32 prefixlen; /* 32 or 128 for an exact address */
	__u8 addr[16];   /* masked to prefixlen; an IPv4 address in the first 4 bytes, the rest zero */
} __attribute__((aligned(8))); /* compared as three words */

struct portcullis_drop_tally {
	struct portcullis_tally_key key;
	__u64 packets;   /* dropped and not yet added to the block */
	__u64 bytes;
	__u64 misses;    /* packets of other keys that met this slot since this key's last */
};

/* The slot of a key among a CPU's tallies: a multiplicative hash of the address words. */
static inline __u32 portcullis_tally_slot(const struct portcullis_tally_key *key)
{
	__u32 words[4];

	__builtin_memcpy(words, key->addr, sizeof(words));
	return ((words[0] ^ words[1] ^ words[2] ^ words[3] ^ key->prefixlen) * 0x9E3779B1u) >>
	       (32 - PORTCULLIS_TALLY_SLOTS_LOG2);
}

/*
 * Value of the prefix block tries: an LPM lookup may answer with a shorter
 * prefix than the key, and the program needs the answering entry's own length
 * to look again around an expired one.
 */
struct portcullis_prefix_block {
	struct portcullis_block block;
	__u32 prefixlen;
	__u32 pad;
};

/*
 * Value of the throttle maps (exact and prefix, both families): a policer, since
 * XDP can pass or drop but never delay. The bucket is one word, updated with a
 * compare-and-exchange and no lock: the generic cell rate algorithm, where `tat`
 * (the theoretical arrival time of the next packet) stands for the tokens. Time
 * is counted in ticks of 1/rate jiffy since `epoch_jiffies`, so a jiffy is `rate`
 * ticks and a packet `jiffies_per_second` ticks, and no division is made per
 * packet. A packet passes when it leaves `tat` no more than `burst_ticks` ahead of
 * now. A drop writes nothing to the bucket, so a flood that is being cut only
 * reads it.
 */
#define PORTCULLIS_THROTTLE_NEW_CONNECTIONS 1u /* police only packets that may open a connection */

struct portcullis_throttle {
	__u64 expires_jiffies;   /* PORTCULLIS_PERMANENT or the first jiffy it no longer applies */
	__u64 tat;               /* ticks since epoch_jiffies; written by compare-and-exchange */
	__u64 epoch_jiffies;     /* when the bucket started, full */
	__u64 rate;              /* packets per second = ticks per jiffy */
	__u64 packet_ticks;      /* the kernel's HZ: what one packet costs */
	__u64 burst_ticks;       /* burst × packet_ticks */
	__u64 passed_packets;    /* under the rate, or not policed (PORTCULLIS_THROTTLE_NEW_CONNECTIONS) */
	__u64 dropped_packets;   /* over the rate */
	__u64 dropped_bytes;
	__u32 flags;             /* PORTCULLIS_THROTTLE_* */
	__u32 pad;
};

/* Value of the prefix throttle tries, which answer with the longest prefix holding the key. */
struct portcullis_prefix_throttle {
	struct portcullis_throttle throttle;
	__u32 prefixlen;
	__u32 pad;
};

/*
 * Layout 3, read once to import its records into the ledger when an upgrade
 * finds its pins. Nothing writes it.
 */
#define PORTCULLIS_V3_REASON_MAX 112

enum portcullis_v3_source {
	PORTCULLIS_V3_SOURCE_CLI = 1,
	PORTCULLIS_V3_SOURCE_FILE = 2,
	PORTCULLIS_V3_SOURCE_WAZUH = 3,
	PORTCULLIS_V3_SOURCE_DETECTOR = 4,
	PORTCULLIS_V3_SOURCE_API = 5,
};

struct portcullis_v3_block {
	__u64 expires_jiffies;
	__u64 dropped_packets;
	__u64 dropped_bytes;
	__s64 created_unix_ms;
	__s64 refreshed_unix_ms;
	__u64 requested_seconds; /* 0 = permanent */
	__u32 source;            /* enum portcullis_v3_source */
	__u8 prefixlen;
	__u8 pad[3];
	char reason[PORTCULLIS_V3_REASON_MAX];
};

/* Key of the IPv4 and IPv6 LPM tries (allowlist, prefix throttles) and of the prefix block
 * hash maps, where the address is masked to the prefix length. */
struct portcullis_lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct portcullis_lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Key of the exact IPv6 block map; the exact IPv4 map is keyed by the address as __u32, network order. */
struct portcullis_addr_v6 {
	__u8 addr[16];
};

enum portcullis_allow_origin {
	PORTCULLIS_ALLOW_COMMAND = 1, /* `portcullis allow` or the control API */
	PORTCULLIS_ALLOW_CONFIG = 2,  /* the daemon's configuration, which owns these entries */
};

/* Value of the allowlist tries. */
struct portcullis_allow {
	__u64 added_unix_seconds;
	__u32 origin; /* enum portcullis_allow_origin */
	__u32 pad;
};

/*
 * Per-CPU packet counters, one slot per interface: the slot is the ingress
 * ifindex when it is below PORTCULLIS_STATS_SLOTS, else slot 0. Interfaces in
 * different namespaces with the same ifindex share a slot. Every packet the
 * program sees is counted in seen and in exactly one of the others.
 */
#define PORTCULLIS_STATS_SLOTS 1024

struct portcullis_stats {
	__u64 seen;
	__u64 dropped;
	__u64 dropped_bytes;   /* not a packet class: the bytes of the dropped packets */
	__u64 passed;          /* IP packets with no matching block */
	__u64 passed_allowed;  /* allowlisted sources */
	__u64 passed_expired;  /* a block or throttle matched but had expired, swept or not */
	__u64 passed_throttled; /* a throttle matched and let it through */
	__u64 dropped_throttled; /* not a packet class: the part of dropped a throttle dropped */
	__u64 not_ip;          /* neither IPv4 nor IPv6 (ARP, LLDP, ...) */
	__u64 parse_failed;    /* truncated or malformed headers */
};

/*
 * How many entries each LPM trie and each throttle map holds, one entry at
 * index 0. The XDP program skips the lookup of an empty trie, which is most of
 * the cost of a packet that matches nothing, and of an empty throttle map. The control plane raises a count before it inserts and
 * lowers it after it deletes, under the writer lock, so a count is never below
 * the truth: at worst a lookup is made that was not needed.
 */
struct portcullis_trie_sizes {
	__u32 allow_v4;
	__u32 allow_v6;
	__u32 prefixes_v4;
	__u32 prefixes_v6;
	__u32 throttles_v4;
	__u32 throttles_v6;
	__u32 throttle_prefixes_v4;
	__u32 throttle_prefixes_v6;
	/*
	 * The prefix lengths that have prefix blocks: bit L of prefix_lengths_v4, and bit L % 64
	 * of prefix_lengths_v6[L / 64]. The prefix blocks are hash maps keyed by length and
	 * masked address, so a packet costs one lookup per length in use, however many prefixes
	 * each holds. Set before the first prefix of a length is inserted, cleared after its last
	 * is deleted (the counts live in the prefix_lengths map).
	 */
	__u64 prefix_lengths_v4;
	__u64 prefix_lengths_v6[3];
};

/* Entries of the prefix_lengths array map (the control plane's counts behind the bits above). */
#define PORTCULLIS_PREFIX_LENGTH_SLOTS (33 + 129) /* IPv4 lengths 0-32, then IPv6 lengths 0-128 */

/* One entry, index 0, of the "meta" array map: written once at first load. */
struct portcullis_meta {
	__u32 magic;
	__u32 layout_version;
	__u32 jiffies_per_second;   /* the kernel's HZ */
	__u32 pad;
	__u64 capacity_exact;       /* per family */
	__u64 capacity_prefix;      /* per family, also the allowlist */
	__s64 created_unix_ms;
};

/*
 * The clock probe program writes this at the start of the frame it is given
 * through BPF_PROG_TEST_RUN.
 */
struct portcullis_clock_sample {
	__u64 jiffies;
	__u64 monotonic_ns;
	__u64 config_hz;            /* CONFIG_HZ from kconfig, 0 when libbpf could not read it */
};

/* Program names, so the loader and the program cannot disagree. */
#define PORTCULLIS_PROG_XDP "portcullis_xdp"
#define PORTCULLIS_PROG_CLOCK "portcullis_clock"

/*
 * Where the XDP program runs in libxdp's dispatcher when it shares an interface
 * (cooperative mode): lower runs first. Below libxdp's default of 50, which
 * xdp-filter and most libxdp programs keep, so a blocked source's packets are
 * dropped before the programs after it spend any work on them.
 */
#define PORTCULLIS_XDP_RUN_PRIORITY 10

#endif /* PORTCULLIS_H */
