import Foundation
import Glibc
import Testing

/// Three bastions in one fleet, each with its own lab (namespace pair), pins, ledger and daemon,
/// sharing one private PostgreSQL 15. Node a connects as the schema's owner and creates it;
/// b and c as least-privilege node roles. Everything is removed when the test ends.
final class FleetLab {
    let database: PostgresServer
    let labs: [Lab]
    let daemons: [DaemonFixture]
    static let nodes = ["a", "b", "c"]
    static let roles = ["portcullis_owner", "node_b", "node_c"]
    /// On node b only: a change of another node that this covers is refused there.
    static let allowlistedOnB = "198.51.100.77"

    /// OpenSSH's server in lab a's bastion namespace (tools/lab-sshd.sh), stopped when the lab goes.
    final class LabSSHD {
        let directory: String
        init(lab: Lab, directory: String) throws {
            self.directory = directory
            let started = try Command.run(Command.repositoryRoot.appendingPathComponent("tools/lab-sshd.sh").path, ["start", lab.name, directory])
            try #require(started.status == 0, "\(started)")
        }
        func stop() { _ = try? Command.run(Command.repositoryRoot.appendingPathComponent("tools/lab-sshd.sh").path, ["stop", directory]) }
        deinit { stop() }
        var authLog: String { "\(directory)/auth.log" }
    }
    let sshd: LabSSHD?

    /// With `detectorOnA`, node a's detector follows `authLog(a)` and blocks with firewall-drop on rule 5710;
    /// with `sshdOnA` as well, it follows the log of a real sshd in lab a's bastion namespace.
    /// With `tls`, the database takes TLS connections only and every node verifies it against
    /// the test CA (verify-full), except the nodes in `wrongCA`, which are given another CA and
    /// so must not connect; they are not waited for.
    init(detectorOnA: Bool = false, sshdOnA: Bool = false, tls: Bool = false, wrongCA: Set<String> = []) throws {
        database = try PostgresServer(tls: tls)
        // One statement each: psql -c runs several in one transaction, which CREATE DATABASE refuses.
        for statement in [
            "CREATE ROLE portcullis_owner LOGIN PASSWORD 'owner-secret'", "CREATE DATABASE fleet OWNER portcullis_owner",
            "CREATE ROLE portcullis_node NOLOGIN", "CREATE ROLE node_b LOGIN PASSWORD 'b-secret' IN ROLE portcullis_node",
            "CREATE ROLE node_c LOGIN PASSWORD 'c-secret' IN ROLE portcullis_node",
        ] { try database.sql(statement) }
        var labs: [Lab] = []
        var daemons: [DaemonFixture] = []
        var sshd: LabSSHD?
        for (index, node) in Self.nodes.enumerated() {
            let lab = try Lab()
            let daemon = DaemonFixture(pins: lab.pins)
            if sshdOnA && node == "a" { sshd = try LabSSHD(lab: lab, directory: "\(daemon.directory)/sshd") }
            let passwordFile = "\(daemon.directory)/fleet.password"
            let secret = ["owner-secret", "b-secret", "c-secret"][index]
            try secret.write(toFile: passwordFile, atomically: true, encoding: .utf8)
            chmod(passwordFile, 0o600)
            let tlsSection = !tls ? "mode: disable" : """
                mode: verify-full
                    ca_file: \(wrongCA.contains(node) ? database.otherCertificateAuthority : database.certificateAuthority)
                """
            var detector = ""
            if detectorOnA && node == "a" {
                let authLog = sshd?.authLog ?? Self.authLog(daemon)
                if sshd == nil { try "".write(toFile: authLog, atomically: true, encoding: .utf8) }
                try ("<ossec_config>\n" + DetectorDaemonTests.activeResponse("firewall-drop", rules: "5710", timeout: 600) + "</ossec_config>\n")
                    .write(toFile: "\(daemon.directory)/ossec.conf", atomically: true, encoding: .utf8)
                detector = """
                    detector:
                      active_response: \(daemon.directory)/ossec.conf
                      sources:
                        - file: \(authLog)\(sshd == nil ? "" : "\n      program: sshd")

                    """
            }
            try daemon.write(detector + """
                interfaces:
                  - name: \(lab.bastionInterface)
                    netns: \(lab.bastionNamespace)
                    mode: native
                allowlist: [\(node == "b" ? Self.allowlistedOnB : "192.0.2.250")]
                fleet:
                  postgres: postgres://\(Self.roles[index])@127.0.0.1:\(database.port)/fleet
                  password_file: \(passwordFile)
                  node: \(node)
                  tls:
                    \(tlsSection)
                  resync_interval: 1s
                """)
            labs.append(lab)
            daemons.append(daemon)
        }
        self.labs = labs
        self.daemons = daemons
        self.sshd = sshd
        for daemon in daemons { try daemon.start() }
        for (index, daemon) in daemons.enumerated() where !wrongCA.contains(Self.nodes[index]) {
            let joined = try Self.eventually(30) { try self.health(daemon)?["connected"] as? Bool == true }
            let health = try daemon.api("GET", "/v1/fleet")
            try #require(joined, "node \(Self.nodes[index]) did not join the fleet: \(health)")
        }
    }

