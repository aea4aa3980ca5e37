import Foundation
import Glibc
import Testing

/// `portcullis report` on records made for real in the netns lab: the standalone detector in the
/// daemon (a detection, its block, a white-listed and a malformed address), the Wazuh active
/// response through execd's protocol, the operator (`block`, `unblock`, an expiry, an allowlisted
/// and a loopback refusal) and a block file; pings from the attacker namespace make the drops.
@Suite(.enabled(if: Privileges.canRunLab && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), Privileges.labReason))
struct ReportTests {
    /// The lab, its daemon and the records they made, removed when the test ends.
    final class Run {
        let lab: Lab
        let daemon: DaemonFixture
        let home: WazuhHome

        init() throws {
            lab = try Lab()
            daemon = DaemonFixture(pins: lab.pins)
            let authLog = "\(daemon.directory)/auth.log"
            try "".write(toFile: authLog, atomically: true, encoding: .utf8)
            try """
                <ossec_config>
                <global><white_list>203.0.113.200</white_list></global>
                \(DetectorDaemonTests.activeResponse("firewall-drop", rules: "5710", timeout: 600))</ossec_config>

                """.write(toFile: "\(daemon.directory)/ossec.conf", atomically: true, encoding: .utf8)
            try daemon.write("""
                interfaces:
                  - name: \(lab.bastionInterface)
                    netns: \(lab.bastionNamespace)
                detector:
                  active_response: \(daemon.directory)/ossec.conf
                  sources:
                    - file: \(authLog)
                """)
            try daemon.start()
            home = try WazuhHome(pins: lab.pins, controlSocket: daemon.socket)

            // The detector: a detection and its block; the attacker's pings are dropped, then the operator lifts it.
            try DetectorDaemonTests.sshd("Invalid user admin from \(Lab.attackerV4) port 1", to: authLog)
            try #require(waitUntil(10) { self.has("block", Lab.attackerV4) }, "the detector did not block: \(daemon.incidents)")
            try #require(try lab.pingsAnswered(count: 4) == 0)
            try #require(try portcullis(["unblock", Lab.attackerV4]).status == 0)
            // White-listed, loopback, and an address that cannot be read.
            try DetectorDaemonTests.sshd("Invalid user admin from 203.0.113.200 port 2", to: authLog)
            try DetectorDaemonTests.sshd("Invalid user admin from 127.0.0.1 port 3", to: authLog)
            try DetectorDaemonTests.sshd("Invalid user admin from 203.0.113.999 port 4", to: authLog)
            try #require(waitUntil(10) {
                self.has("refuse", "203.0.113.200") && self.has("refuse", "127.0.0.1") && self.has("detect", "203.0.113.999")
            }, "\(daemon.incidents)")

            // Wazuh: an alert from just now, its block, pings dropped, then execd's delete.
            let alertTime = Self.wazuhTimestamp(Date().addingTimeInterval(-0.5))
            let message = Messages.add(Lab.attackerV6).replacingOccurrences(of: "2026-11-28T07:00:00.000+0000", with: alertTime)
            let emulator = ExecdEmulator(home: home)
            try #require(try emulator.run(message).status == 0)
            try #require(try lab.pingsAnswered(from: Lab.attackerV6, to: Lab.bastionV6, count: 3) == 0)
            try #require(try emulator.run(ExecdEmulator.with(message, command: "delete"), withStdout: false).status == 0)

