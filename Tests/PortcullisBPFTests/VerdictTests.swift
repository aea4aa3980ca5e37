import Foundation
import PortcullisBPF
import PortcullisControl
import PortcullisCore
import Testing

/// The XDP program's verdicts on crafted frames, run in the kernel with
/// BPF_PROG_TEST_RUN against real pinned maps.
@Suite(.enabled(if: Privileges.canUseBPF, Privileges.reason))
struct VerdictTests {
    @Test func blockedIPv4SourceIsDroppedAndCounted() throws {
        let state = try ScratchState()
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.9")) == .pass)
        _ = try state.block("203.0.113.9", for: .seconds(100))
        let frame = Frame.ipv4(source: "203.0.113.9")
        #expect(try state.verdict(frame) == .drop)
        #expect(try state.verdict(frame) == .drop)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.10")) == .pass)
        let entry = try #require(try state.entry("203.0.113.9"))
        #expect(entry.droppedPackets == 2)
        #expect(entry.droppedBytes == UInt64(2 * frame.count))
        let stats = try state.datapath.statistics()
        #expect(stats.seen == 4)
        #expect(stats.dropped == 2)
        #expect(stats.passed == 2)
    }

    @Test func blockedIPv6SourceIsDropped() throws {
        let state = try ScratchState()
        _ = try state.block("2001:db8::bad", for: .seconds(100))
        #expect(try state.verdict(Frame.ipv6(source: "2001:db8::bad")) == .drop)
        #expect(try state.verdict(Frame.ipv6(source: "2001:db8::bad:1")) == .pass)
        // The same low bits in IPv4 are another address entirely.
        #expect(try state.verdict(Frame.ipv4(source: "0.0.11.173")) == .pass)
    }

    @Test func ipv4MappedAddressBlocksTheIPv4Source() throws {
        let state = try ScratchState()
        _ = try state.block("::ffff:192.0.2.77")
        #expect(try state.verdict(Frame.ipv4(source: "192.0.2.77")) == .drop)
    }

    @Test(arguments: [[UInt16](), [100], [100, 200]])
    func vlanTaggedFramesAreParsed(vlans: [UInt16]) throws {
        let state = try ScratchState()
        _ = try state.block("198.51.100.66")
        _ = try state.block("2001:db8::66")
        #expect(try state.verdict(Frame.ipv4(source: "198.51.100.66", vlans: vlans)) == .drop)
        #expect(try state.verdict(Frame.ipv6(source: "2001:db8::66", vlans: vlans)) == .drop)
        #expect(try state.verdict(Frame.ipv4(source: "198.51.100.67", vlans: vlans)) == .pass)
    }

    @Test func moreThanTwoVLANTagsPassAsNotIP() throws {
        let state = try ScratchState()
        _ = try state.block("198.51.100.66")
        var frame = Frame.ipv4(source: "198.51.100.66", vlans: [1, 2])
        // Insert a third tag after the MAC addresses.
        frame.insert(contentsOf: [0x81, 0x00, 0x00, 0x03], at: 12)
        #expect(try state.verdict(frame) == .pass)
        #expect(try state.datapath.statistics().notIP == 1)
    }

    @Test func truncatedFramesPassAndCountAsParseFailures() throws {
        let state = try ScratchState()
        _ = try state.block("203.0.113.9")
        let ipv4 = Frame.ipv4(source: "203.0.113.9", payload: 0)
        let ipv6 = Frame.ipv6(source: "2001:db8::1", payload: 0)
        let vlan = Frame.ethernet(type: Frame.etherIPv4, vlans: [7])
        // Cut inside the IP header, and inside the VLAN tag.
        #expect(try state.verdict(Array(ipv4.prefix(14 + 19))) == .pass)
        #expect(try state.verdict(Array(ipv6.prefix(14 + 39))) == .pass)
        #expect(try state.verdict(Array(vlan.prefix(16))) == .pass)
        #expect(try state.datapath.statistics().parseFailed == 3)
        // The whole header is enough: the same frame uncut is dropped.
        #expect(try state.verdict(ipv4) == .drop)
    }

    @Test func malformedIPv4HeaderPasses() throws {
        let state = try ScratchState()
        _ = try state.block("203.0.113.9")
        var frame = Frame.ipv4(source: "203.0.113.9")
        frame[14] = 0x44  // IHL 4: shorter than the minimum header
        #expect(try state.verdict(frame) == .pass)
        frame[14] = 0x65  // version 6 inside an IPv4 ethertype
        #expect(try state.verdict(frame) == .pass)
        #expect(try state.datapath.statistics().parseFailed == 2)
    }

    @Test func nonIPFramesPass() throws {
        let state = try ScratchState()
        _ = try state.block("203.0.113.0/24")
        #expect(try state.verdict(Frame.arp()) == .pass)
        let stats = try state.datapath.statistics()
        #expect(stats.notIP == 1)
        #expect(stats.dropped == 0)
    }

