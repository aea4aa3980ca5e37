import Foundation
import Glibc
import Logging
import PortcullisConfig
import PortcullisControl
import PortcullisBPF
import PortcullisCore
import PortcullisDetector
import PortcullisIncidents
import ServiceLifecycle

/// Watches the configured logs, matches the rules and carries out the
/// ossec.conf active responses: Portcullis's own XDP block for firewall-drop,
/// or any other executable run with Wazuh's protocol. Every alert and every
/// response is recorded.
struct DetectorService: Service {
    let keeper: BlocklistKeeper
    let configuration: DaemonConfiguration.Detector
    let rules: RuleSet
    let responses: ActiveResponseConfiguration
    let logger: Logger

    /// Loads the rules and the responses, so that a mistake in either stops the start.
    static func prepare(_ configuration: DaemonConfiguration.Detector, logger: Logger) throws -> (RuleSet, ActiveResponseConfiguration) {
        let setup: DetectorSetup
        do {
            setup = try DetectorSetup.load(
                wazuhRuleset: configuration.wazuhRuleset, ruleFiles: configuration.rules, activeResponse: configuration.activeResponse)
        } catch {
            throw Daemon.StartupError(description: error.description)
        }
        for warning in setup.warnings { logger.warning("\(warning)") }
        if configuration.activeResponse == nil {
            logger.warning("detector: no active_response file; alerts are recorded but nothing is blocked")
        }
        return (setup.rules, setup.responses)
    }

    func run() async throws {
        let (stream, continuation) = AsyncStream<(LogMessage, String)>.makeStream()
        let runner = CommandRunner(directory: configuration.commandsDirectory, logger: logger)
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                for source in configuration.sources {
                    group.addTask {
                        for await message in source.messages(logger: logger) { continuation.yield((message, source.description)) }
                    }
                    logger.info("detector: watching \(source)")
                }
                group.addTask {
                    // prepare() built this same tree before the start; it cannot fail here.
                    guard var detector = try? Detector(rules: rules) else {
                        logger.error("detector: the rules no longer load; not watching")
                        return
                    }
                    var planner = ResponsePlanner(configuration: responses)
                    let start = ContinuousClock.now
                    var lastCleanup = start
                    for await (message, source) in stream {
                        let now = ContinuousClock.now
                        for alert in detector.process(message, at: now - start) {
                            await respond(to: alert, from: source, at: now - start, planner: &planner, runner: runner)
                        }
                        if now - lastCleanup > .seconds(60) {
                            detector.forgetStale(at: now - start)
                            lastCleanup = now
                        }
                    }
                }
                await group.next()
                group.cancelAll()
            }
        }
        continuation.finish()
        await runner.runPendingDeletes()
    }

    private func respond(to alert: Alert, from source: String, at time: Duration, planner: inout ResponsePlanner, runner: CommandRunner) async {
        let detection = Incident.Detection(
            ruleId: alert.ruleID, ruleLevel: alert.level, ruleDescription: alert.description,
            user: alert.user, log: alert.line, logSource: source)
        guard let address = alert.source else {
            let text = alert.sourceText ?? "(no address)"
            logger.warning("rule \(alert.ruleID) fired on a line whose address cannot be parsed (\(text)); nothing blocked")
            await keeper.recordDetection(detection, target: text, error: "the source address cannot be parsed; nothing was blocked")
            return
        }
        logger.info("rule \(alert.ruleID) (level \(alert.level)) fired for \(address): \(alert.description)")
        await keeper.recordDetection(detection, target: address.description)
        if planner.isWhiteListed(address) {
            await keeper.recordRefusal(address.description, detection: detection, error: "white-listed in \(configuration.activeResponse ?? "the configuration")")
            logger.info("\(address) is in the white list; no response")
            return
        }
        // The daemon's allowlist and the loopback rule bind user-defined commands as well as Portcullis's own block.
        if let refusal = await keeper.refusal(for: .address(address)) {
            await keeper.recordRefusal(address.description, detection: detection, error: refusal)
            logger.info("no response to \(address): \(refusal)")
            return
        }
        for plan in planner.plan(alert, at: time) {
            if plan.command.isPortcullisBlock {
                var target = plan.target ?? .address(address)
                if case .prefix = target, let refusal = await keeper.refusal(for: target) {
                    logger.info("blocking \(address) alone, not \(target): \(refusal)")
                    target = .address(address)
                }
                do {
                    let response = try await keeper.block(BlockBody(
                        target: target.description, duration: plan.timeout.map { DurationText.format($0) },
                        reason: "rule \(alert.ruleID): \(alert.description)".utf8Prefix(BlockRequest.maximumReasonBytes),
                        source: "detector", detection: detection))
                    let length = plan.timeout.map { "for \(DurationText.format($0))" } ?? "until unblocked"
                    logger.info("\(response.change == "added" ? "blocked" : "refreshed") \(target) \(length) (\(plan.command.name), offense \(plan.offense))")
                } catch {
                    logger.warning("did not block \(address): \(error.description)")
                }
            } else {
                await runner.run(plan, alert: alert, address: address)
            }
        }
    }

}

