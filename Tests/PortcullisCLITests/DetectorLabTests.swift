import Foundation
import Glibc
import Testing

/// The standalone use case with real programs: an OpenSSH server in the
/// bastion namespace logging to a file the daemon follows, and a real ssh
/// client in the attacker namespace trying a user that does not exist.
@Suite(.enabled(
    if: Privileges.canRunLab && FileManager.default.isExecutableFile(atPath: "/usr/sbin/sshd")
        && FileManager.default.isExecutableFile(atPath: "/usr/bin/ssh") && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"),
    "needs root, bpffs, iproute2, OpenSSH server and client, and curl (run as root; CI does)"))
struct DetectorLabTests {
    /// One ssh attempt, bounded by a 2 s connect timeout. True when the server answered at all.
    static func sshReaches(_ lab: Lab, user: String, from source: String) throws -> Bool {
        let result = try Command.run(
            "/usr/sbin/ip",
            ["netns", "exec", lab.attackerNamespace, "ssh", "-b", source, "-o", "BatchMode=yes", "-o", "ConnectTimeout=2",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
             "\(user)@\(Lab.bastionV4)", "true"],
            timeout: 15)
        // Reaching the server ends in "Permission denied"; a dropped SYN ends in a timeout.
        return result.stderr.contains("Permission denied")
    }

    @Test func rule5710BlocksTheAttackerForTheTimeoutAndOnlyTheAttacker() throws {
        let lab = try Lab()
        let daemon = DaemonFixture(pins: lab.pins)
        let sshd = "\(daemon.directory)/sshd"
        let started = try Command.run(Command.repositoryRoot.appendingPathComponent("tools/lab-sshd.sh").path, ["start", lab.name, sshd])
        try #require(started.status == 0, "\(started)")
        defer { _ = try? Command.run(Command.repositoryRoot.appendingPathComponent("tools/lab-sshd.sh").path, ["stop", sshd]) }
        try """
            <ossec_config>
              <active-response>
                <command>firewall-drop</command>
                <location>local</location>
                <rules_id>5710</rules_id>
                <timeout>6</timeout>
              </active-response>
            </ossec_config>
            """.write(toFile: "\(daemon.directory)/ossec.conf", atomically: true, encoding: .utf8)
        try daemon.write("""
            interfaces:
              - name: \(lab.bastionInterface)
                netns: \(lab.bastionNamespace)
                mode: native
            detector:
              active_response: \(daemon.directory)/ossec.conf
              sources:
                - file: \(sshd)/auth.log
                  program: sshd
            """)
        try daemon.start()
        #expect(try Self.sshReaches(lab, user: "root", from: Lab.attackerV4), "before the attack the server is reachable")

        // The attack: a user that does not exist.
        _ = try Self.sshReaches(lab, user: "nosuchuser", from: Lab.attackerV4)
        let deadline = Date().addingTimeInterval(10)
        var blocked = false
        while Date() < deadline && !blocked {
            let page = try? daemon.json("GET", "/v1/blocks") as? [String: Any]
            blocked = (page?["blocks"] as? [[String: Any]])?.contains { $0["target"] as? String == Lab.attackerV4 } == true
            if !blocked { Thread.sleep(forTimeInterval: 0.2) }
        }
        try #require(blocked, "rule 5710 did not block the attacker: \(daemon.incidents)")
        let blockedAt = Date()
        #expect(try !Self.sshReaches(lab, user: "root", from: Lab.attackerV4), "new connections from the attacker time out")
        #expect(try Self.sshReaches(lab, user: "root", from: Lab.otherV4), "another address still gets through")

        // After the 6 s timeout the attacker gets through again.
        Thread.sleep(forTimeInterval: max(0, 7 - Date().timeIntervalSince(blockedAt)))
        #expect(try Self.sshReaches(lab, user: "root", from: Lab.attackerV4))

        let actions = daemon.incidents.map { $0["action"] as? String ?? "" }
        #expect(actions.first == "detect")
        #expect(actions.contains("block"))
        let detection = try #require(daemon.incidents.first { $0["action"] as? String == "block" }?["detection"] as? [String: Any])
        #expect(detection["ruleId"] as? String == "5710")
        #expect((detection["log"] as? String)?.contains("Invalid user nosuchuser from 198.51.100.2") == true)
    }
}
