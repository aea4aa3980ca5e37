import CLibbpf
import Glibc
import PortcullisCore

/// What the data plane holds for one block or throttle: when it stops applying, in jiffies,
/// and what it dropped (and, for a throttle, passed). Everything else lives in the ledger.
public struct DataplaneBlock: Sendable, Equatable {
    public let target: BlockTarget
    public let expiry: Expiry<UInt64>
    public let droppedPackets: UInt64
    public let droppedBytes: UInt64
    /// nil for a block.
    public let throttle: ThrottleRate?
    public let passedPackets: UInt64

    public init(target: BlockTarget, expiry: Expiry<UInt64>, droppedPackets: UInt64 = 0, droppedBytes: UInt64 = 0,
                throttle: ThrottleRate? = nil, passedPackets: UInt64 = 0) {
        (self.target, self.expiry, self.droppedPackets, self.droppedBytes) = (target, expiry, droppedPackets, droppedBytes)
        (self.throttle, self.passedPackets) = (throttle, passedPackets)
    }
}

/// One change to a block's (or a throttle's) expiry in the maps.
public struct ExpiryWrite: Sendable, Equatable {
    public let target: BlockTarget
    public let expiry: Expiry<UInt64>
    /// False when the target is new to the maps: its counters start at zero and no
    /// lookup is spent on it. True for a refresh, which keeps what the block dropped.
    public let keepsCounters: Bool
    /// Goes to the throttle maps with this rate; nil goes to the block maps.
    public let throttle: ThrottleRate?

    public init(target: BlockTarget, expiry: Expiry<UInt64>, keepsCounters: Bool, throttle: ThrottleRate? = nil) {
        (self.target, self.expiry, self.keepsCounters, self.throttle) = (target, expiry, keepsCounters, throttle)
    }
}

extension Expiry<UInt64> {
    var jiffies: UInt64 {
        switch self {
        case .never: PORTCULLIS_PERMANENT
        case .at(let jiffies): jiffies
        }
    }

    init(jiffies: UInt64) {
        self = jiffies == PORTCULLIS_PERMANENT ? .never : .at(jiffies)
    }
}

extension Datapath {
    // MARK: - Writer lock

    /// Takes the writer lock every process holds while it changes the blocklist, ledger and
    /// maps together, so two writers can never leave them in different orders.
    public func lockForWriting() throws(DatapathError) -> WriterLock {
        try pins.lockForWriting()
    }

    // MARK: - Blocks

    /// Sets the expiry of each target, exact addresses with batched updates. The caller holds
    /// the writer lock and has checked that the maps have room (the ledger knows how many
    /// entries each holds); a map that fills anyway is named in the error.
    public func setExpiries(_ writes: [ExpiryWrite]) throws(DatapathError) {
        var v4 = ExactBatch<UInt32>()
        var v6 = ExactBatch<portcullis_addr_v6>()
        var prefixV4 = PrefixBatch<portcullis_lpm_v4>(kind: .prefixesV4)
        var prefixV6 = PrefixBatch<portcullis_lpm_v6>(kind: .prefixesV6)
        var throttles: [ExpiryWrite] = []
        // A block that replaces a throttle takes its entry out; throttles are few, so this
        // costs a lookup per block only while there are any.
        let throttled = try throttleSizeCounts().contains { $0 > 0 }
        var formerThrottles: [BlockTarget] = []
        for write in writes {
            if write.throttle != nil {
                throttles.append(write)
                continue
            }
            if throttled { formerThrottles.append(write.target) }
            switch BlockSlot(write.target) {
            case .exactV4(let key):
                v4.append(key, write, previous: write.keepsCounters ? try blocksV4.lookup(key, as: portcullis_block.self) : nil)
            case .exactV6(let key):
                v6.append(key, write, previous: write.keepsCounters ? try blocksV6.lookup(key, as: portcullis_block.self) : nil)
            case .prefixV4(let key):
                let previous = try exactPrefix(key.prefixlen, try prefixesV4.lookup(key, as: portcullis_prefix_block.self))
                prefixV4.append(key, length: key.prefixlen, write, previous: previous)
            case .prefixV6(let key):
                let previous = try exactPrefix(key.prefixlen, try prefixesV6.lookup(key, as: portcullis_prefix_block.self))
                prefixV6.append(key, length: key.prefixlen, write, previous: previous)
            }
        }
        try v4.write(into: blocksV4)
        try v6.write(into: blocksV6)
        try prefixV4.write(into: prefixesV4, counting: self)
        try prefixV6.write(into: prefixesV6, counting: self)
        if !formerThrottles.isEmpty { _ = try removeThrottles(formerThrottles) }
        if !throttles.isEmpty { try setThrottles(throttles) }
    }

