import PortcullisBPF
import PortcullisCore
import PortcullisIncidents
import PortcullisLedger
import PortcullisSystem

/// One refresh of the live view (`portcullis top`, `GET /v1/top`): rates per interface, the
/// blocks dropping most now, those about to expire and the latest incidents.
public struct TopSample: Codable, Sendable {
    public var time: String
    public var timeUnixMs: Int64
    /// What the rates are measured over: the time since the round before. nil on the first
    /// round, which has no rates yet.
    public var intervalSeconds: Double?
    /// One per counter slot that saw packets, named by the attachments on its ifindex.
    public var interfaces: [TopInterface]
    /// Every interface summed.
    public var total: TopInterface
    /// The blocks watched now, most packets per second first.
    public var blocks: [TopBlock]
    /// Blocks in force that expire soonest, soonest first.
    public var expiring: [BlockRecord]
    /// The latest incident records, newest first.
    public var incidents: [Incident]
    public var sampling: TopSampling
}

public struct TopInterface: Codable, Sendable, Equatable {
    /// The counter slot (the ifindex, or 0 for ifindexes too large for a slot); nil for the total.
    public var slot: UInt32?
    /// The attachments counted in this slot, "eth0" or "eth0 in netns lab".
    public var names: [String]
    public var seen: UInt64
    public var dropped: UInt64
    public var droppedBytes: UInt64
    /// Every packet not dropped: no block, allowlisted, an expired block, not IP, unparseable.
    public var passed: UInt64
    public var seenPerSecond: Double?
    public var droppedPerSecond: Double?
    public var droppedBytesPerSecond: Double?
    public var passedPerSecond: Double?

    public init(slot: UInt32?, names: [String], _ now: PacketStatistics, since earlier: PacketStatistics?, over seconds: Double?) {
        (self.slot, self.names) = (slot, names)
        (seen, dropped, droppedBytes) = (now.seen, now.dropped, now.droppedBytes)
        passed = now.seen >= now.dropped ? now.seen - now.dropped : 0
        guard let earlier, let seconds, seconds > 0 else { return }
        let earlierPassed = earlier.seen >= earlier.dropped ? earlier.seen - earlier.dropped : 0
        func rate(_ from: UInt64, _ to: UInt64) -> Double { Double(DropRate.increase(from, to)) / seconds }
        seenPerSecond = rate(earlier.seen, now.seen)
        droppedPerSecond = rate(earlier.dropped, now.dropped)
        droppedBytesPerSecond = rate(earlier.droppedBytes, now.droppedBytes)
        passedPerSecond = rate(earlierPassed, passed)
    }
}

public struct TopBlock: Codable, Sendable, Equatable {
    public var target: String
    public var packetsPerSecond: Double
    public var bytesPerSecond: Double
    public var droppedPackets: UInt64
    public var droppedBytes: UInt64
    public var permanent: Bool
    public var expired: Bool
    public var remainingSeconds: Double?
    public var expiresAtUnixMs: Int64?
    /// nil when the ledger does not describe the block.
    public var source: BlockSource?
    public var reason: String

    public init(_ watched: WatchedBlock, entry: BlockEntry?) {
        target = watched.target.description
        packetsPerSecond = watched.rate.packetsPerSecond
        bytesPerSecond = watched.rate.bytesPerSecond
        droppedPackets = watched.counters.packets
        droppedBytes = watched.counters.bytes
        permanent = entry?.isPermanent ?? true
        expired = entry?.isExpired ?? false
        remainingSeconds = entry?.remaining?.fractionalSeconds
        expiresAtUnixMs = entry?.expiresUnixMilliseconds
        source = entry?.source
        reason = entry?.reason ?? ""
    }

    /// The typed block again, for ranking; nil when the target does not parse (a broken answer).
    public var watched: WatchedBlock? {
        guard let target = try? BlockTarget.parse(target).target else { return nil }
        return WatchedBlock(target: target, counters: DropCounters(packets: droppedPackets, bytes: droppedBytes),
                            rate: DropRate(packetsPerSecond: packetsPerSecond, bytesPerSecond: bytesPerSecond),
                            expiresUnixMilliseconds: expiresAtUnixMs)
    }
}

