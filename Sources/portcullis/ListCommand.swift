import ArgumentParser
import PortcullisBPF
import PortcullisCore

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
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
        let entries = try state.openIfPresent()?.list().sorted { $0.target < $1.target } ?? []
        if json {
            print(Output.json(entries.map(BlockJSON.init)))
            return
        }
        guard !entries.isEmpty else {
            print("nothing is blocked")
            return
        }
        let rows = entries.map { entry in
            [
                entry.target.description, Output.remaining(entry), Output.expiry(entry),
                String(entry.droppedPackets), Output.bytes(entry.droppedBytes),
                entry.source?.rawValue ?? "-", entry.reason,
            ]
        }
        print(Output.table(["TARGET", "REMAINING", "EXPIRES", "PACKETS", "BYTES", "SOURCE", "REASON"], rows))
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
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
        let stats = try state.open().statistics()
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
        let report = try state.open().sweep()
        state.recorder.recordExpiries(report.removed)
        if json {
            print(Output.json(SweepJSON(
                removed: report.removed.map(BlockJSON.init), scanned: report.scanned, seconds: report.elapsed.seconds)))
            return
        }
        let milliseconds = Output.fixed(report.elapsed.seconds * 1000, digits: 1)
        print("removed \(report.removed.count) expired of \(report.scanned) blocks in \(milliseconds) ms")
        for entry in report.removed {
            print("  \(entry.target): \(Output.remaining(entry)), dropped \(entry.droppedPackets) packets (\(Output.bytes(entry.droppedBytes)))")
        }
    }
}

struct SweepJSON: Encodable {
    let removed: [BlockJSON]
    let scanned: Int
    let seconds: Double
}
