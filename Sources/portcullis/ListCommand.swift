import ArgumentParser
import PortcullisBPF
import PortcullisControl
import PortcullisCore
import PortcullisLedger

extension AddressFamily: ExpressibleByArgument {}
extension BlockKind: ExpressibleByArgument {}
extension BlockSource: ExpressibleByArgument {}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Show blocks and throttles with their time left and what they dropped.",
        discussion: """
            Columns: the blocked or throttled address or prefix, the action (block, or a \
            throttle's rate and burst), the time left, the wall-clock expiry in local time, \
            packets and bytes dropped, packets a throttle passed, who set it and why. Blocks that \
            expired but were not swept yet are shown as expired; they no longer drop anything.

            Blocks come from the ledger in target order, filtered and paged there: a page costs \
            the same with ten blocks held as with a million. --json streams every selected block \
            with bounded memory. --top reads the drop counters of every block in the maps.

            Examples:
              portcullis list
              portcullis list --source wazuh --limit 20
              portcullis list --contains 203.0.113.9
              portcullis list --top 10
              portcullis list --json | jq '.[] | select(.droppedPackets > 0)'
            """)

    @OptionGroup var state: StateOptions

    @Option(help: ArgumentHelp("Only blocks from this source (cli, file, wazuh, detector, api, fail2ban, sshguard, crowdsec).", valueName: "source"))
    var source: BlockSource?

    @Option(help: ArgumentHelp("Only ipv4 or ipv6 blocks.", valueName: "family"))
    var family: AddressFamily?

    @Option(help: ArgumentHelp("Only single addresses (address) or prefixes (prefix).", valueName: "kind"))
    var kind: BlockKind?

    @Option(help: ArgumentHelp("Only blocks that hold this address: the address itself and prefixes around it.", valueName: "address"))
    var contains: String?

    @Flag(help: "Only blocks that expired and were not swept yet.")
    var expired = false

    @Option(help: ArgumentHelp("Show at most this many blocks.", valueName: "count"))
    var limit: Int?

    @Option(help: ArgumentHelp("Skip this many blocks first.", valueName: "count"))
    var offset: Int = 0

    @Option(help: ArgumentHelp("Show the N blocks that dropped most packets, most first.", valueName: "N"))
    var top: Int?

    @Flag(help: "Print a JSON array of blocks.")
    var json = false

    func validate() throws {
        if let limit, limit < 0 { throw ValidationError("--limit must be zero or more") }
        if offset < 0 { throw ValidationError("--offset must be zero or more") }
        if let top, top < 1 { throw ValidationError("--top must be at least 1") }
        if top != nil && (limit != nil || offset != 0) { throw ValidationError("--top takes no --limit or --offset") }
    }

    func query() throws -> BlockQuery {
        var query = BlockQuery(source: source, family: family, kind: kind, expired: expired ? true : nil, limit: limit, offset: offset)
        if let contains {
            do {
                query.containing = try IPAddress(parsing: contains)
            } catch {
                throw ValidationError("--contains: \(error.description)")
            }
        }
        return query
    }

    func run() throws {
        let query = try query()
        if let top {
            // The counters of every block are read from the maps, which needs root, daemon or not.
            let blocks = try whenStateExists(or: []) { () throws(ServiceError) in try state.local().top(top) }.map(BlockRecord.init)
            try show(blocks)
            return
        }
        let blocklist = state.reader()
        if json {
            try streamJSON(query, from: blocklist)
            return
        }
        let listing = try whenStateExists(or: BlockListing(entries: [], total: 0)) { () throws(ServiceError) in try blocklist.list(query) }
        try show(listing.entries.map(BlockRecord.init))
        if listing.entries.count < listing.total - query.offset && listing.total > 0 {
            print("(\(listing.entries.count) of \(listing.total) shown; --offset and --limit page through them)")
        }
    }

    private func show(_ blocks: [BlockRecord]) throws {
        if json {
            print(Output.json(blocks))
            return
        }
        guard !blocks.isEmpty else {
            print("nothing is blocked")
            return
        }
        // In a fleet, where each block came from: another node's name, or this host's own.
        let inFleet = blocks.contains { $0.node != nil }
        let rows = blocks.map { block -> [String] in
            let action: String = block.throttle.map { Output.throttle($0.terms) } ?? "block"
            let passed: String = block.passedPackets.map { String($0) } ?? "-"
            var row: [String] = [
                block.target, action, Output.remaining(block), Output.expiry(block),
                String(block.droppedPackets), Output.bytes(block.droppedBytes), passed, Self.sourceColumn(block),
            ]
            if inFleet { row.append(block.node.map { TerminalText.escaped($0) } ?? "local") }
            row.append(TerminalText.escaped(block.reason))
            return row
        }
        print(Output.table(["TARGET", "ACTION", "REMAINING", "EXPIRES", "DROPPED", "BYTES", "PASSED", "SOURCE"] + (inFleet ? ["NODE"] : []) + ["REASON"], rows))
    }

    /// The source, or where an integration names one within it (`fail2ban/sshd`,
    /// `crowdsec/cscli`), that origin; `--json` has both.
    static func sourceColumn(_ block: BlockRecord) -> String {
        guard let source = block.source?.rawValue else { return "-" }
        if let origin = block.origin, origin.hasPrefix(source + "/") { return TerminalText.escaped(origin) }
        return source
    }

    /// A JSON array written a page at a time: memory stays bounded by the page, not the blocklist.
    private func streamJSON(_ query: BlockQuery, from blocklist: any BlocklistService) throws {
        let pageSize = 4096
        var remaining = query.limit
        var page = query
        var first = true
        var output = StandardOutput()
        output.write("[")
        while remaining.map({ $0 > 0 }) ?? true {
            page.limit = min(pageSize, remaining ?? pageSize)
            let listing = try whenStateExists(or: BlockListing(entries: [], total: 0)) { () throws(ServiceError) in try blocklist.list(page) }
            for entry in listing.entries {
                output.write(first ? "\n" : ",\n")
                first = false
                output.writeJSON(BlockRecord(entry).appendJSONArrayElement)
            }
            remaining = remaining.map { $0 - listing.entries.count }
            guard listing.entries.count == page.limit, let last = listing.entries.last else { break }
            page.after = last.target
            page.offset = 0
        }
        output.write(first ? "]\n" : "\n]\n")
        output.flush()
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Show the data plane's packet counters.",
        discussion: """
            Counters are summed over all CPUs and all attached interfaces since the state was \
            created. Every packet the program saw is counted once as dropped, passed, passed \
            because allowlisted, passed because its block had expired, passed under a throttle's \
            rate, not IP, or unparseable; the drops of throttles are also shown apart.

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
            ["passed, under a throttle's rate", String(stats.passedThrottled)],
            ["dropped by throttles (of dropped)", String(stats.droppedThrottled)],
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
        let swept = try state.blocklist().sweep()
        warnOfMissingRecord(swept.recordWarning)
        let report = SweepResponse(swept)
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

