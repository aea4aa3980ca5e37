import CLibbpf
import Glibc

/// The data plane's packet counters, summed over CPUs.
public struct PacketStatistics: Sendable, Codable, Equatable {
    public var seen: UInt64 = 0
    public var dropped: UInt64 = 0
    public var droppedBytes: UInt64 = 0
    public var passed: UInt64 = 0
    public var passedAllowed: UInt64 = 0
    public var passedExpired: UInt64 = 0
    /// A throttle matched and let it through.
    public var passedThrottled: UInt64 = 0
    /// The part of `dropped` that throttles dropped.
    public var droppedThrottled: UInt64 = 0
    public var notIP: UInt64 = 0
    public var parseFailed: UInt64 = 0

    public init() {}

    /// Interfaces whose ifindex is below this have counters of their own.
    public static let interfaceSlots = UInt32(PORTCULLIS_STATS_SLOTS)

    init(_ cpu: portcullis_stats) {
        seen = cpu.seen
        dropped = cpu.dropped
        droppedBytes = cpu.dropped_bytes
        passed = cpu.passed
        passedAllowed = cpu.passed_allowed
        passedExpired = cpu.passed_expired
        passedThrottled = cpu.passed_throttled
        droppedThrottled = cpu.dropped_throttled
        notIP = cpu.not_ip
        parseFailed = cpu.parse_failed
    }

    public mutating func add(_ other: PacketStatistics) {
        seen += other.seen
        dropped += other.dropped
        droppedBytes += other.droppedBytes
        passed += other.passed
        passedAllowed += other.passedAllowed
        passedExpired += other.passedExpired
        passedThrottled += other.passedThrottled
        droppedThrottled += other.droppedThrottled
        notIP += other.notIP
        parseFailed += other.parseFailed
    }
}

/// How full one map is, and the kernel memory it holds.
public struct MapUsage: Sendable, Codable {
    public let name: String
    public let entries: Int
    public let capacity: UInt32
    public let memoryBytes: UInt64?
}

extension Datapath {
    /// The counters of every interface, summed.
    public func statistics() throws(DatapathError) -> PacketStatistics {
        try statisticsByInterface().values.reduce(into: PacketStatistics()) { $0.add($1) }
    }

    /// Counters per ingress ifindex (0 collects ifindexes too large for a slot of their own);
    /// only slots that saw packets are returned.
    public func statisticsByInterface() throws(DatapathError) -> [UInt32: PacketStatistics] {
        var result: [UInt32: PacketStatistics] = [:]
        let slots = try stats.perCPUArray(entries: Int(PORTCULLIS_STATS_SLOTS), as: portcullis_stats.self)
        for (slot, cpus) in slots.enumerated() {
            let total = cpus.reduce(into: PacketStatistics()) { $0.add(PacketStatistics($1)) }
            if total.seen > 0 { result[UInt32(slot)] = total }
        }
        return result
    }

    /// How full each map is. The exact maps' entry counts come from the caller (the ledger
    /// keeps them), because counting a hash map's entries means walking it; the tries' counts
    /// are the sizes the data plane keeps.
    public func mapUsage(exactV4 entriesV4: Int, exactV6 entriesV6: Int) throws(DatapathError) -> [MapUsage] {
        func usage(_ map: BPFMap, _ count: Int) -> MapUsage {
            MapUsage(name: map.name, entries: count, capacity: map.maxEntries, memoryBytes: map.memoryInUse())
        }
        let sizes = try trieSizeCounts()
        return [
            usage(blocksV4, entriesV4),
            usage(blocksV6, entriesV6),
            usage(prefixesV4, Int(sizes[2])),
            usage(prefixesV6, Int(sizes[3])),
            usage(allowV4, Int(sizes[0])),
            usage(allowV6, Int(sizes[1])),
        ]
    }
}
