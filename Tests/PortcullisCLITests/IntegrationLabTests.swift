import Foundation
import Glibc
import Testing

/// Portcullis as the blocking backend of the real fail2ban, sshguard and CrowdSec from Debian,
/// each started by the test with private files, end to end in the netns lab through the daemon.
@Suite(.enabled(if: Privileges.canRunLab, Privileges.labReason), .serialized)
struct IntegrationLabTests {
    /// The lab with a daemon attached to the bastion's interface.
    static func labWithDaemon(_ extra: String = "") throws -> (Lab, DaemonFixture) {
        let lab = try Lab()
        let daemon = DaemonFixture(pins: lab.pins)
        try daemon.write("interfaces:\n  - name: \(lab.bastionInterface)\n    netns: \(lab.bastionNamespace)\n    mode: native\n" + extra)
        try daemon.start()
        return (lab, daemon)
    }

    static func blocks(_ daemon: DaemonFixture) throws -> [String: [String: Any]] {
        let page = try #require(try daemon.json("GET", "/v1/blocks?limit=0") as? [String: Any])
        let list = try #require(page["blocks"] as? [[String: Any]])
        return Dictionary(list.map { ($0["target"] as? String ?? "", $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// A syslog line as sshd writes one, stamped now.
    static func sshdLine(_ message: String) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "MMM d HH:mm:ss"
        return "\(formatter.string(from: Date())) bastion sshd[4242]: \(message)\n"
    }

    static func append(_ text: String, to path: String) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(text.utf8))
    }

    // MARK: - fail2ban

    static let fail2banClient = "/usr/bin/fail2ban-client"
    static let hasFail2ban = FileManager.default.isExecutableFile(atPath: fail2banClient)

    /// fail2ban-server with a private configuration, socket, pid file, database and logs:
    /// jail `sshd` bans through portcullis.py, jail `sshd6` through portcullis.conf.
    final class Fail2ban {
        let directory: String
        let environment: [String: String]
        var authLog: String { directory + "/auth.log" }
        var authLog6: String { directory + "/auth6.log" }

        init(daemon: DaemonFixture) throws {
            directory = daemon.directory + "/fail2ban"
            let manager = FileManager.default
            try manager.createDirectory(atPath: directory + "/action.d", withIntermediateDirectories: true)
            try manager.copyItem(atPath: "/etc/fail2ban/filter.d", toPath: directory + "/filter.d")
            for log in [directory + "/auth.log", directory + "/auth6.log"] { _ = manager.createFile(atPath: log, contents: nil) }
            var environment = Command.environment(pins: daemon.pins)
            environment["PORTCULLIS_CONTROL_SOCKET"] = daemon.socket
            environment["PATH"] = URL(fileURLWithPath: Command.portcullis).deletingLastPathComponent().path + ":/usr/sbin:/usr/bin:/sbin:/bin"
            self.environment = environment
            let install = try Command.run(Command.portcullis, ["fail2ban", "install", "--dir", directory, "--control-socket", daemon.socket],
                                          environment: environment)
            try #require(install.status == 0, "\(install)")
            try """
                [Definition]
                loglevel = INFO
                logtarget = \(directory)/fail2ban.log
                socket = \(directory)/fail2ban.sock
                pidfile = \(directory)/fail2ban.pid
                dbfile = \(directory)/fail2ban.sqlite3
                dbpurgeage = 1d

                """.write(toFile: directory + "/fail2ban.conf", atomically: true, encoding: .utf8)
            try """
                [DEFAULT]
                backend = polling
                maxretry = 3
                findtime = 600
                bantime = 600
                bantime.increment = true
                bantime.factor = 1

                [sshd]
                enabled = true
                filter = sshd
                logpath = \(directory)/auth.log
                action = portcullis.py

                [sshd6]
                enabled = true
                filter = sshd
                logpath = \(directory)/auth6.log
                action = portcullis
                bantime = 8

                """.write(toFile: directory + "/jail.conf", atomically: true, encoding: .utf8)
        }

        deinit { _ = try? client(["stop"]) }

        @discardableResult
        func client(_ arguments: [String]) throws -> Result {
            try Command.run(IntegrationLabTests.fail2banClient, ["-c", directory] + arguments, environment: environment, timeout: 60)
        }

        func start() throws {
            let started = try client(["start"])
            try #require(started.status == 0, "\(started)\n\(log)")
            try #require(waitUntil(20) { (try? client(["ping"]))?.stdout.contains("pong") == true })
        }

        var log: String { (try? String(contentsOfFile: directory + "/fail2ban.log", encoding: .utf8)) ?? "" }
    }

    @Test(.enabled(if: hasFail2ban, "needs fail2ban (apt-get install fail2ban; tools/setup.sh does)"))
    func fail2banBansThroughBothActions() throws {
        let (lab, daemon) = try Self.labWithDaemon()
        // An operator's block on the neighbour: fail2ban's unbans, flushes and stop must leave it.
        #expect(try daemon.portcullis(["block", Lab.otherV4, "--reason", "operator"]).status == 0)
        let fail2ban = try Fail2ban(daemon: daemon)
        try fail2ban.start()

        // Real sshd failure lines: the Python action bans the IPv4 attacker, the shell action the IPv6 one.
        for port in 50_001...50_004 {
            try Self.append(Self.sshdLine("Failed password for root from \(Lab.attackerV4) port \(port) ssh2"), to: fail2ban.authLog)
            try Self.append(Self.sshdLine("Invalid user admin from \(Lab.attackerV6) port \(port)"), to: fail2ban.authLog6)
        }
        let banned = try waitUntil(20) {
            let blocks = try Self.blocks(daemon)
            return blocks[Lab.attackerV4] != nil && blocks[Lab.attackerV6] != nil
        }
        try #require(banned, "fail2ban did not ban both: \((try? Self.blocks(daemon)) ?? [:])\n\(fail2ban.log)")
        var blocks = try Self.blocks(daemon)
        #expect(try lab.pingsAnswered(from: Lab.attackerV6, to: Lab.bastionV6) == 0)
        #expect(try lab.pingsAnswered() == 0)
        let v4 = try #require(blocks[Lab.attackerV4])
        #expect(v4["source"] as? String == "fail2ban")
        #expect(v4["origin"] as? String == "fail2ban/sshd")
        #expect((v4["reason"] as? String)?.contains("jail sshd") == true)
        #expect(blocks[Lab.attackerV6]?["origin"] as? String == "fail2ban/sshd6")
        let expiry = try #require(v4["expiresAtUnixMs"] as? Int)
        let remaining = Double(expiry) / 1000 - Date().timeIntervalSince1970
        #expect(remaining > 560 && remaining <= 600, "a 600 s ban, from fail2ban's <time>: \(remaining)")
        let listed = try daemon.portcullis(["list", "--source", "fail2ban"])
        #expect(listed.stdout.contains("fail2ban/sshd") && !listed.stdout.contains(Lab.otherV4), "\(listed)")

        // A ban of loopback or of an allowlisted address is refused, recorded, and blocks nothing.
        #expect(try daemon.portcullis(["allow", "192.0.2.10"]).status == 0)
        #expect(try fail2ban.client(["set", "sshd", "banip", "192.0.2.10"]).status == 0)
        #expect(waitUntil(10) { daemon.incidents.contains { $0["action"] as? String == "refuse" && $0["target"] as? String == "192.0.2.10" } })
        #expect(try Self.blocks(daemon)["192.0.2.10"] == nil)

        // An unban of an address another source blocked for longer leaves that block.
        #expect(try fail2ban.client(["set", "sshd", "banip", Lab.otherV4]).status == 0)
        #expect(try fail2ban.client(["set", "sshd", "unbanip", Lab.otherV4]).status == 0)
        usleep(500_000)
        #expect(try Self.blocks(daemon)[Lab.otherV4]?["source"] as? String == "cli", "fail2ban's unban must not lift the operator's longer block")

        // A restart restores the IPv4 ban (restored = 1) without lengthening it; the flush at
        // stop lifts the jails' blocks and leaves the operator's.
        let before = try #require(try Self.blocks(daemon)[Lab.attackerV4]?["expiresAtUnixMs"] as? Int)
        #expect(try fail2ban.client(["stop"]).status == 0)
        blocks = try Self.blocks(daemon)
        #expect(blocks[Lab.attackerV4] == nil && blocks[Lab.attackerV6] == nil, "\(blocks.keys)")
        #expect(blocks[Lab.otherV4]?["source"] as? String == "cli")
        #expect(try lab.pingsAnswered(from: Lab.otherV4) == 0)
        sleep(2)
        try fail2ban.start()
        #expect(try waitUntil(20) { try Self.blocks(daemon)[Lab.attackerV4] != nil }, "\(fail2ban.log)")
        let restored = try #require(try Self.blocks(daemon)[Lab.attackerV4])
        let after = try #require(restored["expiresAtUnixMs"] as? Int)
        #expect(after <= before && after > before - 1_000, "restored: \(after), first: \(before)")
        #expect((restored["reason"] as? String)?.contains("restored") == true)
        #expect(try lab.pingsAnswered() == 0)

        // An unban lifts the jail's own block.
        #expect(try fail2ban.client(["set", "sshd", "unbanip", Lab.attackerV4]).status == 0)
        #expect(try waitUntil(10) { try Self.blocks(daemon)[Lab.attackerV4] == nil })
        #expect(try lab.pingsAnswered() == 3)

        // bantime.increment: the IPv6 attacker's 8 s ban has ended; its second lasts 16 s.
        #expect(try waitUntil(15) { try Self.blocks(daemon)[Lab.attackerV6] == nil })
        for port in 50_011...50_014 {
            try Self.append(Self.sshdLine("Invalid user admin from \(Lab.attackerV6) port \(port)"), to: fail2ban.authLog6)
        }
        // Its length, not the time left: a loaded machine may poll late in a 16 s ban.
        var second: [String: Any] = [:]
        let longer = try waitUntil(20) {
            guard let block = try Self.blocks(daemon)[Lab.attackerV6], let end = block["expiresAtUnixMs"] as? Int,
                  let start = block["createdAtUnixMs"] as? Int else { return false }
            second = block
            return end - start > 10_000
        }
        #expect(longer, "\(second)\n\(fail2ban.log)")
        #expect((second["reason"] as? String)?.contains("ban 2") == true, "\(second)")

        // fail2ban-client stop: the jails' blocks go, the operator's stays and still drops.
        #expect(try fail2ban.client(["stop"]).status == 0)
        blocks = try Self.blocks(daemon)
        #expect(blocks.keys.sorted() == [Lab.otherV4], "\(blocks.keys)")
        #expect(try lab.pingsAnswered(from: Lab.otherV4) == 0)
        #expect(try lab.pingsAnswered(from: Lab.attackerV6, to: Lab.bastionV6) == 3)
    }

    // MARK: - sshguard

    static let sshguardDirectory = "/usr/libexec/sshguard"
    static let hasSshguard = FileManager.default.isExecutableFile(atPath: sshguardDirectory + "/sshg-blocker")

    @Test(.enabled(if: hasSshguard, "needs sshguard (apt-get install sshguard; tools/setup.sh does)"))
    func sshguardBlocksThroughTheBackend() throws {
        let (lab, daemon) = try Self.labWithDaemon()
        #expect(try daemon.portcullis(["block", Lab.otherV4, "--reason", "operator"]).status == 0)
        let log = daemon.directory + "/sshguard-auth.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        var environment = Command.environment(pins: daemon.pins)
        environment["PORTCULLIS_CONTROL_SOCKET"] = daemon.socket
        // sshguard's own pipeline, as its sshguard script runs it: tail, parser, blocker, backend.
        // Blocks of 3 s (-p), IPv6 attackers by their /64 (-N), IPv4 ones alone (-n).
        let d = Self.sshguardDirectory
        // The processes are started here, not by a shell: they inherit this test's blocked
        // signals, so only SIGKILL ends the tail, and no shell could `wait` for it.
        let stages: [(String, [String])] = [
            ("/usr/bin/tail", ["-F", "-n", "0", log]),
            ("\(d)/sshg-parser", []),
            ("\(d)/sshg-blocker", ["-a", "30", "-p", "3", "-s", "60", "-N", "64", "-n", "32", "-w", "127.0.0.1"]),
            (Command.portcullis, ["sshguard", "backend", "--safety-expiry", "1h"]),
        ]
        let errors = Pipe()
        var processes: [Process] = []
        var input: Pipe?
        for (index, (executable, arguments)) in stages.enumerated() {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            if let input { process.standardInput = input }
            if index < stages.count - 1 {
                let output = Pipe()
                process.standardOutput = output
                input = output
            }
            if index == stages.count - 1 { process.standardError = errors }
            try process.run()
            processes.append(process)
        }
        /// Ends the tail at the head of the pipeline: EOF runs down to the backend.
        func endTail() { if processes[0].isRunning { kill(processes[0].processIdentifier, SIGKILL) } }
        defer {
            endTail()
            // Each ends on the EOF before it; SIGKILL is for one that does not in 5 s.
            for process in processes { stopProcess(process, signal: 0, grace: 5) }
        }
        usleep(500_000)
        for port in 50_001...50_004 {
            try Self.append(Self.sshdLine("Failed password for root from \(Lab.attackerV4) port \(port) ssh2"), to: log)
            try Self.append(Self.sshdLine("Invalid user admin from \(Lab.attackerV6) port \(port)"), to: log)
        }
        let blocked = try waitUntil(15) {
            let blocks = try Self.blocks(daemon)
            return blocks[Lab.attackerV4] != nil && blocks["2001:db8::/64"] != nil
        }
        try #require(blocked, "sshguard did not block both: \((try? Self.blocks(daemon)) ?? [:])")
        let blocks = try Self.blocks(daemon)
        #expect(blocks[Lab.attackerV4]?["source"] as? String == "sshguard")
        let remaining = try #require(blocks[Lab.attackerV4]?["remainingSeconds"] as? Double)
        #expect(remaining > 3_500 && remaining <= 3_600, "the safety expiry: \(remaining)")
        #expect(try lab.pingsAnswered() == 0)
        // The IPv6 attacker's whole /64 is blocked: its neighbour too.
        #expect(try lab.pingsAnswered(from: Lab.otherV6, to: Lab.bastionV6) == 0)

        // sshguard releases them after its block time.
        #expect(try waitUntil(20) {
            try Self.append(Self.sshdLine("Accepted password for alice from 192.0.2.1 port 22 ssh2"), to: log)
            let blocks = try Self.blocks(daemon)
            return blocks[Lab.attackerV4] == nil && blocks["2001:db8::/64"] == nil
        }, "sshguard did not release: \((try? Self.blocks(daemon)) ?? [:])")
        #expect(try lab.pingsAnswered() == 3)

