import ArgumentParser
import Glibc
import PortcullisControl
import PortcullisCore
import PortcullisIncidents
import PortcullisSystem

/// `portcullis report`: a period of the incident record for a compliance officer.
struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Report a period of the incident record: HTML for a compliance officer, Markdown for a ticket, JSON for a SIEM.",
        discussion: """
            Documents the period's security incidents and their outcomes (HIPAA \
            §164.308(a)(6)(ii)): the incidents by day (a chart in HTML), by rule and by source \
            (cli, file, wazuh, detector, api), the top offending addresses and prefixes with \
            what was dropped, the outcome of every block (how long it lasted, the packets and \
            bytes it dropped, and how it ended: unblocked, expired, or in force at the period's \
            end), the time to respond (from the detection or the Wazuh alert to the block in \
            force: median and p95, and how many blocks it could be measured for), the refusals \
            (allowlisted, not blockable such as loopback, no room, a malformed address) and the \
            result of `portcullis incidents verify` over the whole record.

            The numbers are those of the period's records, read as `portcullis incidents` reads \
            them (through the ledger's index by time, so the cost follows the period, not the \
            blocklist): `incidents --since ... --json` lists exactly the records counted. Packets \
            and bytes dropped come from the outcomes of the blocks that ended in the period; \
            without --until, a block still in force shows what it has dropped so far, read \
            from the data plane (the totals stay the record's).

            --since and --until take what `incidents --since` takes: a day (YYYY-MM-DD, UTC), an \
            RFC 3339 time, or a duration back from now (24h, 7d). A day given to --until is \
            included whole; without --until the period ends now.

            --format html writes one self-contained page: inline CSS and SVG, no script, no \
            URL, nothing fetched. All text from the record (reasons, rules, log lines: an \
            attacker's bytes) is escaped in every format. --output writes the report to a file \
            (mode 0600: it names addresses, users and log lines) instead of standard output.

            Exit status: 0 when written; 1 when the record or the ledger cannot be read, the \
            output cannot be written, or the chain is broken (the report is still written, and \
            says so); 2 on a usage error.

            Examples:
              portcullis report --since 2026-11-01 --format html --output report.html
              portcullis report --since 2026-11-01 --until 2026-11-30 --format md
              portcullis report --since 7d --top 20
              portcullis report --since 2026-11-01 --json | jq .timeToRespond
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case html, md, json
    }

    @OptionGroup var state: StateOptions

    @Option(help: ArgumentHelp("The period's start: YYYY-MM-DD (UTC), an RFC 3339 time, or a duration back from now (24h, 7d).", valueName: "when"))
    var since: String

    @Option(help: ArgumentHelp("The period's end, not included: as --since; a day is included whole. Default: now.", valueName: "when"))
    var until: String?

    @Option(help: ArgumentHelp("html, md (Markdown) or json.", valueName: "format"))
    var format: Format = .md

    @Flag(help: "The same as --format json.")
    var json = false

    @Option(help: ArgumentHelp("Write the report to this file instead of standard output.", valueName: "path"))
    var output: String?

    @Option(help: ArgumentHelp("How many of the top offending addresses and prefixes to list.", valueName: "count"))
    var top = 10

    func validate() throws {
        do {
            _ = try IncidentQuery(since: since, until: until, address: nil)
        } catch {
            throw ValidationError(error.description)
        }
        if json && format != .md && format != .json { throw ValidationError("--json and --format \(format.rawValue) ask for two formats; give one") }
        if top < 0 || top > 100_000 { throw ValidationError("--top must be from 0 to 100000, not \(top)") }
        if let output, output.isEmpty { throw ValidationError("--output needs a path") }
    }

    func run() throws {
        let now = Incident.nowUnixMilliseconds()
        let asked = try IncidentQuery(since: since, until: until, address: nil)
        let start = asked.sinceUnixMilliseconds ?? 0
        // Without --until, up to this moment: a record written while the report runs is in neither.
        let end = asked.untilUnixMilliseconds ?? now + 1
        let query = IncidentQuery(sinceUnixMilliseconds: start, untilUnixMilliseconds: end)
        let log = IncidentLog.resolve(option: state.incidentLog, stateDirectory: state.stateDirectory)
        let incidents = try ReportIncidents.incidents(query, log: log, state: state)
        let chain: IncidentReport.Chain
        do {
            chain = IncidentReport.Chain(try log.verify())
        } catch {
            chain = .unverified(error.description)
        }
        var report = IncidentReport.make(incidents, since: start, until: end, log: log.path, chain: chain, top: top, generatedAtUnixMs: now)
        if asked.untilUnixMilliseconds == nil {
            // A block still in force has no counts in the record yet: ask the data plane, one
            // lookup by key per such block of the period.
            let blocklist = state.blocklist()
            report.addDropsSoFar { text in
                guard let target = try? BlockTarget.parse(text).target,
                      let entry = try? blocklist.entry(for: target) else { return nil }
                return (entry.droppedPackets, entry.droppedBytes)
            }
        }
        let text: String
        switch json ? .json : format {
        case .json: text = Output.json(report) + "\n"
        case .md: text = report.markdown
        case .html: text = report.html
        }
        if let output {
            try Self.write(text, to: output)
        } else {
            print(text, terminator: "")
        }
        switch chain.status {
        case "intact": break
        case "broken":
            printError("portcullis: the incident record's chain is broken: \(chain.summary)")
            throw ExitCode(1)
        default:
            printError("portcullis: warning: the report's record was \(chain.summary)")
        }
    }

    /// Whole or not at all: written beside the file and renamed over it.
    static func write(_ text: String, to path: String) throws {
        try writeFileAtomically(text, to: path, mode: 0o600, what: "the report")
    }
}
