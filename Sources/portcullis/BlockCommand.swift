import ArgumentParser
import Glibc
import PortcullisBPF
import PortcullisControl
import PortcullisCore
import PortcullisSystem

struct Block: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "block",
        abstract: "Block an address or prefix, for a while or until unblocked.",
        discussion: """
            Packets whose source is TARGET are dropped by every interface Portcullis is attached \
            to. TARGET is an IPv4 address in dotted-quad form, an IPv6 address, or a prefix such as \
            203.0.113.0/24. An IPv4-mapped IPv6 address (::ffff:192.0.2.1) blocks the IPv4 address. \
            Without --for the block is permanent.

            Blocking a target that is already blocked refreshes it: the new expiry applies unless \
            the existing block lasts longer, and the drop counters carry on. Loopback, the \
            unspecified address and allowlisted addresses are refused.

            --file loads many targets at once: one address or prefix per line, optionally followed \
            by its own duration; blank lines and lines starting with # are skipped; `-` reads \
            standard input. Every line is checked before anything is blocked.

            Durations: 100s, 10m, 1h30m, 2d, 1w, or a bare number of seconds.

            Examples:
              portcullis block 203.0.113.9 --for 100s --reason "sshd: invalid user"
              portcullis block 2001:db8::bad --for 1h
              portcullis block 198.51.100.0/24
              portcullis block --file blocklist.txt --for 1d
              printf '203.0.113.7 10m\\n203.0.113.8\\n' | portcullis block --file -
            """)

    @OptionGroup var state: StateOptions
    @OptionGroup var creation: CreationOptions

    @Argument(help: ArgumentHelp("Address or prefix to block.", valueName: "address|prefix"),
              transform: TargetArgument.transform)
    var target: TargetArgument?

    @Option(name: .customLong("for"), help: ArgumentHelp(
        "How long the block lasts (with --file: for lines without a duration of their own).",
        valueName: "duration"),
        transform: parseDuration)
    var duration: Duration?

    @Option(help: ArgumentHelp("Why, kept with the block and shown by `list`.", valueName: "text"))
    var reason: String = ""

    @Option(help: ArgumentHelp("Read targets from a file, one per line (`-` for standard input).", valueName: "path"))
    var file: String?

    @Flag(help: "Print the result as JSON.")
    var json = false

    func validate() throws {
        switch (target, file) {
        case (nil, nil): throw ValidationError("give an address or prefix to block, or --file PATH")
        case (.some, .some): throw ValidationError("give either an address or prefix, or --file, not both")
        default: break
        }
        if reason.utf8.count > BlockRequest.maximumReasonBytes {
            throw ValidationError("--reason is \(reason.utf8.count) bytes long; at most \(BlockRequest.maximumReasonBytes) are kept")
        }
        if let target { try validateBlockable(target.target) }
    }

    func run() throws {
        if let file {
            try blockFile(file)
            return
        }
        guard let target else { return }
        target.printNotes()
        let outcome = try state.blocklist(creating: creation).block(
            BlockRequest(target: target.target, duration: duration, reason: reason, source: .cli), context: .none)
        warnOfMissingRecord(outcome.recordWarning)
        if json {
            print(Output.json(BlockResponse(outcome, notes: target.parsed.notes)))
            return
        }
        let block = outcome.entry
        let until = block.expiresUnixMilliseconds.map { " (until \(Output.localTime(unixMilliseconds: $0)))" } ?? ""
        let length = block.remaining.map { "for \(Output.duration(seconds: $0.fractionalSeconds))" } ?? "permanently"
        switch outcome.change {
        case .added: print("blocked \(block.target) \(length)\(until)")
        case .refreshed: print("refreshed \(block.target): blocked \(length)\(until)")
        case .keptLonger: print("\(block.target) is already blocked \(length)\(until); kept the longer block")
        }
    }

    private func blockFile(_ path: String) throws {
        let text: String
        do {
            text = String(decoding: try readWholeFile(path, maximumBytes: Self.maximumFileBytes), as: UTF8.self)
        } catch {
            throw RuntimeFailure(error.description)
        }
        let name = path == "-" ? "standard input" : path
        var items: [BlockBatch.Item] = []
        // Read once: an option's value is a generic property wrapper's, looked up at each read.
        let defaultDuration = duration
        do {
            try BlockFile.forEachEntry(in: text) { items.append(BlockBatch.Item(target: $0.target, duration: $0.duration ?? defaultDuration)) }
        } catch {
            throw ValidationError("\(name): \(error.description)")
        }
        let started = ContinuousClock.now
        let blocklist = state.blocklist(creating: creation)
        var total = BatchResult(outcome: BatchOutcome(), elapsed: .zero)
        // Through the daemon, chunks keep each request body small; directly, one batch
        // reads the map's existing entries once instead of once per chunk.
        let throughDaemon = blocklist.reachesDaemon
        let chunks = throughDaemon ? Self.daemonChunks(of: items, reason: reason, origin: name) : [items.indices]
        if chunks.count > 1 {
            // Chunks are separate requests: check every line against the allowlist before the first one.
            if let refusal = try blocklist.refusal(for: items.map(\.target)) {
                throw RuntimeFailure("\(name): \(refusal.description); nothing was blocked")
            }
        }
        for range in chunks {
            let start = range.lowerBound
            let chunk = Array(items[range])
            do throws(ServiceError) {
                total = total + (try blocklist.block(batch: BlockBatch(items: chunk, reason: reason, source: .file, origin: name)))
            } catch {
                guard start > 0 else { throw error }
                warnOfMissingRecord(total.recordWarning(from: name))
                // Earlier chunks are in force and recorded; say exactly how much.
                throw RuntimeFailure("\(name): \(error.description); the first \(start) of \(items.count) targets were blocked by earlier requests (each recorded in the incident log), the rest were not")
            }
        }
        total.elapsed = ContinuousClock.now - started
        warnOfMissingRecord(total.recordWarning(from: name))
        if json {
            print(Output.json(BatchResponse(total)))
            return
        }
        let outcome = total.outcome
        print("blocked \(outcome.total) targets from \(name) in \(Output.fixed(total.elapsed.fractionalSeconds, digits: 2)) s: \(outcome.added) added, \(outcome.refreshed) refreshed, \(outcome.keptLonger) already blocked for longer")
    }

    /// The requests a load through the daemon takes: as few as fit its body limit, since each
    /// is a transaction of its own whose map writes overlap only its own rows. A batch travels as
    /// block-file lines in a JSON string; each line is counted at its longest (an IPv4 target
    /// takes at most 19 bytes, an IPv6 one 44, the prefix's slash escaped; a duration 12, the
    /// escaped line end 2), and
    /// the reason and origin at six bytes a character (JSON's \u escapes), so no body is refused.
    static func daemonChunks(of items: [BlockBatch.Item], reason: String, origin: String) -> [Range<Int>] {
        let budget = ControlSocketClient.maximumBodyBytes - 6 * (reason.utf8.count + origin.utf8.count) - 4096
        var chunks: [Range<Int>] = []
        var start = 0
        var bytes = 0
        for (index, item) in items.enumerated() {
            let longest = (item.target.family == .ipv4 ? 19 : 44) + (item.duration == nil ? 0 : 12) + 2
            if bytes + longest > budget, index > start {
                chunks.append(start..<index)
                (start, bytes) = (index, 0)
            }
            bytes += longest
        }
        chunks.append(start..<items.count)
        return chunks
    }
    /// 16 million lines of an address and a duration; anything larger is not a block file.
    static let maximumFileBytes = 512 << 20
}