    /// Keys and values for one exact map, written a chunk at a time.
    private struct ExactBatch<Key: BitwiseCopyable> {
        var keys: [Key] = []
        var values: [portcullis_block] = []

        mutating func append(_ key: Key, _ write: ExpiryWrite, previous: portcullis_block?) {
            var value = previous ?? portcullis_block()
            value.expires_jiffies = write.expiry.jiffies
            keys.append(key)
            values.append(value)
        }

        /// One bpf(BPF_MAP_UPDATE_BATCH) per chunk: fewer, larger syscalls, bounded memory in the kernel.
        func write(into map: BPFMap) throws(DatapathError) {
            let chunkSize = 16_384
            var start = 0
            while start < keys.count {
                let end = min(start + chunkSize, keys.count)
                _ = try keys[start..<end].withUnsafeBufferPointer { keys throws(DatapathError) in
                    try values[start..<end].withUnsafeBufferPointer { values throws(DatapathError) in
                        try map.updateBatch(keys: keys, values: values)
                    }
                }
                start = end
            }
        }
    }

    /// Prefix blocks of one family, written a chunk at a time as exact ones are. A prefix new to
    /// the map raises its length's count and the map's size, once per chunk for all of the
    /// chunk's new ones, before the chunk's insert: the data plane never skips a length that
    /// holds an entry. One at a time, that was four more syscalls a prefix (7 s for a million).
    private struct PrefixBatch<Key: BitwiseCopyable> {
        let kind: Trie
        var keys: [Key] = []
        var values: [portcullis_prefix_block] = []
        /// Each entry's prefix length if the map gains it, nil if the map held it already.
        var gainedLengths: [UInt32?] = []
        /// New targets so far: a target listed twice is gained once.
        var gained: Set<BlockTarget> = []

        init(kind: Trie) { self.kind = kind }

        mutating func append(_ key: Key, length: UInt32, _ write: ExpiryWrite, previous: portcullis_prefix_block?) {
            var value = previous ?? portcullis_prefix_block()
            if !write.keepsCounters { value.block = portcullis_block() }
            value.block.expires_jiffies = write.expiry.jiffies
            value.prefixlen = length
            keys.append(key)
            values.append(value)
            gainedLengths.append(previous == nil && gained.insert(write.target).inserted ? length : nil)
        }

        func write(into map: BPFMap, counting datapath: Datapath) throws(DatapathError) {
            let chunkSize = 16_384
            var start = 0
            while start < keys.count {
                let end = min(start + chunkSize, keys.count)
                try datapath.adjustPrefixCounts(kind, gainedCounts(start..<end), by: 1)
                do {
                    _ = try keys[start..<end].withUnsafeBufferPointer { keys throws(DatapathError) in
                        try values[start..<end].withUnsafeBufferPointer { values throws(DatapathError) in
                            try map.updateBatch(keys: keys, values: values)
                        }
                    }
                } catch {
                    // Lowered again for the new entries the map did not take.
                    let missing = (start..<end).filter {
                        gainedLengths[$0] != nil && (try? map.lookup(keys[$0], as: portcullis_prefix_block.self)) == nil
                    }
                    try? datapath.adjustPrefixCounts(kind, gainedCounts(missing), by: -1)
                    throw error
                }
                start = end
            }
        }

        /// How many of the entries at `indices` the map gains, by prefix length.
        private func gainedCounts(_ indices: some Sequence<Int>) -> [UInt32: Int] {
            var counts: [UInt32: Int] = [:]
            for index in indices { if let length = gainedLengths[index] { counts[length, default: 0] += 1 } }
            return counts
        }
    }

