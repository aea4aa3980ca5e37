import Foundation
@testable import PortcullisIncidents
import Testing

/// The period report's sums, on records written by hand, and its escaping of hostile text.
struct IncidentReportTests {
    /// 2026-11-01T00:00:00Z.
    static let start: Int64 = 1_793_491_200_000
    static let hour: Int64 = 3_600_000
    static let end = start + 72 * hour

    static let sshd = Incident.Detection(ruleId: "5710", ruleLevel: 5, ruleDescription: "sshd: Attempt to login using a non-existent user",
                                         user: "admin", log: "Invalid user admin from 203.0.113.9 port 1", logSource: "/var/log/auth.log")
    static let hostile = "<script>alert(1)</script> | **bold** `code` \u{1b}[2J\u{1b}]0;pwned\u{07}\nfake | row [x](http://evil.example) www.evil.example \u{202e}txt"

    static func wazuh(_ rule: String, alertTime: String?) -> Incident.Wazuh {
        Incident.Wazuh(ruleId: rule, ruleLevel: "5", ruleDescription: "sshd: brute force", agentId: "001", agentName: "bastion",
                       alertId: "1.1", alertTime: alertTime, command: "add")
    }

    static var records: [Incident] {
        let day1 = start, day2 = start + 24 * hour, day3 = start + 48 * hour
        return [
            // Day 1: the detector sees and blocks, Wazuh blocks 2 s after its alert, the operator blocks a prefix.
            Incident(timeUnixMs: day1 + 10 * hour, action: .detect, target: "203.0.113.9", source: "detector",
                     reason: sshd.ruleDescription, detection: sshd),
            Incident(timeUnixMs: day1 + 10 * hour + 250, action: .block, target: "203.0.113.9", source: "detector",
                     reason: "detector rule 5710", requestedSeconds: 600, expiresAtUnixMs: day1 + 10 * hour + 600_250, detection: sshd),
            Incident(timeUnixMs: day1 + 11 * hour + 2000, action: .block, target: "198.51.100.7", source: "wazuh",
                     reason: "wazuh rule 5712", requestedSeconds: 3600, expiresAtUnixMs: day1 + 12 * hour,
                     wazuh: wazuh("5712", alertTime: "2026-11-01T12:00:00.000+0100")),
            Incident(timeUnixMs: day1 + 12 * hour, action: .block, target: "192.0.2.0/24", source: "cli", reason: "scanner"),
            Incident(timeUnixMs: day1 + 13 * hour, action: .refuse, target: "127.0.0.1", source: "cli",
                     error: "refusing to block 127.0.0.1: loopback is never blocked", refusal: .notBlockable),
            // A record older than the refusal's kind: read from its words.
            Incident(timeUnixMs: day1 + 14 * hour, action: .refuse, target: "203.0.113.50", source: "wazuh",
                     wazuh: wazuh("5712", alertTime: nil),
                     error: "refusing to block 203.0.113.50: it is allowlisted by 203.0.113.0/24 (`portcullis allow --list` shows the allowlist)"),
            // Day 2: the ends of day 1's blocks, a malformed address, a skewed clock, one left to expire.
            Incident(timeUnixMs: day2 + hour, action: .expire, target: "203.0.113.9", source: "detector",
                     outcome: .init(lastedSeconds: 600, droppedPackets: 1000, droppedBytes: 64_000)),
            Incident(timeUnixMs: day2 + 2 * hour, action: .unblock, target: "198.51.100.7", source: "wazuh",
                     wazuh: wazuh("5712", alertTime: nil), outcome: .init(lastedSeconds: 3600, droppedPackets: 10, droppedBytes: 840)),
            Incident(timeUnixMs: day2 + 3 * hour, action: .detect, target: "203.0.113.999", source: "detector",
                     reason: sshd.ruleDescription, detection: sshd,
                     error: "the source address cannot be parsed; nothing was blocked", refusal: .malformed),
            Incident(timeUnixMs: day2 + 5 * hour + 1000, action: .block, target: "198.51.100.8", source: "wazuh",
                     requestedSeconds: 60, expiresAtUnixMs: day2 + 5 * hour + 61_000,
                     wazuh: wazuh("5712", alertTime: "2026-11-02T05:00:05.000Z")),
            Incident(timeUnixMs: day2 + 6 * hour + 10_000, action: .block, target: "198.51.100.9", source: "wazuh",
                     requestedSeconds: 3600, expiresAtUnixMs: day2 + 7 * hour, wazuh: wazuh("5712", alertTime: "2026-11-02T06:00:00Z")),
            Incident(timeUnixMs: day2 + 6 * hour + 20_000, action: .refresh, target: "198.51.100.9", source: "wazuh",
                     requestedSeconds: 3600, expiresAtUnixMs: day2 + 7 * hour + 20_000, wazuh: wazuh("5712", alertTime: "2026-11-02T06:00:19Z")),
            // Day 3: a block set before the period ends; blocks from files; hostile text.
            Incident(timeUnixMs: day3 + hour, action: .expire, target: "2001:db8::5", source: "detector",
                     outcome: .init(lastedSeconds: 100, droppedPackets: 5, droppedBytes: 500)),
            Incident(timeUnixMs: day3 + 2 * hour, action: .block, target: "12 targets from list.txt", source: "file", reason: "feed"),
            Incident(timeUnixMs: day3 + 3 * hour, action: .expire, target: "3 blocks loaded from files", source: "file",
                     outcome: .init(lastedSeconds: nil, droppedPackets: 7, droppedBytes: 70)),
            Incident(timeUnixMs: day3 + 4 * hour, action: .block, target: "203.0.113.66", source: "cli", reason: hostile),
        ]
    }

