import CLibbpf
import Glibc
import PortcullisCore

extension BlockSource {
    /// The value `enum portcullis_source` gives this source in a map value.
    var raw: UInt32 {
        switch self {
        case .cli: UInt32(PORTCULLIS_SOURCE_CLI.rawValue)
        case .file: UInt32(PORTCULLIS_SOURCE_FILE.rawValue)
        case .wazuh: UInt32(PORTCULLIS_SOURCE_WAZUH.rawValue)
        case .detector: UInt32(PORTCULLIS_SOURCE_DETECTOR.rawValue)
        case .api: UInt32(PORTCULLIS_SOURCE_API.rawValue)
        }
    }

    init?(raw: UInt32) {
        guard let source = Self.allCases.first(where: { $0.raw == raw }) else { return nil }
        self = source
    }
}

extension BlockRequest {
    /// Longer reasons are cut at a character boundary to fit the pinned record.
    public static let maximumReasonBytes = Int(PORTCULLIS_REASON_MAX) - 1
}

extension AllowOrigin {
    var raw: UInt32 {
        self == .configuration ? UInt32(PORTCULLIS_ALLOW_CONFIG.rawValue) : UInt32(PORTCULLIS_ALLOW_COMMAND.rawValue)
    }
}

extension Datapath {
    // MARK: - Blocking

    /// Blocks one target, or refreshes its block. The allowlist and the loopback
    /// rule win over every request; a refresh keeps the drop counters and never
    /// shortens a longer block.
    public func block(_ request: BlockRequest) throws(DatapathError) -> BlockOutcome {
        try admit(request.target, allowlist: [])
        let lock = try pins.lockForWriting()
        defer { withExtendedLifetime(lock) {} }
        try admit(request.target, allowlist: allowlist())
        return try write(request, at: try now())
    }

    /// Blocks many targets at once under one lock, with batched map updates for
    /// exact addresses; an already blocked target is refreshed as by ``block(_:)``.
    /// All or nothing: every request is admitted, and every map checked for room, before
    /// anything changes; a map without room for the batch is named in the error.
    public func block(batch requests: [BlockRequest]) throws(DatapathError) -> BatchOutcome {
        for request in requests { try admit(request.target, allowlist: []) }
        let lock = try pins.lockForWriting()
        defer { withExtendedLifetime(lock) {} }
        let allowed = try allowlist()
        if !allowed.isEmpty {
            for request in requests { try admit(request.target, allowlist: allowed) }
        }
        let reading = try now()
        var outcome = BatchOutcome()
        var v4: [(UInt32, BlockRequest)] = []
        var v6: [(portcullis_addr_v6, BlockRequest)] = []
        var prefixes: [BlockRequest] = []
        for request in requests {
            switch BlockSlot(request.target) {
            case .exactV4(let key): v4.append((key, request))
            case .exactV6(let key): v6.append((key, request))
            case .prefixV4, .prefixV6: prefixes.append(request)
            }
        }
        let planV4 = try plan(v4, in: blocksV4, at: reading, outcome: &outcome) { $0 }
        let planV6 = try plan(v6, in: blocksV6, at: reading, outcome: &outcome) { key in
            withUnsafeBytes(of: key.addr) { Key128(high: $0.load(as: UInt64.self), low: $0.load(fromByteOffset: 8, as: UInt64.self)) }
        }
        try requireRoom(forPrefixes: prefixes)
        for request in prefixes { outcome.count(try write(request, at: reading).change) }
        try planV4.write(into: blocksV4)
        try planV6.write(into: blocksV6)
        return outcome
    }

    /// The values a batch leaves in one exact map, merged with what it holds.
    private struct BatchPlan<Key: BitwiseCopyable> {
        var keys: [Key] = []
        var values: [portcullis_block] = []

        /// A chunk at a time, with one bpf(BPF_MAP_UPDATE_BATCH) each.
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