        // Blocked again, then sshguard exits: its flush at exit lifts its own blocks only.
        for port in 50_011...50_014 {
            try Self.append(Self.sshdLine("Failed password for root from \(Lab.attackerV4) port \(port) ssh2"), to: log)
        }
        #expect(try waitUntil(15) { try Self.blocks(daemon)[Lab.attackerV4] != nil })
        endTail()
        #expect(try waitUntil(10) { try Self.blocks(daemon)[Lab.attackerV4] == nil })
        #expect(try Self.blocks(daemon)[Lab.otherV4]?["source"] as? String == "cli")
        #expect(try lab.pingsAnswered(from: Lab.otherV4) == 0)
    }
}

// MARK: - CrowdSec

/// CrowdSec's Local API from Debian's crowdsec package, unpacked by tools/setup.sh (its install
/// script would register with CrowdSec's central API), run with `-no-cs` (the API only): a
/// private configuration without online_client, data directory, sqlite database and port.
final class CrowdSecLAPI {
    static let root = "/var/cache/portcullis-crowdsec/root"
    static let isUnpacked = FileManager.default.isExecutableFile(atPath: root + "/usr/bin/crowdsec")
        && FileManager.default.isExecutableFile(atPath: root + "/usr/bin/cscli")

    let directory: String
    let port = unusedLoopbackPort()
    var config: String { directory + "/config.yaml" }
    var keyFile: String { directory + "/bouncer.key" }
    private var process: Process?

