import PortcullisCore

/// The report as titled sections of text and tables, in the order a reader meets them: what the
/// Markdown and HTML forms both print, so they show the same tables with the same numbers. The
/// text is raw (records carry an attacker's bytes); each renderer escapes it for its format.
public struct ReportSection: Sendable, Equatable {
    public enum Cell: Sendable, Equatable {
        case text(String)
        case number(String)

        public var value: String {
            switch self {
            case .text(let text), .number(let text): text
            }
        }
    }

    /// What the section is, for the HTML form's anchors and chart.
    public var id: String
    public var title: String
    public var paragraphs: [String]
    public var header: [String]
    public var rows: [[Cell]]
    /// Shown instead of an empty table.
    public var empty: String
}

extension IncidentReport {
    public var sections: [ReportSection] {
        let days = days.map { day -> [ReportSection.Cell] in
            [.text(day.day), .n(day.detected), .n(day.blocked), .n(day.refreshed), .n(day.unblocked), .n(day.expired),
             .n(day.refused), .n(day.distinctTargets), .n(day.droppedPackets), .n(day.droppedBytes), .text(day.topRule ?? "-")]
        }
        let times = timeToRespond
        var response = "From the detection or the alert to the block in force, over \(times.measured) of \(times.responses) "
            + "blocks and refreshes"
        if let median = times.medianSeconds, let p95 = times.p95Seconds, let max = times.maxSeconds {
            response += ": median \(ReportFormat.seconds(median)), p95 \(ReportFormat.seconds(p95)), longest \(ReportFormat.seconds(max))."
        } else {
            response += "."
        }
        var unmeasured: [String] = []
        if times.notMeasurable > 0 {
            unmeasured.append("\(times.notMeasurable) had no alert time or detection record in the period (an operator's, a file's or the API's block, or a detection before the period)")
        }
        if times.clockSkewed > 0 {
            unmeasured.append("\(times.clockSkewed) had an alert time later than the block (Wazuh's clock is ahead of this host's)")
        }
        if !unmeasured.isEmpty { response += " Not measurable: " + unmeasured.joined(separator: "; ") + "." }

        let kinds = refusals.byKind.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map { "\($0.key) \($0.value)" }
        var refusalText = "\(refusals.refused) request\(refusals.refused == 1 ? "" : "s") refused"
        if refusals.malformedDetections > 0 {
            refusalText += ", and \(refusals.malformedDetections) detection\(refusals.malformedDetections == 1 ? "" : "s") whose address could not be read"
        }
        if !kinds.isEmpty { refusalText += " (by kind: " + kinds.joined(separator: ", ") + ")" }

        return [
            ReportSection(
                id: "totals", title: "Totals",
                paragraphs: ["Period (UTC): from \(period.since) up to \(period.until), not included. Records from \(log); generated \(generatedAt)."],
                header: ["records", "detected", "blocked", "refreshed", "unblocked", "expired", "refused", "targets", "packets dropped", "bytes dropped"],
                rows: [[.n(totals.records), .n(totals.detected), .n(totals.blocked), .n(totals.refreshed), .n(totals.unblocked),
                        .n(totals.expired), .n(totals.refused), .n(totals.distinctTargets), .n(totals.droppedPackets), .n(totals.droppedBytes)]],
                empty: ""),
            ReportSection(
                id: "chain", title: "Integrity of the record",
                paragraphs: [chain.summary], header: [], rows: [], empty: ""),
            ReportSection(
                id: "days", title: "Incidents by day",
                paragraphs: ["Packets and bytes dropped are those of the blocks that ended that day (their outcomes)."],
                header: ["day (UTC)", "detected", "blocked", "refreshed", "unblocked", "expired", "refused", "targets", "packets dropped", "bytes dropped", "top rule"],
                rows: days, empty: "No incidents in the period."),
            ReportSection(
                id: "rules", title: "By rule", paragraphs: [],
                header: ["engine", "rule", "description", "detected", "blocked", "refused"],
                rows: rules.map { [.text($0.engine), .text($0.rule), .text($0.description ?? ""), .n($0.detected), .n($0.blocked), .n($0.refused)] },
                empty: "No rule fired in the period."),
            ReportSection(
                id: "sources", title: "By source", paragraphs: [],
                header: ["source", "detected", "blocked", "refreshed", "unblocked", "expired", "refused"],
                rows: sources.map { [.text($0.source), .n($0.detected), .n($0.blocked), .n($0.refreshed), .n($0.unblocked), .n($0.expired), .n($0.refused)] },
                empty: "No records in the period."),
            ReportSection(
                id: "targets", title: "Top offending addresses and prefixes",
                paragraphs: ["Ranked by packets dropped (from the outcomes of their blocks that ended in the period), then by their records."],
                header: ["target", "kind", "detected", "blocked", "refused", "packets dropped", "bytes dropped", "first seen", "last seen"],
                rows: topTargets.map {
                    [.text($0.target), .text($0.kind), .n($0.detected), .n($0.blocked), .n($0.refused), .n($0.droppedPackets), .n($0.droppedBytes),
                     .text($0.firstSeen), .text($0.lastSeen)]
                },
                empty: "No address or prefix in the period."),
            ReportSection(id: "response", title: "Time to respond", paragraphs: [response], header: [], rows: [], empty: ""),
            ReportSection(
                id: "blocks", title: "Outcome of every block",
                paragraphs: ["Started is empty for a block set before the period. Lasted, packets and bytes come from the record of its end."
                             + (fileBlocks.loads + fileBlocks.expiryRecords > 0
                                ? " Blocks loaded from files are a policy, summed in the record: \(fileBlocks.loads) load\(fileBlocks.loads == 1 ? "" : "s"), \(fileBlocks.expiryRecords) expiry record\(fileBlocks.expiryRecords == 1 ? "" : "s") dropping \(fileBlocks.droppedPackets) packets (\(fileBlocks.droppedBytes) bytes)."
                                : "")],
                header: ["target", "source", "rule", "started", "ended", "how it ended", "refreshes", "lasted", "packets dropped", "bytes dropped", "reason"],
                rows: blocks.map {
                    [.text($0.target), .text($0.source), .text($0.rule ?? ""), .text($0.started ?? ""), .text($0.ended ?? ""),
                     .text($0.ending.phrase), .n($0.refreshes), .number($0.lastedSeconds.map(ReportFormat.seconds) ?? ""),
                     .number($0.droppedPackets.map { String($0) } ?? ""), .number($0.droppedBytes.map { String($0) } ?? ""), .text($0.reason ?? "")]
                },
                empty: "No block in the period."),
            ReportSection(
                id: "refusals", title: "Refusals", paragraphs: [refusalText + "."],
                header: ["time", "target", "source", "rule", "kind", "why"],
                rows: refusals.rows.map { [.text($0.time), .text($0.target), .text($0.source), .text($0.rule ?? ""), .text($0.kind), .text($0.error ?? "")] },
                empty: "Nothing was refused in the period."),
        ]
    }
}

extension IncidentReport.Ending {
    public var phrase: String {
        switch self {
        case .unblocked: "unblocked"
        case .expired: "expired"
        case .inForce: "in force at the period's end"
        case .expiredUnrecorded: "expired, end not yet recorded"
        case .superseded: "blocked anew"
        }
    }
}

extension ReportSection.Cell {
    static func n(_ value: some BinaryInteger) -> Self { .number(String(value)) }
}

/// Numbers as the report shows them.
public enum ReportFormat {
    /// "0.042 s" under a minute, else "1h2m3s".
    public static func seconds(_ value: Double) -> String {
        if value < 60 { return fixed(value, digits: 3) + " s" }
        return DurationText.format(.seconds(Int64(value.rounded(.down))))
    }

    static func fixed(_ value: Double, digits: Int) -> String {
        var scale: Int64 = 1
        for _ in 0..<digits { scale *= 10 }
        let scaled = Int64((abs(value) * Double(scale)).rounded())
        let fraction = String(scaled % scale)
        let sign = value < 0 && scaled != 0 ? "-" : ""
        return sign + String(scaled / scale) + "." + String(repeating: "0", count: digits - fraction.count) + fraction
    }
}
