import Foundation
import Glibc
import Testing

/// A Wazuh home in /tmp with Portcullis installed as an active response by
/// `portcullis wazuh install`, its own pin directory and incident log, all
/// removed when the test is done.
final class WazuhHome: Sendable {
    let path: String
    let name = "firewall-drop-xdp"
    let pins: String
    var program: String { "active-response/bin/\(name)" }
    var logPath: String { "\(path)/logs/active-responses.log" }
    var incidentLog: String { Command.incidentLog(pins: pins) }

    /// The daemon's socket, when the test runs one.
    let controlSocket: String?

    /// `pins` shares another fixture's state (the lab's); by default the home has its own.
    init(pins: String? = nil, controlSocket: String? = nil) throws {
        self.controlSocket = controlSocket
        let id = UUID().uuidString.prefix(8).lowercased()
        path = "/tmp/portcullis-wazuh-\(id)"
        self.pins = pins ?? "/sys/fs/bpf/portcullis-test-wazuh-\(id)"
        try FileManager.default.createDirectory(atPath: "\(path)/active-response/bin", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(path)/logs", withIntermediateDirectories: true)
        let install = try Command.run(Command.portcullis, ["wazuh", "install", "--home", path, "--name", name])
        try #require(install.status == 0, "\(install)")
    }

    deinit {
        if Privileges.canUseBPF { _ = try? Command.portcullis(["purge", "--yes"], pins: pins) }
        try? FileManager.default.removeItem(atPath: path)
        try? FileManager.default.removeItem(atPath: incidentLog)
    }

    var logLines: [String] {
        ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// The messages of the log lines, without the timestamp and program prefix,
    /// checking on the way that every line has Wazuh's exact form.
    func logMessages() throws -> [String] {
        let prefix = " \(program): "
        return try logLines.map { line in
            let pattern = #/^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} /#
            guard line.prefixMatch(of: pattern) != nil, line.dropFirst(19).hasPrefix(prefix) else {
                throw LabError("log line not in Wazuh's form: \(line)")
            }
            return String(line.dropFirst(19 + prefix.count))
        }
    }
}

/// Drives the installed executable exactly as wazuh-execd does: argv[0] is
/// `active-response/bin/NAME` and nothing else, the Wazuh home is the working
/// directory, stdin and stdout are pipes and stderr is /dev/null. On add it
/// waits for one line (check_keys) and answers with the original message with
/// `command` replaced; on delete it writes the message and closes stdin.
struct ExecdEmulator {
    let home: WazuhHome
    /// Set in the executable's environment over the home's own (an incident log elsewhere).
    var environment: [String: String] = [:]

    struct Exchange: CustomStringConvertible {
        var status: Int32
        /// Every line the executable wrote to stdout.
        var output: [String]
        var description: String { "exit \(status), stdout \(output)" }
    }

    enum Reply { case `continue`, abort, none, raw(String) }

    /// `withStdout` false reproduces the delete path, where execd binds only stdin.
    func run(_ message: String?, reply: Reply = .continue, withStdout: Bool = true, closeStdin: Bool = true,
             timeout: TimeInterval = 20) throws -> Exchange {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", #"cd "$1" && exec -a "$2" "$2""#, "execd", home.path, home.program]
        var environment = Command.environment(pins: home.pins)
        environment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        // Without a daemon of the test's own, point at a socket nobody listens on.
        environment["PORTCULLIS_CONTROL_SOCKET"] = home.controlSocket ?? "\(home.path)/no-daemon.sock"
        environment.merge(self.environment) { $1 }
        process.environment = environment
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = withStdout ? stdout : FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        let lines = LineCollector(stdout.fileHandleForReading, enabled: withStdout)
        if let message { try stdin.fileHandleForWriting.write(contentsOf: Data((message + "\n").utf8)) }
        let deadline = Date().addingTimeInterval(timeout)
        if withStdout, let message {
            if case .none = reply {} else {
                // Wait for the check_keys line, as execd blocks in fgets.
                if let first = lines.next(before: deadline), first.contains(#""command":"check_keys""#) {
                    let answer: String
                    switch reply {
                    case .continue: answer = Self.with(message, command: "continue")
                    case .abort: answer = Self.with(message, command: "abort")
                    case .raw(let text): answer = text
                    case .none: answer = ""
                    }
                    try? stdin.fileHandleForWriting.write(contentsOf: Data((answer + "\n").utf8))
                }
            }
        }
        if closeStdin { try? stdin.fileHandleForWriting.close() }
        while process.isRunning && Date() < deadline { usleep(5_000) }
        guard !process.isRunning else { throw LabError("the active response did not exit within \(timeout) s") }
        process.waitUntilExit()
        if !closeStdin { try? stdin.fileHandleForWriting.close() }
        return Exchange(status: process.terminationStatus, output: lines.all(before: Date().addingTimeInterval(2)))
    }

    /// The message with its top-level command replaced, as execd builds replies and deletes.
    static func with(_ message: String, command: String) -> String {
        for word in ["add", "delete", "enable", "disable"] {
            let field = #""command":"\#(word)""#
            if let range = message.range(of: field, options: .backwards) {
                return message.replacingCharacters(in: range, with: #""command":"\#(command)""#)
            }
        }
        return message
    }
}

/// Collects the lines a child writes, on a thread of its own.
final class LineCollector: @unchecked Sendable {
    private let condition = NSCondition()
    private var lines: [String] = []
    private var finished = false
    private var handed = 0

    init(_ handle: FileHandle, enabled: Bool) {
        guard enabled else { finished = true; return }
        Thread.detachNewThread { [self] in
            var buffer = Data()
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                buffer.append(chunk)
                while let newline = buffer.firstIndex(of: 10) {
                    let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                    buffer.removeSubrange(buffer.startIndex...newline)
                    condition.lock(); lines.append(line); condition.broadcast(); condition.unlock()
                }
            }
            condition.lock()
            if !buffer.isEmpty { lines.append(String(decoding: buffer, as: UTF8.self)) }
            finished = true
            condition.broadcast()
            condition.unlock()
        }
    }

    func next(before deadline: Date) -> String? {
        condition.lock()
        defer { condition.unlock() }
        while lines.count <= handed && !finished && condition.wait(until: deadline) {}
        guard lines.count > handed else { return nil }
        handed += 1
        return lines[handed - 1]
    }

    func all(before deadline: Date) -> [String] {
        condition.lock()
        defer { condition.unlock() }
        while !finished && condition.wait(until: deadline) {}
        return lines
    }
}

enum Messages {
    static func add(_ address: String, extra: [String] = ["--for", "100s"], rule: String = "5710",
                    description: String = "sshd: Attempt to login using a non-existent user") -> String {
        let extraJSON = extra.map { "\"\($0)\"" }.joined(separator: ",")
        return #"{"version":1,"origin":{"name":"","module":"wazuh-execd"},"command":"add","parameters":{"extra_args":[\#(extraJSON)],"alert":{"timestamp":"2026-11-28T07:00:00.000+0000","rule":{"level":5,"description":"\#(description)","id":"\#(rule)","groups":["syslog","sshd","invalid_login"]},"agent":{"id":"001","name":"bastion"},"manager":{"name":"wazuh"},"id":"1795849766.1234","full_log":"Nov 28 07:00:00 bastion sshd[1234]: Invalid user admin from \#(address) port 30855","decoder":{"parent":"sshd","name":"sshd"},"data":{"srcip":"\#(address)","srcport":"30855","srcuser":"admin"},"location":"/var/log/auth.log"},"program":"active-response/bin/firewall-drop-xdp"}}"#
    }

    static func delete(_ address: String, extra: [String] = ["--for", "100s"]) -> String {
        ExecdEmulator.with(add(address, extra: extra), command: "delete")
    }
}
