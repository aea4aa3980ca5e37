/// A block's cumulative drop counters, as the data plane holds them at one moment.
public struct DropCounters: Sendable, Equatable, Hashable {
    public var packets: UInt64
    public var bytes: UInt64

    public init(packets: UInt64, bytes: UInt64) {
        (self.packets, self.bytes) = (packets, bytes)
    }

    public static let zero = DropCounters(packets: 0, bytes: 0)
}

/// Packets and bytes per second between two readings of the same counters.
public struct DropRate: Sendable, Equatable {
    public var packetsPerSecond: Double
    public var bytesPerSecond: Double

    public init(packetsPerSecond: Double, bytesPerSecond: Double) {
        (self.packetsPerSecond, self.bytesPerSecond) = (packetsPerSecond, bytesPerSecond)
    }

    public static let zero = DropRate(packetsPerSecond: 0, bytesPerSecond: 0)

    /// The rate from `earlier` to `later`, `seconds` apart; nil when no time passed. A counter
    /// that went down belongs to a block removed and added again in between: all it holds is new.
    public init?(from earlier: DropCounters, to later: DropCounters, over seconds: Double) {
        guard seconds > 0, seconds.isFinite else { return nil }
        self.init(packetsPerSecond: Double(Self.increase(earlier.packets, later.packets)) / seconds,
                  bytesPerSecond: Double(Self.increase(earlier.bytes, later.bytes)) / seconds)
    }

    /// How much a cumulative counter grew; a counter that restarted counts from zero.
    public static func increase(_ earlier: UInt64, _ later: UInt64) -> UInt64 {
        later >= earlier ? later - earlier : later
    }
}

/// How the live view orders the blocks it shows.
public enum TopOrder: String, Sendable, CaseIterable, Codable {
    /// Packets dropped per second now, most first.
    case pps
    /// Bytes dropped per second now, most first.
    case bps
    /// Packets dropped since the block began, most first.
    case total
    /// Soonest expiry first; permanent blocks last.
    case expiry
}

/// One block the live view watches: what it dropped in all, its rate now, and when it ends.
public struct WatchedBlock: Sendable, Equatable {
    public var target: BlockTarget
    public var counters: DropCounters
    public var rate: DropRate
    /// nil for a permanent block, or a block the ledger does not describe.
    public var expiresUnixMilliseconds: Int64?

    public init(target: BlockTarget, counters: DropCounters, rate: DropRate, expiresUnixMilliseconds: Int64? = nil) {
        (self.target, self.counters, self.rate, self.expiresUnixMilliseconds) = (target, counters, rate, expiresUnixMilliseconds)
    }
}

extension TopOrder {
    /// `blocks` in this order; ties go to the target order, so a redraw never shuffles equals.
    public func ranked(_ blocks: [WatchedBlock]) -> [WatchedBlock] {
        blocks.sorted { a, b in
            switch self {
            case .pps where a.rate.packetsPerSecond != b.rate.packetsPerSecond:
                return a.rate.packetsPerSecond > b.rate.packetsPerSecond
            case .bps where a.rate.bytesPerSecond != b.rate.bytesPerSecond:
                return a.rate.bytesPerSecond > b.rate.bytesPerSecond
            case .total where a.counters.packets != b.counters.packets:
                return a.counters.packets > b.counters.packets
            case .expiry where a.expiresUnixMilliseconds != b.expiresUnixMilliseconds:
                switch (a.expiresUnixMilliseconds, b.expiresUnixMilliseconds) {
                case (let x?, let y?): return x < y
                case (.some, nil): return true
                default: return false
                }
            default:
                return a.target < b.target
            }
        }
    }
}

