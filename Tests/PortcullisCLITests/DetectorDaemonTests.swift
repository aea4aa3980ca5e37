import Foundation
import Glibc
import Testing

/// The detector inside the daemon, fed lines written straight into a log file:
/// following the file across rotation and truncation, and running a
/// user-defined <command> with Wazuh's protocol.
@Suite(.enabled(if: Privileges.canUseBPF && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"),
                "needs root, bpffs and curl (run as root; CI does)"))
struct DetectorDaemonTests {
    /// Appends sshd's `message` to `path` as rsyslog writes it to auth.log.
    static func sshd(_ message: String, to path: String) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("Nov 28 07:00:00 bastion sshd[4242]: \(message)\n".utf8))
        try handle.close()
    }

    /// An ossec.conf <command> for the script `name`.sh in the commands directory.
    static func command(_ name: String, extraArguments: String? = nil) -> String {
        """
        <command>
          <name>\(name)</name>
          <executable>\(name).sh</executable>
          <timeout_allowed>yes</timeout_allowed>\(extraArguments.map { "\n  <extra_args>\($0)</extra_args>" } ?? "")
        </command>

        """
    }

    /// An ossec.conf <active-response>: `command` on this host when one of `rules` fires.
    static func activeResponse(_ command: String, rules: String, timeout: Int) -> String {
        """
        <active-response>
          <command>\(command)</command>
          <location>local</location>
          <rules_id>\(rules)</rules_id>
          <timeout>\(timeout)</timeout>
        </active-response>

        """
    }

    /// Starts `daemon` with its detector following a new, empty auth.log, configured by
    /// `ossecConfig` (what goes inside <ossec_config>), with each of `scripts` (name and
    /// text) an executable in the commands directory. Returns the log's path.
    static func startDetector(_ daemon: DaemonFixture, ossecConfig: String, scripts: [String: String] = [:]) throws -> String {
        let log = "\(daemon.directory)/auth.log"
        try "".write(toFile: log, atomically: true, encoding: .utf8)
        try "<ossec_config>\n\(ossecConfig)</ossec_config>\n"
            .write(toFile: "\(daemon.directory)/ossec.conf", atomically: true, encoding: .utf8)
        var detector = """
            detector:
              active_response: \(daemon.directory)/ossec.conf

            """
        // Only with scripts: the rotation test runs with no commands directory at all.
        if !scripts.isEmpty {
            let bin = "\(daemon.directory)/active-response/bin"
            try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
            for (name, text) in scripts {
                try text.write(toFile: "\(bin)/\(name)", atomically: true, encoding: .utf8)
                chmod("\(bin)/\(name)", 0o755)
            }
            detector += "  commands_dir: \(bin)\n"
        }
        try daemon.write(detector + """
              sources:
                - file: \(log)
            """)
        try daemon.start()
        return log
    }

    func blocked(_ daemon: DaemonFixture) throws -> Set<String> {
        let page = try daemon.json("GET", "/v1/blocks?limit=0") as? [String: Any]
        return Set((page?["blocks"] as? [[String: Any]] ?? []).compactMap { $0["target"] as? String })
    }

    @Test func theLogIsFollowedAcrossRotationAndTruncation() throws {
        let daemon = DaemonFixture()
        let log = try Self.startDetector(
            daemon,
            ossecConfig: Self.activeResponse("firewall-drop", rules: "5710,5712", timeout: 600)
                + "<global><white_list>203.0.113.200</white_list></global>\n")

        try Self.sshd("Invalid user admin from 203.0.113.1 port 1", to: log)
        #expect(try waitUntil(5) { try blocked(daemon).contains("203.0.113.1") })

        // Rotation: the old file moves away, a new one takes its name.
        try FileManager.default.moveItem(atPath: log, toPath: log + ".1")
        try Self.sshd("Invalid user admin from 203.0.113.2 port 2", to: log + ".1")
        try "".write(toFile: log, atomically: false, encoding: .utf8)
        try Self.sshd("Invalid user admin from 203.0.113.3 port 3", to: log)
        #expect(try waitUntil(5) { try blocked(daemon).isSuperset(of: ["203.0.113.2", "203.0.113.3"]) },
                "the rest of the rotated file and the new one are both read")

        // Truncation (logrotate's copytruncate): the file is emptied in place, then written again.
        truncate(log, 0)
        Thread.sleep(forTimeInterval: 0.5)
        try Self.sshd("Invalid user admin from 2001:db8::4 port 4", to: log)
        #expect(try waitUntil(5) { try blocked(daemon).contains("2001:db8::4") })

        // The white list wins over every rule; an unparseable address blocks nothing and is recorded.
        try Self.sshd("Invalid user admin from 203.0.113.200 port 5", to: log)
        try Self.sshd("Invalid user admin from 203.0.113.999 port 6", to: log)
        #expect(try waitUntil(5) { daemon.incidents.contains { ($0["error"] as? String)?.contains("cannot be parsed") == true } })
        #expect(try !blocked(daemon).contains("203.0.113.200"))
        #expect(daemon.incidents.contains { $0["action"] as? String == "refuse" && $0["target"] as? String == "203.0.113.200" })
    }

    @Test func aUserDefinedCommandRunsWithWazuhsProtocol() throws {
        let daemon = DaemonFixture()
        // An active-response script as Wazuh users write them: read a line; on add, ask check_keys and
        // read the answer; record everything it saw.
        let script = """
            #!/bin/sh
            read -r message
            echo "$message" >> \(daemon.directory)/seen
            case $message in
              *'"command":"add"'*)
                echo '{"version":1,"origin":{"name":"notify","module":"active-response"},"command":"check_keys","parameters":{"keys":["203.0.113.50"]}}'
                read -r answer
                echo "$answer" >> \(daemon.directory)/seen ;;
            esac
            """
        let log = try Self.startDetector(
            daemon,
            ossecConfig: Self.command("notify", extraArguments: "--tag lab") + Self.activeResponse("notify", rules: "5718", timeout: 2),
            scripts: ["notify.sh": script])
        try Self.sshd("User root from 203.0.113.50 not allowed because not listed in AllowUsers", to: log)
        let seenPath = "\(daemon.directory)/seen"
        func seen() -> [String] {
            ((try? String(contentsOfFile: seenPath, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
        // add, its continue, and 2 s later the delete.
        #expect(waitUntil(10) { seen().count >= 3 }, "\(seen())")
        let lines = seen()
        #expect(lines.first?.contains(#""command":"add""#) == true)
        #expect(lines.first?.contains(#""srcip":"203.0.113.50""#) == true)
        #expect(lines.first?.contains(#""extra_args":["--tag","lab"]"#) == true)
        #expect(lines.first?.contains(#""id":"5718""#) == true)
        #expect(lines.dropFirst().first?.contains(#""command":"continue""#) == true)
        #expect(lines.dropFirst(2).first?.contains(#""command":"delete""#) == true)
        #expect(try blocked(daemon).isEmpty, "a user-defined command is not Portcullis's own block")
    }

    /// A slow user-defined command (here one that takes 25 s before it answers) runs beside
    /// the detector, never in front of it: the next attacker is blocked at once, and the
    /// daemon still stops promptly, stopping the command.
    @Test func aSlowUserCommandDelaysNoBlock() throws {
        let daemon = DaemonFixture()
        let slow = """
            #!/bin/sh
            read -r message
            echo started >> \(daemon.directory)/seen
            sleep 25
            """
        let log = try Self.startDetector(
            daemon,
            ossecConfig: Self.command("slow") + Self.activeResponse("slow", rules: "5718", timeout: 60)
                + Self.activeResponse("firewall-drop", rules: "5710", timeout: 600),
            scripts: ["slow.sh": slow])
        try Self.sshd("User root from 203.0.113.60 not allowed because not listed in AllowUsers", to: log)
        #expect(waitUntil(5) { FileManager.default.fileExists(atPath: "\(daemon.directory)/seen") }, "the slow command never started")
        let written = Date()
        try Self.sshd("Invalid user admin from 203.0.113.61 port 1", to: log)
        #expect(try waitUntil(5) { try blocked(daemon).contains("203.0.113.61") }, "the block waited for the slow command")
        #expect(Date().timeIntervalSince(written) < 5)

        let stopping = Date()
        let (status, output) = try daemon.stop()
        #expect(status == 0, "\(output)")
        #expect(Date().timeIntervalSince(stopping) < 8, "the daemon waited for the slow command to stop: \(output)")
    }
}
