import Foundation
import Synchronization
import Glibc
import Testing

/// `portcullis run` in its own temporary directory: configuration, control
/// socket, incident log and pins of its own, stopped and removed when the test
/// ends, pass or fail.
final class DaemonFixture {
    let directory: String
    let pins: String
    let socket: String
    let incidentLog: String
    let metricsPort: Int
    var configPath: String { "\(directory)/portcullis.yaml" }
    private var process: Process?
    private var output: Pipe?

    /// `incidentLog` elsewhere than the fixture's directory: on a file system a test makes full.
    init(pins: String? = nil, incidentLog: String? = nil) {
        let id = UUID().uuidString.prefix(8).lowercased()
        directory = "/tmp/portcullis-daemon-\(id)"
        self.pins = pins ?? "/sys/fs/bpf/portcullis-test-daemon-\(id)"
        socket = "\(directory)/control.sock"
        self.incidentLog = incidentLog ?? "\(directory)/incidents.jsonl"
        metricsPort = unusedLoopbackPort()
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    deinit {
        _ = try? stop()
        if pins.hasPrefix("/sys/fs/bpf/portcullis-test-daemon-") { _ = try? Command.portcullis(["purge", "--yes"], pins: pins) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The configuration file: defaults for this fixture, then `extra` YAML lines.
    func write(_ extra: String = "") throws {
        let text = """
        pin_dir: \(pins)
        control_socket: \(socket)
        incident_log: \(incidentLog)
        metrics_address: 127.0.0.1:\(metricsPort)
        sweep_interval: 1s
        \(extra)
        """
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Starts the daemon and waits (at most 20 s) until its control socket answers.
    func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Command.portcullis)
        process.arguments = ["run", "--config", configPath]
        var environment = ProcessInfo.processInfo.environment
        environment["PORTCULLIS_STATE_DIR"] = Command.stateDirectory(pins: pins)
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        self.process = process
        self.output = output
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            // Any answer means it serves: 503 is a daemon that runs but cannot enforce (yet).
            if try api("GET", "/v1/health").status != 0 { return }
            guard process.isRunning else { break }
            usleep(50_000)
        }
        throw LabError("the daemon did not come up: \(try stop())")
    }

    /// SIGTERM, then at most 10 s to exit. Returns the daemon's output and exit status.
    @discardableResult
    func stop() throws -> (status: Int32, output: String) {
        guard let process else { return (0, "") }
        self.process = nil
        stopProcess(process, grace: 10)
        let text = output.map { String(decoding: $0.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) } ?? ""
        return (process.terminationStatus, text)
    }

    func signal(_ number: Int32) {
        if let process, process.isRunning { kill(process.processIdentifier, number) }
    }

    var isRunning: Bool { process?.isRunning ?? false }

    /// curl on the control socket. Returns the HTTP status (0 when nothing answered) and the body.
    func api(_ method: String, _ path: String, body: String? = nil, asUser user: String? = nil) throws -> (status: Int, body: String) {
        try Self.request(socket: socket, method, path, body: body, asUser: user)
    }

    static func request(socket: String, _ method: String, _ path: String, body: String? = nil, asUser user: String? = nil) throws -> (status: Int, body: String) {
        var arguments = ["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10", "--unix-socket", socket, "-X", method]
        if let body { arguments += ["-H", "Content-Type: application/json", "--data-binary", body] }
        arguments.append("http://portcullis\(path)")
        let result = user.map { try? Command.run("/usr/sbin/runuser", ["-u", $0, "--", "/usr/bin/curl"] + arguments) }
            ?? (try? Command.run("/usr/bin/curl", arguments))
        guard let result else { return (0, "") }
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let status = Int(lines.last ?? "") ?? 0
        return (status, lines.dropLast().joined(separator: "\n"))
    }

    func json(_ method: String, _ path: String, body: String? = nil) throws -> Any {
        let response = try api(method, path, body: body)
        return try decodeJSON(response.body)
    }

    /// The portcullis CLI pointed at this daemon's socket (and, should it fall back, at its pins).
    func portcullis(_ arguments: [String], input: String? = nil) throws -> Result {
        var environment = Command.environment(pins: pins)
        environment["PORTCULLIS_CONTROL_SOCKET"] = socket
        return try Command.run(Command.portcullis, arguments, environment: environment, input: input)
    }

    var incidents: [[String: Any]] {
        let text = (try? String(contentsOfFile: incidentLog, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { try? decodeJSON(String($0)) as? [String: Any] }
    }
}

/// A bad configuration is refused before anything is touched: no root needed.
@Suite struct DaemonConfigurationTests {
    @Test func aBadConfigurationStopsTheStartWithFileLineAndKey() throws {
        let daemon = DaemonFixture()
        try daemon.write("allowlist:\n  - 192.0.2.1\n  - 192.0.2.999\n")
        let result = try Command.run(Command.portcullis, ["run", "--config", daemon.configPath], timeout: 20)
        #expect(result.status == 1, "\(result)")
        #expect(result.stderrLines.count == 1, "\(result)")
        #expect(result.stderr.contains("\(daemon.configPath):8: allowlist:"), "\(result)")
        #expect(result.stderr.contains("192.0.2.999"))
        #expect(!FileManager.default.fileExists(atPath: daemon.socket))
        let check = try Command.run(Command.portcullis, ["run", "--check", "--config", daemon.configPath])
        #expect(check.status == 1)
    }

    @Test func theShippedExampleConfigurationIsValid() throws {
        let example = Command.repositoryRoot.appendingPathComponent("dist/portcullis.yaml").path
        let result = try Command.run(Command.portcullis, ["run", "--check", "--config", example])
        #expect(result.status == 0, "\(result)")
    }
}

@Suite(.enabled(if: Privileges.canUseBPF && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"),
                "needs root, bpffs and curl (run as root; CI does)"))
struct DaemonTests {
    @Test func changesGoThroughTheDaemonAsSingleWriter() throws {
        let daemon = DaemonFixture()
        try daemon.write()
        try daemon.start()
        let block = try daemon.portcullis(["block", "203.0.113.7", "--for", "1h", "--reason", "through the daemon"])
        #expect(block.status == 0, "\(block)")
        // The daemon recorded it in its own incident log; the CLI wrote nothing itself.
        #expect(daemon.incidents.map { $0["target"] as? String } == ["203.0.113.7"])
        #expect(!FileManager.default.fileExists(atPath: Command.incidentLog(pins: daemon.pins)))
        let list = try #require(try daemon.json("GET", "/v1/blocks") as? [String: Any])
        #expect(list["total"] as? Int == 1)
        #expect(try daemon.portcullis(["unblock", "203.0.113.7"]).status == 0)
        #expect(daemon.incidents.map { $0["action"] as? String } == ["block", "unblock"])
    }

    @Test func aBatchLargerThanTheMapsRoomChangesNothingAndNamesTheMap() throws {
        let daemon = DaemonFixture()
        try daemon.write("capacity:\n  exact: 500\n  prefixes: 16")
        try daemon.start()
        let first = (1...254).map { "198.51.100.\($0)" } + (1...146).map { "203.0.113.\($0)" }
        let loaded = try daemon.portcullis(["block", "--file", "-", "--for", "1h"], input: first.joined(separator: "\n") + "\n")
        #expect(loaded.status == 0, "\(loaded)")
        let recordsBefore = daemon.incidents.count
        let tooMany = (1...200).map { "192.0.2.\($0)" }.joined(separator: "\n") + "\n"
        let refused = try daemon.portcullis(["block", "--file", "-", "--for", "1h"], input: tooMany)
        #expect(refused.status == 1, "\(refused)")
        #expect(refused.stderrLines.count == 1, "\(refused)")
        #expect(refused.stderr.contains("map blocks_v4 has room for 100 more entries (capacity 500) but the batch adds 200; nothing was blocked"), "\(refused)")
        let list = try #require(try daemon.json("GET", "/v1/blocks?limit=1") as? [String: Any])
        #expect(list["total"] as? Int == 400, "nothing of the refused batch is in the ledger")
        #expect(try daemon.api("GET", "/v1/block?target=192.0.2.1").status == 404)
        #expect(daemon.incidents.count == recordsBefore, "no record of a change that did not happen")
    }

    @Test func badRequestsGet4xxWithJSONAndChangeNothing() throws {
        let daemon = DaemonFixture()
        try daemon.write("allowlist: [192.0.2.0/24]")
        try daemon.start()
        let cases: [(String, String, String?, Int)] = [
            ("POST", "/v1/blocks", "not json", 400),
            ("POST", "/v1/blocks", #"{"duration":"10s"}"#, 400),
            ("POST", "/v1/blocks", #"{"target":"127.1"}"#, 400),
            ("POST", "/v1/blocks", #"{"target":"127.0.0.1"}"#, 400),
            ("POST", "/v1/blocks", #"{"target":"203.0.113.1","duration":"soon"}"#, 400),
            ("POST", "/v1/blocks", #"{"target":"203.0.113.1","source":"martians"}"#, 400),
            ("POST", "/v1/blocks", #"{"target":42}"#, 400),
            ("POST", "/v1/blocks", #"{"target":"192.0.2.7"}"#, 409),
            ("DELETE", "/v1/blocks", nil, 400),
            ("GET", "/v1/blocks?limit=abc", nil, 400),
            ("GET", "/v1/blocks?family=ipv5", nil, 400),
            ("GET", "/v1/incidents?since=yesterday-ish", nil, 400),
            ("GET", "/v1/nothing-here", nil, 404),
        ]
        for (method, path, body, status) in cases {
            let response = try daemon.api(method, path, body: body)
            #expect(response.status == status, "\(method) \(path) \(body ?? ""): \(response)")
            let error = try? decodeJSON(response.body) as? [String: Any]
            #expect((error?["error"] as? String)?.isEmpty == false, "no JSON error for \(method) \(path): \(response.body)")
        }
        let list = try #require(try daemon.json("GET", "/v1/blocks") as? [String: Any])
        #expect(list["total"] as? Int == 0)
    }

    @Test func listingFiltersAndPages() throws {
        let daemon = DaemonFixture()
        try daemon.write()
        try daemon.start()
        for host in 1...25 { _ = try daemon.api("POST", "/v1/blocks", body: #"{"target":"198.51.100.\#(host)","duration":"1h","source":"api"}"#) }
        _ = try daemon.api("POST", "/v1/blocks", body: #"{"target":"2001:db8::1"}"#)
        _ = try daemon.api("POST", "/v1/blocks", body: #"{"target":"203.0.113.0/24","source":"wazuh"}"#)
        func page(_ query: String) throws -> (total: Int, targets: [String]) {
            let page = try #require(try daemon.json("GET", "/v1/blocks?\(query)") as? [String: Any])
            let blocks = page["blocks"] as? [[String: Any]] ?? []
            return (page["total"] as? Int ?? -1, blocks.compactMap { $0["target"] as? String })
        }
        #expect(try page("").total == 27)
        #expect(try page("").targets.count == 27)
        #expect(try page("family=ipv6").targets == ["2001:db8::1"])
        #expect(try page("kind=prefix").targets == ["203.0.113.0/24"])
        #expect(try page("source=wazuh").targets == ["203.0.113.0/24"])
        #expect(try page("contains=203.0.113.77").targets == ["203.0.113.0/24"])
        let window = try page("family=ipv4&kind=address&limit=10&offset=20")
        #expect(window.total == 25)
        #expect(window.targets.count == 5)
        let one = try #require(try daemon.json("GET", "/v1/block?target=2001:db8::1") as? [String: Any])
        #expect(one["permanent"] as? Bool == true)
    }

    @Test func controlSocketRefusesWhatItsPermissionsRefuse() throws {
        let daemon = DaemonFixture()
        try daemon.write()
        try daemon.start()
        var info = stat()
        #expect(stat(daemon.socket, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o660, "socket mode \(String(info.st_mode & 0o777, radix: 8))")
        #expect(info.st_uid == 0)
        #expect(try daemon.api("GET", "/v1/health").status == 200)
        let denied = try daemon.api("GET", "/v1/health", asUser: "nobody")
        #expect(denied.status == 0, "nobody must not get an answer: \(denied)")
        let cli = try Command.run(
            "/usr/sbin/runuser", ["-u", "nobody", "--", Command.portcullis, "block", "203.0.113.8"],
            environment: ["PORTCULLIS_CONTROL_SOCKET": daemon.socket, "PORTCULLIS_PIN_DIR": daemon.pins,
                          "PORTCULLIS_STATE_DIR": Command.stateDirectory(pins: daemon.pins)])
        #expect(cli.status == 1, "\(cli)")
        #expect(cli.stderr.contains("permission denied"), "\(cli)")
        let list = try #require(try daemon.json("GET", "/v1/blocks") as? [String: Any])
        #expect(list["total"] as? Int == 0)
    }

    @Test func reloadAppliesAGoodFileAndKeepsTheRunningOneOnABadFile() throws {
        let daemon = DaemonFixture()
        try daemon.write("allowlist: [192.0.2.1]")
        try daemon.start()
        #expect(try daemon.portcullis(["allow", "192.0.2.200"]).status == 0)
        func allowlist() throws -> [String] { try #require(try daemon.json("GET", "/v1/allowlist") as? [String]) }
        #expect(try allowlist() == ["192.0.2.1", "192.0.2.200"])

        try daemon.write("allowlist: [192.0.2.1, not-an-address]")
        daemon.signal(SIGHUP)
        Thread.sleep(forTimeInterval: 0.5)
        #expect(daemon.isRunning)
        #expect(try allowlist() == ["192.0.2.1", "192.0.2.200"], "a bad file must leave the running configuration")

        try daemon.write("allowlist: [192.0.2.2]")
        daemon.signal(SIGHUP)
        Thread.sleep(forTimeInterval: 0.5)
        #expect(try allowlist() == ["192.0.2.2", "192.0.2.200"], "the file's entries follow it; a command's entry stays")
        let (status, output) = try daemon.stop()
        #expect(status == 0, "\(output)")
        #expect(output.contains("\(daemon.configPath):6: allowlist:"), "the bad reload is reported with file, line and key: \(output)")
    }

    @Test func refreshesRacingSweepsAreNeverLost() throws {
        let daemon = DaemonFixture()
        try daemon.write()
        try daemon.start()
        let targets = (1...60).map { "198.51.100.\($0)" }
        // Blocks that expire almost at once, refreshed to an hour while sweeps run continuously.
        for target in targets { _ = try daemon.api("POST", "/v1/blocks", body: #"{"target":"\#(target)","duration":"1s"}"#) }
        let sweeping = DispatchGroup()
        let stop = StopFlag()
        let socket = daemon.socket
        DispatchQueue.global().async(group: sweeping) {
            while !stop.value.load(ordering: .relaxed) { _ = try? DaemonFixture.request(socket: socket, "POST", "/v1/sweep") }
        }
        Thread.sleep(forTimeInterval: 0.9)
        for target in targets {
            let response = try daemon.api("POST", "/v1/blocks", body: #"{"target":"\#(target)","duration":"1h"}"#)
            #expect(response.status == 200, "\(response)")
        }
        Thread.sleep(forTimeInterval: 1.5)
        stop.value.store(true, ordering: .relaxed)
        sweeping.wait()
        let page = try #require(try daemon.json("GET", "/v1/blocks?limit=0") as? [String: Any])
        let blocks = page["blocks"] as? [[String: Any]] ?? []
        #expect(Set(blocks.compactMap { $0["target"] as? String }) == Set(targets), "every refreshed block survives the sweeps")
        #expect(blocks.allSatisfy { ($0["remainingSeconds"] as? Double ?? 0) > 3500 })
    }

    @Test func metricsParseWithAPrometheusTextParser() throws {
        let daemon = DaemonFixture()
        try daemon.write()
        try daemon.start()
        _ = try daemon.api("POST", "/v1/blocks", body: #"{"target":"203.0.113.5","duration":"1h"}"#)
        _ = try daemon.api("POST", "/v1/blocks", body: #"{"target":"2001:db8::5"}"#)
        let metrics = try Command.run("/usr/bin/curl", ["-s", "--max-time", "10", "http://127.0.0.1:\(daemon.metricsPort)/metrics"])
        #expect(metrics.status == 0, "\(metrics)")
        let parser = """
        import sys
        from prometheus_client.parser import text_string_to_metric_families
        samples = {}
        for family in text_string_to_metric_families(sys.stdin.read()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        print(samples[("portcullis_blocks_active", (("family", "ipv4"), ("kind", "address")))])
        print(samples[("portcullis_blocks_active", (("family", "ipv6"), ("kind", "address")))])
        print(samples[("portcullis_blocks_added_total", (("source", "api"),))])
        print(samples[("portcullis_map_capacity", (("map", "blocks_v4"),))])
        print(samples[("portcullis_up", ())])
        """
        let parsed = try Command.run("/usr/bin/python3", ["-c", parser], input: metrics.stdout)
        #expect(parsed.status == 0, "\(parsed)")
        #expect(parsed.stdout.split(separator: "\n") == ["1.0", "1.0", "2.0", "1048576.0", "1.0"], "\(parsed)")
    }
}

/// The daemon with real traffic in the netns lab.
@Suite(.enabled(if: Privileges.canRunLab && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), Privileges.labReason))
struct DaemonLabTests {
    @Test func restartKeepsBlocksAndTheAttachment() throws {
        let lab = try Lab()
        let daemon = DaemonFixture(pins: lab.pins)
        try daemon.write("interfaces:\n  - name: \(lab.bastionInterface)\n    netns: \(lab.bastionNamespace)\n    mode: native")
        try daemon.start()
        #expect(try lab.xdpOnBastion() != nil)
        #expect(try daemon.portcullis(["block", Lab.attackerV4]).status == 0)
        #expect(try lab.pingsAnswered() == 0)

        let stopped = try daemon.stop()
        #expect(stopped.status == 0, "\(stopped.output)")
        #expect(try lab.xdpOnBastion() != nil, "SIGTERM leaves the program attached")
        #expect(try lab.pingsAnswered() == 0, "and the block in force while no daemon runs")

        try daemon.start()
        let blocks = try #require(try daemon.json("GET", "/v1/blocks") as? [String: Any])
        #expect((blocks["blocks"] as? [[String: Any]])?.first?["target"] as? String == Lab.attackerV4)
        #expect(try daemon.portcullis(["unblock", Lab.attackerV4]).status == 0)
        #expect(try lab.pingsAnswered() == 3)
    }

    /// The pins removed under a running daemon (which detaches XDP at once): it says so and
    /// makes them again from the ledger, attached as configured, within a few seconds.
    @Test func lostPinsAreReportedAndMadeAgainFromTheLedger() throws {
        let lab = try Lab()
        let daemon = DaemonFixture(pins: lab.pins)
        try daemon.write("interfaces:\n  - name: \(lab.bastionInterface)\n    netns: \(lab.bastionNamespace)")
        try daemon.start()
        #expect(try daemon.portcullis(["block", Lab.attackerV4]).status == 0)
        #expect(try lab.pingsAnswered() == 0)

        try #require(try Command.run("/bin/rm", ["-rf", lab.pins]).status == 0)
        var recovered = false
        for _ in 0..<40 where !recovered {
            usleep(250_000)
            let attached = try lab.xdpOnBastion() != nil
            recovered = FileManager.default.fileExists(atPath: lab.pins + "/meta") && attached
        }
        #expect(recovered, "the pins and the attachment came back")
        #expect(try lab.pingsAnswered() == 0, "the block from the ledger drops again")
        #expect(try daemon.api("GET", "/v1/health").status == 200)
        let metrics = try Command.run("/usr/bin/curl", ["-s", "--max-time", "10", "http://127.0.0.1:\(daemon.metricsPort)/metrics"])
        #expect(metrics.stdout.contains("portcullis_dataplane_healthy 1"), "\(metrics.stdout.prefix(400))")
        let (_, output) = try daemon.stop()
        #expect(output.contains("are gone"), "\(output)")
        #expect(output.contains("restored 1 blocks from the ledger"), "\(output)")
    }

    /// Someone else takes the program off an interface (here `bpftool link detach`): the daemon
    /// notices within seconds and attaches again, or with `reattach: false` only says so.
    @Test(arguments: [true, false])
    func aProgramTakenOffIsNoticedAndAttachedAgain(reattach: Bool) throws {
        let lab = try Lab()
        let daemon = DaemonFixture(pins: lab.pins)
        try daemon.write("interfaces:\n  - name: \(lab.bastionInterface)\n    netns: \(lab.bastionNamespace)\nreattach: \(reattach)")
        try daemon.start()
        #expect(try daemon.portcullis(["block", Lab.attackerV4]).status == 0)
        #expect(try lab.pingsAnswered() == 0)
        let status = try #require(try decodeJSON(try daemon.portcullis(["status", "--json"]).stdout) as? [String: Any])
        let linkID = try #require((status["attachments"] as? [[String: Any]])?.first?["linkId"] as? Int, "\(status)")
        try #require(try Command.run("/usr/sbin/bpftool", ["link", "detach", "id", String(linkID)]).status == 0)
        var health = try daemon.api("GET", "/v1/health")
        var attached = false
        for _ in 0..<20 {
            usleep(250_000)
            health = try daemon.api("GET", "/v1/health")
            attached = try lab.xdpOnBastion() != nil
            if reattach ? attached && health.status == 200 : health.status == 503 { break }
        }
        if reattach {
            #expect(attached, "attached again")
            #expect(try lab.pingsAnswered() == 0, "the block drops again")
        } else {
            #expect(health.status == 503 && health.body.contains("not attached to \(lab.bastionInterface)"), "\(health)")
            #expect(try lab.xdpOnBastion() == nil, "left detached")
            let metrics = try Command.run("/usr/bin/curl", ["-s", "--max-time", "10", "http://127.0.0.1:\(daemon.metricsPort)/metrics"])
            #expect(metrics.stdout.contains("portcullis_dataplane_healthy 0"))
        }
        let (_, output) = try daemon.stop()
        #expect(output.contains("not attached to \(lab.bastionInterface)"), "\(output)")
    }

    /// An interface that cannot be attached: health and metrics say so until it can.
    @Test func anInterfaceThatCannotBeAttachedMakesTheDaemonUnhealthy() throws {
        let lab = try Lab()
        let daemon = DaemonFixture(pins: lab.pins)
        try daemon.write("interfaces:\n  - name: no-such-if\n    netns: \(lab.bastionNamespace)")
        try daemon.start()
        var health = try daemon.api("GET", "/v1/health")
        for _ in 0..<20 where health.status == 200 {
            usleep(250_000)
            health = try daemon.api("GET", "/v1/health")
        }
        #expect(health.status == 503, "\(health)")
        #expect(health.body.contains("not attached to no-such-if in netns \(lab.bastionNamespace)"), "\(health.body)")
        let metrics = try Command.run("/usr/bin/curl", ["-s", "--max-time", "10", "http://127.0.0.1:\(daemon.metricsPort)/metrics"])
        #expect(metrics.stdout.contains("portcullis_dataplane_healthy 0"), "\(metrics.stdout.prefix(400))")
    }

    @Test func anExpiredBlockIsRecordedWithWhatItDropped() throws {
        let lab = try Lab()
        let daemon = DaemonFixture(pins: lab.pins)
        try daemon.write("interfaces:\n  - name: \(lab.bastionInterface)\n    netns: \(lab.bastionNamespace)")
        try daemon.start()
        #expect(try daemon.portcullis(["block", Lab.attackerV4, "--for", "2s", "--reason", "lab expiry"]).status == 0)
        #expect(try lab.pingsAnswered(count: 3) == 0)
        // Expiry at 2 s, and the sweeper runs every second.
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && !daemon.incidents.contains(where: { $0["action"] as? String == "expire" }) {
            Thread.sleep(forTimeInterval: 0.2)
        }
        let expiry = try #require(daemon.incidents.first { $0["action"] as? String == "expire" })
        let outcome = try #require(expiry["outcome"] as? [String: Any])
        #expect((outcome["droppedPackets"] as? Int ?? 0) >= 3)
        #expect((outcome["lastedSeconds"] as? Double ?? 0) >= 1.9)
        #expect(try lab.pingsAnswered() == 3)

        let summary = try daemon.portcullis(["incidents", "--summary", "--json", "--incident-log", daemon.incidentLog])
        let days = try #require(try decodeJSON(summary.stdout) as? [[String: Any]], "\(summary)")
        #expect(days.count == 1)
        #expect(days.first?["expired"] as? Int == 1)
        #expect((days.first?["droppedPackets"] as? Int ?? 0) >= 3)
    }

    @Test func wazuhActiveResponseGoesThroughTheDaemon() throws {
        let lab = try Lab()
        let daemon = DaemonFixture(pins: lab.pins)
        try daemon.write("interfaces:\n  - name: \(lab.bastionInterface)\n    netns: \(lab.bastionNamespace)")
        try daemon.start()
        let home = try WazuhHome(pins: lab.pins, controlSocket: daemon.socket)
        let emulator = ExecdEmulator(home: home)
        #expect(try emulator.run(Messages.add(Lab.attackerV4)).status == 0)
        #expect(try lab.pingsAnswered() == 0)
        let record = try #require(daemon.incidents.last)
        #expect((record["wazuh"] as? [String: Any])?["ruleId"] as? String == "5710")
        #expect(try emulator.run(Messages.delete(Lab.attackerV4), withStdout: false).status == 0)
        #expect(try lab.pingsAnswered() == 3)
    }
}

final class StopFlag: Sendable {
    let value = Atomic(false)
}