    /// Removes blocks; returns those that were there, with their final counters. The caller
    /// holds the writer lock.
    @discardableResult
    public func removeBlocks(_ targets: [BlockTarget]) throws(DatapathError) -> [DataplaneBlock] {
        var removed: [DataplaneBlock] = []
        var v4: [UInt32] = []
        var v6: [portcullis_addr_v6] = []
        let pending = try pendingDrops()
        for target in targets {
            guard let block = try dataplaneBlock(for: target, pending: pending) else { continue }
            removed.append(block)
            switch BlockSlot(target) {
            case .exactV4(let key): v4.append(key)
            case .exactV6(let key): v6.append(key)
            case .prefixV4(let key):
                if try prefixesV4.delete(key) { try adjustPrefixCounts(.prefixesV4, [key.prefixlen: 1], by: -1) }
            case .prefixV6(let key):
                if try prefixesV6.delete(key) { try adjustPrefixCounts(.prefixesV6, [key.prefixlen: 1], by: -1) }
            }
        }
        _ = try blocksV4.deleteBatch(v4)
        _ = try blocksV6.deleteBatch(v6)
        if try throttleSizeCounts().contains(where: { $0 > 0 }) { removed += try removeThrottles(targets) }
        return removed
    }

    /// The data plane's entry for exactly `target`, read by its key.
    public func dataplaneBlock(for target: BlockTarget) throws(DatapathError) -> DataplaneBlock? {
        try dataplaneBlock(for: target, pending: try pendingDrops())
    }

    /// The data plane's entries for these targets, each read by its key, with one read of the
    /// CPUs' drop tallies for all of them: for a page of a listing, never the whole blocklist.
    public func dataplaneBlocks(for targets: some Sequence<BlockTarget>) throws(DatapathError) -> [BlockTarget: DataplaneBlock] {
        let pending = try pendingDrops()
        var blocks: [BlockTarget: DataplaneBlock] = [:]
        for target in targets {
            if let block = try dataplaneBlock(for: target, pending: pending) { blocks[target] = block }
        }
        return blocks
    }

    private func dataplaneBlock(for target: BlockTarget, pending: PendingDrops) throws(DatapathError) -> DataplaneBlock? {
        let value: portcullis_block? = switch BlockSlot(target) {
        case .exactV4(let key): try blocksV4.lookup(key)
        case .exactV6(let key): try blocksV6.lookup(key)
        case .prefixV4(let key): try exactPrefix(key.prefixlen, try prefixesV4.lookup(key))?.block
        case .prefixV6(let key): try exactPrefix(key.prefixlen, try prefixesV6.lookup(key))?.block
        }
        if let value { return pending.adding(to: DataplaneBlock(target, value)) }
        return try dataplaneThrottle(for: target)
    }

    /// An LPM lookup answers with the longest prefix holding the key, which may be a shorter
    /// block around it; each value records its own prefix length.
    func exactPrefix(_ length: UInt32, _ value: portcullis_prefix_block?) throws(DatapathError) -> portcullis_prefix_block? {
        guard let value, value.prefixlen == length else { return nil }
        return value
    }

    /// Every entry of the block maps: for reconciling with the ledger at start-up and for the
    /// blocks that dropped most, never on a path that answers for one block.
    public func dataplaneBlocks() throws(DatapathError) -> [DataplaneBlock] {
        var blocks: [DataplaneBlock] = []
        for (key, value) in try blocksV4.entries(as: UInt32.self, portcullis_block.self) {
            blocks.append(DataplaneBlock(target(fromExactV4: key), value))
        }
        for (key, value) in try blocksV6.entries(as: portcullis_addr_v6.self, portcullis_block.self) {
            guard let target = target(fromExactV6: key) else { continue }
            blocks.append(DataplaneBlock(target, value))
        }
        // The LPM tries have no batch operations: walk their keys and read each.
        for key in try prefixesV4.keys(as: portcullis_lpm_v4.self) {
            if let target = target(fromPrefixV4: key), let value = try prefixesV4.lookup(key, as: portcullis_prefix_block.self) {
                blocks.append(DataplaneBlock(target, value.block))
            }
        }
        for key in try prefixesV6.keys(as: portcullis_lpm_v6.self) {
            if let target = target(fromPrefixV6: key), let value = try prefixesV6.lookup(key, as: portcullis_prefix_block.self) {
                blocks.append(DataplaneBlock(target, value.block))
            }
        }
        let pending = try pendingDrops()
        return blocks.map(pending.adding(to:)) + (try dataplaneThrottles())
    }

