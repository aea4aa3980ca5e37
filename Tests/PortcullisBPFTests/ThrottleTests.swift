import Foundation
import PortcullisBPF
import PortcullisControl
import PortcullisCore
import Testing

/// The throttle's bucket, judged in the kernel with BPF_PROG_TEST_RUN against real pinned
/// maps: a burst, then the rate; expiry; prefixes and IPv6; and its place after blocks and
/// the allowlist.
@Suite(.enabled(if: Privileges.canUseBPF, Privileges.reason))
struct ThrottleTests {
    @Test func aBurstPassesThenTheRestIsDroppedAndCounted() throws {
        let state = try ScratchState()
        _ = try state.throttle("203.0.113.9", rate: 1, burst: 5)
        let frame = Frame.ipv4(source: "203.0.113.9")
        let first = try state.verdicts(frame, count: 8)
        // One packet a second: the burst, and at most one refilled while the eight ran.
        #expect(first.passed >= 5 && first.passed <= 6)
        #expect(first.passed + first.dropped == 8)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.10")) == .pass)
        let entry = try #require(try state.entry("203.0.113.9"))
        #expect(entry.throttle == ThrottleRate(packetsPerSecond: 1, burst: 5))
        #expect(entry.passedPackets == UInt64(first.passed))
        #expect(entry.droppedPackets == UInt64(first.dropped))
        #expect(entry.droppedBytes == UInt64(first.dropped * frame.count))
        let stats = try state.datapath.statistics()
        #expect(stats.passedThrottled == UInt64(first.passed))
        #expect(stats.droppedThrottled == UInt64(first.dropped))
        #expect(stats.dropped == UInt64(first.dropped))
        #expect(stats.passed == 1)
    }

    @Test func theBucketRefillsAtTheRateUpToTheBurst() throws {
        let state = try ScratchState()
        _ = try state.throttle("198.51.100.7", rate: 50, burst: 5)
        let frame = Frame.ipv4(source: "198.51.100.7")
        _ = try state.verdicts(frame, count: 20)  // empties the bucket
        Thread.sleep(forTimeInterval: 0.4)
        // 20 packets' worth came in over the pause, but the bucket never holds more than the burst.
        let capped = try state.verdicts(frame, count: 100)
        #expect(capped.passed >= 5 && capped.passed <= 6, "passed \(capped.passed)")

        _ = try state.throttle("198.51.100.8", rate: 50, burst: 100)
        let other = Frame.ipv4(source: "198.51.100.8")
        let drained = try state.verdicts(other, count: 150)
        #expect(drained.passed >= 100 && drained.passed <= 102, "passed \(drained.passed)")
        // One packet per 20 ms: about 15 over 0.3 s.
        Thread.sleep(forTimeInterval: 0.3)
        let refilled = try state.verdicts(other, count: 100)
        #expect(refilled.passed >= 13 && refilled.passed <= 19, "passed \(refilled.passed) after 0.3 s at 50/s")
    }

    @Test func anExpiredThrottlePassesEverythingAndIsSwept() throws {
        let state = try ScratchState()
        _ = try state.throttle("203.0.113.20", rate: 1, burst: 1, for: .seconds(1))
        let frame = Frame.ipv4(source: "203.0.113.20")
        #expect(try state.verdicts(frame, count: 3) == (passed: 1, dropped: 2))
        Thread.sleep(forTimeInterval: 1.3)
        #expect(try state.verdicts(frame, count: 3) == (passed: 3, dropped: 0))
        #expect(try state.datapath.statistics().passedExpired == 3)
        let report = try state.blocks.sweep()
        #expect(report.removed.map(\.target.description) == ["203.0.113.20"])
        #expect(report.removed.first?.throttle != nil)
        #expect(report.removed.first?.droppedPackets == 2)
        #expect(try state.datapath.throttleSizeCounts() == [0, 0, 0, 0])
    }

    @Test func aPrefixThrottleSharesOneBucketAcrossItsAddresses() throws {
        let state = try ScratchState()
        _ = try state.throttle("2001:db8:bad::/48", rate: 1, burst: 3)
        _ = try state.throttle("192.0.2.0/24", rate: 1, burst: 2)
        let sources = ["2001:db8:bad::1", "2001:db8:bad:1::2", "2001:db8:bad:ffff::3", "2001:db8:bad::4"]
        let verdicts = try sources.map { try state.verdict(Frame.ipv6(source: $0)) }
        #expect(verdicts == [.pass, .pass, .pass, .drop])
        #expect(try state.verdict(Frame.ipv6(source: "2001:db8:bae::1")) == .pass)
        #expect(try state.verdicts(Frame.ipv4(source: "192.0.2.200"), count: 4).dropped >= 1)
        #expect(try state.datapath.throttleSizeCounts() == [0, 0, 1, 1])
        let entry = try #require(try state.entry("2001:db8:bad::/48"))
        #expect(entry.passedPackets + entry.droppedPackets == 4)
    }

