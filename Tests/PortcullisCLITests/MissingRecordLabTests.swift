import Foundation
import Glibc
import Testing

/// A change that takes effect while its incident record cannot be written, the incident log's
/// file system being full: the change is in force (real traffic in the netns lab says so), and
/// whoever asked is told, in one line naming the log and the cause, whether the daemon wrote
/// the maps or the command did. The exit status stays 0.
@Suite(.enabled(if: Privileges.canRunLab && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"),
                "needs root, bpffs, iproute2, ping and curl (run as root; CI does)"))
struct MissingRecordLabTests {
    @Test func withoutADaemonEachCommandWarnsInOneLineAndExitsZero() throws {
        let lab = try Lab()
        let logs = try TmpfsMount(at: "/tmp/portcullis-test-record-\(lab.name)", size: "64k")
        defer {
            logs.unmount()
            withExtendedLifetime(lab) {}
        }
        let log = logs.path + "/incidents.jsonl"
        try #require(try lab.attach().status == 0)
        try logs.fill()
        func run(_ arguments: [String], input: String? = nil) throws -> Result {
            try lab.portcullis(arguments + ["--incident-log", log], input: input)
        }

        let blocked = try run(["block", Lab.attackerV4])
        #expect(blocked.status == 0, "\(blocked)")
        Self.expectWarning(blocked, "\(Lab.attackerV4) is blocked", log: log)
        #expect(blocked.stdout.hasPrefix("blocked \(Lab.attackerV4) permanently"), "\(blocked)")
        #expect(try lab.drops(), "the block is in force")

        let json = try run(["block", Lab.otherV4, "--for", "1h", "--json"])
        #expect(json.status == 0, "\(json)")
        Self.expectWarning(json, "\(Lab.otherV4) is blocked", log: log)
        Self.expectMissing(try #require(try decodeJSON(json.stdout) as? [String: Any], "\(json)"), log: log)
        #expect(try lab.drops(from: Lab.otherV4))

        let unblocked = try run(["unblock", Lab.attackerV4])
        #expect(unblocked.status == 0, "\(unblocked)")
        Self.expectWarning(unblocked, "\(Lab.attackerV4) is unblocked", log: log)
        #expect(try lab.passes(), "the block is lifted")

        let loaded = try run(["block", "--file", "-", "--for", "1s"], input: "203.0.113.1\n203.0.113.2\n")
        #expect(loaded.status == 0, "\(loaded)")
        Self.expectWarning(loaded, "2 targets from standard input are blocked", log: log)
        Thread.sleep(forTimeInterval: 1.2)
        let swept = try run(["sweep", "--json"])
        #expect(swept.status == 0, "\(swept)")
        Self.expectWarning(swept, "2 expired blocks were removed", log: log)
        let report = try #require(try decodeJSON(swept.stdout) as? [String: Any], "\(swept)")
        #expect(report["removedCount"] as? Int == 2)
        Self.expectMissing(report, log: log)

        #expect(Self.records(log) == 0, "nothing, not even part of a record, reached the full log")
    }

    /// Through the daemon: the CLI prints the same line as without one, `--json` has the field,
    /// the Wazuh response writes it to active-responses.log, and the daemon logs and counts it.
    @Test func throughTheDaemonEveryClientIsToldAndTheDaemonLogsAndCountsIt() throws {
        let lab = try Lab()
        let logs = try TmpfsMount(at: "/tmp/portcullis-test-record-\(lab.name)", size: "64k")
        let log = logs.path + "/incidents.jsonl"
        let daemon = DaemonFixture(pins: lab.pins, incidentLog: log)
        defer {
            _ = try? daemon.stop()
            logs.unmount()
            withExtendedLifetime(lab) {}
        }
        try daemon.write("interfaces:\n  - name: \(lab.bastionInterface)\n    netns: \(lab.bastionNamespace)")
        try daemon.start()
        try logs.fill()
        #expect(try Self.failuresCounted(daemon) == 0)

        let blocked = try daemon.portcullis(["block", Lab.attackerV4])
        #expect(blocked.status == 0, "\(blocked)")
        Self.expectWarning(blocked, "\(Lab.attackerV4) is blocked", log: log)
        #expect(try lab.drops(), "the block is in force")

        let json = try daemon.portcullis(["block", Lab.otherV4, "--json"])
        #expect(json.status == 0, "\(json)")
        Self.expectWarning(json, "\(Lab.otherV4) is blocked", log: log)
        Self.expectMissing(try #require(try decodeJSON(json.stdout) as? [String: Any], "\(json)"), log: log)

        let home = try WazuhHome(pins: lab.pins, controlSocket: daemon.socket)
        let emulator = ExecdEmulator(home: home)
        #expect(try emulator.run(Messages.add(Lab.attackerV6)).status == 0)
        #expect(try lab.drops(from: Lab.attackerV6, to: Lab.bastionV6), "the response's block is in force")
        #expect(try emulator.run(Messages.delete(Lab.attackerV6), withStdout: false).status == 0)
        #expect(try lab.passes(from: Lab.attackerV6, to: Lab.bastionV6), "and lifted")
        let messages = try home.logMessages()
        Self.expectWarning(in: messages, "\(Lab.attackerV6) is blocked", log: log)
        Self.expectWarning(in: messages, "\(Lab.attackerV6) is unblocked", log: log)

        #expect(try Self.failuresCounted(daemon) == 4, "two blocks, the response's add and its delete")
        #expect(Self.records(log) == 0)
        let (_, output) = try daemon.stop()
        // Released only now: its purge would take the lab's pins from under the daemon.
        withExtendedLifetime(home) {}
        #expect(output.contains("\(Lab.attackerV4) is blocked, but the incident record was not written: cannot write to the incident log \(log): No space left on device"),
                "the daemon's log: \(output)")
    }

    @Test func withoutADaemonTheWazuhResponseLogsItInActiveResponsesLog() throws {
        let lab = try Lab()
        let logs = try TmpfsMount(at: "/tmp/portcullis-test-record-\(lab.name)", size: "64k")
        defer {
            logs.unmount()
            withExtendedLifetime(lab) {}
        }
        let log = logs.path + "/incidents.jsonl"
        try #require(try lab.attach().status == 0)
        try logs.fill()
        let home = try WazuhHome(pins: lab.pins)
        let emulator = ExecdEmulator(home: home, environment: ["PORTCULLIS_INCIDENT_LOG": log])

        let add = try emulator.run(Messages.add(Lab.attackerV4))
        #expect(add.status == 0, "\(add)")
        #expect(try lab.drops(), "the block is in force")
        var messages = try home.logMessages()
        #expect(messages.last == "Ended", "\(messages)")
        #expect(messages.dropLast().last?.hasPrefix("Warning: \(Lab.attackerV4) is blocked, but the incident record was not written") == true,
                "the warning comes just before the end: \(messages)")
        Self.expectWarning(in: messages, "\(Lab.attackerV4) is blocked", log: log)

        #expect(try emulator.run(Messages.delete(Lab.attackerV4), withStdout: false).status == 0)
        #expect(try lab.passes(), "the block is lifted")
        messages = try home.logMessages()
        Self.expectWarning(in: messages, "\(Lab.attackerV4) is unblocked", log: log)
        #expect(Self.records(log) == 0)
    }

