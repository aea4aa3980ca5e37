import Foundation
import PortcullisBPF
import PortcullisControl
import PortcullisCore
import PortcullisLedger
import PortcullisSystem
import Testing

/// Other nodes' changes applied to a real ledger and real maps (no database: the changes as the
/// subscriber hands them over). A run of blocks new to this host goes in many rows to a statement;
/// every change must still apply in the log's order with the merge, owner and admission rules.
@Suite(.enabled(if: Privileges.canUseBPF, Privileges.reason))
struct FleetApplyTests {
    let now = WallClock.nowUnixMilliseconds()

    func change(_ sequence: Int64, _ kind: FleetChange.Kind, _ text: String, lastingSeconds seconds: Int64? = 3600,
                madeSecondsAgo ago: Int64 = 1) throws -> RemoteChange {
        let made = now - ago * 1000
        return RemoteChange(sequence: sequence, node: "b", change: FleetChange(
            kind: kind, target: try BlockTarget.parse(text).target, expiry: seconds.map { .at(made + $0 * 1000) } ?? .never,
            source: .api, reason: "from b", timeUnixMilliseconds: made))
    }

    static func address(_ n: Int) -> String { "198.51.100.\(n)" }

    @Test func aLoadFromAnotherNodeIsAppliedWholeInTheLedgerAndTheMaps() throws {
        let state = try ScratchState()
        let changes = try (1...200).map { try change(Int64($0), .block, "203.0.\(113 + $0 / 256).\($0 % 256)") }
        let report = try state.blocks.blocklist.applyFleet(changes, cursor: 200)
        #expect(report.applied == 200 && report.unchanged == 0 && report.refused == 0)
        #expect(try state.blocks.list().count == 200)
        let entry = try #require(try state.blocks.blocklist.ledger.block(for: try BlockTarget.parse("203.0.113.77").target))
        #expect(entry.node == "b" && entry.origin == "fleet node b" && entry.source == .api)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.77")) == .drop)
        #expect(try state.blocks.blocklist.ledger.fleetCursor() == 200)
        // The same page again (a re-read after a reconnect) changes nothing.
        let again = try state.blocks.blocklist.applyFleet(changes, cursor: 200)
        #expect(again.applied == 0 && again.unchanged == 200)
    }

    @Test func aRunOfNewBlocksKeepsTheLogsOrderWithEveryOtherChange() throws {
        let state = try ScratchState()
        // Held here before the page: a longer local block, and an expired fleet one no sweep removed yet.
        _ = try state.block(Self.address(10), for: .seconds(86_400))
        _ = try state.blocks.blocklist.applyFleet([try change(1, .block, Self.address(11), lastingSeconds: 2, madeSecondsAgo: 1)], cursor: 1)
        Thread.sleep(forTimeInterval: 1.2)

        var changes: [RemoteChange] = []
        var sequence: Int64 = 10
        func next(_ kind: FleetChange.Kind, _ text: String, lasting: Int64? = 3600) throws {
            sequence += 1
            changes.append(try change(sequence, kind, text, lastingSeconds: lasting))
        }
        for n in 20..<100 { try next(.block, Self.address(n)) }   // more than one statement's rows
        try next(.block, Self.address(10))                        // shorter than the local block: kept
        try next(.block, Self.address(11))                        // held but expired: blocked again
        try next(.block, "127.0.0.1")                             // loopback: refused
        try next(.refresh, Self.address(20), lasting: 7200)       // a second change of a target in the run
        try next(.unblock, Self.address(21), lasting: nil)        // lifts a block the run just made
        for n in 100..<180 { try next(.block, Self.address(n)) }
        try next(.block, Self.address(21), lasting: nil)          // and blocks it again, permanently

        let report = try state.blocks.blocklist.applyFleet(changes, cursor: sequence)
        #expect(report.refused == 1)
        #expect(report.unchanged == 1)
        #expect(report.applied == 80 + 1 + 1 + 1 + 80 + 1)
        let ledger = state.blocks.blocklist.ledger
        func held(_ text: String) throws -> LedgerBlock? { try ledger.block(for: try BlockTarget.parse(text).target) }
        #expect(try held(Self.address(10))?.node == nil, "the local, longer block stays as it was")
        #expect(try held(Self.address(11)).map { !$0.isExpired(atUnixMilliseconds: WallClock.nowUnixMilliseconds()) } == true)
        #expect(try held("127.0.0.1") == nil)
        let refreshed = try #require(try held(Self.address(20)))
        #expect(refreshed.requestedDuration == .seconds(7200), "the refresh after the run's block wins")
        #expect(try held(Self.address(21))?.expiry == .never, "unblocked, then blocked again, in that order")
        #expect(try held(Self.address(179)) != nil)
        #expect(try state.blocks.list().count == 1 + 1 + 160)
        for text in [Self.address(11), Self.address(21), Self.address(99), Self.address(179)] {
            #expect(try state.verdict(Frame.ipv4(source: text)) == .drop, "\(text)")
        }
        #expect(try state.verdict(Frame.ipv4(source: "127.0.0.1")) == .pass)
    }
}
