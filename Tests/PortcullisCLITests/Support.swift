import Foundation
import Glibc
import Testing

/// What a finished command printed and how it exited.
struct Result: CustomStringConvertible {
    let status: Int32
    let stdout: String
    let stderr: String
    /// True when a signal ended the process; `status` is then the signal's number.
    var signaled = false
    var description: String { "\(signaled ? "killed by signal" : "exit") \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
    var stderrLines: [Substring] { stderr.split(separator: "\n") }
}

enum Command {
    /// The portcullis binary SwiftPM built beside this test bundle.
    static let portcullis: String = {
        let testBinary = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: testBinary).deletingLastPathComponent().appendingPathComponent("portcullis").path
    }()

    /// Where every portcullis these tests start keeps the incident chain's key: never
    /// /var/lib/portcullis. Set for this process too, so daemons started with its
    /// environment inherit it; removed when the tests exit.
    static let stateDirectory: String = {
        let path = "/tmp/portcullis-test-state-\(getpid())"
        setenv("PORTCULLIS_STATE_DIR", path, 1)
        atexit { try? FileManager.default.removeItem(atPath: "/tmp/portcullis-test-state-\(getpid())") }
        return path
    }()

    /// Each pin directory's own ledger and key, inside ``stateDirectory``: the ledger is the
    /// blocklist's source of truth, so tests on different pins must not share one.
    static func stateDirectory(pins: String) -> String {
        "\(stateDirectory)/\(pins.split(separator: "/").last ?? "default")"
    }

    static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Runs a program to completion, killing it after `timeout`.
    @discardableResult
    static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:],
        input: String? = nil, timeout: TimeInterval = 60
    ) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "PORTCULLIS_PIN_DIR")
        env.removeValue(forKey: "PORTCULLIS_INCIDENT_LOG")
        env.removeValue(forKey: "PORTCULLIS_CONTROL_SOCKET")
        env["PORTCULLIS_STATE_DIR"] = stateDirectory
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let stdout = Pipe(), stderr = Pipe(), stdin = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = stdin
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try? stdin.fileHandleForWriting.close()
        // Read while it runs so a chatty child never blocks on a full pipe.
        nonisolated(unsafe) var out = Data(), err = Data()
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) { out = stdout.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { err = stderr.fileHandleForReading.readDataToEndOfFile() }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            process.terminate()
            usleep(200_000)
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        group.wait()
        return Result(
            status: process.terminationStatus,
            stdout: String(decoding: out, as: UTF8.self),
            stderr: String(decoding: err, as: UTF8.self),
            signaled: process.terminationReason == .uncaughtSignal)
    }

    /// Runs portcullis on the given pins, recording incidents beside them in /tmp, never in /var/log.
    static func portcullis(_ arguments: [String], pins: String, input: String? = nil) throws -> Result {
        try run(portcullis, arguments, environment: environment(pins: pins), input: input)
    }

    /// A control socket nobody listens on, so a daemon on the machine never takes a test's requests.
    static func environment(pins: String) -> [String: String] {
        ["PORTCULLIS_PIN_DIR": pins, "PORTCULLIS_INCIDENT_LOG": incidentLog(pins: pins), "PORTCULLIS_STATE_DIR": stateDirectory(pins: pins),
         "PORTCULLIS_CONTROL_SOCKET": "/tmp/portcullis-no-daemon-\(pins.split(separator: "/").last ?? "x").sock"]
    }

    static func incidentLog(pins: String) -> String {
        "/tmp/\(pins.split(separator: "/").last ?? "portcullis")-incidents.jsonl"
    }
}

enum Privileges {
    static let isRoot = geteuid() == 0

    static let canUseBPF: Bool = {
        guard isRoot, let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return false }
        return mounts.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 2 && fields[1] == "/sys/fs/bpf" && fields[2] == "bpf"
        }
    }()

    static let canRunLab: Bool = canUseBPF
        && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
        && (FileManager.default.isExecutableFile(atPath: "/usr/bin/ping") || FileManager.default.isExecutableFile(atPath: "/bin/ping"))

    static let bpfReason: Comment = "needs root and bpffs at /sys/fs/bpf (run as root; CI does)"
    static let labReason: Comment = "needs root, bpffs, iproute2 and ping to build the netns lab (run as root; CI does)"
}