    @Test func anExactThrottleComesBeforeThePrefixAroundIt() throws {
        let state = try ScratchState()
        _ = try state.throttle("203.0.113.0/24", rate: 1, burst: 1)
        _ = try state.throttle("203.0.113.5", rate: 1, burst: 10)
        #expect(try state.verdicts(Frame.ipv4(source: "203.0.113.5"), count: 10).passed == 10)
        #expect(try state.entry("203.0.113.0/24")?.passedPackets == 0)
    }

    @Test func aBlockWinsOverAThrottleAndTheAllowlistOverBoth() throws {
        let state = try ScratchState()
        _ = try state.throttle("203.0.113.0/24", rate: 1000, burst: 1000)
        _ = try state.block("203.0.113.66")
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.66")) == .drop)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.67")) == .pass)
        try state.blocks.allow(try BlockTarget.parse("203.0.113.66").target)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.66")) == .pass)
        #expect(try state.datapath.statistics().passedAllowed == 1)
        // Throttling a blocked target changes nothing and says so; blocking a throttled one replaces the throttle.
        _ = try state.block("198.51.100.9")
        #expect(throws: ServiceError.self) { try state.throttle("198.51.100.9", rate: 10, burst: 10) }
        #expect(try state.entry("198.51.100.9")?.throttle == nil)
        _ = try state.throttle("198.51.100.10", rate: 10, burst: 10)
        #expect(try state.block("198.51.100.10").change == .added)
        #expect(try state.verdict(Frame.ipv4(source: "198.51.100.10")) == .drop)
        #expect(try state.datapath.throttleSizeCounts() == [0, 0, 1, 0])
        // Throttling inside the allowlist is refused, as a block is.
        #expect(throws: ServiceError.self) { try state.throttle("203.0.113.66", rate: 10, burst: 10) }
    }

    @Test func newConnectionsOnlyPolicesSYNsAndLeavesEstablishedSegments() throws {
        let state = try ScratchState()
        _ = try state.throttle("203.0.113.30", rate: 1, burst: 1, newConnections: true)
        _ = try state.throttle("2001:db8::30", rate: 1, burst: 1, newConnections: true)
        for source in ["203.0.113.30", "2001:db8::30"] {
            #expect(try state.verdicts(Frame.tcp(source: source, flags: 0x02), count: 3).dropped == 2, "\(source)")
            #expect(try state.verdicts(Frame.tcp(source: source, flags: 0x10), count: 20).passed == 20, "\(source)")
            #expect(try state.verdicts(Frame.tcp(source: source, flags: 0x12), count: 5).passed == 5, "\(source)")
        }
        // Not TCP: nothing ties it to a connection, so it is policed.
        #expect(try state.verdicts(Frame.ipv4(source: "203.0.113.30"), count: 3).dropped == 3)
        // Without the flag, established segments are policed too.
        _ = try state.throttle("203.0.113.31", rate: 1, burst: 1)
        #expect(try state.verdicts(Frame.tcp(source: "203.0.113.31", flags: 0x10), count: 3).dropped == 2)
    }

    @Test func aNewRateStartsAFullBucketAndUnthrottleReportsTheCounters() throws {
        let state = try ScratchState()
        let target = try BlockTarget.parse("203.0.113.40").target
        _ = try state.throttle("203.0.113.40", rate: 1, burst: 2)
        #expect(try state.verdicts(Frame.ipv4(source: "203.0.113.40"), count: 4).dropped == 2)
        #expect(try state.throttle("203.0.113.40", rate: 1, burst: 5).change == .refreshed)
        #expect(try state.verdicts(Frame.ipv4(source: "203.0.113.40"), count: 6).passed == 5)
        // unblock lifts blocks only; unthrottle lifts the throttle.
        #expect(try state.blocks.unblock(target) == nil)
        let lifted = try #require(try state.blocks.unthrottle(target))
        #expect(lifted.passedPackets == 7)
        #expect(lifted.droppedPackets == 3)
        #expect(try state.verdicts(Frame.ipv4(source: "203.0.113.40"), count: 5).passed == 5)
        #expect(try state.datapath.throttleSizeCounts() == [0, 0, 0, 0])
    }
}
