import CLibbpf
import Foundation
import PortcullisBPF
import Testing

/// The XDP object is compiled for the BPF target and the Swift control plane
/// for the host, both from bpf/portcullis.h. The object's BTF records the
/// layout the kernel program really uses; it must match what Swift imported.
/// Needs no root: BTF is parsed from the embedded object.
struct LayoutTests {
    struct Member: Equatable, CustomStringConvertible {
        let name: String
        let byteOffset: Int
        var description: String { "\(name)@\(byteOffset)" }
    }

    /// Size and members of a struct, as the BPF object's BTF describes it (the embedded one
    /// unless `object` is given).
    static func btfLayout(of structName: String, in object: [UInt8]? = nil) throws -> (size: Int, members: [Member]) {
        let object = try object ?? #require(Datapath.embeddedObject)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-layout-\(UUID()).o").path
        try Data(object).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let btf = try #require(btf__parse_elf(path, nil), "the embedded object has no BTF")
        defer { btf__free(btf) }
        let id = btf__find_by_name_kind(btf, structName, UInt32(BTF_KIND_STRUCT))
        try #require(id > 0, "no struct \(structName) in the object's BTF")
        let type = try #require(btf__type_by_id(btf, UInt32(id)))
        let count = Int(type.pointee.info & 0xFFFF)
        let size = Int(type.pointee.size)
        // struct btf_member entries follow the struct's btf_type in memory.
        let membersStart = UnsafeRawPointer(type).advanced(by: MemoryLayout<btf_type>.size)
        var members: [Member] = []
        for index in 0..<count {
            let member = membersStart.advanced(by: index * MemoryLayout<btf_member>.size).load(as: btf_member.self)
            let name = String(cString: btf__name_by_offset(btf, member.name_off))
            let bitOffset = (type.pointee.info >> 31) != 0 ? Int(member.offset & 0xFFFFFF) : Int(member.offset)
            members.append(Member(name: name, byteOffset: bitOffset / 8))
        }
        return (size, members)
    }

    @Test func blockValueMatchesTheKernelProgram() throws {
        let (size, members) = try Self.btfLayout(of: "portcullis_block")
        #expect(size == MemoryLayout<portcullis_block>.size)
        let swift: [Member] = [
            Member(name: "expires_jiffies", byteOffset: MemoryLayout<portcullis_block>.offset(of: \.expires_jiffies)!),
            Member(name: "dropped_packets", byteOffset: MemoryLayout<portcullis_block>.offset(of: \.dropped_packets)!),
            Member(name: "dropped_bytes", byteOffset: MemoryLayout<portcullis_block>.offset(of: \.dropped_bytes)!),
        ]
        #expect(members == swift)
        // Only what the data plane needs: the record lives in the ledger.
        #expect(MemoryLayout<portcullis_block>.size == 24)
    }

    @Test func prefixBlockValueMatchesTheKernelProgram() throws {
        let (size, members) = try Self.btfLayout(of: "portcullis_prefix_block")
        #expect(size == MemoryLayout<portcullis_prefix_block>.size)
        let swift: [Member] = [
            Member(name: "block", byteOffset: MemoryLayout<portcullis_prefix_block>.offset(of: \.block)!),
            Member(name: "prefixlen", byteOffset: MemoryLayout<portcullis_prefix_block>.offset(of: \.prefixlen)!),
            Member(name: "pad", byteOffset: MemoryLayout<portcullis_prefix_block>.offset(of: \.pad)!),
        ]
        #expect(members == swift)
    }

