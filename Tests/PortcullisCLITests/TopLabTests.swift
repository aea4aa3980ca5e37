import Foundation
import Glibc
import Testing

/// A tmux server of its own on a private socket, with one 80x24 session running a script; the
/// server, socket and script are removed when the test ends, passed or failed.
final class TmuxSession {
    let socket: String
    let script: String
    static let tmux = "/usr/bin/tmux"

    init(name: String, environment: [String: String], command: String) throws {
        socket = "/tmp/portcullis-test-tmux-\(name).sock"
        script = "/tmp/portcullis-test-tmux-\(name).sh"
        let exports = environment.sorted { $0.key < $1.key }.map { "export \($0.key)='\($0.value)'" }.joined(separator: "\n")
        // The terminal's settings before and after, to show top put them back; then the pane
        // stays open (bounded) so its last screen can be read.
        let body = """
            \(exports)
            stty -g > \(script).before
            \(command)
            echo "top exited $?"
            stty -g > \(script).after
            sleep 60
            """
        try body.write(toFile: script, atomically: true, encoding: .utf8)
        // The server this starts outlives its client and keeps every descriptor the client had:
        // Foundation learns a child exited when a socket it hands the child closes, so the client
        // runs with every descriptor past stderr closed, and its output goes to /dev/null.
        let launch = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:], close_fds=True, stdin=subprocess.DEVNULL, "
            + "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))"
        let started = try Command.run("/usr/bin/python3", ["-c", launch, Self.tmux, "-S", socket, "-f", "/dev/null", "new-session", "-d",
                                                          "-s", "top", "-x", "80", "-y", "24", "sh \(script)"], timeout: 10)
        try #require(started.status == 0, "tmux new-session: \(started)")
    }

    deinit {
        let server = try? format("pid")
        let pane = try? format("pane_pid")
        _ = try? tmux(["kill-server"])
        // A server that did not go (its pane's shell waiting) is ended by its id, once its
        // command line shows it is this test's own.
        for text in [pane, server].compactMap({ $0 }) {
            guard let pid = Int32(text), pid > 1,
                  let command = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8),
                  command.contains(script) || command.contains(socket) else { continue }
            kill(pid, SIGKILL)
        }
        for path in [socket, script, script + ".before", script + ".after"] { unlink(path) }
    }

    @discardableResult
    func tmux(_ arguments: [String]) throws -> Result {
        try Command.run(Self.tmux, ["-S", socket] + arguments, timeout: 10)
    }

    func capture() throws -> [String] {
        var lines = try tmux(["capture-pane", "-p", "-t", "top"]).stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        return lines
    }

    func format(_ name: String) throws -> String {
        try tmux(["display-message", "-p", "-t", "top", "#{\(name)}"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Polls the pane until `condition` holds on it, at most `seconds`.
    func waitFor(_ seconds: Double, _ condition: ([String]) -> Bool) throws -> [String]? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let lines = try capture()
            if condition(lines) { return lines }
            usleep(100_000)
        }
        return nil
    }

    var settingsKept: Bool {
        guard let before = try? String(contentsOfFile: script + ".before", encoding: .utf8),
              let after = try? String(contentsOfFile: script + ".after", encoding: .utf8) else { return false }
        return !before.isEmpty && before == after
    }
}

/// `portcullis top` on a real terminal (tmux) against a flood from tools/pktgen.py.
@Suite(.enabled(if: Privileges.canRunLab && FileManager.default.isExecutableFile(atPath: TmuxSession.tmux),
                "needs root, bpffs, iproute2 and tmux (run as root; CI does)"), .serialized)