/// Runs user-defined <command> executables the way wazuh-execd does: the JSON
/// message on stdin, the check_keys handshake on add, and the delete after the
/// timeout, so existing active-response scripts work unchanged.
actor CommandRunner {
    let directory: String
    let logger: Logger
    /// Keys of responses in force, with when they end: a repeated add is answered `abort`.
    private var active: [String: ContinuousClock.Instant] = [:]
    private var pendingDeletes: [String: (message: String, executable: String, task: Task<Void, Never>)] = [:]

    init(directory: String, logger: Logger) {
        self.directory = directory
        self.logger = logger
    }

    func run(_ plan: ResponsePlanner.Plan, alert: Alert, address: IPAddress) async {
        let executable = "\(directory)/\(plan.command.executable)"
        guard access(executable, X_OK) == 0 else {
            logger.error("command \(plan.command.name): \(executable) is not an executable file")
            return
        }
        let message = Self.message(command: "add", plan: plan, alert: alert, address: address)
        let keyPrefix = plan.command.executable
        let outcome = await Task.detached { await Self.spawn(executable, message: message, handshake: { keys in
            keys.isEmpty ? keyPrefix : keyPrefix + "-" + keys.joined(separator: "-")
        }, isActive: { [self] key in await self.isActive(key) }) }.value
        guard let key = outcome else { return }
        logger.info("ran \(plan.command.name) for \(address)")
        guard let timeout = plan.timeout else { return }
        active[key] = ContinuousClock.now + timeout
        let delete = ExecdRunnerMessage.replacingCommand(in: message, with: "delete")
        pendingDeletes[key]?.task.cancel()
        let task = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            guard !Task.isCancelled else { return }
            await self?.finish(key)
        }
        pendingDeletes[key] = (delete, executable, task)
    }

    private func isActive(_ key: String) -> Bool {
        guard let end = active[key] else { return false }
        return end > ContinuousClock.now
    }

    private func finish(_ key: String) {
        guard let pending = pendingDeletes.removeValue(forKey: key) else { return }
        active[key] = nil
        Self.runDelete(pending.executable, message: pending.message)
    }

    /// As execd does on shutdown: every delete still scheduled runs now.
    func runPendingDeletes() {
        for (key, pending) in pendingDeletes {
            pending.task.cancel()
            Self.runDelete(pending.executable, message: pending.message)
            active[key] = nil
        }
        pendingDeletes.removeAll()
    }

    static func message(command: String, plan: ResponsePlanner.Plan, alert: Alert, address: IPAddress) -> String {
        var data: [String: Any] = ["srcip": address.description]
        if let user = alert.user { data["srcuser"] = user; data["dstuser"] = user }
        let hostname = ProcessInfo.processInfo.hostName
        let body: [String: Any] = [
            "version": 1,
            "origin": ["name": hostname, "module": "portcullis"],
            "command": command,
            "parameters": [
                "extra_args": plan.command.extraArguments,
                "alert": [
                    "timestamp": Incident.rfc3339(unixMilliseconds: Incident.nowUnixMilliseconds()),
                    "rule": ["level": alert.level, "description": alert.description, "id": alert.ruleID, "groups": alert.groups],
                    "agent": ["id": "000", "name": hostname],
                    "full_log": alert.line,
                    "data": data,
                ] as [String: Any],
                "program": "active-response/bin/\(plan.command.executable)",
            ] as [String: Any],
        ]
        let json = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: json, as: UTF8.self)
    }

    /// Runs an add: writes the message, answers check_keys, waits at most 30 s.
    /// Returns the response's key, or nil when it was aborted or failed.
    static func spawn(_ executable: String, message: String, handshake: @Sendable ([String]) -> String,
                      isActive: @Sendable (String) async -> Bool) async -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.currentDirectoryURL = homeDirectory(of: executable)
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        try? stdin.fileHandleForWriting.write(contentsOf: Data((message + "\n").utf8))
        var key = handshake([])
        // One line back, as execd reads it; an executable that answers nothing gets no delete.
        let reply = readLine(stdout.fileHandleForReading)
        if let reply, let json = try? JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any],
           json["command"] as? String == "check_keys" {
            let keys = ((json["parameters"] as? [String: Any])?["keys"] as? [Any])?.compactMap { $0 as? String } ?? []
            key = handshake(keys)
            let verdict = await isActive(key) ? "abort" : "continue"
            try? stdin.fileHandleForWriting.write(contentsOf: Data((ExecdRunnerMessage.replacingCommand(in: message, with: verdict) + "\n").utf8))
            try? stdin.fileHandleForWriting.close()
            wait(process, seconds: 30)
            return verdict == "continue" ? key : nil
        }
        try? stdin.fileHandleForWriting.close()
        wait(process, seconds: 30)
        return reply == nil ? key : nil
    }

    static func runDelete(_ executable: String, message: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.currentDirectoryURL = homeDirectory(of: executable)
        let stdin = Pipe()
        process.standardInput = stdin
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return }
        try? stdin.fileHandleForWriting.write(contentsOf: Data((message + "\n").utf8))
        try? stdin.fileHandleForWriting.close()
        wait(process, seconds: 30)
    }

    /// The directory above active-response/bin, where execd runs responses; else the executable's own.
    static func homeDirectory(of executable: String) -> URL {
        let directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
        if directory.path.hasSuffix("/active-response/bin") {
            return directory.deletingLastPathComponent().deletingLastPathComponent()
        }
        return directory
    }

    /// One line from the command, waiting at most `seconds`: a command that never
    /// answers (or waits for the end of its input) must not stall every later response.
    static func readLine(_ handle: FileHandle, seconds: Int32 = 30) -> String? {
        var bytes: [UInt8] = []
        let deadline = ContinuousClock.now + .seconds(Int(seconds))
        var byte: UInt8 = 0
        while bytes.count < 8192 {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { break }
            var descriptor = pollfd(fd: handle.fileDescriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(left.components.seconds * 1000 + 1))
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { break }
            guard read(handle.fileDescriptor, &byte, 1) == 1 else { break }
            if byte == 10 { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
        }
        return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
    }

    static func wait(_ process: Process, seconds: Double) {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

enum ExecdRunnerMessage {
    /// The message with its top-level `command` replaced, as execd builds its replies and deletes.
    static func replacingCommand(in message: String, with command: String) -> String {
        guard var json = try? JSONSerialization.jsonObject(with: Data(message.utf8)) as? [String: Any] else { return message }
        json["command"] = command
        let data = (try? JSONSerialization.data(withJSONObject: json, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}