    /// The end of each daemon's log, for a failure's diagnosis.
    deinit {
        // Before the daemons' directories (which hold its pid file) go.
        sshd?.stop()
        for (index, daemon) in daemons.enumerated() {
            let output = (try? daemon.stop())?.output ?? ""
            print("--- node \(Self.nodes[index]):\n\(output.suffix(2000))")
        }
    }

    static func authLog(_ daemon: DaemonFixture) -> String { "\(daemon.directory)/auth.log" }

    func health(_ daemon: DaemonFixture) throws -> [String: Any]? {
        let response = try daemon.api("GET", "/v1/fleet")
        guard response.status == 200 else { return nil }
        return try decodeJSON(response.body) as? [String: Any]
    }

    /// A block through the control API (source api, which the fleet shares by default).
    func block(_ target: String, on daemon: DaemonFixture, duration: String? = nil) throws {
        let body = "{\"target\":\"\(target)\",\"reason\":\"fleet test\"" + (duration.map { ",\"duration\":\"\($0)\"" } ?? "") + "}"
        let response = try daemon.api("POST", "/v1/blocks", body: body)
        try #require(response.status == 200, "block failed: \(response)")
    }

    /// Whether `daemon` holds `target` blocked and in force.
    func holds(_ target: String, _ daemon: DaemonFixture) throws -> Bool {
        let response = try daemon.api("GET", "/v1/block?target=\(target)")
        guard response.status == 200, let record = try decodeJSON(response.body) as? [String: Any] else { return false }
        return record["expired"] as? Bool == false
    }

    /// Polls `condition` every 50 ms for at most `seconds`.
    static func eventually(_ seconds: TimeInterval, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            if try condition() { return true }
            usleep(50_000)
        } while Date() < deadline
        return false
    }
}

@Suite(.serialized) struct FleetLabTests {
    static var canRun: Bool { Privileges.canRunLab && PostgresServer.isAvailable }