            // The operator: a block that expires (the daemon sweeps every second), a permanent prefix,
            // a file, and refusals.
            try #require(try portcullis(["block", Lab.otherV4, "--for", "1s", "--reason", "operator: <b>short</b> | test"]).status == 0)
            try #require(try portcullis(["block", "192.0.2.0/24", "--reason", "scanner network"]).status == 0)
            try #require(try portcullis(["block", "--file", "-", "--for", "1h"], input: "203.0.113.20\n203.0.113.21 2h\n").status == 0)
            try #require(try portcullis(["allow", "198.51.100.50"]).status == 0)
            try #require(try portcullis(["block", "198.51.100.50"]).status != 0)
            try #require(try portcullis(["block", "127.0.0.1"]).status != 0)
            try #require(waitUntil(10) { self.has("expire", Lab.otherV4) }, "no expiry recorded: \(daemon.incidents)")
            // The attacker back, blocked by the operator and still in force: its pings are dropped
            // and only the data plane knows how many yet.
            try #require(try portcullis(["block", Lab.attackerV4, "--reason", "back again"]).status == 0)
            try #require(try lab.pingsAnswered(count: 3) == 0)
        }

        func has(_ action: String, _ target: String) -> Bool {
            daemon.incidents.contains { $0["action"] as? String == action && $0["target"] as? String == target }
        }

        /// The CLI on the daemon's socket, ledger, key and incident log.
        func portcullis(_ arguments: [String], input: String? = nil) throws -> Result {
            try daemon.portcullis(arguments + ["--incident-log", daemon.incidentLog], input: input)
        }

        /// RFC 3339 in UTC, for --until.
        static func rfc3339(_ date: Date) -> String {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "UTC")
            formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss'Z'"
            return formatter.string(from: date)
        }

        /// Wazuh's form: "2026-11-28T07:00:00.000+0000".
        static func wazuhTimestamp(_ date: Date) -> String {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "UTC")
            formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss.SSSZ"
            return formatter.string(from: date)
        }
    }

    /// The records `incidents --json` prints for the period.
    static func incidents(_ run: Run, since: String) throws -> [[String: Any]] {
        let listed = try run.portcullis(["incidents", "--since", since, "--json"])
        return try #require(try decodeJSON(listed.stdout) as? [[String: Any]], "\(listed)")
    }

    @Test func markdownAndJSONAgreeWithIncidents() throws {
        let run = try Run()
        let records = try Self.incidents(run, since: "1h")
        let result = try run.portcullis(["report", "--since", "1h", "--format", "json"])
        #expect(result.status == 0, "\(result)")
        let report = try #require(try decodeJSON(result.stdout) as? [String: Any], "\(result)")
        let totals = try #require(report["totals"] as? [String: Any])

        func count(_ action: String) -> Int { records.filter { $0["action"] as? String == action }.count }
        func dropped(_ key: String) -> Int {
            records.compactMap { ($0["outcome"] as? [String: Any])?[key] as? Int }.reduce(0, +)
        }
        #expect(totals["records"] as? Int == records.count)
        let actions = ["detect": "detected", "block": "blocked", "refresh": "refreshed", "unblock": "unblocked", "expire": "expired", "refuse": "refused"]
        for (action, key) in actions { #expect(totals[key] as? Int == count(action), "\(key)") }
        #expect(totals["droppedPackets"] as? Int == dropped("droppedPackets"))
        #expect(totals["droppedBytes"] as? Int == dropped("droppedBytes"))
        // 4 IPv4 pings, and 3 IPv6 pings (the first can be held back for neighbour discovery).
        #expect(dropped("droppedPackets") >= 5, "\(records)")

        // Every source made records, and the report counts each one's.
        let sources = try #require(report["sources"] as? [[String: Any]])
        for source in ["detector", "wazuh", "cli", "file"] {
            let row = try #require(sources.first { $0["source"] as? String == source }, "no \(source) row: \(sources)")
            let mine = records.filter { $0["source"] as? String == source }
            for (action, key) in actions { #expect(row[key] as? Int == mine.filter { $0["action"] as? String == action }.count, "\(source) \(key)") }
        }

        // Outcomes: the detector's block unblocked by the operator, Wazuh's by its delete, the short one expired.
        let blocks = try #require(report["blocks"] as? [[String: Any]])
        func block(_ target: String) -> [String: Any]? { blocks.first { $0["target"] as? String == target } }
        #expect(block(Lab.attackerV4)?["ending"] as? String == "unblocked")
        #expect((block(Lab.attackerV4)?["droppedPackets"] as? Int ?? 0) >= 4)
        #expect(block(Lab.attackerV6)?["ending"] as? String == "unblocked")
        #expect((block(Lab.attackerV6)?["droppedPackets"] as? Int ?? 0) >= 1)
        #expect(block(Lab.otherV4)?["ending"] as? String == "expired")
        #expect(block("192.0.2.0/24")?["ending"] as? String == "in-force")
        // The attacker's second block is in force: its drops so far come from the data plane.
        let again = blocks.last { $0["target"] as? String == Lab.attackerV4 }
        #expect(again?["ending"] as? String == "in-force")
        #expect((again?["droppedPackets"] as? Int ?? 0) >= 3, "\(again ?? [:])")
        // With --until, a count read now could include drops after the period: none is shown.
        let bounded = try run.portcullis(["report", "--since", "1h", "--until", Run.rfc3339(Date().addingTimeInterval(60)), "--format", "json"])
        let boundedBlocks = (try decodeJSON(bounded.stdout) as? [String: Any])?["blocks"] as? [[String: Any]] ?? []
        let boundedAgain = try #require(boundedBlocks.last { $0["target"] as? String == Lab.attackerV4 }, "\(bounded)")
        #expect(boundedAgain["ending"] as? String == "in-force")
        #expect(!(boundedAgain["droppedPackets"] is Int), "\(boundedAgain)")

        // Time to respond: the detector's block (its detection record) and Wazuh's (the alert's time).
        let times = try #require(report["timeToRespond"] as? [String: Any])
        #expect(times["responses"] as? Int == count("block") + count("refresh"))
        #expect(times["measured"] as? Int == 2, "\(times)")
        let p95 = try #require(times["p95Seconds"] as? Double, "\(times)")
        #expect(p95 >= 0 && p95 < 10, "\(times)")

        let refusals = try #require(report["refusals"] as? [String: Any])
        let kinds = try #require(refusals["byKind"] as? [String: Int])
        #expect(refusals["refused"] as? Int == count("refuse"))
        #expect(kinds["allowlisted"] == 2, "the detector's white list and the operator's allowlist: \(kinds)")
        #expect(kinds["malformed"] == 1)
        #expect(kinds["not-blockable"] == 1, "loopback, from the detector: \(kinds)")
        #expect((report["chain"] as? [String: Any])?["status"] as? String == "intact", "\(report["chain"] ?? "")")

        // The Markdown form: the same totals and sources.
        let markdown = try run.portcullis(["report", "--since", "1h", "--format", "md"])
        #expect(markdown.status == 0, "\(markdown)")
        let lines = markdown.stdout.split(separator: "\n").map(String.init)
        func table(after heading: String) -> [[String]] {
            let start = lines.drop { $0 != "## \(heading)" }.drop { !$0.hasPrefix("|") }
            return start.prefix { $0.hasPrefix("|") }.dropFirst(2).map { line in
                line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast().map { $0.trimmingCharacters(in: .whitespaces) }
            }
        }
        let markdownTotals = try #require(table(after: "Totals").first, "\(markdown.stdout)")
        let keys = ["records", "detected", "blocked", "refreshed", "unblocked", "expired", "refused", "distinctTargets", "droppedPackets", "droppedBytes"]
        #expect(markdownTotals == keys.map { String(totals[$0] as? Int ?? -1) })
        let markdownSources = table(after: "By source")
        #expect(markdownSources.count == sources.count)
        for row in markdownSources {
            let source = try #require(sources.first { $0["source"] as? String == row.first })
            #expect(Array(row.dropFirst()) == ["detected", "blocked", "refreshed", "unblocked", "expired", "refused"].map { String(source[$0] as? Int ?? -1) })
        }
        #expect(table(after: "Outcome of every block").count == blocks.count)
        #expect(markdown.stdout.contains(#"operator: \<b\>short\</b\> \| test"#), "the reason escaped")

        // --until: a day is included whole; an end before the start is a usage error.
        let tomorrow = Run.wazuhTimestamp(Date().addingTimeInterval(86_400)).prefix(10)
        let until = try run.portcullis(["report", "--since", "1h", "--until", String(tomorrow), "--json"])
        let untilTotals = (try decodeJSON(until.stdout) as? [String: Any])?["totals"] as? [String: Any]
        #expect(untilTotals?["records"] as? Int == records.count, "\(until)")
        let backwards = try run.portcullis(["report", "--since", "1h", "--until", "2h"])
        #expect(backwards.status == 2 && backwards.stderr.split(separator: "\n").count == 1, "\(backwards)")
        let bad = try run.portcullis(["report", "--since", "last tuesday"])
        #expect(bad.status == 2 && bad.stderr.contains("since must be YYYY-MM-DD"), "\(bad)")
        let missing = try run.portcullis(["report"])
        #expect(missing.status == 2, "\(missing)")
    }

    @Test(.enabled(if: Chromium.path != nil, "needs Debian's chromium to render the page (tools/setup.sh installs it)"))
    func htmlRendersInHeadlessChromium() throws {
        let run = try Run()
        let json = try run.portcullis(["report", "--since", "1h", "--json"])
        let report = try #require(try decodeJSON(json.stdout) as? [String: Any], "\(json)")
        let totals = try #require(report["totals"] as? [String: Any])

        let browser = try Chromium()
        let page = "\(browser.directory)/report.html"
        let written = try run.portcullis(["report", "--since", "1h", "--format", "html", "--output", page])
        #expect(written.status == 0, "\(written)")
        #expect(written.stdout.isEmpty)
        let html = try String(contentsOfFile: page, encoding: .utf8)
        var status = stat()
        #expect(stat(page, &status) == 0 && status.st_mode & 0o777 == 0o600)
        for fetching in ["src=", "href=", "url(", "@import", "<script", "<link"] {
            #expect(!html.lowercased().contains(fetching), "\(fetching)")
        }

        let rendered = try browser.render(page)
        #expect(rendered.consoleMessages.isEmpty, "console: \(rendered.consoleMessages)")
        #expect(rendered.pageRequests.isEmpty, "the page fetched: \(rendered.pageRequests)")
        // The DOM as loaded: the title, the chain's result and the totals row's cells, in order.
        let text = rendered.dom
        #expect(text.contains("<h1>Portcullis incident report</h1>"))
        #expect(text.contains("<p class=\"intact\">intact: the chain covers \(totals["records"] as? Int ?? -1) records"), "the chain's result")
        let cells = ["records", "detected", "blocked", "refreshed", "unblocked", "expired", "refused", "distinctTargets", "droppedPackets", "droppedBytes"]
            .map { "<td class=\"n\">\(totals[$0] as? Int ?? -1)</td>" }.joined()
        #expect(text.contains("<tr>" + cells + "</tr>"), "the totals row")
        #expect(text.components(separatedBy: "<rect class=\"bar\"").count > 1, "the chart's bars")
        #expect(text.contains("operator: &lt;b&gt;short&lt;/b&gt; | test"), "the reason as text, not markup")
        #expect(!text.contains("<b>short</b>"))
        // The screenshot: a PNG of the whole page.
        let png = try Data(contentsOf: URL(fileURLWithPath: rendered.screenshot))
        #expect(png.starts(with: [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))
        #expect(png.count > 20_000, "an empty page is smaller: \(png.count) bytes")
    }
}

/// Headless Chromium with a profile and HOME of its own in a temporary directory (removed at
/// the end), in a network namespace of its own, its run bounded by a timeout. It reports what
/// the page wrote to the console and which requests the page made (from its net log; the
/// browser's own background requests are told apart by their initiator).
final class Chromium {
    static let path: String? = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }

    let directory = "/tmp/portcullis-chromium-\(UUID().uuidString.prefix(8).lowercased())"

    init() throws {
        try FileManager.default.createDirectory(atPath: "\(directory)/home", withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    struct Rendering {
        var dom: String
        var consoleMessages: [String]
        var pageRequests: [String]
        var screenshot: String
    }

    func render(_ page: String) throws -> Rendering {
        let chromium = try #require(Self.path)
        let netLog = "\(directory)/net-log.json", screenshot = "\(directory)/report.png"
        let common = [
            "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=\(directory)/profile", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
            "--disable-extensions", "--enable-logging=stderr", "--v=0",
        ]
        let environment = ["HOME": "\(directory)/home"]
        // unshare: nothing the browser tries can leave this namespace.
        let dump = try Command.run("/usr/bin/unshare", ["--net", "--", chromium] + common + ["--log-net-log=\(netLog)", "--dump-dom", "file://\(page)"],
                                   environment: environment, timeout: 90)
        try #require(dump.status == 0 && !dump.signaled, "chromium --dump-dom failed: \(dump)")
        let shot = try Command.run("/usr/bin/unshare", ["--net", "--", chromium] + common + ["--screenshot=\(screenshot)", "--window-size=1200,2000", "file://\(page)"],
                                   environment: environment, timeout: 90)
        try #require(shot.status == 0 && !shot.signaled, "chromium --screenshot failed: \(shot)")
        let console = dump.stderr.split(separator: "\n").filter { $0.contains(":CONSOLE") }.map(String.init)
        return Rendering(dom: dump.stdout, consoleMessages: console, pageRequests: try Self.pageRequests(netLog), screenshot: screenshot)
    }

    /// The URLs of requests that a page started (the browser's own have no origin as initiator).
    static func pageRequests(_ netLog: String) throws -> [String] {
        let data = try Data(contentsOf: URL(fileURLWithPath: netLog))
        let log = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "the net log is not JSON")
        let types = (log["constants"] as? [String: Any])?["logEventTypes"] as? [String: Int] ?? [:]
        let startJob = try #require(types["URL_REQUEST_START_JOB"], "no URL_REQUEST_START_JOB in the net log's constants")
        let events = log["events"] as? [[String: Any]] ?? []
        return events.compactMap { event in
            guard event["type"] as? Int == startJob, let parameters = event["params"] as? [String: Any],
                  let url = parameters["url"] as? String, parameters["initiator"] as? String != "not an origin" else { return nil }
            return url
        }
    }
}