    @Test func prefixBlocksDropEveryAddressInside() throws {
        let state = try ScratchState()
        _ = try state.block("203.0.113.0/24", for: .seconds(60))
        _ = try state.block("2001:db8:bad::/48")
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.1")) == .drop)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.254")) == .drop)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.114.1")) == .pass)
        #expect(try state.verdict(Frame.ipv6(source: "2001:db8:bad:ffff::1")) == .drop)
        #expect(try state.verdict(Frame.ipv6(source: "2001:db8:bae::1")) == .pass)
        let entry = try #require(try state.entry("203.0.113.0/24"))
        #expect(entry.droppedPackets == 2)
    }

    @Test func expiredBlockPassesBeforeAnySweepAndSweepRemovesIt() throws {
        let state = try ScratchState()
        _ = try state.block("203.0.113.9", for: .seconds(1))
        _ = try state.block("203.0.113.0/28", for: .seconds(1))
        _ = try state.block("203.0.113.200", for: .seconds(600))
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.9")) == .drop)
        Thread.sleep(forTimeInterval: 1.3)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.9")) == .pass)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.3")) == .pass)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.200")) == .drop)
        #expect(try state.datapath.statistics().passedExpired == 2)
        let expired = try #require(try state.entry("203.0.113.9"))
        #expect(expired.isExpired)

        let report = try state.blocks.sweep()
        #expect(Set(report.removed.map(\.target.description)) == ["203.0.113.9", "203.0.113.0/28"])
        #expect(report.removed.first { $0.target.description == "203.0.113.9" }?.droppedPackets == 1)
        #expect(try state.entry("203.0.113.9") == nil)
        #expect(try state.blocks.list().map(\.target.description) == ["203.0.113.200"])
    }

    @Test func allowlistWinsOverEveryBlock() throws {
        let state = try ScratchState()
        try state.blocks.allow(try BlockTarget.parse("203.0.113.7").target)
        try state.blocks.allow(try BlockTarget.parse("2001:db8:1::/64").target)
        _ = try state.block("203.0.113.0/24")
        _ = try state.block("2001:db8::/32")
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.7")) == .pass)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.8")) == .drop)
        #expect(try state.verdict(Frame.ipv6(source: "2001:db8:1::99")) == .pass)
        #expect(try state.verdict(Frame.ipv6(source: "2001:db8:2::99")) == .drop)
        #expect(try state.datapath.statistics().passedAllowed == 2)

        // Blocking inside the allowlist is refused, and changes nothing.
        #expect(throws: ServiceError.self) { try state.block("203.0.113.7", for: .seconds(10)) }
        #expect(throws: ServiceError.self) { try state.block("2001:db8:1::5") }
        #expect(try state.entry("203.0.113.7") == nil)

        try state.blocks.disallow(try BlockTarget.parse("203.0.113.7").target)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.7")) == .drop)
    }

    @Test func loopbackAndUnspecifiedAreRefused() throws {
        let state = try ScratchState()
        for text in ["127.0.0.1", "::1", "127.0.0.0/8", "0.0.0.0", "::", "0.0.0.0/0", "::/0", "::ffff:127.0.0.1"] {
            #expect(throws: ServiceError.self, "\(text)") { try state.block(text) }
        }
        #expect(try state.blocks.list().isEmpty)
    }
}

/// The data plane skips empty tries; the counts that let it must never fall
/// below what the tries hold, or an allowlisted or prefix-blocked source would
/// be judged wrongly.
@Suite(.enabled(if: Privileges.canUseBPF, Privileges.reason))
struct TrieSizeTests {
    @Test func countsFollowInsertsRefreshesAndDeletes() throws {
        let state = try ScratchState()
        #expect(try state.datapath.trieSizeCounts() == [0, 0, 0, 0])
        _ = try state.block("203.0.113.0/24")
        _ = try state.block("203.0.113.0/24", for: .seconds(10))  // a refresh adds nothing
        _ = try state.block("2001:db8::/48")
        try state.blocks.allow(try BlockTarget.parse("192.0.2.1").target)
        try state.blocks.allow(try BlockTarget.parse("192.0.2.1").target)  // already there
        try state.blocks.allow(try BlockTarget.parse("2001:db8:9::/64").target)
        #expect(try state.datapath.trieSizeCounts() == [1, 1, 1, 1])
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.5")) == .drop)
        #expect(try state.verdict(Frame.ipv4(source: "192.0.2.1")) == .pass)
        #expect(try state.datapath.statistics().passedAllowed == 1)

        _ = try state.blocks.unblock(try BlockTarget.parse("203.0.113.0/24").target)
        _ = try state.blocks.unblock(try BlockTarget.parse("203.0.113.0/24").target)  // gone already
        try state.blocks.disallow(try BlockTarget.parse("192.0.2.1").target)
        #expect(try state.datapath.trieSizeCounts() == [0, 1, 0, 1])
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.5")) == .pass)
    }

