import Foundation
import Glibc
import Logging
import PortcullisConfig
import PortcullisControl
import PortcullisBPF
import PortcullisCore
import PortcullisDetector
import PortcullisIncidents
import PortcullisWazuh
import ServiceLifecycle
import Subprocess
import SystemPackage

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
            logger.warning("rule \(alert.ruleID) fired on a line whose address cannot be parsed (\(TerminalText.escaped(text))); nothing blocked")
            await keeper.recordDetection(detection, target: text, error: "the source address cannot be parsed; nothing was blocked", unreadable: true)
            return
        }
        logger.info("rule \(alert.ruleID) (level \(alert.level)) fired for \(address): \(alert.description)")
        await keeper.recordDetection(detection, target: address.description)
        if planner.isWhiteListed(address) {
            await keeper.recordRefusal(address.description, detection: detection, error: "white-listed in \(configuration.activeResponse ?? "the configuration")",
                                      kind: .allowlisted)
            logger.info("\(address) is in the white list; no response")
            return
        }
        // The daemon's allowlist and the loopback rule bind user-defined commands as well as Portcullis's own block.
        let refusal: Refusal?
        do {
            refusal = try await keeper.refusal(for: .address(address))
        } catch {
            logger.warning("no response to \(address): cannot read the allowlist: \(error.description)")
            return
        }
        if let refusal {
            await keeper.recordRefusal(address.description, detection: detection, error: refusal.description, kind: Incident.RefusalKind(refusal))
            logger.info("no response to \(address): \(refusal)")
            return
        }
        for plan in planner.plan(alert, at: time) {
            if plan.command.isPortcullisBlock {
                var target = plan.target ?? .address(address)
                if case .prefix = target, let refusal = (try? await keeper.refusal(for: target)) ?? nil {
                    logger.info("blocking \(address) alone, not \(target): \(refusal)")
                    target = .address(address)
                }
                do throws(ServiceError) {
                    let request = BlockRequest(
                        target: target, duration: plan.timeout,
                        reason: "rule \(alert.ruleID): \(alert.description)".utf8Prefix(BlockRequest.maximumReasonBytes),
                        source: .detector)
                    let outcome = try await keeper.block(request, context: IncidentContext(detection: detection))
                    let length = plan.timeout.map { "for \(DurationText.format($0))" } ?? "until unblocked"
                    logger.info("\(outcome.change == .added ? "blocked" : "refreshed") \(target) \(length) (\(plan.command.name), offense \(plan.offense))")
                } catch {
                    logger.warning("did not block \(address): \(error.description)")
                }
            } else {
                await runner.start(plan, alert: alert, address: address)
            }
        }
    }

}

