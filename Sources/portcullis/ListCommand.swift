import ArgumentParser
import PortcullisBPF
import PortcullisControl
import PortcullisCore

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Show every block with its time left and what it dropped.",
        discussion: """
            Columns: the blocked address or prefix, the time left, the wall-clock expiry in local \
            time, packets and bytes dropped, who blocked it and why. Blocks that expired but were \
            not swept yet are shown as expired; they no longer drop anything.

            Examples:
              portcullis list
              portcullis list --json | jq '.[] | select(.droppedPackets > 0)'
            """)

    @OptionGroup var state: StateOptions

    @Flag(help: "Print a JSON array of blocks.")
    var json = false

    func run() throws {
        let blocks = try whenStateExists(or: []) { () throws(ServiceError) in try state.blocklist().list() }.map(BlockRecord.init)
        if json {
            print(Output.json(blocks))
            return
        }
        guard !blocks.isEmpty else {
            print("nothing is blocked")
            return
        }
        let rows = blocks.map { block in
            [
                block.target, Output.remaining(block), Output.expiry(block),
                String(block.droppedPackets), Output.bytes(block.droppedBytes),
                block.source?.rawValue ?? "-", TerminalText.escaped(block.reason),
            ]
        }
        print(Output.table(["TARGET", "REMAINING", "EXPIRES", "PACKETS", "BYTES", "SOURCE", "REASON"], rows))
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Show the data plane's packet counters.",
        discussion: """
            Counters are summed over all CPUs and all attached interfaces since the state was \
            created. Every packet the program saw is counted once as dropped, passed, passed \
            because allowlisted, passed because its block had expired, not IP, or unparseable.

            Examples:
              portcullis stats
              portcullis stats --json
            """)

    @OptionGroup var state: StateOptions

    @Flag(help: "Print the counters as JSON.")
    var json = false

    func run() throws {
        let stats = try state.blocklist().statistics()
        if json {
            print(Output.json(stats))
            return
        }
        let rows: [[String]] = [
            ["seen", String(stats.seen)],
            ["dropped", "\(stats.dropped) (\(Output.bytes(stats.droppedBytes)))"],
            ["passed", String(stats.passed)],
            ["passed, allowlisted", String(stats.passedAllowed)],
            ["passed, block expired", String(stats.passedExpired)],
            ["not IP", String(stats.notIP)],
            ["unparseable", String(stats.parseFailed)],
        ]
        print(Output.table(["COUNTER", "PACKETS"], rows))
    }
}

struct Sweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Remove expired blocks from the maps.",
        discussion: """
            Expired blocks already let traffic through; sweeping frees their memory and reports \
            each one's outcome: how long it lasted and what it dropped. The daemon sweeps on its \
            own; run this from cron or by hand otherwise.

            Example:
              portcullis sweep
            """)

    @OptionGroup var state: StateOptions

    @Flag(help: "Print the report as JSON.")
    var json = false

    func run() throws {
        let report = SweepResponse(try state.blocklist().sweep())
        if json {
            print(Output.json(report))
            return
        }
        let milliseconds = Output.fixed(report.seconds * 1000, digits: 1)
        print("removed \(report.removedCount) expired of \(report.scanned) blocks in \(milliseconds) ms")
        let shown = 20
        for block in report.removed.prefix(shown) {
            print("  \(block.target): \(Output.remaining(block)), dropped \(block.droppedPackets) packets (\(Output.bytes(block.droppedBytes)))")
        }
        if report.removedCount > shown {
            print("  ... and \(report.removedCount - shown) more (each one's outcome is in the incident log)")
        }
    }
}