    static func report(_ records: [Incident] = records, chain: IncidentReport.Chain = .unverified("test")) -> IncidentReport {
        IncidentReport.make(records, since: start, until: end, log: "/var/log/portcullis/incidents.jsonl", chain: chain,
                            top: 3, generatedAtUnixMs: end)
    }

    @Test func totalsAndDaysCountEveryRecordOnce() {
        let report = Self.report()
        let totals = report.totals
        #expect(totals.records == 16)
        #expect((totals.detected, totals.blocked, totals.refreshed, totals.unblocked, totals.expired, totals.refused) == (2, 7, 1, 1, 3, 2))
        #expect(totals.droppedPackets == 1000 + 10 + 5 + 7 && totals.droppedBytes == 64_000 + 840 + 500 + 70)
        #expect(report.days.map(\.day) == ["2026-11-01", "2026-11-02", "2026-11-03"])
        #expect(report.days.map(\.blocked) == [3, 2, 2])
        #expect(report.days.map(\.droppedPackets) == [0, 1010, 12])
        #expect(report.days == DailySummary.make(Self.records), "the same rows as incidents --summary")
        #expect(report.period.since == "2026-11-01T00:00:00.000Z" && report.period.until == "2026-11-04T00:00:00.000Z")
    }

    @Test func rulesSourcesAndTopTargets() throws {
        let report = Self.report()
        let wazuh = try #require(report.rules.first { $0.engine == "wazuh" && $0.rule == "5712" })
        #expect((wazuh.detected, wazuh.blocked, wazuh.refused) == (0, 4, 1))
        let detector = try #require(report.rules.first { $0.engine == "detector" && $0.rule == "5710" })
        #expect((detector.detected, detector.blocked, detector.refused) == (2, 1, 0))
        #expect(detector.description == "sshd: Attempt to login using a non-existent user")

        let sources = Dictionary(uniqueKeysWithValues: report.sources.map { ($0.source, $0) })
        #expect(Set(sources.keys) == ["detector", "wazuh", "cli", "file"])
        #expect(sources["wazuh"].map { ($0.blocked, $0.refreshed, $0.unblocked, $0.refused) } ?? (0, 0, 0, 0) == (3, 1, 1, 1))
        #expect(sources["detector"].map { ($0.detected, $0.blocked, $0.expired) } ?? (0, 0, 0) == (2, 1, 2))
        #expect(sources["file"].map { ($0.blocked, $0.expired) } ?? (0, 0) == (1, 1))
        #expect(report.sources.first?.source == "wazuh", "the busiest source first")

        #expect(report.topTargets.count == 3, "cut at top")
        #expect(report.topTargets.map(\.target) == ["203.0.113.9", "198.51.100.7", "2001:db8::5"])
        #expect(report.topTargets.first.map { ($0.droppedPackets, $0.droppedBytes, $0.detected, $0.blocked, $0.kind) }
                ?? (0, 0, 0, 0, "") == (1000, 64_000, 1, 1, "address"))
    }

    @Test func everyBlockHasItsOutcome() throws {
        let report = Self.report()
        let blocks = Dictionary(uniqueKeysWithValues: report.blocks.map { ($0.target, $0) })
        #expect(report.blocks.count == 7)
        let detected = try #require(blocks["203.0.113.9"])
        #expect(detected.ending == .expired && detected.lastedSeconds == 600 && detected.droppedPackets == 1000 && detected.droppedBytes == 64_000)
        #expect(detected.started == "2026-11-01T10:00:00.250Z" && detected.ended == "2026-11-02T01:00:00.000Z" && detected.rule == "5710")
        #expect(blocks["198.51.100.7"]?.ending == .unblocked && blocks["198.51.100.7"]?.droppedPackets == 10)
        #expect(blocks["192.0.2.0/24"]?.ending == .inForce, "permanent, no end recorded")
        #expect(blocks["192.0.2.0/24"]?.droppedPackets == nil)
        #expect(blocks["198.51.100.8"]?.ending == .expiredUnrecorded, "its expiry passed before the period's end")
        let refreshed = try #require(blocks["198.51.100.9"])
        #expect(refreshed.refreshes == 1 && refreshed.ending == .expiredUnrecorded && refreshed.expiresAt == "2026-11-02T07:00:20.000Z")
        let before = try #require(blocks["2001:db8::5"])
        #expect(before.started == nil && before.ending == .expired && before.droppedPackets == 5)
        #expect(blocks["203.0.113.66"]?.ending == .inForce)
        #expect(report.fileBlocks == .init(loads: 1, expiryRecords: 1, droppedPackets: 7, droppedBytes: 70))
        #expect(blocks["12 targets from list.txt"] == nil, "a file's summary is no block of an address")

        // A block set again before a sweep recorded its end supersedes it.
        var again = Self.records.prefix(2).map { $0 }
        again.append(Incident(timeUnixMs: Self.start + 20 * Self.hour, action: .block, target: "203.0.113.9", source: "cli"))
        let superseded = Self.report(again).blocks
        #expect(superseded.map(\.ending) == [.superseded, .inForce])
    }

    @Test func timeToRespondFromDetectionsAndAlerts() {
        let times = Self.report().timeToRespond
        #expect(times.responses == 8)
        // Detector 0.25 s (its detection record), Wazuh 2 s (an alert time with an offset), 10 s, and the refresh 1 s.
        #expect(times.measured == 4)
        #expect(times.clockSkewed == 1, "an alert 4 s after its block")
        #expect(times.notMeasurable == 3, "the operator's two blocks and the file's load")
        #expect(times.medianSeconds == 1.5)
        #expect(times.p95Seconds == 10)
        #expect(times.maxSeconds == 10)
        let none = Self.report([]).timeToRespond
        #expect(none.medianSeconds == nil && none.p95Seconds == nil && none.responses == 0)
    }

    @Test func medianAndNearestRankPercentile() {
        #expect(Statistics.median([1, 2, 3]) == 2)
        #expect(Statistics.median([1, 2, 3, 10]) == 2.5)
        #expect(Statistics.median([]) == nil)
        let hundred = (1...100).map(Double.init)
        #expect(Statistics.percentile(95, of: hundred) == 95)
        #expect(Statistics.percentile(95, of: (1...20).map(Double.init)) == 19)
        #expect(Statistics.percentile(95, of: [7]) == 7)
        #expect(Statistics.percentile(100, of: hundred) == 100)
    }

    @Test func refusalsByKind() {
        let refusals = Self.report().refusals
        #expect(refusals.refused == 2 && refusals.malformedDetections == 1)
        #expect(refusals.byKind == ["not-blockable": 1, "allowlisted": 1, "malformed": 1])
        #expect(refusals.rows.map(\.target) == ["127.0.0.1", "203.0.113.50", "203.0.113.999"])
        #expect(refusals.rows.map(\.rule) == [nil, "5712", "5710"])
    }

    @Test func wazuhAndRFC3339TimesAreRead() {
        #expect(Incident.unixMilliseconds(rfc3339: "2026-11-28T07:00:00.000+0000") == 1_795_849_200_000)
        #expect(Incident.unixMilliseconds(rfc3339: "2026-11-28T08:00:00.5+01:00") == 1_795_849_200_500)
        #expect(Incident.unixMilliseconds(rfc3339: "2026-11-28T07:00:00Z") == 1_795_849_200_000)
        #expect(Incident.unixMilliseconds(rfc3339: "2026-11-28T06:30:00.123456-00:30") == 1_795_849_200_123)
        for bad in ["", "2026-11-28", "2026-11-28T07:00:00", "2026-13-28T07:00:00Z", "2026-11-28T07:00:00.Z", "2026-11-28T07:00:00Zjunk",
                    "2026-11-28T07:00:00+25:00", "2026-11-28 07:00"] {
            #expect(Incident.unixMilliseconds(rfc3339: bad) == nil, "\(bad)")
        }
    }

    @Test func htmlEscapesHostileTextAndFetchesNothing() throws {
        let html = Self.report().html
        #expect(!html.contains("<script"), "no script, whether the page's or an attacker's")
        #expect(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; | **bold** `code` \\x1b[2J\\x1b]0;pwned\\x07\\x0afake | row [x](http://evil.example)"))
        #expect(html.contains("\\u{202e}txt"))
        #expect(!html.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" } && !html.unicodeScalars.contains { $0.value == 0x202e })
        for fetching in ["src=", "href=", "url(", "@import", "<link", "<img", "<iframe", "<object", "<a "] {
            #expect(!html.lowercased().contains(fetching), "\(fetching)")
        }
        #expect(html.contains("default-src 'none'"))
        // The chart: one bar per series and day with any.
        #expect(html.components(separatedBy: "<rect class=\"bar\"").count - 1 == 8)
        #expect(html.contains("<td class=\"n\">1022</td>"), "the total of packets dropped")
    }

    @Test func markdownEscapesHostileTextAndKeepsTablesWhole() throws {
        let markdown = Self.report().markdown
        #expect(!markdown.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" })
        let row = try #require(markdown.split(separator: "\n").first { $0.hasPrefix("| 203.0.113.66 |") }, "the hostile block's row")
        #expect(row.contains(#"\<script\>alert(1)\</script\> \| \*\*bold\*\* \`code\` \\x1b\[2J\\x1b\]0;pwned\\x07\\x0afake \| row \[x\](http\://evil.example) www\.evil.example \\u\{202e\}txt"#))
        // A row has as many cells as its header: a "|" in the text never makes a column.
        let blocks = markdown.split(separator: "\n").drop { !$0.hasPrefix("## Outcome of every block") }
        let header = try #require(blocks.first { $0.hasPrefix("| target |") })
        func cells(_ line: Substring) -> Int { line.replacingOccurrences(of: #"\|"#, with: "").filter { $0 == "|" }.count }
        #expect(cells(row) == cells(header))
        #expect(markdown.contains("| 16 | 2 | 7 | 1 | 1 | 3 | 2 |"), "the totals row")
    }

    @Test func jsonKeysAreStable() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(Self.report(chain: .init(status: "intact", summary: "intact: the chain covers 16 records")))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(Set(object.keys) == ["formatVersion", "generatedAt", "log", "period", "totals", "days", "rules", "sources", "topTargets",
                                     "blocks", "fileBlocks", "timeToRespond", "refusals", "chain"])
        #expect(object["formatVersion"] as? Int == 1)
        let decoded = try JSONDecoder().decode(IncidentReport.self, from: data)
        #expect(decoded == Self.report(chain: .init(status: "intact", summary: "intact: the chain covers 16 records")))
    }
}
