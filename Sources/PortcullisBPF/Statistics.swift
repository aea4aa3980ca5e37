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
        let cpus = Int(libbpf_num_possible_cpus())
        guard cpus > 0 else { throw .syscall("cannot count possible CPUs", errno: -Int32(cpus)) }
        let slots = Int(PORTCULLIS_STATS_SLOTS)
        var keys = (0..<UInt32(slots)).map { $0 }
        var values = [portcullis_stats](repeating: portcullis_stats(), count: slots * cpus)
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        var count = UInt32(slots)
        var cursor: UInt32 = 0
        // One batched read of the whole per-CPU array.
        let status = bpf_map_lookup_batch(stats.fileDescriptor, nil, &cursor, &keys, &values, &count, &options)
        guard status == 0 || errno == ENOENT else {
            throw .syscall("cannot read the packet counters", errno: errno)
        }
        var result: [UInt32: PacketStatistics] = [:]
        for index in 0..<Int(count) {
            var total = PacketStatistics()
            for cpu in values[(index * cpus)..<((index + 1) * cpus)] { total.add(PacketStatistics(cpu)) }
            if total.seen > 0 { result[keys[index]] = total }
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
