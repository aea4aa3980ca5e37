import Foundation
import PortcullisControl
import PortcullisCore
@testable import portcullis
import Testing

/// The live view's layout and keys, without a terminal.
@Suite struct TopScreenTests {
    static func block(_ target: String, pps: Double, bps: Double, total: Int, remaining: Double?, reason: String = "") -> String {
        let expiry = remaining.map { #""remainingSeconds": \#($0), "expiresAtUnixMs": \#(1_800_000_000_000 + Int64($0 * 1000)),"# } ?? ""
        return #"{"target": "\#(target)", "packetsPerSecond": \#(pps), "bytesPerSecond": \#(bps), "droppedPackets": \#(total), "droppedBytes": \#(total * 64), \#(expiry) "permanent": \#(remaining == nil), "expired": false, "source": "cli", "reason": \#(JSONStringLiteral.quoted(reason))}"#
    }

    static func sample(blocks: [String], expiring: Int = 5, incidents: Int = 5, interfaces: Int = 2) throws -> TopSample {
        let interface = { (slot: Int) in
            #"{"slot": \#(slot), "names": ["lab\#(slot)-b in netns lab\#(slot)-bastion"], "seen": 100, "dropped": 90, "droppedBytes": 5760, "passed": 10, "seenPerSecond": 4100000, "droppedPerSecond": 4012345, "droppedBytesPerSecond": 240740700, "passedPerSecond": 12}"#
        }
        let record = { (index: Int) in
            #"{"target": "203.0.113.\#(index)", "family": "ipv4", "kind": "address", "permanent": false, "expired": false, "remainingSeconds": \#(30 + index), "expiresAtUnixMs": 1800000000000, "droppedPackets": 0, "droppedBytes": 0, "reason": "scan", "source": "detector"}"#
        }
        let incident = { (index: Int) in
            #"{"time": "2026-12-02T10:00:0\#(index).000Z", "timeUnixMs": \#(1_796_205_600_000 + Int64(index) * 1000), "action": "block", "target": "198.51.100.\#(index)", "source": "wazuh", "reason": "rule 5710"}"#
        }
        let json = #"""
        {"time": "2026-12-02T10:00:00.000Z", "timeUnixMs": 1796205600000, "intervalSeconds": 1.0,
         "interfaces": [\#((0..<interfaces).map { interface($0 + 2) }.joined(separator: ","))],
         "total": {"names": ["all"], "seen": 200, "dropped": 180, "droppedBytes": 11520, "passed": 20, "seenPerSecond": 8200000, "droppedPerSecond": 8024690, "droppedBytesPerSecond": 481481400, "passedPerSecond": 24},
         "blocks": [\#(blocks.joined(separator: ","))],
         "expiring": [\#((0..<expiring).map(record).joined(separator: ","))],
         "incidents": [\#((0..<incidents).map(incident).joined(separator: ","))],
         "sampling": {"blocksHeld": 1000001, "scanned": 65536, "exactSlice": 65536, "prefixSlice": 4096, "readByKey": 12, "watched": 12, "candidates": 3, "passSeconds": 16.2, "roundMicroseconds": 4210}}
        """#
        return try JSONDecoder().decode(TopSample.self, from: Data(json.utf8))
    }

    static let context = TopContext(via: "daemon", intervalSeconds: 1, order: .pps, problem: nil, clock: "10:00:00")

    static func columns(_ line: String) -> Int { TopScreen.displayWidth(line) }

    @Test func aFrameFits80By24WithTheFastestBlockFirstAndTheFooterLast() throws {
        let blocks = (1...30).map { Self.block("198.51.100.\($0)", pps: Double($0) * 1000, bps: Double($0) * 64_000, total: $0 * 10_000, remaining: Double($0) * 60) }
        let lines = TopScreen.lines(try Self.sample(blocks: blocks), Self.context, width: 80, height: 24)
        #expect(lines.count == 24)
        for line in lines { #expect(Self.columns(line) <= 80, "\(line)") }
        #expect(lines[0].hasPrefix("portcullis top  10:00:00  via daemon"))
        #expect(lines[1].hasPrefix("dropping 8.02M pps 3.85G bit/s  passing 24 pps  blocks 1.00M"))
        #expect(lines[2].hasPrefix("INTERFACE"))
        #expect(lines[3].hasPrefix("lab2-b in netns lab2-bastion") && lines[3].contains("4.01M") && lines[3].contains("1.93G"))
        let header = try #require(lines.firstIndex { $0.hasPrefix("DROPPING NOW") })
        #expect(lines[header].contains("PPS*"))
        #expect(lines[header + 1].hasPrefix("198.51.100.30") && lines[header + 1].contains("30.0k"))
        #expect(lines[header + 2].hasPrefix("198.51.100.29"))
        #expect(lines.contains { $0.hasPrefix("EXPIRING SOON") })
        #expect(lines.contains { $0.hasPrefix("LATEST INCIDENTS") })
        #expect(lines[23].hasPrefix("sampling: 65536 read of 1.00M held, 12 by key, round 4.2 ms, full pass 16.2s"))
    }

    @Test func theSortKeyReordersTheBlocks() throws {
        let blocks = [Self.block("198.51.100.1", pps: 9_000, bps: 100, total: 5, remaining: 3_600),
                      Self.block("198.51.100.2", pps: 10, bps: 900_000, total: 900, remaining: 20),
                      Self.block("198.51.100.3", pps: 500, bps: 5_000, total: 90_000, remaining: nil)]
        let sample = try Self.sample(blocks: blocks)
        func first(_ order: TopOrder) -> String? {
            var context = Self.context
            context.order = order
            let lines = TopScreen.lines(sample, context, width: 80, height: 24)
            guard let header = lines.firstIndex(where: { $0.hasPrefix("DROPPING NOW") }) else { return nil }
            return lines[header + 1].split(separator: " ").first.map(String.init)
        }
        #expect(first(.pps) == "198.51.100.1")
        #expect(first(.bps) == "198.51.100.2")
        #expect(first(.total) == "198.51.100.3")
        #expect(first(.expiry) == "198.51.100.2")
        #expect(sample.ordered(by: .total).blocks.map(\.target) == ["198.51.100.3", "198.51.100.2", "198.51.100.1"])
    }

    @Test func longAndHostileTextIsEscapedAndCutToTheWidth() throws {
        let hostile = "owned\u{1b}[2J\u{1b}]0;pwned\u{07}\n\u{202e}fake " + String(repeating: "漢", count: 60)
        let blocks = [Self.block("198.51.100.66", pps: 1, bps: 1, total: 1, remaining: 5, reason: hostile),
                      Self.block("2001:db8:ffff:ffff:ffff:ffff:ffff:fff1", pps: 0, bps: 0, total: 1, remaining: 5, reason: hostile)]
        let lines = TopScreen.lines(try Self.sample(blocks: blocks), Self.context, width: 120, height: 24)
        for line in lines { #expect(Self.columns(line) <= 120, "\(line)") }
        #expect(lines.contains { $0.hasPrefix("2001:db8:ffff:ffff:ffff:ffff:ffff:fff1") })
        let row = try #require(lines.first { $0.hasPrefix("198.51.100.66") })
        #expect(!lines.joined().contains("\u{1b}") && !lines.joined().contains("\u{07}") && !lines.joined().contains("\u{202e}"))
        #expect(row.contains("owned\\x1b[2J\\x1b]0;pwned\\x07\\x0a\\u{202e}fake"))
        // The wide characters take two columns each: the row stops at 120 columns, not 120 characters.
        #expect(Self.columns(row) <= 120 && Self.columns(row) >= 119)
        #expect(row.count < Self.columns(row) && row.hasSuffix("漢"))
        // On 80 columns every line still fits.
        for line in TopScreen.lines(try Self.sample(blocks: blocks), Self.context, width: 80, height: 24) { #expect(Self.columns(line) <= 80) }
    }

    @Test func aSmallTerminalKeepsTheTitleTheBlocksAndTheFooter() throws {
        let blocks = (1...5).map { Self.block("198.51.100.\($0)", pps: Double($0), bps: 1, total: 1, remaining: 1) }
        let lines = TopScreen.lines(try Self.sample(blocks: blocks), Self.context, width: 40, height: 9)
        #expect(lines.count == 9)
        for line in lines { #expect(Self.columns(line) <= 40) }
        #expect(lines[0].hasPrefix("portcullis top"))
        let header = try #require(lines.firstIndex { $0.hasPrefix("DROPPING NOW") })
        #expect(lines[header + 1].hasPrefix("198.51.100.5"))
        #expect(lines[8].hasPrefix("sampling:"))
        // Too short for even that: never more lines than rows.
        #expect(TopScreen.lines(try Self.sample(blocks: blocks), Self.context, width: 20, height: 3).count == 3)
    }

    @Test func onceIsPlainTextWithEverySectionAndNoTerminalControl() throws {
        let lines = TopScreen.lines(try Self.sample(blocks: [Self.block("198.51.100.9", pps: 5, bps: 320, total: 50, remaining: nil)]),
                                    Self.context, width: nil, height: nil)
        #expect(lines.contains { $0.hasPrefix("198.51.100.9") && $0.contains("perm") })
        #expect(lines.filter { $0.hasPrefix("203.0.113.") }.count == 5)
        #expect(lines.filter { $0.contains("rule 5710") }.count == 5)
        #expect(!lines.joined().contains("\u{1b}"))
    }

    @Test func keysMapToCommandsAndEscapeSequencesAreSkippedWhole() {
        #expect(TopKeys.parse(Array("q".utf8)) == [.quit])
        #expect(TopKeys.parse([0x03]) == [.quit])
        #expect(TopKeys.parse(Array("pbte".utf8)) == [.sort(.pps), .sort(.bps), .sort(.total), .sort(.expiry)])
        #expect(TopKeys.parse([0x0c]) == [.redraw])
        // Arrow keys, a function key and an SS3 sequence carry letters that are not commands.
        #expect(TopKeys.parse([0x1b, 0x5b, 0x41, 0x1b, 0x5b, 0x31, 0x35, 0x7e, 0x1b, 0x4f, 0x50]).isEmpty)
        #expect(TopKeys.parse([0x1b, 0x5b, 0x31, 0x3b, 0x35, 0x71]).isEmpty)
        #expect(TopKeys.parse([0x1b, 0x5b, 0x42] + Array("q".utf8)) == [.quit])
        #expect(TopKeys.parse(Array("xyz".utf8)).isEmpty)
    }

    @Test func numbersAndTimesAreCompact() {
        #expect(TopScreen.rate(nil) == "-")
        #expect(TopScreen.rate(12.4) == "12")
        #expect(TopScreen.rate(999.4) == "999")
        #expect(TopScreen.rate(1_234) == "1.23k")
        #expect(TopScreen.rate(4_012_345) == "4.01M")
        #expect(TopScreen.rate(12_345_678_900) == "12.3G")
        #expect(TopScreen.left(42.9, permanent: false, expired: false) == "42s")
        #expect(TopScreen.left(725, permanent: false, expired: false) == "12m05s")
        #expect(TopScreen.left(18_720, permanent: false, expired: false) == "5h12m")
        #expect(TopScreen.left(nil, permanent: true, expired: false) == "perm")
        #expect(TopScreen.left(-3, permanent: false, expired: true) == "expired")
    }
}