    /// The issue's first promise: a block on one bastion drops the attacker on the others;
    /// an unblock and an expiry follow it; the others record which node it came from.
    @Test(.enabled(if: canRun, PostgresServer.reason), .timeLimit(.minutes(3)))
    func aBlockOnOneNodeDropsOnTheOthersAndItsUnblockAndExpiryFollow() throws {
        let fleet = try FleetLab()
        let (a, b, c) = (fleet.daemons[0], fleet.daemons[1], fleet.daemons[2])
        for lab in fleet.labs { #expect(try lab.pingsAnswered(count: 1) == 1) }

        try fleet.block(Lab.attackerV4, on: a)
        for daemon in [b, c] {
            #expect(try FleetLab.eventually(10) { try fleet.holds(Lab.attackerV4, daemon) })
        }
        for lab in fleet.labs { #expect(try lab.pingsAnswered(count: 2) == 0, "dropped on \(lab.name)") }

        // The other nodes' listing and record name the origin node; a's names itself.
        let listed = try b.portcullis(["list"])
        #expect(listed.stdout.contains("NODE"), "\(listed)")
        let row = listed.stdout.split(separator: "\n").first { $0.contains(Lab.attackerV4) }
        #expect(row?.contains(" a ") == true, "\(listed.stdout)")
        #expect(b.incidents.contains { $0["action"] as? String == "block" && $0["target"] as? String == Lab.attackerV4 && $0["node"] as? String == "a" })
        #expect(a.incidents.contains { $0["action"] as? String == "block" && $0["node"] as? String == "a" })

        // Status and metrics show the fleet's health.
        let health = try #require(try fleet.health(c))
        #expect(health["lagEvents"] as? Int == 0)
        #expect((health["cursor"] as? Int ?? 0) >= 1)
        #expect(health["lastApplyUnixMs"] != nil)
        let metrics = try Command.run("/usr/bin/curl", ["-s", "--max-time", "5", "http://127.0.0.1:\(c.metricsPort)/metrics"])
        #expect(metrics.stdout.contains("portcullis_fleet_connected 1"), "\(metrics.stdout.prefix(400))")
        #expect(metrics.stdout.contains("portcullis_fleet_lag_events 0"))

        // An unblock on another node than the one that blocked goes everywhere too.
        let lifted = try b.api("DELETE", "/v1/blocks?target=\(Lab.attackerV4)")
        #expect(lifted.status == 200, "\(lifted)")
        for daemon in [a, c] {
            #expect(try FleetLab.eventually(10) { try !fleet.holds(Lab.attackerV4, daemon) })
        }
        for lab in fleet.labs { #expect(try lab.pingsAnswered(count: 1) == 1, "answered again on \(lab.name)") }

        // An expiry travels as an absolute time: it ends everywhere at once.
        try fleet.block(Lab.otherV4, on: c, duration: "3s")
        for daemon in [a, b] {
            #expect(try FleetLab.eventually(10) { try fleet.holds(Lab.otherV4, daemon) })
        }
        #expect(try fleet.labs[0].pingsAnswered(from: Lab.otherV4, count: 1) == 0)
        usleep(3_500_000)
        for daemon in [a, b, c] { #expect(try !fleet.holds(Lab.otherV4, daemon)) }
        for lab in fleet.labs { #expect(try lab.pingsAnswered(from: Lab.otherV4, count: 1) == 1) }
    }

    /// Fail static: a node that was stopped catches up when it starts; a database that is down
    /// stops nobody enforcing, and what was blocked meanwhile reaches the others once it is back.
    @Test(.enabled(if: canRun, PostgresServer.reason), .timeLimit(.minutes(3)))
    func aStoppedNodeCatchesUpAndADatabaseOutageLosesNothing() throws {
        let fleet = try FleetLab(detectorOnA: true)
        let (a, b, c) = (fleet.daemons[0], fleet.daemons[1], fleet.daemons[2])

        // The first block comes from a's detector, on an sshd line: the detector's blocks are shared.
        try c.stop()
        try DetectorDaemonTests.sshd("Invalid user admin from \(Lab.attackerV4) port 4242", to: FleetLab.authLog(a))
        #expect(try FleetLab.eventually(10) { try fleet.holds(Lab.attackerV4, b) })
        #expect(b.incidents.contains { $0["target"] as? String == Lab.attackerV4 && $0["source"] as? String == "detector" && $0["node"] as? String == "a" })
        try c.start()
        #expect(try FleetLab.eventually(15) { try fleet.holds(Lab.attackerV4, c) }, "c caught up")
        #expect(try fleet.labs[2].pingsAnswered(count: 1) == 0)

        try fleet.database.stop()
        #expect(try FleetLab.eventually(10) { try fleet.health(a)?["connected"] as? Bool == false })
        try fleet.block(Lab.otherV4, on: a)
        // a enforces at once, the database down or not; b and c keep what they had.
        #expect(try fleet.labs[0].pingsAnswered(from: Lab.otherV4, count: 1) == 0)
        #expect(try fleet.labs[1].pingsAnswered(count: 1) == 0, "b still enforces what it had")
        #expect(try !fleet.holds(Lab.otherV4, b))
        #expect((try fleet.health(a)?["outbox"] as? Int ?? 0) >= 1 || a.incidents.contains { $0["target"] as? String == Lab.otherV4 })

        try fleet.database.start()
        for daemon in [b, c] {
            #expect(try FleetLab.eventually(20) { try fleet.holds(Lab.otherV4, daemon) }, "delivered after the outage")
        }
        #expect(try fleet.labs[2].pingsAnswered(from: Lab.otherV4, count: 1) == 0)
        #expect(try fleet.health(a)?["outbox"] as? Int == 0)
    }

    /// The issue's first promise with real programs: a real ssh client in lab a's attacker namespace
    /// tries a user that does not exist against the real sshd on bastion a; a's detector blocks it
    /// (rule 5710), and the attacker's packets are dropped on every bastion.
    @Test(.enabled(if: canRun && FileManager.default.isExecutableFile(atPath: "/usr/sbin/sshd")
                      && FileManager.default.isExecutableFile(atPath: "/usr/bin/ssh"), PostgresServer.reason),
          .timeLimit(.minutes(3)))
    func aRealSSHAttemptOnOneBastionIsDroppedOnEveryBastion() throws {
        let fleet = try FleetLab(detectorOnA: true, sshdOnA: true)
        let (a, b, c) = (fleet.daemons[0], fleet.daemons[1], fleet.daemons[2])
        #expect(try DetectorLabTests.sshReaches(fleet.labs[0], user: "root", from: Lab.attackerV4), "sshd on a answers before the attack")
        _ = try DetectorLabTests.sshReaches(fleet.labs[0], user: "nosuchuser", from: Lab.attackerV4)
        for daemon in [a, b, c] {
            #expect(try FleetLab.eventually(15) { try fleet.holds(Lab.attackerV4, daemon) }, "\(daemon.directory)")
        }
        #expect(try !DetectorLabTests.sshReaches(fleet.labs[0], user: "root", from: Lab.attackerV4), "a drops the attacker's SYNs")
        for lab in fleet.labs { #expect(try lab.pingsAnswered(count: 2) == 0, "dropped on \(lab.name)") }
        #expect(b.incidents.contains { $0["target"] as? String == Lab.attackerV4 && $0["source"] as? String == "detector" && $0["node"] as? String == "a" })
    }

    /// An operator's allowlist entry on one node reaches the others, and so does its removal;
    /// each node's configured entries stay its own.
    @Test(.enabled(if: canRun, PostgresServer.reason), .timeLimit(.minutes(3)))
    func anAllowlistEntryAndItsRemovalReachEveryNode() throws {
        let fleet = try FleetLab()
        let (a, b, c) = (fleet.daemons[0], fleet.daemons[1], fleet.daemons[2])
        func allowlist(_ daemon: DaemonFixture) throws -> [String] {
            (try daemon.json("GET", "/v1/allowlist") as? [String]) ?? []
        }
        let added = try a.api("POST", "/v1/allowlist", body: "{\"target\":\"\(Lab.otherV4)\"}")
        #expect(added.status == 200, "\(added)")
        for daemon in [b, c] {
            #expect(try FleetLab.eventually(10) { try allowlist(daemon).contains(Lab.otherV4) }, "\((try? allowlist(daemon)) ?? [])")
        }
        // Allowlisted on b by a's entry: b refuses to block it.
        let refused = try b.api("POST", "/v1/blocks", body: "{\"target\":\"\(Lab.otherV4)\"}")
        #expect(refused.status != 200, "\(refused)")
        #expect(try !fleet.holds(Lab.otherV4, b))

        let removed = try a.api("DELETE", "/v1/allowlist?target=\(Lab.otherV4)")
        #expect(removed.status == 200, "\(removed)")
        for daemon in [b, c] {
            #expect(try FleetLab.eventually(10) { try !allowlist(daemon).contains(Lab.otherV4) }, "\((try? allowlist(daemon)) ?? [])")
        }
        #expect(try allowlist(b).contains(FleetLab.allowlistedOnB), "b's configured entry stays")
    }

    /// Compaction: a node whose cursor is older than the compacted log takes a snapshot of what is
    /// in force when it returns, and lifts the fleet blocks it holds whose tombstones were
    /// compacted away while it was down.
    @Test(.enabled(if: canRun, PostgresServer.reason), .timeLimit(.minutes(3)))
    func aNodeBehindTheCompactedLogTakesASnapshotAndLiftsWhatEnded() throws {
        let fleet = try FleetLab()
        let (a, c) = (fleet.daemons[0], fleet.daemons[2])
        let lifted = "203.0.113.60"
        try fleet.block(lifted, on: a)
        #expect(try FleetLab.eventually(10) { try fleet.holds(lifted, c) })

        try c.stop()
        let unblocked = try a.api("DELETE", "/v1/blocks?target=\(lifted)")
        #expect(unblocked.status == 200, "\(unblocked)")
        try fleet.block(Lab.attackerV4, on: a)
        let published = try FleetLab.eventually(10) {
            let health = try fleet.health(a)
            return health?["outbox"] as? Int == 0 && (health?["published"] as? Int ?? 0) >= 3
        }
        #expect(published, "a published its unblock and block")
        // Everything the log holds goes, as it would once older than the longest block plus the margin.
        _ = try fleet.database.sql("SELECT portcullis.compact('-1000 years')", database: "fleet")
        #expect(try fleet.database.sql("SELECT count(*) FROM portcullis.changes", database: "fleet") == "0")

        try c.start()
        #expect(try FleetLab.eventually(20) { try fleet.holds(Lab.attackerV4, c) }, "c took the snapshot")
        #expect(try fleet.labs[2].pingsAnswered(count: 2) == 0)
        #expect(try FleetLab.eventually(10) { try !fleet.holds(lifted, c) }, "the compacted tombstone's block is lifted on c")
        #expect((try fleet.health(c)?["snapshots"] as? Int ?? 0) >= 1, "c's start took a snapshot")
        #expect(c.incidents.contains { $0["target"] as? String == lifted && $0["action"] as? String == "unblock" })
    }

    /// TLS: a database that takes TLS connections only; nodes that verify its certificate against
    /// the CA that signed it share blocks; a node given another CA refuses the server, says why in
    /// its fleet health, and keeps enforcing and blocking on its own.
    @Test(.enabled(if: canRun && FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl"), PostgresServer.reason),
          .timeLimit(.minutes(3)))
    func nodesVerifyTheDatabaseOverTLSAndOneThatCannotKeepsEnforcing() throws {
        let fleet = try FleetLab(tls: true, wrongCA: ["c"])
        let (a, b, c) = (fleet.daemons[0], fleet.daemons[1], fleet.daemons[2])
        try fleet.block("203.0.113.50", on: a)
        #expect(try FleetLab.eventually(10) { try fleet.holds("203.0.113.50", b) }, "a's block over TLS did not reach b")

        let refused = try FleetLab.eventually(10) { (try fleet.health(c)?["lastError"] as? String) != nil }
        let health = try fleet.health(c) ?? [:]
        #expect(refused && health["connected"] as? Bool == false, "\(health)")
        let error = (health["lastError"] as? String ?? "").lowercased()
        #expect(error.contains("certificate") || error.contains("ssl") || error.contains("tls"), "\(error)")
        #expect(try fleet.labs[2].pingsAnswered(count: 1) == 1)
        try fleet.block(Lab.attackerV4, on: c)
        #expect(try fleet.labs[2].pingsAnswered(count: 2) == 0, "c enforces its own block without the database")
        #expect(try !fleet.holds("203.0.113.50", c))
    }

    /// Rows written by hand that no node would write, or that ask a node to block what it must
    /// not: every node refuses them, records the refusal, and goes on.
    @Test(.enabled(if: canRun, PostgresServer.reason), .timeLimit(.minutes(3)))
    func malformedRowsAreRefusedByEveryNodeAndRecorded() throws {
        let fleet = try FleetLab()
        let (a, b, c) = (fleet.daemons[0], fleet.daemons[1], fleet.daemons[2])
        func insert(_ node: String, _ kind: String, _ target: String, _ source: String, reason: String = "'by hand'") throws {
            try fleet.database.sql("""
                BEGIN;
                UPDATE portcullis.meta SET last_sequence = last_sequence + 1;
                INSERT INTO portcullis.changes (sequence, node, node_id, kind, target, source, reason, made_at)
                SELECT last_sequence, '\(node)', last_sequence + 1000000, '\(kind)', '\(target)', '\(source)', \(reason), now()
                FROM portcullis.meta;
                SELECT pg_notify('portcullis_changes', last_sequence::text) FROM portcullis.meta;
                COMMIT;
                """, database: "fleet")
        }
        try insert("intruder", "block", "127.0.0.1/32", "api")            // loopback
        try insert("intruder", "block", "198.51.100.60/32", "telnet")     // a source no node has
        try insert("intruder", "explode", "198.51.100.61/32", "api")      // a change no node makes
        try insert("bad node!", "block", "198.51.100.62/32", "api")       // not a node name
        try insert("intruder", "block", "198.51.100.63/32", "api", reason: "'line' || chr(10) || 'break'")
        try insert("intruder", "block", "0.0.0.0/0", "api")               // holds loopback
        try insert("intruder", "block", "\(FleetLab.allowlistedOnB)/32", "api")   // b's allowlist
        // And one good row after them: the cursor passes the refused ones.
        try insert("intruder", "block", "198.51.100.64/32", "api")

        for daemon in [a, b, c] {
            #expect(try FleetLab.eventually(10) { try fleet.holds("198.51.100.64", daemon) })
            for target in ["198.51.100.60", "198.51.100.61", "198.51.100.62", "198.51.100.63"] {
                #expect(try !fleet.holds(target, daemon), "\(target) applied")
            }
            let refusals = daemon.incidents.filter { $0["action"] as? String == "refuse" }
            #expect(refusals.count >= 6, "\(refusals)")
            #expect(refusals.contains { ($0["target"] as? String)?.hasPrefix("127.0.0.1") == true })
            #expect(refusals.contains { $0["refusal"] as? String == "malformed" && $0["node"] as? String == "intruder" })
        }
        #expect(try !fleet.holds(FleetLab.allowlistedOnB, b))
        #expect(b.incidents.contains { $0["refusal"] as? String == "allowlisted" && $0["node"] as? String == "intruder" })
        #expect(try fleet.holds(FleetLab.allowlistedOnB, a))
        // Loopback stays reachable.
        #expect(try Command.run("/usr/sbin/ip", ["netns", "exec", fleet.labs[1].bastionNamespace, "ping", "-c", "1", "-W", "1", "127.0.0.1"]).status == 0)
    }
}