    @Test func keysAndCountersMatchTheKernelProgram() throws {
        let cases: [(String, Int)] = [
            ("portcullis_lpm_v4", MemoryLayout<portcullis_lpm_v4>.size),
            ("portcullis_lpm_v6", MemoryLayout<portcullis_lpm_v6>.size),
            ("portcullis_addr_v6", MemoryLayout<portcullis_addr_v6>.size),
            ("portcullis_allow", MemoryLayout<portcullis_allow>.size),
            ("portcullis_stats", MemoryLayout<portcullis_stats>.size),
            ("portcullis_meta", MemoryLayout<portcullis_meta>.size),
            ("portcullis_clock_sample", MemoryLayout<portcullis_clock_sample>.size),
            ("portcullis_trie_sizes", MemoryLayout<portcullis_trie_sizes>.size),
        ]
        for (name, swiftSize) in cases {
            let (size, _) = try Self.btfLayout(of: name)
            #expect(size == swiftSize, "\(name): BPF \(size) bytes, Swift \(swiftSize)")
        }
        let (_, stats) = try Self.btfLayout(of: "portcullis_stats")
        #expect(stats.map(\.name) == ["seen", "dropped", "dropped_bytes", "passed", "passed_allowed", "passed_expired",
                                        "passed_throttled", "dropped_throttled", "not_ip", "parse_failed"])
        #expect(stats.map(\.byteOffset) == Array(stride(from: 0, to: 80, by: 8)))
    }

    @Test func throttleValuesMatchTheKernelProgram() throws {
        let (size, members) = try Self.btfLayout(of: "portcullis_throttle")
        #expect(size == MemoryLayout<portcullis_throttle>.size)
        typealias T = portcullis_throttle
        let swift: [Member] = [
            Member(name: "expires_jiffies", byteOffset: MemoryLayout<T>.offset(of: \.expires_jiffies)!),
            Member(name: "tat", byteOffset: MemoryLayout<T>.offset(of: \.tat)!),
            Member(name: "epoch_jiffies", byteOffset: MemoryLayout<T>.offset(of: \.epoch_jiffies)!),
            Member(name: "rate", byteOffset: MemoryLayout<T>.offset(of: \.rate)!),
            Member(name: "packet_ticks", byteOffset: MemoryLayout<T>.offset(of: \.packet_ticks)!),
            Member(name: "burst_ticks", byteOffset: MemoryLayout<T>.offset(of: \.burst_ticks)!),
            Member(name: "passed_packets", byteOffset: MemoryLayout<T>.offset(of: \.passed_packets)!),
            Member(name: "dropped_packets", byteOffset: MemoryLayout<T>.offset(of: \.dropped_packets)!),
            Member(name: "dropped_bytes", byteOffset: MemoryLayout<T>.offset(of: \.dropped_bytes)!),
            Member(name: "flags", byteOffset: MemoryLayout<T>.offset(of: \.flags)!),
            Member(name: "pad", byteOffset: MemoryLayout<T>.offset(of: \.pad)!),
        ]
        #expect(members == swift)
        let (prefixSize, prefixMembers) = try Self.btfLayout(of: "portcullis_prefix_throttle")
        #expect(prefixSize == MemoryLayout<portcullis_prefix_throttle>.size)
        #expect(prefixMembers == [
            Member(name: "throttle", byteOffset: 0),
            Member(name: "prefixlen", byteOffset: MemoryLayout<portcullis_prefix_throttle>.offset(of: \.prefixlen)!),
            Member(name: "pad", byteOffset: MemoryLayout<portcullis_prefix_throttle>.offset(of: \.pad)!),
        ])
    }

    /// The upgrade reads layout 3's records with `portcullis_v3_block`; the layout 3 program
    /// (the committed fixture) called the same value `portcullis_block`.
    @Test func layout3ValueMatchesTheLayout3Program() throws {
        let fixture = try UpgradeLab.fixture()
        let (size, members) = try Self.btfLayout(of: "portcullis_block", in: fixture)
        #expect(size == MemoryLayout<portcullis_v3_block>.size)
        #expect(size == 168)
        let swift: [Member] = [
            Member(name: "expires_jiffies", byteOffset: MemoryLayout<portcullis_v3_block>.offset(of: \.expires_jiffies)!),
            Member(name: "dropped_packets", byteOffset: MemoryLayout<portcullis_v3_block>.offset(of: \.dropped_packets)!),
            Member(name: "dropped_bytes", byteOffset: MemoryLayout<portcullis_v3_block>.offset(of: \.dropped_bytes)!),
            Member(name: "created_unix_ms", byteOffset: MemoryLayout<portcullis_v3_block>.offset(of: \.created_unix_ms)!),
            Member(name: "refreshed_unix_ms", byteOffset: MemoryLayout<portcullis_v3_block>.offset(of: \.refreshed_unix_ms)!),
            Member(name: "requested_seconds", byteOffset: MemoryLayout<portcullis_v3_block>.offset(of: \.requested_seconds)!),
            Member(name: "source", byteOffset: MemoryLayout<portcullis_v3_block>.offset(of: \.source)!),
            Member(name: "prefixlen", byteOffset: MemoryLayout<portcullis_v3_block>.offset(of: \.prefixlen)!),
            Member(name: "pad", byteOffset: MemoryLayout<portcullis_v3_block>.offset(of: \.pad)!),
            Member(name: "reason", byteOffset: MemoryLayout<portcullis_v3_block>.offset(of: \.reason)!),
        ]
        #expect(members == swift)
        // The keys, the allowlist value and the meta the upgrade reads kept their layout 3 sizes.
        for (name, swiftSize) in [
            ("portcullis_lpm_v4", MemoryLayout<portcullis_lpm_v4>.size), ("portcullis_lpm_v6", MemoryLayout<portcullis_lpm_v6>.size),
            ("portcullis_addr_v6", MemoryLayout<portcullis_addr_v6>.size), ("portcullis_allow", MemoryLayout<portcullis_allow>.size),
            ("portcullis_meta", MemoryLayout<portcullis_meta>.size), ("portcullis_clock_sample", MemoryLayout<portcullis_clock_sample>.size),
        ] {
            #expect(try Self.btfLayout(of: name, in: fixture).size == swiftSize, "\(name)")
        }
    }
}