    init() throws {
        directory = "/tmp/portcullis-crowdsec-\(UUID().uuidString.prefix(8).lowercased())"
        for sub in ["data", "hub", "etc"] {
            try FileManager.default.createDirectory(atPath: "\(directory)/\(sub)", withIntermediateDirectories: true)
        }
        for file in ["profiles.yaml", "simulation.yaml"] {
            try FileManager.default.copyItem(atPath: "\(Self.root)/etc/crowdsec/\(file)", toPath: "\(directory)/etc/\(file)")
        }
        try """
            common:
              daemonize: false
              log_media: stdout
              log_level: info
              working_dir: \(directory)
            config_paths:
              config_dir: \(directory)/etc/
              data_dir: \(directory)/data/
              simulation_path: \(directory)/etc/simulation.yaml
              hub_dir: \(directory)/hub/
              index_path: \(directory)/hub/.index.json
              notification_dir: \(directory)/etc/notifications/
              plugin_dir: \(Self.root)/usr/lib/crowdsec/plugins/
            crowdsec_service:
              acquisition_path: \(directory)/etc/acquis.yaml
            cscli:
              output: human
            db_config:
              type: sqlite
              db_path: \(directory)/data/crowdsec.db
              use_wal: true
            api:
              client:
                credentials_path: \(directory)/etc/local_api_credentials.yaml
              server:
                log_level: info
                listen_uri: 127.0.0.1:\(port)
                profiles_path: \(directory)/etc/profiles.yaml
                console_path: \(directory)/etc/console.yaml
                trusted_ips:
                  - 127.0.0.1
            prometheus:
              enabled: false

            """.write(toFile: config, atomically: true, encoding: .utf8)
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.root + "/usr/bin/crowdsec")
        process.arguments = ["-c", config, "-no-cs"]
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let log = FileHandle(forWritingAtPath: directory + "/crowdsec.log") ?? {
            _ = FileManager.default.createFile(atPath: directory + "/crowdsec.log", contents: nil)
            return FileHandle(forWritingAtPath: directory + "/crowdsec.log")!
        }()
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        self.process = process
        let up = try waitUntil(30) { try answers() }
        try #require(up, "the Local API did not come up: \((try? String(contentsOfFile: directory + "/crowdsec.log", encoding: .utf8)) ?? "")")
    }

    /// Whether anything answers HTTP on the port (403 without a key).
    func answers() throws -> Bool {
        let result = try Command.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
                                                       "http://127.0.0.1:\(port)/v1/decisions/stream"])
        return result.stdout != "000" && !result.stdout.isEmpty
    }

    func stop() {
        guard let process else { return }
        self.process = nil
        stopProcess(process, grace: 3)
    }

    @discardableResult
    func cscli(_ arguments: [String]) throws -> Result {
        let result = try Command.run(Self.root + "/usr/bin/cscli", ["-c", config] + arguments, timeout: 60)
        try #require(result.status == 0, "cscli \(arguments.joined(separator: " ")): \(result)")
        return result
    }

    /// A watcher for cscli and a bouncer key for Portcullis, in a file of mode 0600.
    func register() throws {
        try cscli(["machines", "add", "portcullis-test", "--auto", "--force"])
        let key = try cscli(["bouncers", "add", "portcullis", "-o", "raw"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(!key.isEmpty)
        _ = FileManager.default.createFile(atPath: keyFile, contents: Data((key + "\n").utf8), attributes: [.posixPermissions: 0o600])
    }
}

extension IntegrationLabTests {
    static func metric(_ daemon: DaemonFixture, _ name: String) throws -> Double? {
        let text = try Command.run("/usr/bin/curl", ["-s", "--max-time", "5", "http://127.0.0.1:\(daemon.metricsPort)/metrics"]).stdout
        let line = text.split(separator: "\n").first { $0.hasPrefix(name + " ") }
        return line.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }
    }

    @Test(.enabled(if: CrowdSecLAPI.isUnpacked, "needs Debian's crowdsec unpacked under /var/cache/portcullis-crowdsec (tools/setup.sh does it)"))
    func crowdsecDecisionsBecomeBlocks() throws {
        let lapi = try CrowdSecLAPI()
        try lapi.start()
        try lapi.register()
        let (lab, daemon) = try Self.labWithDaemon("""
            crowdsec:
              lapi_url: http://127.0.0.1:\(lapi.port)
              api_key_file: \(lapi.keyFile)
              update_frequency: 1s
            """)
        #expect(try waitUntil(10) { try Self.metric(daemon, "portcullis_crowdsec_lapi_up") == 1 })

        // An Ip decision and a Range decision drop the attacker's traffic, IPv4 and IPv6.
        try lapi.cscli(["decisions", "add", "-i", Lab.attackerV4, "-d", "1h"])
        try lapi.cscli(["decisions", "add", "-r", "2001:db8::2/127", "-d", "1h"])
        #expect(try waitUntil(15) {
            let blocks = try Self.blocks(daemon)
            return blocks[Lab.attackerV4] != nil && blocks["2001:db8::2/127"] != nil
        }, "\((try? Self.blocks(daemon)) ?? [:])")
        #expect(try lab.pingsAnswered() == 0)
        #expect(try lab.pingsAnswered(from: Lab.attackerV6, to: Lab.bastionV6) == 0)
        #expect(try lab.pingsAnswered(from: Lab.otherV6, to: Lab.bastionV6) == 0)
        let block = try #require(try Self.blocks(daemon)[Lab.attackerV4])
        #expect(block["source"] as? String == "crowdsec")
        #expect(block["origin"] as? String == "crowdsec/cscli")
        #expect((block["reason"] as? String)?.contains("manual 'ban'") == true)
        let remaining = try #require(block["remainingSeconds"] as? Double)
        #expect(remaining > 3_500 && remaining <= 3_600)
        #expect(try daemon.portcullis(["list", "--source", "crowdsec"]).stdout.contains("crowdsec/cscli"))

        // Not a ban: counted and skipped. Allowlisted: refused and recorded.
        try lapi.cscli(["decisions", "add", "-i", "203.0.113.77", "-t", "captcha"])
        #expect(try daemon.portcullis(["allow", "192.0.2.10"]).status == 0)
        try lapi.cscli(["decisions", "add", "-i", "192.0.2.10", "-d", "1h"])
        #expect(waitUntil(10) {
            daemon.incidents.contains { $0["action"] as? String == "refuse" && $0["target"] as? String == "192.0.2.10" && $0["source"] as? String == "crowdsec" }
        })
        #expect(try waitUntil(5) { try Self.metric(daemon, "portcullis_crowdsec_decisions_total{outcome=\"skipped_type\"}") == 1 })
        #expect(try Self.blocks(daemon)["203.0.113.77"] == nil && Self.blocks(daemon)["192.0.2.10"] == nil)

        // A decision's duration is the block's: 4 s later the neighbour passes again.
        try lapi.cscli(["decisions", "add", "-i", Lab.otherV4, "-d", "4s"])
        #expect(try waitUntil(10) { try lab.pingsAnswered(from: Lab.otherV4, count: 1) == 0 })
        #expect(try waitUntil(10) { try lab.pingsAnswered(from: Lab.otherV4, count: 1) == 1 })

        // A deletion lifts that decision's block, and only it.
        try lapi.cscli(["decisions", "delete", "-i", Lab.attackerV4])
        #expect(try waitUntil(10) { try Self.blocks(daemon)[Lab.attackerV4] == nil })
        #expect(try lab.pingsAnswered() == 3)
        #expect(try Self.blocks(daemon)["2001:db8::2/127"] != nil)

        // The daemon restarts: what changed meanwhile is applied, nothing twice, nothing lost.
        try daemon.stop()
        try lapi.cscli(["decisions", "delete", "-r", "2001:db8::2/127"])
        try lapi.cscli(["decisions", "add", "-i", Lab.attackerV4, "-d", "2h"])
        try daemon.start()
        #expect(try waitUntil(15) {
            let blocks = try Self.blocks(daemon)
            return blocks[Lab.attackerV4] != nil && blocks["2001:db8::2/127"] == nil
        }, "\((try? Self.blocks(daemon)) ?? [:])")
        let crowdsec = try Self.blocks(daemon).values.filter { $0["source"] as? String == "crowdsec" }
        #expect(crowdsec.count == 1, "\(crowdsec)")
        #expect(try lab.pingsAnswered() == 0)
        #expect(try lab.pingsAnswered(from: Lab.attackerV6, to: Lab.bastionV6) == 3)

        // The Local API goes down: the blocks stay, the metrics say so; back up, new decisions come.
        lapi.stop()
        #expect(try waitUntil(10) { try Self.metric(daemon, "portcullis_crowdsec_lapi_up") == 0 })
        #expect(try lab.pingsAnswered() == 0)
        try lapi.start()
        try lapi.cscli(["decisions", "add", "-i", Lab.otherV4, "-d", "1h"])
        #expect(try waitUntil(40) { try Self.blocks(daemon)[Lab.otherV4] != nil })
        #expect(try Self.metric(daemon, "portcullis_crowdsec_lapi_up") == 1)
        #expect(try lab.pingsAnswered(from: Lab.otherV4) == 0)
        #expect(try daemon.stop().output.contains("the blocks in force stay"))
    }
}