/// What a round of sampling read and cost: the proof that it stays bounded.
public struct TopSampling: Codable, Sendable, Equatable {
    /// Blocks in the ledger (what the maps hold once reconciled).
    public var blocksHeld: Int
    /// Entries of the maps this round's slice read, and the slice's limits.
    public var scanned: Int
    public var exactSlice: Int
    public var prefixSlice: Int
    /// Blocks read by key this round: the watched ones and last round's candidates.
    public var readByKey: Int
    public var watched: Int
    public var candidates: Int
    /// How long the last whole trip of the cursor round the exact maps took; nil until one ended.
    public var passSeconds: Double?
    /// The time this round's reads of the maps took.
    public var roundMicroseconds: Int
}

/// Samples the live view from a blocklist's maps and ledger at a bounded cost per round (see
/// ``TopTracker``): one slice of the maps, the watched blocks by key, the per-interface counters,
/// and a few indexed ledger rows. Rounds are at least ``minimumSpacing`` apart however often it
/// is asked, so any number of viewers of one daemon cost what one does. Not thread-safe: the
/// daemon's reader runs it under its lock.
public final class TopSampler {
    public static let defaultExactSlice = 65_536
    public static let defaultPrefixSlice = 4_096
    public static let minimumSpacing: Duration = .milliseconds(500)
    /// The most of each list one sample describes.
    public static let maximumBlocks = 256, maximumExpiring = 100, maximumIncidents = 100

    let exactSlice: Int
    let prefixSlice: Int
    private var tracker: TopTracker
    private var cursor = BlockScanCursor()
    private let origin = ContinuousClock.now
    private var lastRound: ContinuousClock.Instant?
    private var interfaceCounters: [UInt32: PacketStatistics] = [:]
    private var interfaces: [TopInterface] = []
    private var total: TopInterface?
    private var interval: Double?
    private var passStarted: ContinuousClock.Instant?
    private var lastPass: Duration?
    private var sampling: TopSampling?

    public init(exactSlice: Int = defaultExactSlice, prefixSlice: Int = defaultPrefixSlice, tracker: TopTracker = TopTracker()) {
        (self.exactSlice, self.prefixSlice, self.tracker) = (max(1, exactSlice), max(1, prefixSlice), tracker)
    }

    /// The live view now: a new round when the last is at least ``minimumSpacing`` old, else the
    /// last round's rates, with the ledger's lists read afresh.
    public func sample(_ blocklist: LocalBlocklist, blocks: Int = maximumBlocks, expiring: Int = 10, incidents: Int = 10) throws(ServiceError) -> TopSample {
        let started = ContinuousClock.now
        if lastRound.map({ started - $0 >= Self.minimumSpacing }) ?? true {
            try round(blocklist, at: started)
        }
        let nowMilliseconds = WallClock.nowUnixMilliseconds()
        let ledger = blocklist.ledger
        var described: [TopBlock] = []
        for watched in TopOrder.pps.ranked(tracker.watchedBlocks).prefix(max(0, min(blocks, Self.maximumBlocks))) {
            let block = try ServiceError.mapping { () throws(LedgerError) in try ledger.block(for: watched.target) }
            let entry = block.map { LocalBlocklist.entry($0, counters: nil, at: nowMilliseconds) }
            described.append(TopBlock(watched, entry: entry))
        }
        let soonest = try ServiceError.mapping { () throws(LedgerError) in
            try ledger.expiringSoonest(after: nowMilliseconds, limit: max(0, min(expiring, Self.maximumExpiring)))
        }
        let counters = try ServiceError.mapping { () throws(DatapathError) in
            try blocklist.datapath.dataplaneBlocks(for: soonest.lazy.map(\.target))
        }
        let expiringRecords = soonest.map { BlockRecord(LocalBlocklist.entry($0, counters: counters[$0.target], at: nowMilliseconds)) }
        let wanted = max(0, min(incidents, Self.maximumIncidents))
        let latest = wanted == 0 ? [] : try blocklist.incidents(try IncidentQuery(since: nil, address: nil), limit: wanted, log: blocklist.recorder.log)
        let counts = try blocklist.counts()
        var sampling = self.sampling ?? TopSampling(
            blocksHeld: 0, scanned: 0, exactSlice: exactSlice, prefixSlice: prefixSlice, readByKey: 0, watched: 0, candidates: 0,
            passSeconds: nil, roundMicroseconds: 0)
        sampling.blocksHeld = counts.count()
        return TopSample(
            time: Incident.rfc3339(unixMilliseconds: nowMilliseconds), timeUnixMs: nowMilliseconds, intervalSeconds: interval,
            interfaces: interfaces,
            total: total ?? TopInterface(slot: nil, names: ["all"], PacketStatistics(), since: nil, over: nil),
            blocks: described, expiring: expiringRecords, incidents: latest.reversed(), sampling: sampling)
    }

