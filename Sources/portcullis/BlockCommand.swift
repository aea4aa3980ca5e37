import ArgumentParser
import Glibc
import PortcullisBPF
import PortcullisCore

struct Block: ParsableCommand {
    static let configuration = CommandConfiguration(
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
        let datapath = try creation.open(state)
        let outcome: BlockOutcome
        do {
            outcome = try datapath.block(BlockRequest(target: target.target, duration: duration, reason: reason, source: .cli))
        } catch {
            if error.kind == .refused || error.kind == .full {
                state.recorder.recordRefusal(target.target.description, source: "cli", error: error.description)
            }
            throw error
        }
        state.recorder.record(outcome, requested: duration)
        if json {
            print(Output.json(BlockOutcomeJSON(outcome)))
            return
        }
        let entry = outcome.entry
        let until = entry.expiresUnixMilliseconds.map { " (until \(Output.localTime(unixMilliseconds: $0)))" } ?? ""
        let length = entry.remaining.map { "for \(DurationText.format($0))" } ?? "permanently"
        switch outcome.change {
        case .added: print("blocked \(entry.target) \(length)\(until)")
        case .refreshed: print("refreshed \(entry.target): blocked \(length)\(until)")
        case .keptLonger:
            print("\(entry.target) is already blocked \(length)\(until); kept the longer block")
        }
    }

    private func blockFile(_ path: String) throws {
        let text = try readWholeFile(path)
        let name = path == "-" ? "standard input" : path
        var requests: [BlockRequest] = []
        var lineNumber = 0
        // Split on the byte: as Characters, "\r\n" is one and would not split.
        for line in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            do {
                guard let entry = try BlockFile.parseLine(Substring(line), number: lineNumber) else { continue }
                requests.append(BlockRequest(
                    target: entry.target, duration: entry.duration ?? duration, reason: reason, source: .file))
            } catch {
                throw ValidationError("\(name): \(error.description)")
            }
        }
        let started = ContinuousClock.now
        let datapath = try creation.open(state)
        let outcome = try datapath.block(batch: requests)
        let elapsed = ContinuousClock.now - started
        state.recorder.recordBatch(outcome, from: name, reason: reason, requested: duration)
        if json {
            print(Output.json(BatchJSON(
                total: outcome.total, added: outcome.added, refreshed: outcome.refreshed,
                keptLonger: outcome.keptLonger, seconds: elapsed.seconds)))
            return
        }
        print("blocked \(outcome.total) targets from \(name) in \(Output.fixed(elapsed.seconds, digits: 2)) s: \(outcome.added) added, \(outcome.refreshed) refreshed, \(outcome.keptLonger) already blocked for longer")
    }
}

/// Reads a file, or standard input for `-`, as UTF-8 text.
func readWholeFile(_ path: String) throws -> String {
    let fd = path == "-" ? 0 : open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw RuntimeFailure("cannot read \(path): \(String(cString: strerror(errno)))") }
    defer { if fd != 0 { close(fd) } }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let count = read(fd, &chunk, chunk.count)
        if count == 0 { break }
        if count < 0 {
            if errno == EINTR { continue }
            throw RuntimeFailure("cannot read \(path): \(String(cString: strerror(errno)))")
        }
        bytes.append(contentsOf: chunk[0..<count])
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// A duration option, with the parser's own message as the usage error.
func parseDuration(_ text: String) throws -> Duration {
    do { return try DurationText.parse(text) } catch { throw ValidationError(error.description) }
}

/// The loopback and unspecified checks, as a usage error: such a target is bad input.
func validateBlockable(_ target: BlockTarget) throws {
    do { try target.validateBlockable() } catch { throw ValidationError(error.description) }
}

extension Duration {
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

struct BlockOutcomeJSON: Encodable {
    let change: String
    let block: BlockJSON
    init(_ outcome: BlockOutcome) {
        change = outcome.change.rawValue
        block = BlockJSON(outcome.entry)
    }
}

struct BatchJSON: Encodable {
    let total: Int
    let added: Int
    let refreshed: Int
    let keptLonger: Int
    let seconds: Double
}

struct Unblock: ParsableCommand {
    static let configuration = CommandConfiguration(
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
        target.printNotes()
        let datapath = try state.open()
        let removed = try datapath.unblock(target.target)
        if let removed { state.recorder.recordUnblock(removed, source: "cli") }
        if json {
            print(Output.json(UnblockJSON(target: target.target.description, wasBlocked: removed != nil, block: removed.map(BlockJSON.init))))
            return
        }
        guard let removed else {
            print("\(target.target) was not blocked")
            return
        }
        print("unblocked \(removed.target) (it dropped \(removed.droppedPackets) packets, \(Output.bytes(removed.droppedBytes)))")
    }
}

struct UnblockJSON: Encodable {
    let target: String
    let wasBlocked: Bool
    let block: BlockJSON?
}