/// Runs user-defined <command> executables the way wazuh-execd does: the JSON
/// message on stdin, the check_keys handshake on add, and the delete after the
/// timeout, so existing active-response scripts work unchanged.
///
/// A command never holds up the detector: ``start(_:alert:address:)`` returns at once,
/// each command runs in a task of its own, at most ``concurrencyLimit`` at a time (the
/// rest wait in order), and each is stopped after ``timeLimit``.
actor CommandRunner {
    static let timeLimit: Duration = .seconds(30)
    static let concurrencyLimit = 16

    let directory: String
    let logger: Logger
    /// Keys of responses in force, with when they end: a repeated add is answered `abort`.
    private var active: [String: ContinuousClock.Instant] = [:]
    private var pendingDeletes: [String: (message: ExecdMessage, executable: String, task: Task<Void, Never>)] = [:]
    private var running: [UInt64: Task<Void, Never>] = [:]
    private var waiting: [(plan: ResponsePlanner.Plan, message: ExecdMessage, executable: String)] = []
    private var nextID: UInt64 = 0

    init(directory: String, logger: Logger) {
        self.directory = directory
        self.logger = logger
    }

    /// Starts the add for `plan`, or queues it behind the commands already running.
    func start(_ plan: ResponsePlanner.Plan, alert: Alert, address: IPAddress) {
        let executable = "\(directory)/\(plan.command.executable)"
        guard access(executable, X_OK) == 0 else {
            logger.error("command \(plan.command.name): \(executable) is not an executable file")
            return
        }
        let message = ExecdMessage(
            adding: address, user: alert.user,
            rule: ExecdMessage.Rule(level: alert.level, description: alert.description, id: alert.ruleID, groups: alert.groups),
            fullLog: alert.line, host: ProcessInfo.processInfo.hostName,
            timestamp: Incident.rfc3339(unixMilliseconds: Incident.nowUnixMilliseconds()),
            executable: plan.command.executable, extraArguments: plan.command.extraArguments)
        waiting.append((plan, message, executable))
        startWaiting()
    }

    private func startWaiting() {
        while running.count < Self.concurrencyLimit, !waiting.isEmpty {
            let (plan, message, executable) = waiting.removeFirst()
            let id = nextID
            nextID += 1
            running[id] = Task { [weak self] in
                guard let self else { return }
                await self.add(plan, message: message, executable: executable)
                await self.finished(id)
            }
        }
    }

    private func finished(_ id: UInt64) {
        running[id] = nil
        startWaiting()
    }

    private func add(_ plan: ResponsePlanner.Plan, message: ExecdMessage, executable: String) async {
        let prefix = plan.command.executable
        let key: String?
        do {
            key = try await Self.add(executable, message: message, keyPrefix: prefix) { [weak self] key in
                await self?.isActive(key) ?? false
            }
        } catch {
            logger.warning("command \(plan.command.name) for \(message.parameters.alert.data.srcip): \(error)")
            return
        }
        guard let key else { return }
        logger.info("ran \(plan.command.name) for \(message.parameters.alert.data.srcip)")
        guard let timeout = plan.timeout else { return }
        active[key] = ContinuousClock.now + timeout
        pendingDeletes[key]?.task.cancel()
        let task = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            guard !Task.isCancelled else { return }
            await self?.finish(key)
        }
        pendingDeletes[key] = (message.with(.delete), executable, task)
    }

    private func isActive(_ key: String) -> Bool {
        guard let end = active[key] else { return false }
        return end > ContinuousClock.now
    }

    private func finish(_ key: String) async {
        guard let pending = pendingDeletes.removeValue(forKey: key) else { return }
        active[key] = nil
        await runDelete(pending.executable, message: pending.message)
    }

    /// As execd does on shutdown: every delete still scheduled runs now, all at once, each
    /// bounded by ``timeLimit``; adds still running are stopped.
    func runPendingDeletes() async {
        for task in running.values { task.cancel() }
        waiting.removeAll()
        let pending = pendingDeletes
        pendingDeletes.removeAll()
        active.removeAll()
        await withTaskGroup(of: Void.self) { group in
            for (_, delete) in pending {
                delete.task.cancel()
                group.addTask { [self] in await self.runDelete(delete.executable, message: delete.message) }
            }
        }
    }

    private nonisolated func runDelete(_ executable: String, message: ExecdMessage) async {
        do {
            try await Self.delete(executable, message: message)
        } catch {
            logger.warning("delete for \(message.parameters.alert.data.srcip) with \(executable): \(error)")
        }
    }

    /// A command that did not finish in time; it was stopped (SIGTERM, then SIGKILL).
    struct TimeLimitExceeded: Error, CustomStringConvertible {
        var description: String { "did not finish within \(DurationText.format(CommandRunner.timeLimit)); stopped it" }
    }

    static var teardown: PlatformOptions {
        var options = PlatformOptions()
        options.teardownSequence = [.send(signal: .terminate, allowedDurationToNextStep: .seconds(2))]
        return options
    }

    /// Runs an add: writes the message and answers check_keys as execd does. Returns the
    /// response's key (for its delete), or nil when it was aborted or answered with
    /// something other than check_keys.
    static func add(_ executable: String, message: ExecdMessage, keyPrefix: String,
                    isActive: @escaping @Sendable (String) async -> Bool) async throws -> String? {
        try await withTimeLimit {
            let result = try await Subprocess.run(
                .path(FilePath(executable)), workingDirectory: FilePath(homeDirectory(of: executable)),
                platformOptions: teardown, input: .inputWriter, output: .sequence, error: .discarded
            ) { execution in
                _ = try await execution.standardInputWriter.write(message.line)
                var lines = execution.standardOutput.strings(bufferingPolicy: .maxLineLength(64 * 1024)).makeAsyncIterator()
                let reply = try await lines.next()
                var outcome: String? = reply == nil ? keyPrefix : nil
                if let reply, let keys = CheckKeys.keys(in: Array(reply.utf8)) {
                    let key = keys.isEmpty ? keyPrefix : keyPrefix + "-" + keys.joined(separator: "-")
                    let verdict: ExecdMessage.Command = await isActive(key) ? .abort : .continue
                    _ = try await execution.standardInputWriter.write(message.with(verdict).line)
                    outcome = verdict == .continue ? key : nil
                }
                try await execution.standardInputWriter.finish()
                // Read to the end, so a chatty command never blocks on a full pipe.
                while try await lines.next() != nil {}
                return outcome
            }
            return result.closureResult
        }
    }

    static func delete(_ executable: String, message: ExecdMessage) async throws {
        _ = try await withTimeLimit {
            try await Subprocess.run(
                .path(FilePath(executable)), workingDirectory: FilePath(homeDirectory(of: executable)),
                platformOptions: teardown, input: .string(message.line), output: .discarded, error: .discarded)
        }
    }

    /// The body's result, or ``TimeLimitExceeded`` once ``timeLimit`` passes (which cancels
    /// the body, and Subprocess then stops the command with ``teardown``).
    static func withTimeLimit<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: TimedFinish<T>.self) { group in
            group.addTask { .done(try await body()) }
            group.addTask {
                try await Task.sleep(for: timeLimit)
                return .timedOut
            }
            defer { group.cancelAll() }
            guard let first = try await group.next() else { throw TimeLimitExceeded() }
            switch first {
            case .done(let value): return value
            case .timedOut: throw TimeLimitExceeded()
            }
        }
    }

    enum TimedFinish<T: Sendable>: Sendable { case done(T), timedOut }

    /// The directory above active-response/bin, where execd runs responses; else the executable's own.
    static func homeDirectory(of executable: String) -> String {
        let directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
        if directory.path.hasSuffix("/active-response/bin") {
            return directory.deletingLastPathComponent().deletingLastPathComponent().path
        }
        return directory.path
    }
}
