import ArgumentParser
import PortcullisControl
import PortcullisCore
import PortcullisIncidents
import PortcullisLedger

struct Incidents: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "incidents",
        abstract: "Report the incident record: every block, refresh, unblock and expiry.",
        discussion: """
            Reads the incident log (one JSON object per line; default \
            /var/log/portcullis/incidents.jsonl). Each record names the time, the action, the \
            address or prefix, who asked (cli, file, wazuh with its rule, agent and alert, \
            detector, api), the duration asked for, and for a block that ended, its outcome: \
            how long it lasted and the packets and bytes it dropped.

            --summary prints one row per day (UTC), a table for the security incident \
            documentation HIPAA §164.308(a)(6)(ii) asks for; `portcullis report` makes the \
            whole period report from the same records.

            Examples:
              portcullis incidents --since 24h
              portcullis incidents --address 203.0.113.9
              portcullis incidents --since 2026-11-01 --summary
              portcullis incidents --since 2026-11-01 --until 2026-11-30 --json
              portcullis incidents --json | jq 'select(.action == "expire")'
              portcullis incidents verify
            """,
        subcommands: [ReportIncidents.self, VerifyIncidents.self],
        defaultSubcommand: ReportIncidents.self)
}

/// `portcullis incidents [report]`: the records, or one row per day.
struct ReportIncidents: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Print the records, or with --summary one row per day (the default subcommand).")

    @OptionGroup var state: StateOptions

    @Option(help: ArgumentHelp("Only records from then on: YYYY-MM-DD (UTC), an RFC 3339 time, or a duration back from now (24h, 7d).", valueName: "when"))
    var since: String?

    @Option(help: ArgumentHelp("Only records before then: as --since; a day (YYYY-MM-DD) is included whole.", valueName: "when"))
    var until: String?

    @Option(help: ArgumentHelp("Only records about this address (or a prefix holding it).", valueName: "address"))
    var address: String?

    @Flag(help: "One row per day instead of one per record.")
    var summary = false

    @Flag(help: "Print JSON: the records, or with --summary the daily rows.")
    var json = false

    func validate() throws {
        do {
            _ = try IncidentQuery(since: since, until: until, address: address)
        } catch {
            throw ValidationError(error.description)
        }
    }

    func run() throws {
        let query = try IncidentQuery(since: since, until: until, address: address)
        let log = IncidentLog.resolve(option: state.incidentLog)
        let incidents = try Self.incidents(query, log: log, state: state)
        if summary {
            let days = DailySummary.make(incidents)
            if json {
                print(Output.json(days))
            } else if days.isEmpty {
                print("no incidents recorded in \(log.path)\(since.map { " since \($0)" } ?? "")")
            } else {
                print(Output.table(
                    ["DAY (UTC)", "DETECTED", "BLOCKED", "REFRESHED", "UNBLOCKED", "EXPIRED", "REFUSED", "ADDRESSES", "PACKETS DROPPED", "BYTES DROPPED", "TOP RULE"],
                    days.map {
                        [TerminalText.escaped($0.day), String($0.detected), String($0.blocked), String($0.refreshed), String($0.unblocked), String($0.expired),
                         String($0.refused), String($0.distinctTargets), String($0.droppedPackets), Output.bytes($0.droppedBytes),
                         TerminalText.escaped($0.topRule ?? "-")]
                    }))
            }
            return
        }
        if json {
            print(Output.json(incidents))
            return
        }
        guard !incidents.isEmpty else {
            print("no incidents recorded in \(log.path)\(since.map { " since \($0)" } ?? "")")
            return
        }
        print(Output.table(
            ["TIME", "ACTION", "TARGET", "SOURCE", "RULE", "ASKED", "OUTCOME", "REASON"],
            incidents.map { incident in
                let outcome = incident.outcome.map { outcome in
                    let lasted = outcome.lastedSeconds.map { "after \(Output.duration(seconds: $0)), " } ?? ""
                    return "\(lasted)\(outcome.droppedPackets) packets dropped"
                } ?? (incident.error ?? "")
                // Targets, sources, rules, reasons and errors can carry an attacker's bytes: never raw to a terminal.
                return [
                    Output.localTime(unixMilliseconds: incident.timeUnixMs), incident.action.rawValue, TerminalText.escaped(incident.target),
                    TerminalText.escaped(incident.source), TerminalText.escaped(incident.ruleId ?? "-"),
                    incident.requestedSeconds.map { DurationText.format(.seconds($0)) } ?? (incident.action == .block ? "permanent" : "-"),
                    TerminalText.escaped(outcome), TerminalText.escaped(incident.reason ?? ""),
                ]
            }))
    }
}

extension ReportIncidents {
    /// The records `query` asks for: through the ledger's index of the record, so the cost
    /// follows what is asked; without a ledger (or one not ours to open), the log read through.
    /// `portcullis report` reads the same way, so its numbers are these.
    static func incidents(_ query: IncidentQuery, log: IncidentLog, state: StateOptions) throws -> [Incident] {
        let stateDirectory = state.location.stateDirectory
        if Ledger.exists(stateDirectory: stateDirectory),
           let ledger = try? Ledger.open(stateDirectory: stateDirectory, readingIfReadOnly: true) {
            return try IncidentIndex.incidents(query, limit: nil, log: log, ledger: ledger)
        }
        do {
            return query.filter(try log.read())
        } catch {
            throw RuntimeFailure(error.description)
        }
    }
}

/// `portcullis incidents verify`: checks the hash chain across the rotated files.
struct VerifyIncidents: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check that no incident record was changed, removed or inserted.",
        discussion: """
            Every record carries an HMAC-SHA256 of its content and of the record before it, \
            under the key STATE_DIR/incident-key (mode 0600, made by the first write). verify \
            walks the rotated files oldest first (incidents.jsonl.N ... .1, then the log itself) \
            and names the first record that was changed, removed or inserted, with its file, \
            line, time and target; or says the chain is intact, how many records it covers, and \
            its head (the last record's sequence and hash: keep it elsewhere, since removing the \
            newest records leaves no trace in the file). Records written before the chain began \
            are counted, not treated as broken.

            Exit status: 0 intact, 1 broken (or the record or key cannot be read), 2 usage error.

            Examples:
              portcullis incidents verify
              portcullis incidents verify --json | jq .headHash
            """)

    // Its --state-dir names the directory holding incident-key, the chain's key.
    @OptionGroup var state: StateOptions

    @Flag(help: "Print the report as JSON.")
    var json = false

    func run() throws {
        let log = IncidentLog.resolve(option: state.incidentLog, stateDirectory: state.stateDirectory)
        let report: IncidentChainReport
        do {
            report = try log.verify()
        } catch {
            throw RuntimeFailure(error.description)
        }
        print(json ? Output.json(report) : report.summary)
        if !report.intact { throw ExitCode(1) }
    }
}