    // MARK: - Trie sizes

    /// Adds `sign` times each length's count to the prefix map's size and per-length counts.
    func adjustPrefixCounts(_ trie: Trie, _ counts: [UInt32: Int], by sign: Int) throws(DatapathError) {
        let total = counts.values.reduce(0, +)
        guard total > 0 else { return }
        try adjustSize(of: trie, by: sign * total)
        for (length, count) in counts.sorted(by: { $0.key < $1.key }) { try adjustPrefixLength(trie, length, by: sign * count) }
    }

    /// Raised before an insert and lowered after a delete, under the writer
    /// lock, so the data plane never skips a trie that holds an entry.
    func adjustSize(of trie: Trie, by delta: Int) throws(DatapathError) {
        var sizes = try trieSizes.lookup(UInt32(0), as: portcullis_trie_sizes.self) ?? portcullis_trie_sizes()
        func adjusted(_ value: UInt32) -> UInt32 { UInt32(max(0, Int(value) + delta)) }
        switch trie {
        case .allowV4: sizes.allow_v4 = adjusted(sizes.allow_v4)
        case .allowV6: sizes.allow_v6 = adjusted(sizes.allow_v6)
        case .prefixesV4: sizes.prefixes_v4 = adjusted(sizes.prefixes_v4)
        case .prefixesV6: sizes.prefixes_v6 = adjusted(sizes.prefixes_v6)
        case .throttlesV4: sizes.throttles_v4 = adjusted(sizes.throttles_v4)
        case .throttlesV6: sizes.throttles_v6 = adjusted(sizes.throttles_v6)
        case .throttlePrefixesV4: sizes.throttle_prefixes_v4 = adjusted(sizes.throttle_prefixes_v4)
        case .throttlePrefixesV6: sizes.throttle_prefixes_v6 = adjusted(sizes.throttle_prefixes_v6)
        }
        try trieSizes.update(UInt32(0), sizes)
    }

    /// Counts the prefix blocks of one length, and keeps the data plane's bit for that length set
    /// while there is any (raised before an insert, lowered after a delete, under the writer lock).
    func adjustPrefixLength(_ trie: Trie, _ length: UInt32, by delta: Int) throws(DatapathError) {
        let ipv4 = trie == .prefixesV4
        guard length <= (ipv4 ? 32 : 128) else { return }
        let slot = ipv4 ? length : 33 + length
        let count = try prefixLengths.lookup(slot, as: UInt32.self) ?? 0
        let adjusted = UInt32(max(0, Int(count) + delta))
        try prefixLengths.update(slot, adjusted)
        guard (count == 0) != (adjusted == 0) else { return }
        var sizes = try trieSizes.lookup(UInt32(0), as: portcullis_trie_sizes.self) ?? portcullis_trie_sizes()
        Self.setLength(length, ipv4: ipv4, inUse: adjusted > 0, in: &sizes)
        try trieSizes.update(UInt32(0), sizes)
    }

    private static func setLength(_ length: UInt32, ipv4: Bool, inUse: Bool, in sizes: inout portcullis_trie_sizes) {
        func set(_ word: inout UInt64, _ bit: UInt32) {
            if inUse { word |= 1 << UInt64(bit) } else { word &= ~(1 << UInt64(bit)) }
        }
        if ipv4 { return set(&sizes.prefix_lengths_v4, length) }
        switch length / 64 {
        case 0: set(&sizes.prefix_lengths_v6.0, length % 64)
        case 1: set(&sizes.prefix_lengths_v6.1, length % 64)
        default: set(&sizes.prefix_lengths_v6.2, length % 64)
        }
    }