/// The netns lab of tools/lab.sh and a pin directory of its own, both removed
/// when the test ends, whether it passed or not.
final class Lab {
    let name: String
    let pins: String
    let attackerNamespace: String
    let bastionNamespace: String
    let bastionInterface: String
    static let bastionV4 = "198.51.100.1", attackerV4 = "198.51.100.2", otherV4 = "198.51.100.3"
    static let bastionV6 = "2001:db8::1", attackerV6 = "2001:db8::2", otherV6 = "2001:db8::3"

    init() throws {
        let suffix = UUID().uuidString.lowercased().filter(\.isHexDigit).prefix(6)
        name = "t\(suffix)"
        pins = "/sys/fs/bpf/portcullis-test-\(name)"
        attackerNamespace = "\(name)-attacker"
        bastionNamespace = "\(name)-bastion"
        bastionInterface = "\(name)-b"
        let up = try Command.run(Self.script, ["up", name], timeout: 30)
        try #require(up.status == 0, "lab.sh up failed: \(up)")
    }

    deinit {
        _ = try? Command.portcullis(["purge", "--yes"], pins: pins)
        _ = try? Command.run(Self.script, ["down", name], timeout: 30)
        try? FileManager.default.removeItem(atPath: Command.incidentLog(pins: pins))
    }

    static var script: String { Command.repositoryRoot.appendingPathComponent("tools/lab.sh").path }

    func portcullis(_ arguments: [String], input: String? = nil) throws -> Result {
        try Command.portcullis(arguments, pins: pins, input: input)
    }

    /// Sends `count` pings from the attacker namespace, from `source`, and
    /// returns how many were answered. Bounded: at most count × 0.2 s + 1 s.
    func pingsAnswered(from source: String = attackerV4, to destination: String = bastionV4, count: Int = 3) throws -> Int {
        let result = try Command.run(
            "/usr/sbin/ip",
            ["netns", "exec", attackerNamespace, "ping", "-n", "-q", "-c", String(count), "-i", "0.2", "-W", "1", "-I", source, destination],
            timeout: 15)
        // "3 packets transmitted, 0 received, ..."
        guard let summary = result.stdout.split(separator: "\n").first(where: { $0.contains("transmitted") }),
              let received = summary.split(separator: ",").dropFirst().first?.split(separator: " ").first,
              let answered = Int(received)
        else { throw LabError("unexpected ping output: \(result)") }
        return answered
    }

    /// The XDP line of `ip link` for the bastion's interface, nil when none is attached.
    func xdpOnBastion() throws -> String? {
        let result = try Command.run("/usr/sbin/ip", ["-n", bastionNamespace, "-d", "link", "show", "dev", bastionInterface])
        return result.stdout.split(separator: "\n").first { $0.contains("prog/xdp") }.map(String.init)
    }
}

struct LabError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func decodeJSON(_ text: String) throws -> Any {
    try JSONSerialization.jsonObject(with: Data(text.utf8))
}

/// A flood from the packet generator keeps a core busy; two at once on this 2-core machine make
/// the receiving veth drop frames before XDP sees them, and each test's counts come out short.
/// Tests that flood hold this lock: a file lock, so it also keeps out a flood from another process.
enum FloodLock {
    static let path = "/tmp/portcullis-flood.lock"

    static func holding<T>(_ body: () throws -> T) throws -> T {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LabError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw LabError("cannot lock \(path): \(String(cString: strerror(errno)))") }
        }
        return try body()
    }
}

/// Stops a process the test started: `signal`, then SIGKILL after `grace` seconds, and waits for it.
func stopProcess(_ process: Process, signal: Int32 = SIGTERM, grace: TimeInterval) {
    if process.isRunning { kill(process.processIdentifier, signal) }
    let deadline = Date().addingTimeInterval(grace)
    while process.isRunning && Date() < deadline { usleep(20_000) }
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
}

/// Whether `condition` holds within `seconds`, polled every 0.1 s.
func waitUntil(_ seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: 0.1)
    }
    return try condition()
}

/// A loopback TCP port for a server a test starts: below the kernel's ephemeral range (32768 and
/// up here), where the outgoing connections of tests running alongside take theirs, and free when
/// asked (bound once and let go). Two tests may still pick the same one in between; the odds are
/// one in thousands, not the birthday odds of random ports among busy ephemeral ones.
func unusedLoopbackPort() -> Int {
    for _ in 0..<100 {
        let port = Int.random(in: 20_000..<32_768)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { continue }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if bound == 0 { return port }
    }
    return Int.random(in: 20_000..<32_768)
}