    /// Merges a batch with the map's entries, read once in batches, so a refresh keeps its
    /// counters and start exactly as ``block(_:)`` would; a target listed twice is merged
    /// in order. Throws, writing nothing, when the map has no room for the new keys.
    private func plan<Key: BitwiseCopyable, KeyID: Hashable>(
        _ items: [(Key, BlockRequest)], in map: BPFMap, at reading: ClockReading, outcome: inout BatchOutcome,
        id: (Key) -> KeyID
    ) throws(DatapathError) -> BatchPlan<Key> {
        var plan = BatchPlan<Key>()
        guard !items.isEmpty else { return plan }
        // Expired entries still take a slot until a sweep; a key present in any state needs no new one.
        var present: [KeyID: portcullis_block] = [:]
        for (key, value) in try map.entries(as: Key.self, portcullis_block.self) { present[id(key)] = value }
        var position: [KeyID: Int] = [:]
        plan.keys.reserveCapacity(items.count)
        plan.values.reserveCapacity(items.count)
        position.reserveCapacity(items.count)
        var newKeys = 0
        for (key, request) in items {
            let keyID = id(key)
            if let index = position[keyID] {
                // Listed twice: the later request refreshes what the earlier one set.
                let (value, change) = merged(request, into: plan.values[index], at: reading)
                plan.values[index] = value
                outcome.count(change)
            } else {
                let previous = present[keyID]
                if previous == nil { newKeys += 1 }
                let (value, change) = merged(request, into: previous, at: reading)
                position[keyID] = plan.keys.count
                plan.keys.append(key)
                plan.values.append(value)
                outcome.count(change)
            }
        }
        let room = Int(map.maxEntries) - present.count
        if newKeys > room {
            throw DatapathError(.full, "map \(map.name) has room for \(max(room, 0)) more entries (capacity \(map.maxEntries)) but the batch adds \(newKeys); nothing was blocked (sweep or unblock entries, or recreate the state with a larger --capacity)")
        }
        return plan
    }

    /// Throws, before anything is written, when a prefix trie has no room for the new prefixes.
    private func requireRoom(forPrefixes requests: [BlockRequest]) throws(DatapathError) {
        guard !requests.isEmpty else { return }
        var newPrefixes: [Trie: Set<BlockTarget>] = [:]
        for request in requests where try lookup(request.target) == nil {
            if let trie = BlockSlot(request.target).trie { newPrefixes[trie, default: []].insert(request.target) }
        }
        let counts = try trieSizeCounts()
        for (trie, targets) in newPrefixes {
            let (map, held) = trie == .prefixesV4 ? (prefixesV4, counts[2]) : (prefixesV6, counts[3])
            let room = Int(map.maxEntries) - Int(held)
            if targets.count > room {
                throw DatapathError(.full, "map \(map.name) has room for \(max(room, 0)) more prefixes (capacity \(map.maxEntries)) but the batch adds \(targets.count); nothing was blocked (unblock prefixes, or recreate the state with a larger --prefix-capacity)")
            }
        }
    }

    /// Sets one block under the writer lock.
    private func write(_ request: BlockRequest, at reading: ClockReading) throws(DatapathError) -> BlockOutcome {
        let existing = try lookup(request.target)
        let (value, change) = merged(request, into: existing, at: reading)
        let slot = BlockSlot(request.target)
        if existing == nil, let trie = slot.trie { try adjustSize(of: trie, by: 1) }
        try store(value, in: slot)
        return BlockOutcome(entry: entry(request.target, value, reading), change: change)
    }

    /// The value a request leaves, by ``BlockPolicy/refresh(_:with:)``: a live block keeps
    /// its counters and start whatever the outcome. An expired block that no sweep removed
    /// yet counts as absent: a new incident.
    private func merged(_ request: BlockRequest, into previous: portcullis_block?, at reading: ClockReading) -> (portcullis_block, BlockChange) {
        var value = newBlock(for: request, at: reading)
        guard let previous, !reading.isExpired(previous.expires_jiffies) else { return (value, .added) }
        let (terms, change) = BlockPolicy.refresh(terms(of: previous), with: terms(of: value))
        value.dropped_packets = previous.dropped_packets
        value.dropped_bytes = previous.dropped_bytes
        value.created_unix_ms = previous.created_unix_ms
        value.expires_jiffies = switch terms.expiry {
        case .never: PORTCULLIS_PERMANENT
        case .at(let jiffies): jiffies
        }
        value.requested_seconds = terms.requestedDuration.map { UInt64(max($0.components.seconds, 0)) } ?? 0
        value.source = terms.source?.raw ?? previous.source
        setCString(terms.reason, into: &value.reason)
        return (value, change)
    }

