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
}

/// How full one map is, and the kernel memory it holds.
public struct MapUsage: Sendable, Codable {
    public let name: String
    public let entries: Int
    public let capacity: UInt32
    public let memoryBytes: UInt64?
}

extension Datapath {
    public func statistics() throws(DatapathError) -> PacketStatistics {
        let cpus = Int(libbpf_num_possible_cpus())
        guard cpus > 0 else { throw .syscall("cannot count possible CPUs", errno: -Int32(cpus)) }
        var perCPU = [portcullis_stats](repeating: portcullis_stats(), count: cpus)
        var key: UInt32 = 0
        guard bpf_map_lookup_elem(stats.fileDescriptor, &key, &perCPU) == 0 else {
            throw .syscall("cannot read the packet counters", errno: errno)
        }
        var total = PacketStatistics()
        for cpu in perCPU {
            total.seen += cpu.seen
            total.dropped += cpu.dropped
            total.droppedBytes += cpu.dropped_bytes
            total.passed += cpu.passed
            total.passedAllowed += cpu.passed_allowed
            total.passedExpired += cpu.passed_expired
            total.notIP += cpu.not_ip
            total.parseFailed += cpu.parse_failed
        }
        return total
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