    /// The prefix lengths the data plane looks up, IPv4 then IPv6, for tests.
    package func prefixLengthsInUse() throws(DatapathError) -> (ipv4: [UInt32], ipv6: [UInt32]) {
        let sizes = try trieSizes.lookup(UInt32(0), as: portcullis_trie_sizes.self) ?? portcullis_trie_sizes()
        let v4 = (0...32).filter { sizes.prefix_lengths_v4 & (1 << UInt64($0)) != 0 }.map(UInt32.init)
        let words = [sizes.prefix_lengths_v6.0, sizes.prefix_lengths_v6.1, sizes.prefix_lengths_v6.2]
        let v6 = (0...128).filter { words[$0 / 64] & (1 << UInt64($0 % 64)) != 0 }.map(UInt32.init)
        return (v4, v6)
    }

    /// Sets the counts to what the tries hold, mending any count a crash left too high.
    public func recountTries() throws(DatapathError) {
        var sizes = portcullis_trie_sizes()
        sizes.allow_v4 = UInt32(try allowV4.keys(as: portcullis_lpm_v4.self).count)
        sizes.allow_v6 = UInt32(try allowV6.keys(as: portcullis_lpm_v6.self).count)
        sizes.prefixes_v4 = UInt32(try prefixesV4.keys(as: portcullis_lpm_v4.self).count)
        sizes.prefixes_v6 = UInt32(try prefixesV6.keys(as: portcullis_lpm_v6.self).count)
        sizes.throttles_v4 = UInt32(try throttlesV4.keys(as: UInt32.self).count)
        sizes.throttles_v6 = UInt32(try throttlesV6.keys(as: portcullis_addr_v6.self).count)
        sizes.throttle_prefixes_v4 = UInt32(try throttlePrefixesV4.keys(as: portcullis_lpm_v4.self).count)
        sizes.throttle_prefixes_v6 = UInt32(try throttlePrefixesV6.keys(as: portcullis_lpm_v6.self).count)
        var counts = [UInt32](repeating: 0, count: Int(PORTCULLIS_PREFIX_LENGTH_SLOTS))
        for key in try prefixesV4.keys(as: portcullis_lpm_v4.self) where key.prefixlen <= 32 { counts[Int(key.prefixlen)] += 1 }
        for key in try prefixesV6.keys(as: portcullis_lpm_v6.self) where key.prefixlen <= 128 { counts[33 + Int(key.prefixlen)] += 1 }
        for (slot, count) in counts.enumerated() {
            try prefixLengths.update(UInt32(slot), count)
            let ipv4 = slot < 33
            Self.setLength(UInt32(ipv4 ? slot : slot - 33), ipv4: ipv4, inUse: count > 0, in: &sizes)
        }
        try trieSizes.update(UInt32(0), sizes)
    }

    package func trieSizeCounts() throws(DatapathError) -> [UInt32] {
        let sizes = try trieSizes.lookup(UInt32(0), as: portcullis_trie_sizes.self) ?? portcullis_trie_sizes()
        return [sizes.allow_v4, sizes.allow_v6, sizes.prefixes_v4, sizes.prefixes_v6]
    }

    /// The throttle maps' counts: exact IPv4, exact IPv6, IPv4 prefixes, IPv6 prefixes.
    package func throttleSizeCounts() throws(DatapathError) -> [UInt32] {
        let sizes = try trieSizes.lookup(UInt32(0), as: portcullis_trie_sizes.self) ?? portcullis_trie_sizes()
        return [sizes.throttles_v4, sizes.throttles_v6, sizes.throttle_prefixes_v4, sizes.throttle_prefixes_v6]
    }

    // MARK: - Allowlist

    /// Addresses and prefixes that are never dropped, whatever is blocked.
    public func allowlist() throws(DatapathError) -> [BlockTarget] {
        try allowlistEntries().map(\.target)
    }