    private func terms(of value: portcullis_block) -> BlockTerms<UInt64> {
        BlockTerms(
            expiry: value.expires_jiffies == PORTCULLIS_PERMANENT ? .never : .at(value.expires_jiffies),
            source: BlockSource(raw: value.source), reason: string(fromCString: value.reason),
            requestedDuration: value.requested_seconds > 0 ? .seconds(Int64(value.requested_seconds)) : nil)
    }

    /// A 128-bit key, hashed cheaply while merging a batch.
    private struct Key128: Hashable { let high: UInt64, low: UInt64 }

    private func newBlock(for request: BlockRequest, at reading: ClockReading) -> portcullis_block {
        var value = portcullis_block()
        value.expires_jiffies = request.duration.map(reading.expiry(after:)) ?? PORTCULLIS_PERMANENT
        value.created_unix_ms = reading.unixMilliseconds
        value.refreshed_unix_ms = reading.unixMilliseconds
        value.requested_seconds = request.duration.map { UInt64(max($0.components.seconds, 0)) } ?? 0
        value.source = request.source.raw
        value.prefixlen = UInt8(request.target.asPrefix.length)
        setCString(request.reason, into: &value.reason)
        return value
    }

    /// The admission rule, as the data path's own last line of defence: every caller
    /// checks first, and a request that slipped past changes nothing here.
    private func admit(_ target: BlockTarget, allowlist: [BlockTarget]) throws(DatapathError) {
        do {
            try Admission.check(target, allowlist: allowlist)
        } catch {
            throw DatapathError(.refused, error.description)
        }
    }

    // MARK: - Map access by slot

    private func lookup(_ target: BlockTarget) throws(DatapathError) -> portcullis_block? {
        switch BlockSlot(target) {
        case .exactV4(let key): return try blocksV4.lookup(key)
        case .exactV6(let key): return try blocksV6.lookup(key)
        case .prefixV4(let key): return try exactly(key.prefixlen, try prefixesV4.lookup(key))
        case .prefixV6(let key): return try exactly(key.prefixlen, try prefixesV6.lookup(key))
        }
    }

    /// An LPM lookup answers with the longest prefix holding the key, which may
    /// be a shorter block around it; each value records its own prefix length.
    private func exactly(_ length: UInt32, _ value: portcullis_block?) throws(DatapathError) -> portcullis_block? {
        guard let value, UInt32(value.prefixlen) == length else { return nil }
        return value
    }

    private func store(_ value: portcullis_block, in slot: BlockSlot) throws(DatapathError) {
        switch slot {
        case .exactV4(let key): try blocksV4.update(key, value)
        case .exactV6(let key): try blocksV6.update(key, value)
        case .prefixV4(let key): try prefixesV4.update(key, value)
        case .prefixV6(let key): try prefixesV6.update(key, value)
        }
    }

    private func remove(_ slot: BlockSlot) throws(DatapathError) -> Bool {
        let removed = switch slot {
        case .exactV4(let key): try blocksV4.delete(key)
        case .exactV6(let key): try blocksV6.delete(key)
        case .prefixV4(let key): try prefixesV4.delete(key)
        case .prefixV6(let key): try prefixesV6.delete(key)
        }
        if removed, let trie = slot.trie { try adjustSize(of: trie, by: -1) }
        return removed
    }