    // MARK: - What the tests look for

    /// The words every client uses, with the cause a full disk gives.
    static func warning(_ change: String, log: String) -> String {
        "\(change), but the incident record was not written: cannot write to the incident log \(log): No space left on device"
    }

    /// One line on stderr, the warning; nothing else.
    static func expectWarning(_ result: Result, _ change: String, log: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.stderrLines.count == 1, "one line: \(result)", sourceLocation: sourceLocation)
        #expect(result.stderr.hasPrefix("portcullis: warning: " + warning(change, log: log)), "\(result)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains("free space on its filesystem"), "says what to do: \(result)", sourceLocation: sourceLocation)
    }

    static func expectWarning(in messages: [String], _ change: String, log: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(messages.contains { $0.hasPrefix("Warning: " + warning(change, log: log)) }, "active-responses.log: \(messages)",
                sourceLocation: sourceLocation)
    }

    /// `incidentRecord` of a `--json` answer whose record is missing.
    static func expectMissing(_ body: [String: Any], log: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let record = body["incidentRecord"] as? [String: Any]
        #expect(record?["written"] as? Bool == false, "\(body)", sourceLocation: sourceLocation)
        #expect(record?["log"] as? String == log, "\(body)", sourceLocation: sourceLocation)
        #expect((record?["error"] as? String)?.contains("No space left on device") == true, "\(body)", sourceLocation: sourceLocation)
    }

    /// The lines of the incident log (0 when it is empty or absent).
    static func records(_ log: String) -> Int {
        ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").count
    }

    /// `portcullis_incident_record_failures_total` from the daemon's metrics endpoint.
    static func failuresCounted(_ daemon: DaemonFixture) throws -> Int? {
        let metrics = try Command.run("/usr/bin/curl", ["-s", "--max-time", "10", "http://127.0.0.1:\(daemon.metricsPort)/metrics"])
        let line = metrics.stdout.split(separator: "\n").first { $0.hasPrefix("portcullis_incident_record_failures_total ") }
        return line.flatMap { Int($0.split(separator: " ").last ?? "") }
    }
}
