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
        notIP = cpu.not_ip
        parseFailed = cpu.parse_failed
    }

    mutating func add(_ other: PacketStatistics) {
        seen += other.seen
        dropped += other.dropped
        droppedBytes += other.droppedBytes
        passed += other.passed
        passedAllowed += other.passedAllowed
        passedExpired += other.passedExpired
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

    public func mapUsage() throws(DatapathError) -> [MapUsage] {
        func usage(_ map: BPFMap, _ count: Int) -> MapUsage {
            MapUsage(name: map.name, entries: count, capacity: map.maxEntries, memoryBytes: map.memoryInUse())
        }
        return [
            usage(blocksV4, try blocksV4.entries(as: UInt32.self, portcullis_block.self).count),
            usage(blocksV6, try blocksV6.entries(as: portcullis_addr_v6.self, portcullis_block.self).count),
            usage(prefixesV4, try prefixesV4.keys(as: portcullis_lpm_v4.self).count),
            usage(prefixesV6, try prefixesV6.keys(as: portcullis_lpm_v6.self).count),
            usage(allowV4, try allowV4.keys(as: portcullis_lpm_v4.self).count),
            usage(allowV6, try allowV6.keys(as: portcullis_lpm_v6.self).count),
        ]
    }
}
