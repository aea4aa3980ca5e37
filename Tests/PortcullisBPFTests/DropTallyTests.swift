import CLibbpf
import Glibc
import PortcullisBPF
import PortcullisCore
import Testing

/// The per-CPU drop tallies (bpf/portcullis.h, struct portcullis_drop_tally): a block's count is
/// exact however its drops are split between the block, the tallies, and the evictions between
/// them, for every kind of block.
@Suite(.enabled(if: Privileges.canUseBPF, Privileges.reason))
struct DropTallyTests {
    static let kinds: [(blocked: String, source: String)] = [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8::bad", "2001:db8::bad"),
        ("198.51.100.0/24", "198.51.100.77"),
        ("2001:db8:bad::/48", "2001:db8:bad:1::7"),
    ]

    /// A flood bigger than a tally (repetitions of one BPF_PROG_TEST_RUN run on one CPU) counts
    /// every packet and byte, while running and in the removal's final count.
    @Test(arguments: kinds)
    func aFloodCountsEveryPacket(blocked: String, source: String) throws {
        let state = try ScratchState()
        _ = try state.block(blocked)
        let frame = frame(from: source)
        let repetitions = Int(PORTCULLIS_TALLY_FLUSH) * 3 + 5
        let run = try state.datapath.xdpProgram.testRun(packet: frame, repetitions: repetitions)
        #expect(run.returnValue == 1)
        let entry = try #require(try state.entry(blocked))
        #expect(entry.droppedPackets == UInt64(repetitions))
        #expect(entry.droppedBytes == UInt64(repetitions * frame.count))
        let removed = try #require(try state.blocks.unblock(try BlockTarget.parse(blocked).target))
        #expect(removed.droppedPackets == UInt64(repetitions))
    }

    /// Another block's packets take a tally's slot after PORTCULLIS_TALLY_EVICT_AFTER of them; the
    /// tally they take it from is added to its own block, found again by its key in its own map.
    @Test(arguments: kinds)
    func anEvictedTallyIsAddedToItsBlock(blocked: String, source: String) throws {
        let state = try ScratchState()
        let target = try BlockTarget.parse(blocked).target
        let other = try #require(Self.addressSharingTheSlot(of: target))
        _ = try state.block(blocked)
        _ = try state.block(other.description)
        let frame = frame(from: source)
        let otherFrame = self.frame(from: other.description)
        let evictions = Int(PORTCULLIS_TALLY_EVICT_AFTER) + 4
        try onOneCPU {
            _ = try state.datapath.xdpProgram.testRun(packet: frame, repetitions: 10)
            for _ in 0..<evictions { _ = try state.datapath.xdpProgram.testRun(packet: otherFrame) }
            _ = try state.datapath.xdpProgram.testRun(packet: frame, repetitions: 3)
        }
        #expect(try state.entry(blocked)?.droppedPackets == 13)
        #expect(try state.entry(other.description)?.droppedPackets == UInt64(evictions))
        #expect(try state.blocks.list().reduce(0) { $0 + $1.droppedPackets } == UInt64(13 + evictions))
    }

    /// A tally whose block was removed is not added to anything when its slot is taken, and a
    /// block made again for the same key after that starts from zero.
    @Test func aRemovedBlocksTallyIsDroppedWhenItsSlotIsTaken() throws {
        let state = try ScratchState()
        let target = try BlockTarget.parse("203.0.113.9").target
        let other = try #require(Self.addressSharingTheSlot(of: target))
        _ = try state.block("203.0.113.9")
        _ = try state.block(other.description)
        let otherFrame = frame(from: other.description)
        try onOneCPU {
            _ = try state.datapath.xdpProgram.testRun(packet: frame(from: "203.0.113.9"), repetitions: 10)
            #expect(try state.blocks.unblock(target)?.droppedPackets == 10)
            for _ in 0..<Int(PORTCULLIS_TALLY_EVICT_AFTER) { _ = try state.datapath.xdpProgram.testRun(packet: otherFrame) }
        }
        _ = try state.block("203.0.113.9")
        #expect(try state.entry("203.0.113.9")?.droppedPackets == 0)
        #expect(try state.entry(other.description)?.droppedPackets == UInt64(PORTCULLIS_TALLY_EVICT_AFTER))
    }

    /// An IPv4 address in 192.0.2.0/24 whose drops go to the same slot as `target`'s.
    static func addressSharingTheSlot(of target: BlockTarget) -> BlockTarget? {
        let slot = Datapath.dropTallySlot(for: target)
        return (1..<255).lazy
            .map { BlockTarget.address(.v4(IPv4Address(192, 0, 2, UInt8($0)))) }
            .first { $0 != target && Datapath.dropTallySlot(for: $0) == slot }
    }

    func frame(from source: String) -> [UInt8] {
        source.contains(":") ? Frame.ipv6(source: source) : Frame.ipv4(source: source)
    }

    /// Runs `body` with this thread on one CPU, so every test run it makes uses one CPU's tallies.
    func onOneCPU(_ body: () throws -> Void) throws {
        var previous = [UInt8](repeating: 0, count: 128)
        guard portcullis_get_thread_cpus(&previous, UInt(previous.count)) == 0 else {
            throw SystemCallFailure(call: "sched_getaffinity", errno: errno)
        }
        let cpu = Int(max(0, portcullis_current_cpu()))
        var one = [UInt8](repeating: 0, count: 128)
        one[cpu / 8] = UInt8(1 << (cpu % 8))
        guard portcullis_set_thread_cpus(one, UInt(one.count)) == 0 else {
            throw SystemCallFailure(call: "sched_setaffinity", errno: errno)
        }
        defer { _ = portcullis_set_thread_cpus(previous, UInt(previous.count)) }
        try body()
    }
}

struct SystemCallFailure: Error, CustomStringConvertible {
    let call: String
    let errno: Int32
    var description: String { "\(call) failed: \(String(cString: strerror(errno)))" }
}