/// A change that took effect without its incident record: one line on stderr, and the exit
/// status stays 0, since the change is in force (a script that stopped on it would leave the
/// next attacker unblocked). `--json` says the same in `incidentRecord`.
func warnOfMissingRecord(_ warning: String?) {
    if let warning { printError("portcullis: warning: \(warning)") }
}

/// A duration option, with the parser's own message as the usage error.
func parseDuration(_ text: String) throws -> Duration {
    do { return try DurationText.parse(text) } catch { throw ValidationError(error.description) }
}

/// The loopback and unspecified checks, as a usage error: such a target is bad input.
func validateBlockable(_ target: BlockTarget) throws {
    do { try Admission.checkBlockable(target) } catch { throw ValidationError(error.description) }
}

struct Unblock: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unblock",
        abstract: "Lift the block on an address or prefix.",
        discussion: """
            Traffic from TARGET flows again at once. Prints what the block dropped over its \
            lifetime. Unblocking something that is not blocked succeeds and says so.

            Examples:
              portcullis unblock 203.0.113.9
              portcullis unblock 198.51.100.0/24
            """)

    @OptionGroup var state: StateOptions

    @Argument(help: ArgumentHelp("Address or prefix to unblock.", valueName: "address|prefix"),
              transform: TargetArgument.transform)
    var target: TargetArgument

    @Flag(help: "Print the result as JSON.")
    var json = false

    func run() throws {
        guard let block = try lift(target, in: state, throttle: false, json: json) else { return }
        print("unblocked \(block.target) (it dropped \(block.droppedPackets) packets, \(Output.bytes(block.droppedBytes)))")
    }
}

/// Lifts the block (or with `throttle`, the throttle) on `target` for `unblock` and
/// `unthrottle`: the notes, the record's warning, and with `json` the answer are printed here;
/// returns what was lifted for the caller to describe, nil when it printed all there was to say.
func lift(_ target: TargetArgument, in state: StateOptions, throttle: Bool, json: Bool) throws -> BlockEntry? {
    target.printNotes()
    // No state at all means nothing was ever blocked here.
    let result = try whenStateExists(or: UnblockResult(outcome: .absent)) { () throws(ServiceError) in
        try state.blocklist().unblock(target.target, requestedBy: .cli, onlyOwn: false, context: .none, throttle: throttle)
    }
    warnOfMissingRecord(result.recordWarning)
    if json {
        print(Output.json(UnblockResponse(target: target.target, result)))
        return nil
    }
    guard case .removed(let entry) = result.outcome else {
        print("\(target.target) was not \(throttle ? "throttled" : "blocked")")
        return nil
    }
    return entry
}