    private func round(_ blocklist: LocalBlocklist, at started: ContinuousClock.Instant) throws(ServiceError) {
        let datapath = blocklist.datapath
        let keys = tracker.keysToRead
        var byKey: [BlockTarget: DropCounters] = [:]
        let slice = try ServiceError.mapping { () throws(DatapathError) -> BlockScanSlice in
            for (target, block) in try datapath.dataplaneBlocks(for: keys) {
                byKey[target] = DropCounters(packets: block.droppedPackets, bytes: block.droppedBytes)
            }
            return try datapath.scanBlockCounters(&cursor, exactLimit: exactSlice, prefixLimit: prefixSlice)
        }
        let byInterface = try ServiceError.mapping { () throws(DatapathError) in try datapath.statisticsByInterface() }
        let attachments = (try? datapath.attachments()) ?? []
        let finished = ContinuousClock.now
        let seconds = (started - origin).fractionalSeconds
        tracker.advance(
            byKey: byKey, scanned: slice.blocks.map { ($0.target, DropCounters(packets: $0.droppedPackets, bytes: $0.droppedBytes)) },
            at: seconds)

        let elapsed = lastRound.map { (started - $0).fractionalSeconds }
        var named: [UInt32: [String]] = [:]
        for attachment in attachments {
            let slot = attachment.interfaceIndex < PacketStatistics.interfaceSlots ? attachment.interfaceIndex : 0
            named[slot, default: []].append(attachment.displayName)
        }
        interfaces = byInterface.keys.sorted().map { slot in
            TopInterface(slot: slot, names: named[slot] ?? [slot == 0 ? "other ifindexes" : "ifindex \(slot)"],
                         byInterface[slot] ?? PacketStatistics(), since: lastRound == nil ? nil : interfaceCounters[slot] ?? PacketStatistics(),
                         over: elapsed)
        }
        func summed(_ counters: [UInt32: PacketStatistics]) -> PacketStatistics {
            counters.values.reduce(into: PacketStatistics()) { $0.add($1) }
        }
        total = TopInterface(slot: nil, names: ["all"], summed(byInterface), since: lastRound == nil ? nil : summed(interfaceCounters), over: elapsed)
        interfaceCounters = byInterface
        interval = elapsed

        if passStarted == nil { passStarted = started }
        if slice.finishedExactPass, let began = passStarted {
            lastPass = finished - began
            passStarted = finished
        }
        sampling = TopSampling(
            blocksHeld: 0, scanned: slice.blocks.count, exactSlice: exactSlice, prefixSlice: prefixSlice, readByKey: keys.count,
            watched: tracker.watchedCount, candidates: tracker.candidateCount, passSeconds: lastPass?.fractionalSeconds,
            roundMicroseconds: Int((finished - started).fractionalSeconds * 1_000_000))
        lastRound = started
    }
}
