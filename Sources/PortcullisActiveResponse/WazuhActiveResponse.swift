import Glibc
import PortcullisBPF
import PortcullisControl
import PortcullisCore
import PortcullisSystem
import PortcullisIncidents
import PortcullisWazuh

/// Portcullis as a Wazuh active-response executable.
///
/// execd runs it as `active-response/bin/NAME` with no arguments, from the
/// Wazuh home, with stdin and stdout as pipes. It reads one JSON line; on add
/// it asks execd with check_keys whether the same block is already active and
/// blocks only on `continue`; on delete it unblocks. Every step is logged to
/// `<home>/logs/active-responses.log` exactly as Wazuh's own responses log it.
/// Nothing but the check_keys line is ever written to stdout.
public enum WazuhActiveResponse {
    static let maximumMessageBytes = 65_536
    /// How long execd's answer to check_keys may take; execd answers at once, so a longer
    /// silence means it will not answer, and nothing is blocked.
    public static let checkKeysReplyTimeout: Duration = .seconds(10)
    /// How long the daemon may take before the response writes the maps itself.
    public static let daemonTimeout: Duration = .seconds(5)

    /// execd passes no arguments and names the program by its path under active-response/bin.
    public static func isInvocation(_ arguments: [String]) -> Bool {
        arguments.count == 1 && arguments[0].contains("active-response/bin/")
    }

    public static func run(program: String) -> Int32 {
        // execd may close its end early; a write must fail, not kill us half-way.
        signal(SIGPIPE, SIG_IGN)
        let name = program.split(separator: "/").last.map(String.init) ?? program
        guard let home = wazuhHome() else { return 1 }
        guard chdir(home) == 0 else { return 1 }
        let log = ActiveResponseLogger(path: "\(home)/\(WazuhPaths.logRelativePath)", program: program)
        log.write("Starting")

        var input = LineReader(fileDescriptor: 0)
        guard let first = readMessage(&input, log: log) else { return 255 }

        let message: ActiveResponseMessage
        let extra: ExtraArguments
        do {
            message = try ActiveResponseMessage.parse(first)
            extra = try ExtraArguments(message.extraArguments)
        } catch let error as ActiveResponseError {
            log.write(error.description)
            return 255
        } catch {
            log.write("\(error)")
            return 255
        }
        for argument in extra.ignored { log.write("Ignoring unknown extra argument '\(TerminalText.excerpt(argument))'") }

        let target = BlockTarget.address(message.address)
        let alert = message.alert
        let wazuh = Incident.Wazuh(
            ruleId: alert.ruleID, ruleLevel: alert.ruleLevel, ruleDescription: alert.ruleDescription,
            agentId: alert.agentID, agentName: alert.agentName, alertId: alert.alertID, alertTime: alert.timestamp,
            command: message.commandWord)
        let context = IncidentContext(wazuh: wazuh)
        let recorder = IncidentRecorder(log: IncidentLog.resolve(option: nil), warn: { log.write("Warning: \($0)") })
        let pins = PinDirectory.resolve(option: extra.pinDirectory)
        // Through the daemon when it runs; straight into the pinned maps when it does not.
        let location = BlocklistLocation(pins: pins, stateDirectory: IncidentLog.resolveStateDirectory(option: nil))
        let blocklist = PreferredBlocklist(socket: ControlSocketClient.resolve(option: nil).with(timeout: daemonTimeout)) { () throws(ServiceError) -> LocalBlocklist in
            // One change and exit: the ledger is synced when it closes, before the exit.
            try LocalBlocklist.open(location, creatingWith: message.command == .add ? .standard : nil, ledgerSync: .atClose, recorder: recorder).0
        }

        switch message.command {
        case .add:
            // Refusals come before check_keys, so execd schedules no delete for them.
            do throws(ServiceError) {
                if let refusal = try refusal(for: target, pins: pins, asking: blocklist) {
                    log.write("Refusing to block: \(refusal.description)")
                    recorder.recordRefusal(target.description, source: BlockSource.wazuh.rawValue, error: refusal.description,
                                           kind: Incident.RefusalKind(refusal), context: context)
                    return 255
                }
            } catch {
                log.write("Cannot block \(target): \(error.description)")
                return 255
            }

            let keys = CheckKeys.line(program: name, keys: [message.address.description])
            guard writeLine(keys) else {
                log.write("Cannot write check_keys to stdout")
                return 255
            }
            log.write(keys)
            guard let replyLine = readMessage(&input, log: log, timeout: checkKeysReplyTimeout) else { return 255 }
            do {
                if try ActiveResponseReply.parse(replyLine) == .abort {
                    log.write("Aborted")
                    return 0
                }
            } catch {
                log.write(error.description)
                return 255
            }
            do throws(ServiceError) {
                let outcome = try blocklist.block(
                    BlockRequest(target: target, duration: extra.duration,
                                 reason: alert.reason.utf8Prefix(BlockRequest.maximumReasonBytes), source: .wazuh,
                                 throttle: extra.throttle),
                    context: context)
                // Whoever wrote the maps, daemon or not: a Wazuh operator reads only this log.
                if let warning = outcome.recordWarning { log.write("Warning: \(warning)") }
            } catch {
                log.write("Cannot block \(target): \(error.description)")
                return 255
            }

        case .delete:
            do throws(ServiceError) {
                let result = try whenStateExists(or: UnblockResult(outcome: .absent)) { () throws(ServiceError) in
                    try blocklist.unblock(target, requestedBy: .wazuh, onlyOwn: true, context: context, throttle: extra.throttle != nil)
                }
                if let warning = result.recordWarning { log.write("Warning: \(warning)") }
                if case .keptForOwner(let kept) = result.outcome {
                    log.write("Keeping the block on \(target): it was set by \(kept.source?.rawValue ?? "another source"), not by this response")
                }
            } catch {
                log.write("Cannot unblock \(target): \(error.description)")
                return 255
            }
        }
        log.write("Ended")
        return 0
    }