    /// The allowlist entry that holds all of `target`. One longest-prefix lookup answers
    /// whether there is one (the trie finds the longest entry no longer than the target's
    /// own prefix); only then, which is rare, is the allowlist walked to name it.
    public func allowlistEntry(covering target: BlockTarget) throws(DatapathError) -> BlockTarget? {
        let covered = switch allowKey(target) {
        case .v4(let key): try allowV4.lookup(key, as: portcullis_allow.self) != nil
        case .v6(let key): try allowV6.lookup(key, as: portcullis_allow.self) != nil
        }
        guard covered else { return nil }
        return try allowlist().first { $0.contains(target) }
    }

    public func allowlistEntries() throws(DatapathError) -> [AllowlistEntry] {
        var entries: [AllowlistEntry] = []
        func origin(_ value: portcullis_allow?) -> AllowOrigin {
            value?.origin == AllowOrigin.configuration.raw ? .configuration : .command
        }
        for key in try allowV4.keys(as: portcullis_lpm_v4.self) {
            if let target = target(fromPrefixV4: key) {
                entries.append(AllowlistEntry(target: target, origin: origin(try allowV4.lookup(key, as: portcullis_allow.self))))
            }
        }
        for key in try allowV6.keys(as: portcullis_lpm_v6.self) {
            if let target = target(fromPrefixV6: key) {
                entries.append(AllowlistEntry(target: target, origin: origin(try allowV6.lookup(key, as: portcullis_allow.self))))
            }
        }
        return entries.sorted { $0.target < $1.target }
    }

    /// Adds to the allowlist; returns false when it was there already. The caller holds the
    /// writer lock.
    @discardableResult
    public func insertAllowed(_ target: BlockTarget, origin: AllowOrigin) throws(DatapathError) -> Bool {
        var value = portcullis_allow()
        value.added_unix_seconds = UInt64(time(nil))
        value.origin = origin.raw
        let key = allowKey(target)
        try adjustSize(of: key.trie, by: 1)
        let added: Bool
        do throws(DatapathError) {
            switch key {
            case .v4(let key): added = try allowV4.update(key, value, mode: .onlyNew)
            case .v6(let key): added = try allowV6.update(key, value, mode: .onlyNew)
            }
        } catch {
            try adjustSize(of: key.trie, by: -1)
            throw error
        }
        if !added { try adjustSize(of: key.trie, by: -1) }
        return added
    }

    /// Removes from the allowlist; returns false when it was not there. The caller holds the
    /// writer lock.
    @discardableResult
    public func removeAllowed(_ target: BlockTarget) throws(DatapathError) -> Bool {
        let key = allowKey(target)
        let removed = switch key {
        case .v4(let key): try allowV4.delete(key)
        case .v6(let key): try allowV6.delete(key)
        }
        if removed { try adjustSize(of: key.trie, by: -1) }
        return removed
    }

    private enum AllowKey {
        case v4(portcullis_lpm_v4), v6(portcullis_lpm_v6)
        var trie: Trie {
            switch self {
            case .v4: .allowV4
            case .v6: .allowV6
            }
        }
    }

    private func allowKey(_ target: BlockTarget) -> AllowKey {
        switch BlockSlot(target) {
        case .exactV4(let address):
            var key = portcullis_lpm_v4()
            key.prefixlen = 32
            withUnsafeMutableBytes(of: &key.addr) { $0.storeBytes(of: address, as: UInt32.self) }
            return .v4(key)
        case .exactV6(let address):
            var key = portcullis_lpm_v6()
            key.prefixlen = 128
            key.addr = address.addr
            return .v6(key)
        case .prefixV4(let key): return .v4(key)
        case .prefixV6(let key): return .v6(key)
        }
    }
}

extension DataplaneBlock {
    init(_ target: BlockTarget, _ value: portcullis_block) {
        self.init(target: target, expiry: Expiry(jiffies: value.expires_jiffies),
                  droppedPackets: value.dropped_packets, droppedBytes: value.dropped_bytes)
    }
}

extension AllowOrigin {
    var raw: UInt32 {
        self == .configuration ? UInt32(PORTCULLIS_ALLOW_CONFIG.rawValue) : UInt32(PORTCULLIS_ALLOW_COMMAND.rawValue)
    }
}