    // MARK: - Trie sizes

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
        }
        try trieSizes.update(UInt32(0), sizes)
    }

    /// Sets the counts to what the tries hold, mending any count a crash left too high.
    func recountTries() throws(DatapathError) {
        var sizes = portcullis_trie_sizes()
        sizes.allow_v4 = UInt32(try allowV4.keys(as: portcullis_lpm_v4.self).count)
        sizes.allow_v6 = UInt32(try allowV6.keys(as: portcullis_lpm_v6.self).count)
        sizes.prefixes_v4 = UInt32(try prefixesV4.keys(as: portcullis_lpm_v4.self).count)
        sizes.prefixes_v6 = UInt32(try prefixesV6.keys(as: portcullis_lpm_v6.self).count)
        try trieSizes.update(UInt32(0), sizes)
    }

    package func trieSizeCounts() throws(DatapathError) -> [UInt32] {
        let sizes = try trieSizes.lookup(UInt32(0), as: portcullis_trie_sizes.self) ?? portcullis_trie_sizes()
        return [sizes.allow_v4, sizes.allow_v6, sizes.prefixes_v4, sizes.prefixes_v6]
    }

    // MARK: - Unblocking

    /// Removes a block; returns it as it was (with its final counters), or nil
    /// when the target was not blocked, which is not an error.
    public func unblock(_ target: BlockTarget) throws(DatapathError) -> BlockEntry? {
        switch try unblock(target, onlyFrom: nil) {
        case .removed(let entry): entry
        case .absent, .keptForOwner: nil
        }
    }

    /// Removes a block, or with `source`, only a block that source set, by
    /// ``BlockPolicy/mayLift(ownedBy:isExpired:requestedBy:)``.
    public func unblock(_ target: BlockTarget, onlyFrom source: BlockSource?) throws(DatapathError) -> UnblockOutcome {
        let lock = try pins.lockForWriting()
        defer { withExtendedLifetime(lock) {} }
        let reading = try now()
        guard let value = try lookup(target) else { return .absent }
        let current = entry(target, value, reading)
        guard BlockPolicy.mayLift(ownedBy: current.source, isExpired: current.isExpired, requestedBy: source) else {
            return .keptForOwner(current)
        }
        guard try remove(BlockSlot(target)) else { return .absent }
        return .removed(current)
    }

    // MARK: - Listing

    /// Every block in the maps, expired ones included until a sweep removes them.
    public func list() throws(DatapathError) -> [BlockEntry] {
        let reading = try now()
        var entries: [BlockEntry] = []
        for (key, value) in try blocksV4.entries(as: UInt32.self, portcullis_block.self) {
            entries.append(entry(target(fromExactV4: key), value, reading))
        }
        for (key, value) in try blocksV6.entries(as: portcullis_addr_v6.self, portcullis_block.self) {
            guard let target = target(fromExactV6: key) else { continue }
            entries.append(entry(target, value, reading))
        }
        for (target, value) in try prefixEntries() { entries.append(entry(target, value, reading)) }
        return entries
    }

    /// The LPM tries have no batch operations: walk their keys and read each.
    private func prefixEntries() throws(DatapathError) -> [(BlockTarget, portcullis_block)] {
        var result: [(BlockTarget, portcullis_block)] = []
        for key in try prefixesV4.keys(as: portcullis_lpm_v4.self) {
            if let target = target(fromPrefixV4: key), let value = try prefixesV4.lookup(key, as: portcullis_block.self) {
                result.append((target, value))
            }
        }
        for key in try prefixesV6.keys(as: portcullis_lpm_v6.self) {
            if let target = target(fromPrefixV6: key), let value = try prefixesV6.lookup(key, as: portcullis_block.self) {
                result.append((target, value))
            }
        }
        return result
    }

    /// One block, or nil.
    public func entry(for target: BlockTarget) throws(DatapathError) -> BlockEntry? {
        let reading = try now()
        return try lookup(target).map { entry(target, $0, reading) }
    }

    private func entry(_ target: BlockTarget, _ value: portcullis_block, _ reading: ClockReading) -> BlockEntry {
        let permanent = value.expires_jiffies == PORTCULLIS_PERMANENT
        return BlockEntry(
            target: target,
            remaining: permanent ? nil : reading.remaining(until: value.expires_jiffies),
            expiresUnixMilliseconds: permanent ? nil : reading.unixMilliseconds(at: value.expires_jiffies),
            isExpired: reading.isExpired(value.expires_jiffies),
            droppedPackets: value.dropped_packets,
            droppedBytes: value.dropped_bytes,
            reason: string(fromCString: value.reason),
            source: BlockSource(raw: value.source),
            createdUnixMilliseconds: value.created_unix_ms,
            refreshedUnixMilliseconds: value.refreshed_unix_ms,
            requestedDuration: value.requested_seconds > 0 ? .seconds(Int64(value.requested_seconds)) : nil)
    }

    // MARK: - Sweeping

    /// Removes expired blocks. The data plane already lets their traffic pass;
    /// this frees the memory and reports each removed block's outcome.
    public func sweep() throws(DatapathError) -> SweepReport {
        let started = ContinuousClock.now
        let lock = try pins.lockForWriting()
        defer { withExtendedLifetime(lock) {} }
        let reading = try now()
        var removed: [BlockEntry] = []

        let exactV4 = try blocksV4.entries(as: UInt32.self, portcullis_block.self)
        let expiredV4 = exactV4.filter { reading.isExpired($0.value.expires_jiffies) }
        _ = try blocksV4.deleteBatch(expiredV4.map(\.key))
        removed += expiredV4.map { entry(target(fromExactV4: $0.key), $0.value, reading) }

        let exactV6 = try blocksV6.entries(as: portcullis_addr_v6.self, portcullis_block.self)
        let expiredV6 = exactV6.filter { reading.isExpired($0.value.expires_jiffies) }
        _ = try blocksV6.deleteBatch(expiredV6.map(\.key))
        removed += expiredV6.compactMap { item in target(fromExactV6: item.key).map { entry($0, item.value, reading) } }

        let prefixes = try prefixEntries()
        for (target, value) in prefixes where reading.isExpired(value.expires_jiffies) {
            guard try remove(BlockSlot(target)) else { continue }
            removed.append(entry(target, value, reading))
        }
        try recountTries()
        return SweepReport(
            removed: removed, scanned: exactV4.count + exactV6.count + prefixes.count,
            elapsed: ContinuousClock.now - started)
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

    /// Adds to the allowlist; returns false when it was there already.
    @discardableResult
    public func allow(_ target: BlockTarget, origin: AllowOrigin = .command) throws(DatapathError) -> Bool {
        let lock = try pins.lockForWriting()
        defer { withExtendedLifetime(lock) {} }
        return try insertAllowed(target, origin: origin)
    }

    private func insertAllowed(_ target: BlockTarget, origin: AllowOrigin) throws(DatapathError) -> Bool {
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

    /// Removes from the allowlist; returns false when it was not there.
    @discardableResult
    public func disallow(_ target: BlockTarget) throws(DatapathError) -> Bool {
        let lock = try pins.lockForWriting()
        defer { withExtendedLifetime(lock) {} }
        return try removeAllowed(target)
    }

    private func removeAllowed(_ target: BlockTarget) throws(DatapathError) -> Bool {
        let key = allowKey(target)
        let removed = switch key {
        case .v4(let key): try allowV4.delete(key)
        case .v6(let key): try allowV6.delete(key)
        }
        if removed { try adjustSize(of: key.trie, by: -1) }
        return removed
    }

    /// Makes the configuration's entries exactly `targets`: adds the missing ones
    /// and removes configuration entries no longer listed. Entries added by a
    /// command are left alone. Returns what changed.
    public func synchronizeConfiguredAllowlist(_ targets: [BlockTarget]) throws(DatapathError) -> (added: [BlockTarget], removed: [BlockTarget]) {
        let lock = try pins.lockForWriting()
        defer { withExtendedLifetime(lock) {} }
        let wanted = Set(targets)
        var added: [BlockTarget] = []
        var removed: [BlockTarget] = []
        let existing = try allowlistEntries()
        for entry in existing where entry.origin == .configuration && !wanted.contains(entry.target) {
            if try removeAllowed(entry.target) { removed.append(entry.target) }
        }
        let present = Set(existing.map(\.target))
        for target in targets where !present.contains(target) {
            if try insertAllowed(target, origin: .configuration) { added.append(target) }
        }
        try recountTries()
        return (added, removed)
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
