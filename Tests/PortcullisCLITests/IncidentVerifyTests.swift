import Foundation
import Glibc
import PortcullisIncidents
import Testing

/// `portcullis incidents verify` and the escaped table, on records written here: no root, no BPF.
@Suite struct IncidentVerifyTests {
    let directory = "/tmp/portcullis-verify-\(UUID().uuidString.prefix(8).lowercased())"
    var path: String { directory + "/incidents.jsonl" }
    var state: String { directory + "/state" }

    func write(_ count: Int, reason: String = "test") throws {
        let log = IncidentLog(path: path, stateDirectory: state)
        for n in 1...count {
            try log.append(Incident(timeUnixMs: 1_780_000_000_000 + Int64(n) * 1000, action: .block, target: "198.51.100.\(n)",
                                    source: "cli", reason: reason, requestedSeconds: 60))
        }
    }

    func portcullis(_ arguments: [String]) throws -> Result {
        try Command.run(Command.portcullis, arguments, environment: ["PORTCULLIS_INCIDENT_LOG": path, "PORTCULLIS_STATE_DIR": state])
    }

    func lines() throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    @Test func intactEditedAndUsage() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try write(4)
        let intact = try portcullis(["incidents", "verify"])
        #expect(intact.status == 0, "\(intact)")
        #expect(intact.stdout.hasPrefix("intact: the chain covers 4 records (sequence 1 to 4) in 1 file"), "\(intact)")

        var edited = try lines()
        edited[1] = edited[1].replacingOccurrences(of: "198.51.100.2", with: "198.51.100.222")
        try (edited.joined(separator: "\n") + "\n").write(toFile: path, atomically: false, encoding: .utf8)
        let broken = try portcullis(["incidents", "verify"])
        #expect(broken.status == 1, "\(broken)")
        #expect(broken.stdout == "broken: line 2 of \(path) (2026-05-28T20:26:42.000Z block 198.51.100.222) was changed: its hash does not match its content\n")

        // Options after `verify` are verify's own.
        let json = try Command.run(Command.portcullis, ["incidents", "verify", "--json", "--incident-log", path, "--state-dir", state])
        #expect(json.status == 1)
        let decoded = try? JSONDecoder().decode(IncidentChainReport.self, from: Data(json.stdout.utf8))
        let report = try #require(decoded, "not a report: \(json)")
        #expect(report.problem?.kind == .changed && report.problem?.at.line == 2 && report.problem?.at.target == "198.51.100.222")

        let usage = try portcullis(["incidents", "verify", "--bogus"])
        #expect(usage.status == 2, "\(usage)")

        // The report itself still works beside the new subcommand.
        let table = try portcullis(["incidents", "--since", "2026-01-01"])
        #expect(table.status == 0, "\(table)")
        #expect(table.stdout.contains("198.51.100.4"))
    }

    @Test func missingKeyAndMissingLogFailWithAdvice() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let none = try portcullis(["incidents", "verify"])
        #expect(none.status == 1)
        #expect(none.stderr == "portcullis: no incident log at \(path); give the right one with --incident-log or PORTCULLIS_INCIDENT_LOG\n")
        try write(1)
        let noKey = try portcullis(["incidents", "verify", "--state-dir", directory + "/elsewhere"])
        #expect(noKey.status == 1)
        #expect(noKey.stderr.contains("there is no key at \(directory)/elsewhere/incident-key; give the state directory"))
    }

    @Test func tableEscapesControlCharacters() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try write(1, reason: "sshd: invalid user \u{1b}[2J\u{1b}]0;pwned\u{07}\nfake line\0")
        let table = try portcullis(["incidents"])
        #expect(table.status == 0, "\(table)")
        #expect(!table.stdout.contains("\u{1b}") && !table.stdout.contains("\0") && !table.stdout.contains("\u{07}"))
        #expect(table.stdout.contains("sshd: invalid user \\x1b[2J\\x1b]0;pwned\\x07\\x0afake line\\x00"))
        #expect(table.stdout.split(separator: "\n").count == 2)
        // JSON keeps the text as it was, escaped by JSON itself.
        let json = try portcullis(["incidents", "--json"])
        #expect(json.stdout.lowercased().contains(#"\u001b[2j"#) && !json.stdout.contains("\u{1b}"))
    }
}