    @Test func aSweepMendsCountsLeftTooHigh() throws {
        let state = try ScratchState()
        _ = try state.block("203.0.113.0/24", for: .seconds(1))
        Thread.sleep(forTimeInterval: 1.2)
        _ = try state.blocks.sweep()
        #expect(try state.datapath.trieSizeCounts() == [0, 0, 0, 0])
    }
}

/// An expired block that no sweep removed yet must not hide a live block around it.
@Suite(.enabled(if: Privileges.canUseBPF, Privileges.reason))
struct ExpiredShadowTests {
    @Test func anExpiredExactBlockDoesNotHideALivePrefix() throws {
        let state = try ScratchState()
        _ = try state.block("203.0.113.9", for: .seconds(1))
        _ = try state.block("203.0.113.0/24")
        Thread.sleep(forTimeInterval: 1.2)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.9")) == .drop)
        #expect(try state.entry("203.0.113.0/24")?.droppedPackets == 1)
    }

    @Test func anyNumberOfExpiredPrefixesDoesNotHideALiveOneAroundThem() throws {
        let state = try ScratchState()
        // Ten lengths, more than the old trie walk's bound of eight, all expired but the widest.
        for length in stride(from: 30, through: 21, by: -1) { _ = try state.block("203.0.113.0/\(length)", for: .seconds(1)) }
        _ = try state.block("203.0.0.0/16")
        for length in stride(from: 120, through: 111, by: -1) { _ = try state.block("2001:db8:1::/\(length)", for: .seconds(1)) }
        _ = try state.block("2001:db8::/32")
        Thread.sleep(forTimeInterval: 1.2)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.1")) == .drop)
        #expect(try state.verdict(Frame.ipv6(source: "2001:db8:1::1")) == .drop)
        #expect(try state.entry("203.0.0.0/16")?.droppedPackets == 1)
        #expect(try state.entry("2001:db8::/32")?.droppedPackets == 1)
    }

    @Test func theLengthsLookedUpFollowInsertsAndDeletes() throws {
        let state = try ScratchState()
        _ = try state.block("198.51.100.0/24")
        _ = try state.block("198.51.0.0/16")
        _ = try state.block("192.0.2.0/24")
        _ = try state.block("2001:db8::/32")
        _ = try state.block("2001:db8:ffff:ffff:ffff:ffff:ffff:fffe/127")
        _ = try state.block("8000::/1")
        #expect(try state.datapath.prefixLengthsInUse().ipv4 == [16, 24])
        #expect(try state.datapath.prefixLengthsInUse().ipv6 == [1, 32, 127])
        #expect(try state.verdict(Frame.ipv6(source: "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")) == .drop)
        #expect(try state.verdict(Frame.ipv6(source: "8000::1")) == .drop)
        #expect(try state.verdict(Frame.ipv6(source: "7fff::1")) == .pass)
        _ = try state.blocks.unblock(try BlockTarget.parse("198.51.100.0/24").target)
        #expect(try state.datapath.prefixLengthsInUse().ipv4 == [16, 24])
        _ = try state.blocks.unblock(try BlockTarget.parse("192.0.2.0/24").target)
        _ = try state.blocks.unblock(try BlockTarget.parse("8000::/1").target)
        #expect(try state.datapath.prefixLengthsInUse().ipv4 == [16])
        #expect(try state.datapath.prefixLengthsInUse().ipv6 == [32, 127])
        #expect(try state.verdict(Frame.ipv4(source: "198.51.100.7")) == .drop)
        #expect(try state.verdict(Frame.ipv4(source: "192.0.2.7")) == .pass)
        try state.datapath.recountTries()
        #expect(try state.datapath.prefixLengthsInUse().ipv6 == [32, 127])
    }

    @Test func anExpiredNarrowPrefixDoesNotHideALiveWideOne() throws {
        let state = try ScratchState()
        _ = try state.block("2001:db8:1::/64", for: .seconds(1))
        _ = try state.block("2001:db8:1::/56", for: .seconds(1))
        _ = try state.block("2001:db8::/32")
        Thread.sleep(forTimeInterval: 1.2)
        #expect(try state.verdict(Frame.ipv6(source: "2001:db8:1::5")) == .drop)
        // Only expired blocks match: it passes, counted as expired.
        _ = try state.blocks.unblock(try BlockTarget.parse("2001:db8::/32").target)
        #expect(try state.verdict(Frame.ipv6(source: "2001:db8:1::5")) == .pass)
        #expect(try state.datapath.statistics().passedExpired == 1)
    }
}