    /// Why `target` may not be blocked. The allowlist lives in the pinned maps, so it is read
    /// there with one lookup, daemon or not: asking the daemon would cost a round trip on
    /// every alert. Without pins yet, only loopback can be refused, and the blocklist says so.
    private static func refusal(for target: BlockTarget, pins: PinDirectory, asking blocklist: some BlocklistService) throws(ServiceError) -> Refusal? {
        guard let datapath = try? Datapath.open(pins) else { return try blocklist.refusal(for: target) }
        let entry = try ServiceError.mapping { () throws(DatapathError) in try datapath.allowlistEntry(covering: target) }
        do throws(Refusal) {
            try Admission.check(target, allowlist: entry.map { [$0] } ?? [])
            return nil
        } catch {
            return error
        }
    }

    /// One line from execd, logged as received; nil (after logging Wazuh's
    /// message for it) when there is none or it is longer than execd may send.
    private static func readMessage(_ input: inout LineReader, log: ActiveResponseLogger, timeout: Duration? = nil) -> [UInt8]? {
        switch input.readLine(limit: maximumMessageBytes, timeout: timeout) {
        case .timedOut:
            log.write("No answer to check_keys within \(DurationText.format(checkKeysReplyTimeout)); nothing was blocked")
            return nil
        case .line(let line):
            log.write(String(decoding: line, as: UTF8.self))
            return line
        case .endOfFile:
            log.write(ActiveResponseError.noInput.description)
            return nil
        case .tooLong:
            log.write(ActiveResponseError.invalidFormat.description)
            return nil
        }
    }

    /// The Wazuh home, derived as Wazuh derives it: from the executable's real
    /// path, cut before /active-response/bin/; else $WAZUH_HOME.
    private static func wazuhHome() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        if realpath("/proc/self/exe", &buffer) != nil {
            let path = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let home = WazuhPaths.home(fromExecutable: path) { return home }
        }
        return setting(option: nil, environment: "WAZUH_HOME")
    }

    /// One line and a newline to stdout, in as few writes as it takes, unbuffered.
    private static func writeLine(_ text: String) -> Bool {
        if case .success = SystemCall.writeAll(1, Array(text.utf8) + [UInt8(ascii: "\n")]) { return true }
        return false
    }
}

/// Appends to active-responses.log, opening it for every line as Wazuh does,
/// so a rotated log is picked up at once.
struct ActiveResponseLogger: Sendable {
    let path: String
    let program: String

    func write(_ message: String) {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        let line = ActiveResponseLogLine(
            year: Int(parts.tm_year) + 1900, month: Int(parts.tm_mon) + 1, day: Int(parts.tm_mday),
            hour: Int(parts.tm_hour), minute: Int(parts.tm_min), second: Int(parts.tm_sec),
            program: program, message: TerminalText.escaped(message, escapingBackslash: false))
        // Never through a symbolic link, never into a FIFO or a file someone else owns: the
        // log's directory may be writable by the wazuh group, and this process runs as root.
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0o660)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_uid == 0 || info.st_uid == geteuid() else { return }
        let bytes = Array(line.text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }
}

/// Reads lines from a descriptor without reading past what it needs: execd
/// sends its reply only after it read check_keys, and never closes stdin first.
struct LineReader {
    enum Result { case line([UInt8]), endOfFile, tooLong, timedOut }

    let fileDescriptor: CInt
    private var buffer: [UInt8] = []
    private var ended = false

    init(fileDescriptor: CInt) { self.fileDescriptor = fileDescriptor }

    /// The next line; with `timeout`, `.timedOut` when no whole line came in that time.
    mutating func readLine(limit: Int, timeout: Duration? = nil) -> Result {
        var chunk = [UInt8](repeating: 0, count: 4096)
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                var line = Array(buffer[..<newline])
                buffer.removeSubrange(...newline)
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                return line.count > limit ? .tooLong : .line(line)
            }
            if buffer.count > limit { return .tooLong }
            if ended {
                guard !buffer.isEmpty else { return .endOfFile }
                defer { buffer.removeAll() }
                return .line(buffer)
            }
            if let deadline {
                let left = deadline - ContinuousClock.now
                guard left > .zero else { return .timedOut }
                var descriptor = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
                let milliseconds = Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
                guard case .success(let ready) = SystemCall.retryingInterrupts({ poll(&descriptor, 1, milliseconds) }) else { return .endOfFile }
                if ready == 0 { continue }
            }
            switch SystemCall.retryingInterrupts({ read(fileDescriptor, &chunk, chunk.count) }) {
            case .success(let count) where count > 0: buffer.append(contentsOf: chunk[0..<count])
            case .success, .failure: ended = true
            }
        }
    }
}
