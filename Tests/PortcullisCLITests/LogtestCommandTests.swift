import Foundation
import Testing

/// `portcullis logtest` as a user runs it: no root, no state.
struct LogtestCommandTests {
    func temporaryDirectory() throws -> String {
        let path = "/tmp/portcullis-logtest-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func linesFromStandardInputWithTheConfigurationsResponse() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try """
            <ossec_config>
              <active-response>
                <command>firewall-drop</command><location>local</location>
                <rules_id>5710</rules_id><timeout>100</timeout><ipv6_prefix>64</ipv6_prefix>
              </active-response>
            </ossec_config>
            """.write(toFile: "\(directory)/ossec.conf", atomically: true, encoding: .utf8)
        try """
            detector:
              active_response: \(directory)/ossec.conf
              sources: [{file: \(directory)/auth.log}]
            """.write(toFile: "\(directory)/portcullis.yaml", atomically: true, encoding: .utf8)
        let lines = """
            Nov 28 07:00:00 bastion sshd[1]: Invalid user admin from 198.51.100.7 port 22
            Nov 28 07:00:00 bastion sshd[1]: Invalid user admin from 2001:db8:5::9 port 22
            Nov 28 07:00:00 bastion cron[1]: Invalid user admin from 198.51.100.7 port 22
            """
        let result = try Command.run(Command.portcullis, ["logtest", "--config", "\(directory)/portcullis.yaml"], input: lines + "\n")
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.contains("pre-decoding: timestamp 'Nov 28 07:00:00', hostname 'bastion', program 'sshd'"), "\(result)")
        #expect(result.stdout.contains("decoder: sshd (sshd-invalid-user): srcuser=admin srcip=198.51.100.7 srcport=22"), "\(result)")
        #expect(result.stdout.contains("rule: 5710 (level 5) sshd: Attempt to login using a non-existent user"), "\(result)")
        #expect(result.stdout.contains("response: firewall-drop 198.51.100.7 for 1m40s"), "\(result)")
        #expect(result.stdout.contains("response: firewall-drop 2001:db8:5::/64 for 1m40s"), "\(result)")
        #expect(result.stdout.contains("no alert: no decoder took the message (program 'cron')"), "\(result)")
    }

    @Test func jsonFromAFileWithTheBuiltInRules() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let lines = (1...8).map { "sshd[1]: Failed password for invalid user u\($0) from 198.51.100.9 port \($0) ssh2" }
        try (lines.joined(separator: "\n")).write(toFile: "\(directory)/auth.log", atomically: true, encoding: .utf8)
        let result = try Command.run(Command.portcullis, ["logtest", "--json", "--file", "\(directory)/auth.log"])
        #expect(result.status == 0, "\(result)")
        let objects = result.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(objects.count == 8, "the last line has no newline and is still read: \(result)")
        let ids = objects.map { ($0["rule"] as? [String: Any])?["id"] as? String ?? "-" }
        #expect(ids == Array(repeating: "5760", count: 7) + ["5763"])
        #expect((objects.last?["responses"] as? [String])?.first?.contains("no <active-response> is configured") == true)
    }

    @Test func aBrokenRuleFileIsAnErrorWithItsLine() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "<group name=\"x\">\n<rule id=\"1\" level=\"3\"><if_sid>42</if_sid></rule>\n</group>\n"
            .write(toFile: "\(directory)/local_rules.xml", atomically: true, encoding: .utf8)
        try """
            detector:
              wazuh_ruleset: [\(directory)/local_rules.xml]
              sources: [{file: \(directory)/auth.log}]
            """.write(toFile: "\(directory)/portcullis.yaml", atomically: true, encoding: .utf8)
        let result = try Command.run(Command.portcullis, ["logtest", "--config", "\(directory)/portcullis.yaml"], input: "")
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("local_rules.xml:2: rule 1: if_sid 42 names no rule loaded before it"), "\(result)")
    }
}