/// Which blocks are dropping the most now, found without reading every block every second.
///
/// Each round the caller reads by key the blocks in ``keysToRead`` (the watched ones and the
/// candidates picked last round) and one slice of the maps from a cursor that goes round them
/// over many rounds, and hands both to ``advance(byKey:scanned:at:)``. A candidate gets a rate
/// from its two readings a round apart and joins the watched blocks if it ranks among the
/// `watchCapacity` fastest; the slowest are let go. A slice's entries that dropped since the slice
/// last saw them become candidates, the `probeCapacity` that dropped most of them. Every round
/// thus costs one slice plus at most `watchCapacity + probeCapacity` lookups, however many
/// blocks the maps hold, and a block that starts dropping is found within one trip of the
/// cursor round the maps.
public struct TopTracker: Sendable {
    public let watchCapacity: Int
    public let probeCapacity: Int
    /// How many blocks' last-seen counters the slice comparison remembers; past it, forgotten.
    public let memoryCapacity: Int

    private struct Reading: Sendable {
        var counters: DropCounters
        var seconds: Double
    }

    private var watched: [BlockTarget: (reading: Reading, rate: DropRate)] = [:]
    private var candidates: [BlockTarget: Reading] = [:]
    private var lastSeenInSlice: [BlockTarget: UInt64] = [:]

    public init(watchCapacity: Int = 256, probeCapacity: Int = 256, memoryCapacity: Int = 262_144) {
        precondition(watchCapacity > 0 && probeCapacity > 0 && memoryCapacity > 0)
        (self.watchCapacity, self.probeCapacity, self.memoryCapacity) = (watchCapacity, probeCapacity, memoryCapacity)
    }

    /// The blocks to read by key this round, in target order.
    public var keysToRead: [BlockTarget] {
        (Array(watched.keys) + Array(candidates.keys)).sorted()
    }

    public var watchedCount: Int { watched.count }
    public var candidateCount: Int { candidates.count }

    /// The watched blocks with their rates over the last round (no expiry: the ledger has it).
    public var watchedBlocks: [WatchedBlock] {
        watched.map { WatchedBlock(target: $0.key, counters: $0.value.reading.counters, rate: $0.value.rate) }
    }

    /// Takes one round's readings at `seconds` (any monotonic clock): `byKey` holds what
    /// ``keysToRead`` found (a key that is absent is a block that was lifted), `scanned` the
    /// slice the cursor read.
    public mutating func advance(byKey: [BlockTarget: DropCounters], scanned: [(target: BlockTarget, counters: DropCounters)], at seconds: Double) {
        for (target, previous) in watched {
            guard let counters = byKey[target] else {
                watched[target] = nil
                continue
            }
            let rate = DropRate(from: previous.reading.counters, to: counters, over: seconds - previous.reading.seconds) ?? previous.rate
            watched[target] = (Reading(counters: counters, seconds: seconds), rate)
        }
        for (target, reading) in candidates {
            guard let counters = byKey[target], watched[target] == nil,
                  let rate = DropRate(from: reading.counters, to: counters, over: seconds - reading.seconds) else { continue }
            watched[target] = (Reading(counters: counters, seconds: seconds), rate)
        }
        candidates = [:]
        if watched.count > watchCapacity {
            let kept = TopOrder.pps.ranked(watched.map { WatchedBlock(target: $0.key, counters: $0.value.reading.counters, rate: $0.value.rate) })
            for block in kept.dropFirst(watchCapacity) { watched[block.target] = nil }
        }
        pickCandidates(from: scanned, at: seconds)
    }

    private mutating func pickCandidates(from scanned: [(target: BlockTarget, counters: DropCounters)], at seconds: Double) {
        var rising: [(target: BlockTarget, counters: DropCounters, dropped: UInt64)] = []
        for (target, counters) in scanned {
            let before = lastSeenInSlice[target]
            if before != counters.packets {
                if before == nil, lastSeenInSlice.count >= memoryCapacity { lastSeenInSlice.removeAll(keepingCapacity: true) }
                lastSeenInSlice[target] = counters.packets
            }
            guard watched[target] == nil else { continue }
            let dropped = DropRate.increase(before ?? 0, counters.packets)
            if dropped > 0 { rising.append((target, counters, dropped)) }
        }
        rising.sort { $0.dropped != $1.dropped ? $0.dropped > $1.dropped : $0.target < $1.target }
        for entry in rising.prefix(probeCapacity) {
            candidates[entry.target] = Reading(counters: entry.counters, seconds: seconds)
        }
    }
}