struct TopLabTests {
    /// 4.01M -> 4,010,000.
    static func number(_ text: Substring) -> Double? {
        let scales: [Character: Double] = ["k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12]
        if let last = text.last, let scale = scales[last] { return Double(text.dropLast()).map { $0 * scale } }
        return Double(text)
    }

    static func droppedPackets(_ lab: Lab, _ target: String) throws -> Double? {
        let listed = try decodeJSON(try lab.portcullis(["list", "--json", "--contains", target]).stdout) as? [[String: Any]]
        return (listed?.first { $0["target"] as? String == target }?["droppedPackets"] as? Int).map(Double.init)
    }

    @Test func theFloodingSourceIsOnTopAtTheGeneratorsRateAndQRestoresTheTerminal() throws {
        try FloodLock.holding { try theFloodingSourceIsOnTop() }
    }

    private func theFloodingSourceIsOnTop() throws {
        let lab = try Lab()
        try #require(try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--mode", "native"]).status == 0)
        try #require(try lab.portcullis(["block", "198.51.100.10", "--for", "1h", "--reason", "flood"]).status == 0)
        try #require(try lab.portcullis(["block", "198.51.100.11"]).status == 0)
        // Blocks that never carry traffic, as a real blocklist holds.
        let bulk = (0..<5_000).map { "240.0.\($0 / 256).\($0 % 256)" }.joined(separator: "\n")
        try #require(try lab.portcullis(["block", "--file", "-", "--for", "1d"], input: bulk).status == 0)
        let link = try Command.run("/usr/sbin/ip", ["-n", lab.bastionNamespace, "-j", "link", "show", "dev", lab.bastionInterface])
        let mac = try #require((try decodeJSON(link.stdout) as? [[String: Any]])?.first?["address"] as? String)

        let generator = Process()
        generator.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        generator.arguments = ["python3", PacketGeneratorTests.generator, "--netns", lab.attackerNamespace, "--interface", "\(lab.name)-a",
                               "--src", "198.51.100.10", "--dst-mac", mac, "--count", "200000000", "--duration", "9", "--json"]
        let report = Pipe()
        generator.standardOutput = report
        generator.standardError = FileHandle.nullDevice
        try generator.run()
        defer {
            if generator.isRunning { generator.terminate() }
            generator.waitUntilExit()
        }

        let session = try TmuxSession(name: lab.name, environment: Command.environment(pins: lab.pins).merging(["PORTCULLIS_STATE_DIR": Command.stateDirectory(pins: lab.pins)]) { $1 },
                                      command: "\(Command.portcullis) top")
        let header = { (lines: [String]) in lines.firstIndex { $0.hasPrefix("DROPPING NOW") } }
        let first = try session.waitFor(10) { lines in
            header(lines).map { lines.indices.contains($0 + 1) && lines[$0 + 1].hasPrefix("198.51.100.10 ") } ?? false
        }
        try #require(first != nil, "top never showed the flood: \((try? session.capture()) ?? [])")
        #expect(try session.format("alternate_on") == "1")

        // The generator's rate over the same window, from the kernel's counter of the block.
        let startCount = try #require(try Self.droppedPackets(lab, "198.51.100.10"))
        let started = Date()
        var shown: [Double] = []
        for _ in 0..<3 {
            usleep(1_100_000)
            let lines = try session.capture()
            #expect(lines.count == 24)
            for line in lines { #expect(line.count <= 80) }
            let row = try #require(header(lines).map { lines[$0 + 1] })
            #expect(row.hasPrefix("198.51.100.10 "), "\(lines)")
            let columns = row.split(separator: " ")
            if columns.count > 1, let pps = Self.number(columns[1]) { shown.append(pps) }
            #expect(lines[23].hasPrefix("sampling:"))
        }
        let endCount = try #require(try Self.droppedPackets(lab, "198.51.100.10"))
        let kernelRate = (endCount - startCount) / Date().timeIntervalSince(started)
        try #require(shown.count == 3)
        let median = shown.sorted()[1]
        print("top showed \(shown) pps for the flood; its block's kernel counter grew \(Int(kernelRate)) pps over the same window")
        #expect(kernelRate > 10_000, "the generator hardly sent: \(kernelRate) pps")
        #expect(abs(median - kernelRate) <= 0.2 * kernelRate, "top showed \(shown) pps, the kernel counted \(kernelRate)")

        try session.tmux(["send-keys", "-t", "top", "q"])
        let after = try session.waitFor(5) { $0.contains("top exited 0") }
        #expect(after != nil, "\((try? session.capture()) ?? [])")
        #expect(try session.format("alternate_on") == "0")
        #expect(try session.format("cursor_flag") == "1")
        #expect(session.settingsKept)

        generator.waitUntilExit()
        let sent = try decodeJSON(String(decoding: report.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)) as? [String: Any]
        let generatorRate = Double(sent?["pps"] as? Int ?? 0)
        // Its whole run's mean includes its start: a loose check that both saw one flood.
        #expect(generatorRate > 0 && abs(median - generatorRate) <= 0.5 * generatorRate, "pktgen reported \(generatorRate) pps, top \(shown)")
    }

    @Test func ctrlCAndResizingAndScriptsWithoutATerminal() throws {
        let lab = try Lab()
        try #require(try lab.portcullis(["block", "198.51.100.20", "--for", "10m", "--reason", "scan \u{1b}[31m"]).status == 0)
        let environment = Command.environment(pins: lab.pins)
        let session = try TmuxSession(name: lab.name, environment: environment, command: "\(Command.portcullis) top --sort expiry")
        let first = try session.waitFor(10) { $0.contains { $0.hasPrefix("198.51.100.20") && $0.contains("scan \\x1b[31m") } }
        #expect(first != nil, "\((try? session.capture()) ?? [])")

        // SIGWINCH: the next frame fills the new size.
        try session.tmux(["resize-window", "-t", "top", "-x", "100", "-y", "30"])
        let resized = try session.waitFor(5) { lines in lines.count >= 30 && lines[29].hasPrefix("sampling:") }
        #expect(resized != nil, "\((try? session.capture()) ?? [])")

        try session.tmux(["send-keys", "-t", "top", "C-c"])
        #expect(try session.waitFor(5) { $0.contains("top exited 0") } != nil, "\((try? session.capture()) ?? [])")
        #expect(try session.format("alternate_on") == "0")
        #expect(session.settingsKept)

        let once = try lab.portcullis(["top", "--once", "--json", "--interval", "0.5"])
        try #require(once.status == 0, "\(once)")
        let document = try #require(try decodeJSON(once.stdout) as? [String: Any])
        #expect((document["expiring"] as? [[String: Any]])?.first?["target"] as? String == "198.51.100.20")
        #expect(document["intervalSeconds"] as? Double ?? 0 >= 0.5)
        #expect(document["blocks"] is [Any] && document["sampling"] is [String: Any])
        #expect(!once.stdout.contains("\u{1b}"))

        let plain = try lab.portcullis(["top", "--once", "--interval", "0.5"])
        #expect(plain.status == 0 && plain.stdout.contains("EXPIRING SOON") && !plain.stdout.contains("\u{1b}"), "\(plain)")
        let noTerminal = try lab.portcullis(["top"])
        #expect(noTerminal.status == 1 && noTerminal.stderr.contains("use --once or --json"), "\(noTerminal)")
    }
}
