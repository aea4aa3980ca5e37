import Foundation
import Glibc
import Testing

/// Inputs that are not files, or are too large, are refused at once with one line,
/// and change nothing: nothing reads an endless device or waits for a FIFO's writer.
@Suite struct BoundedInputTests {
    static let pins = "/tmp/portcullis-bounded-never"

    @Test(arguments: ["/dev/zero", "/dev/urandom", "/tmp"])
    func aBlockFileThatIsNotARegularFileIsRefused(path: String) throws {
        let result = try Command.portcullis(["block", "--file", path], pins: Self.pins)
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr == "portcullis: \(path) is not a regular file (give a file, or - for standard input)\n")
        #expect(!FileManager.default.fileExists(atPath: Self.pins))
    }

    @Test func aFIFOWithoutAWriterIsRefusedAtOnce() throws {
        let fifo = "/tmp/portcullis-fifo-\(UUID().uuidString.prefix(8))"
        try #require(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        let started = Date()
        let result = try Command.portcullis(["block", "--file", fifo], pins: Self.pins)
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("is not a regular file"), "\(result)")
        let check = try Command.run(Command.portcullis, ["run", "--check", "--config", fifo], timeout: 10)
        #expect(check.status == 1, "\(check)")
        #expect(check.stderr.contains("is not a regular file"), "\(check)")
    }

    @Test func aConfigurationThatIsADeviceOrTooLargeIsRefused() throws {
        let zero = try Command.run(Command.portcullis, ["run", "--check", "--config", "/dev/zero"], timeout: 10)
        #expect(zero.status == 1, "\(zero)")
        #expect(zero.stderr == "portcullis: /dev/zero: is not a regular file (give a file, or - for standard input)\n", "\(zero)")
        let large = "/tmp/portcullis-large-\(UUID().uuidString.prefix(8)).yaml"
        try Data(repeating: UInt8(ascii: "#"), count: 2 << 20).write(to: URL(fileURLWithPath: large))
        defer { unlink(large) }
        let result = try Command.run(Command.portcullis, ["run", "--check", "--config", large], timeout: 10)
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("is larger than 1 MiB"), "\(result)")
    }

    @Test func aConfigurationThatIsNotUTF8IsRefusedWithItsLine() throws {
        let path = "/tmp/portcullis-latin1-\(UUID().uuidString.prefix(8)).yaml"
        try Data("sweep_interval: 10s\n# caf".utf8 + [0xE9] + Data("\nincident_log: /tmp/x\n".utf8)).write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        let result = try Command.run(Command.portcullis, ["run", "--check", "--config", path], timeout: 10)
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("\(path):2"), "\(result)")
        #expect(result.stderr.contains("not valid UTF-8"), "\(result)")
    }

    @Test func aControlSocketPathLongerThanSunPathIsRefusedByCheck() throws {
        let path = "/tmp/portcullis-socket-\(UUID().uuidString.prefix(8)).yaml"
        let socket = "/run/" + String(repeating: "s", count: 110) + ".sock"
        try "control_socket: \(socket)\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let result = try Command.run(Command.portcullis, ["run", "--check", "--config", path], timeout: 10)
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("holds at most 107"), "\(result)")
    }
}

/// `run --check` validates everything `run` loads, so the unit's ExecStartPre never passes a
/// configuration the daemon then refuses.
@Suite struct RunCheckTests {
    static func check(_ yaml: String, files: [String: String]) throws -> Result {
        let directory = "/tmp/portcullis-check-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for (name, text) in files { try text.write(toFile: "\(directory)/\(name)", atomically: true, encoding: .utf8) }
        try yaml.replacingOccurrences(of: "DIR", with: directory).write(toFile: "\(directory)/portcullis.yaml", atomically: true, encoding: .utf8)
        return try Command.run(Command.portcullis, ["run", "--check", "--config", "\(directory)/portcullis.yaml"], timeout: 10)
    }

    @Test func aMalformedActiveResponseFileFailsTheCheck() throws {
        let result = try Self.check("""
            detector:
              active_response: DIR/ossec.conf
              sources:
                - file: DIR/auth.log
            """, files: ["ossec.conf": "<ossec_config><active-response><command>firewall-drop</command>"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("ossec.conf"), "\(result)")
        #expect(!result.stdout.contains("valid"), "\(result)")
    }

    @Test func aBadRulesFileFailsTheCheck() throws {
        let result = try Self.check("""
            detector:
              rules: [DIR/rules.yaml]
              sources:
                - file: DIR/auth.log
            """, files: ["rules.yaml": "rules:\n  - id: 100001\n    level: 99\n    description: bad\n    match: '(['\n"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("rules.yaml"), "\(result)")
    }

    @Test(arguments: [false, true])
    func aDeepUnclosedOrClosedXMLFileFailsTheCheckWithItsLine(closed: Bool) throws {
        let depth = 50_000
        let elements = String(repeating: "<a>", count: depth) + (closed ? String(repeating: "</a>", count: depth) : "")
        let result = try Self.check("""
            detector:
              active_response: DIR/ossec.conf
              sources:
                - file: DIR/auth.log
            """, files: ["ossec.conf": "<ossec_config>\n" + elements + (closed ? "</ossec_config>" : "")])
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("ossec.conf:2:") && result.stderr.contains("nested more than 64"), "\(result)")
        #expect(result.stderrLines.count == 1, "\(result)")
    }

    @Test func aHugeValueIsNamedByItsStartNotEchoed() throws {
        // 50 MB is past the 16 MiB bound of an XML file; 8 MB fits, so the value itself is judged.
        let timeout = String(repeating: "9", count: 8 << 20)
        let result = try Self.check("""
            detector:
              active_response: DIR/ossec.conf
              sources:
                - file: DIR/auth.log
            """, files: ["ossec.conf": "<ossec_config><active-response><command>firewall-drop</command><location>local</location><rules_id>5710</rules_id><timeout>\(timeout)</timeout></active-response></ossec_config>"])
        #expect(result.status == 1, "\(result.stderr.prefix(300))")
        #expect(result.stderr.utf8.count < 300, "an error of \(result.stderr.utf8.count) bytes")
        #expect(result.stderr.hasSuffix("...' is not a positive number of seconds (at most 3155760000)\n"), "\(result.stderr.prefix(300))")
        #expect(result.stderr.split(separator: "\n").count == 1)
    }

    @Test func aLongYAMLValueIsNamedByItsStart() throws {
        let result = try Self.check("sweep_interval: \(String(repeating: "x", count: 100_000))\n", files: [:])
        #expect(result.status == 1, "\(result.stderr.prefix(300))")
        #expect(result.stderr.utf8.count < 400, "an error of \(result.stderr.utf8.count) bytes")
    }

    @Test func aValidDetectorPasses() throws {
        let result = try Self.check("""
            detector:
              active_response: DIR/ossec.conf
              sources:
                - file: DIR/auth.log
            """, files: ["ossec.conf": "<ossec_config><active-response><command>firewall-drop</command><location>local</location><rules_id>5710</rules_id><timeout>60</timeout></active-response></ossec_config>"])
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.hasSuffix(": valid\n"), "\(result)")
    }
}
