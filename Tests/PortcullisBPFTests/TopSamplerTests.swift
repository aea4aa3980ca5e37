import Foundation
import PortcullisBPF
import PortcullisControl
import PortcullisCore
import Testing

/// The live view's sampling over real maps, with packets dropped by the XDP program itself
/// through BPF_PROG_TEST_RUN.
@Suite(.enabled(if: Privileges.canUseBPF, Privileges.reason), .serialized)
struct TopSamplerTests {
    @Test func theSlicesCoverEveryBlockOnceAndEachReadsNoMoreThanItsLimit() throws {
        let state = try ScratchState()
        let targets = (0..<1_000).map { BlockTarget.address(.v4(IPv4Address(0xF000_0000 + UInt32($0) * 7))) }
        _ = try state.blocks.block(batch: targets.map { BlockRequest(target: $0, duration: .seconds(3600)) })
        for prefix in ["203.0.113.0/24", "198.51.100.0/25", "2001:db8::/48"] { _ = try state.block(prefix) }
        var cursor = BlockScanCursor()
        var seen: [BlockTarget] = []
        var exactDone = false, prefixDone = false
        for _ in 0..<100 where !(exactDone && prefixDone) {
            let slice = try state.datapath.scanBlockCounters(&cursor, exactLimit: 100, prefixLimit: 2)
            let exact = slice.blocks.filter { if case .address = $0.target { true } else { false } }
            #expect(exact.count <= 100)
            #expect(slice.blocks.count - exact.count <= 2)
            if !exactDone { seen += exact.map(\.target) }
            if !prefixDone { seen += slice.blocks.map(\.target).filter { if case .prefix = $0 { true } else { false } } }
            exactDone = exactDone || slice.finishedExactPass
            prefixDone = prefixDone || slice.finishedPrefixPass
        }
        #expect(exactDone && prefixDone)
        #expect(seen.count == targets.count + 3)
        #expect(Set(seen).count == seen.count)
        #expect(Set(seen).isSuperset(of: targets))
    }

    @Test func theBlockDroppingMostIsFoundAndItsRateIsTheCountersIncreaseOverTheRound() throws {
        let state = try ScratchState()
        _ = try state.block("198.51.100.10", for: .seconds(600), reason: "flood")
        _ = try state.block("198.51.100.11", for: .seconds(60))
        _ = try state.block("203.0.113.0/24")
        _ = try state.blocks.block(batch: (0..<200).map { BlockRequest(target: .address(.v4(IPv4Address(0xF000_0000 + UInt32($0)))), duration: nil) })
        let flood = Frame.ipv4(source: "198.51.100.10"), trickle = Frame.ipv4(source: "198.51.100.11"), wide = Frame.ipv4(source: "203.0.113.7")
        _ = try state.datapath.xdpProgram.testRun(packet: flood, repetitions: 1_000)
        _ = try state.datapath.xdpProgram.testRun(packet: trickle, repetitions: 10)

        let sampler = TopSampler()
        let first = try sampler.sample(state.blocks.blocklist)
        #expect(first.blocks.isEmpty && first.intervalSeconds == nil)
        #expect(first.sampling.candidates == 2)
        #expect(first.expiring.map(\.target) == ["198.51.100.11", "198.51.100.10"])

        _ = try state.datapath.xdpProgram.testRun(packet: flood, repetitions: 5_000)
        _ = try state.datapath.xdpProgram.testRun(packet: trickle, repetitions: 100)
        _ = try state.datapath.xdpProgram.testRun(packet: wide, repetitions: 200)
        // A second sample sooner than the minimum spacing is the same round.
        #expect(try sampler.sample(state.blocks.blocklist).sampling.readByKey == 0)
        Thread.sleep(forTimeInterval: 0.6)
        let second = try sampler.sample(state.blocks.blocklist)
        let interval = try #require(second.intervalSeconds)
        #expect(second.blocks.map(\.target) == ["198.51.100.10", "198.51.100.11"])
        let top = try #require(second.blocks.first)
        #expect(abs(top.packetsPerSecond * interval - 5_000) < 0.001)
        #expect(abs(top.bytesPerSecond * interval - Double(5_000 * flood.count)) < 0.1)
        #expect(top.droppedPackets == 6_000 && top.reason == "flood" && top.source == .cli)
        #expect(second.sampling.readByKey == 2)

        // The prefix started dropping after its slice was read: found now, rated a round later.
        _ = try state.datapath.xdpProgram.testRun(packet: wide, repetitions: 3_000)
        Thread.sleep(forTimeInterval: 0.6)
        let third = try sampler.sample(state.blocks.blocklist)
        let prefix = try #require(third.blocks.first { $0.target == "203.0.113.0/24" })
        #expect(abs(prefix.packetsPerSecond * (third.intervalSeconds ?? 0) - 3_000) < 0.001)
        #expect(third.blocks.first { $0.target == "198.51.100.10" }?.packetsPerSecond == 0)
        // The data plane's own counters per ifindex: every packet of the test runs, all dropped.
        #expect(third.total.dropped == 1_000 + 10 + 5_000 + 100 + 200 + 3_000)
    }

    @Test func aRoundReadsAtMostTheWatchedAndCandidateKeysHoweverManyDrop() throws {
        let state = try ScratchState()
        let sources = (1...40).map { "198.51.100.\($0)" }
        for source in sources { _ = try state.block(source) }
        let sampler = TopSampler(tracker: TopTracker(watchCapacity: 3, probeCapacity: 4))
        var last: TopSample?
        for round in 0..<5 {
            for (index, source) in sources.enumerated() {
                _ = try state.datapath.xdpProgram.testRun(packet: Frame.ipv4(source: source), repetitions: index + 1)
            }
            let sample = try sampler.sample(state.blocks.blocklist)
            #expect(sample.sampling.readByKey <= 3 + 4, "round \(round)")
            #expect(sample.blocks.count <= 3)
            last = sample
            Thread.sleep(forTimeInterval: 0.55)
        }
        #expect(last?.blocks.map(\.target) == ["198.51.100.40", "198.51.100.39", "198.51.100.38"])
    }
}
