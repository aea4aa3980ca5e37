import ArgumentParser
import PortcullisControl
import PortcullisCore

struct Throttle: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "throttle",
        abstract: "Limit the packets an address or prefix may send, dropping the rest.",
        discussion: """
            Packets whose source is TARGET pass up to --rate packets a second, after a burst of \
            --burst packets at once (default: a tenth of a second's packets); the rest are \
            dropped. XDP can pass or drop but never delay a packet, so this polices rather than \
            shapes: nothing is queued. A prefix shares one bucket among all its addresses.

            --new-connections polices only packets that may open a connection: TCP segments \
            with SYN and without ACK, and anything that is not TCP (UDP, ICMP, fragments). \
            Segments of established TCP connections always pass, so an operator's SSH session \
            from a throttled address is never cut.

            A throttle is kept, listed, refreshed, expired and recorded like a block. A block \
            on the same source wins over a throttle (throttling a blocked target is refused; \
            blocking a throttled one replaces the throttle), and the allowlist wins over both. \
            Without --for the throttle lasts until `portcullis unthrottle`.

            Examples:
              portcullis throttle 203.0.113.9 --rate 100/s --for 10m --reason "scanner"
              portcullis throttle 198.51.100.0/24 --rate 1000/s --burst 200
              portcullis throttle 2001:db8::bad --rate 5/s --new-connections
            """)

    @OptionGroup var state: StateOptions
    @OptionGroup var creation: CreationOptions

    @Argument(help: ArgumentHelp("Address or prefix to throttle.", valueName: "address|prefix"),
              transform: TargetArgument.transform)
    var target: TargetArgument

    @Option(help: ArgumentHelp("Packets per second that pass, like 100/s.", valueName: "N/s"))
    var rate: String

    @Option(help: ArgumentHelp("Packets that may pass at once before the rate applies.", valueName: "packets"))
    var burst: UInt32?

    @Option(name: .customLong("for"), help: ArgumentHelp("How long the throttle lasts.", valueName: "duration"),
            transform: parseDuration)
    var duration: Duration?

    @Option(help: ArgumentHelp("Why, kept with the throttle and shown by `list`.", valueName: "text"))
    var reason: String = ""

    @Flag(help: "Police only packets that may open a connection (TCP SYN, and anything not TCP).")
    var newConnections = false

    @Flag(help: "Print the result as JSON.")
    var json = false

    func validate() throws {
        _ = try throttleRate()
        if reason.utf8.count > BlockRequest.maximumReasonBytes {
            throw ValidationError("--reason is \(reason.utf8.count) bytes long; at most \(BlockRequest.maximumReasonBytes) are kept")
        }
        try validateBlockable(target.target)
    }

    private func throttleRate() throws -> ThrottleRate {
        do {
            return try ThrottleRate.parse(rate: rate, burst: burst, newConnectionsOnly: newConnections)
        } catch {
            throw ValidationError(error.description)
        }
    }

    func run() throws {
        target.printNotes()
        let request = BlockRequest(target: target.target, duration: duration, reason: reason, source: .cli, throttle: try throttleRate())
        let outcome = try state.blocklist(creating: creation).block(request, context: .none)
        warnOfMissingRecord(outcome.recordWarning)
        if json {
            print(Output.json(BlockResponse(outcome, notes: target.parsed.notes)))
            return
        }
        let entry = outcome.entry
        let terms = entry.throttle.map(Output.throttle) ?? ""
        let until = entry.expiresUnixMilliseconds.map { " (until \(Output.localTime(unixMilliseconds: $0)))" } ?? ""
        let length = entry.remaining.map { "for \(Output.duration(seconds: $0.fractionalSeconds))" } ?? "until unthrottled"
        switch outcome.change {
        case .added: print("throttled \(entry.target) to \(terms) \(length)\(until)")
        case .refreshed: print("refreshed \(entry.target): throttled to \(terms) \(length)\(until)")
        case .keptLonger: print("\(entry.target) is already throttled to \(terms) \(length)\(until); kept the longer throttle")
        }
    }
}

struct Unthrottle: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unthrottle",
        abstract: "Lift the throttle on an address or prefix.",
        discussion: """
            Traffic from TARGET flows at any rate again at once. Prints what the throttle passed \
            and dropped over its lifetime. A block on TARGET is left alone (see `unblock`); \
            unthrottling something that is not throttled succeeds and says so.

            Examples:
              portcullis unthrottle 203.0.113.9
            """)

    @OptionGroup var state: StateOptions

    @Argument(help: ArgumentHelp("Address or prefix to unthrottle.", valueName: "address|prefix"),
              transform: TargetArgument.transform)
    var target: TargetArgument

    @Flag(help: "Print the result as JSON.")
    var json = false

    func run() throws {
        guard let entry = try lift(target, in: state, throttle: true, json: json) else { return }
        print("unthrottled \(entry.target) (it passed \(entry.passedPackets) packets and dropped \(entry.droppedPackets), \(Output.bytes(entry.droppedBytes)))")
    }
}
