import PortcullisCore

/// A period of the incident record, summed for a compliance officer: what HIPAA
/// §164.308(a)(6)(ii) calls documenting security incidents and their outcomes. Made from the
/// period's records only (the same records `portcullis incidents` prints for the period), and
/// the chain's verification; nothing is recounted from elsewhere, so every total agrees with
/// `incidents --json`. Encoded as is for `report --format json`: the keys are documented in the
/// README and only ever added to (`formatVersion` changes if one is removed or changes meaning).
public struct IncidentReport: Codable, Sendable, Equatable {
    public static let currentFormatVersion = 1

    public struct Period: Codable, Sendable, Equatable {
        public var since: String
        public var sinceUnixMs: Int64
        /// The first millisecond no longer covered.
        public var until: String
        public var untilUnixMs: Int64
    }

    /// The period's records by action, and what their outcomes dropped.
    public struct Totals: Codable, Sendable, Equatable {
        public var records = 0
        public var detected = 0
        public var blocked = 0
        public var refreshed = 0
        public var unblocked = 0
        public var expired = 0
        public var refused = 0
        /// Distinct `target` texts among the records.
        public var distinctTargets = 0
        /// Summed over the outcomes of the unblocks and expiries recorded in the period.
        public var droppedPackets: UInt64 = 0
        public var droppedBytes: UInt64 = 0
    }

    /// A rule that fired: Wazuh's (from its alert) or the standalone detector's.
    public struct RuleRow: Codable, Sendable, Equatable {
        public var rule: String
        /// "wazuh" or "detector".
        public var engine: String
        public var description: String?
        public var detected = 0
        /// Blocks and refreshes it caused.
        public var blocked = 0
        public var refused = 0
    }

    /// Who asked: the record's `source` (cli, file, wazuh, detector, api).
    public struct SourceRow: Codable, Sendable, Equatable {
        public var source: String
        public var detected = 0
        public var blocked = 0
        public var refreshed = 0
        public var unblocked = 0
        public var expired = 0
        public var refused = 0
    }

    /// One address or prefix, over the period.
    public struct TargetRow: Codable, Sendable, Equatable {
        public var target: String
        /// "address" or "prefix".
        public var kind: String
        public var detected = 0
        /// Blocks and refreshes.
        public var blocked = 0
        public var refused = 0
        public var droppedPackets: UInt64 = 0
        public var droppedBytes: UInt64 = 0
        public var firstSeen: String
        public var lastSeen: String
    }

    /// How a block ended, as far as the period's records tell.
    public enum Ending: String, Codable, Sendable, CaseIterable {
        /// Lifted by `unblock` (an operator, the API, a Wazuh delete).
        case unblocked
        /// Expired, and a sweep recorded it.
        case expired
        /// No end recorded by the period's end, and its expiry (if any) was later: in force then.
        case inForce = "in-force"
        /// Its expiry passed within the period but no sweep has recorded the end yet: it
        /// stopped dropping at its expiry (the data plane checks), its counts are not known yet.
        case expiredUnrecorded = "expired-unrecorded"
        /// Blocked anew before any end was recorded (an expired block set again before a sweep).
        case superseded
    }

    /// One block, from the record that set it to the record that ended it.
    public struct BlockRow: Codable, Sendable, Equatable {
        public var target: String
        public var source: String
        public var rule: String?
        public var reason: String?
        /// When it was set; nil when that was before the period (only its end is in it).
        public var started: String?
        public var ended: String?
        public var ending: Ending
        /// Refreshes recorded in the period.
        public var refreshes = 0
        /// What was asked the last time it was set: nil for permanent or unknown.
        public var requestedSeconds: Int64?
        public var expiresAt: String?
        /// From the outcome of the record that ended it; for a block in force when the report
        /// was made, the drops so far, read from the data plane (``addDropsSoFar(_:)``).
        public var lastedSeconds: Double?
        public var droppedPackets: UInt64?
        public var droppedBytes: UInt64?
    }

    /// Blocks loaded from files are a policy rather than incidents: the record sums them.
    public struct FileBlocks: Codable, Sendable, Equatable {
        /// Records of loads (`block --file`).
        public var loads = 0
        /// Records of their expiries, each summing a sweep's.
        public var expiryRecords = 0
        public var droppedPackets: UInt64 = 0
        public var droppedBytes: UInt64 = 0
    }

    /// From the detection or the alert to the block in force.
    public struct ResponseTimes: Codable, Sendable, Equatable {
        /// Blocks and refreshes in the period.
        public var responses = 0
        /// Those whose start is known: a Wazuh alert with its time, or a detection record in the period.
        public var measured = 0
        /// Those with neither (an operator's, a file's, the API's; or a detection before the period).
        public var notMeasurable = 0
        /// An alert time after the block: the clocks of Wazuh and this host disagree.
        public var clockSkewed = 0
        public var medianSeconds: Double?
        /// By nearest rank.
        public var p95Seconds: Double?
        public var maxSeconds: Double?
    }

    /// A request not carried out, or a detection that could block nothing.
    public struct RefusalRow: Codable, Sendable, Equatable {
        public var time: String
        public var target: String
        public var source: String
        public var rule: String?
        /// allowlisted, not-blockable, full, malformed, or unclassified (an older record).
        public var kind: String
        public var error: String?
    }

    public struct Refusals: Codable, Sendable, Equatable {
        /// `refuse` records: the same count as `totals.refused`.
        public var refused = 0
        /// Detections whose address could not be read (they block nothing).
        public var malformedDetections = 0
        /// Both of the above by kind.
        public var byKind: [String: Int] = [:]
        public var rows: [RefusalRow] = []
    }

    /// `incidents verify` over the whole record (all its files), at the time of the report.
    public struct Chain: Codable, Sendable, Equatable {
        /// "intact", "broken", or "unverified" (the record or its key could not be read).
        public var status: String
        /// verify's own line.
        public var summary: String
        public var records: Int?
        public var chained: Int?
        public var headSequence: Int64?
        public var headHash: String?
    }

    public var formatVersion = IncidentReport.currentFormatVersion
    public var generatedAt: String
    public var log: String
    public var period: Period
    public var totals: Totals
    public var days: [DailySummary]
    public var rules: [RuleRow]
    public var sources: [SourceRow]
    /// The targets that dropped most, then had the most records; at most the report's `top`.
    public var topTargets: [TargetRow]
    public var blocks: [BlockRow]
    public var fileBlocks: FileBlocks
    public var timeToRespond: ResponseTimes
    public var refusals: Refusals
    public var chain: Chain
}

extension IncidentReport.Chain {
    public init(_ report: IncidentChainReport) {
        self.init(status: report.intact ? "intact" : "broken", summary: report.summary, records: report.records,
                  chained: report.chained, headSequence: report.head?.sequence, headHash: report.headHash)
    }

    /// The chain could not be checked: `reason` says why.
    public static func unverified(_ reason: String) -> Self {
        .init(status: "unverified", summary: "not verified: \(reason)")
    }
}

extension IncidentReport {
    /// Sums `incidents`, the period's records oldest first (as the ledger's index or the log
    /// gives them). Pure: the clock, the log and the chain come in as values.
    /// Gives each block in force that its records leave without counts what it has dropped so
    /// far, from `dropsSoFar` (the data plane's counters for that target; nil when it holds none).
    /// Only for a period that ends when the report is made: a later count would include drops
    /// after the period. The totals stay those of the record, so they agree with `incidents`.
    public mutating func addDropsSoFar(_ dropsSoFar: (String) -> (packets: UInt64, bytes: UInt64)?) {
        for index in blocks.indices where blocks[index].ending == .inForce && blocks[index].droppedPackets == nil {
            guard let drops = dropsSoFar(blocks[index].target) else { continue }
            blocks[index].droppedPackets = drops.packets
            blocks[index].droppedBytes = drops.bytes
        }
    }

    public static func make(
        _ incidents: [Incident], since: Int64, until: Int64, log: String, chain: Chain, top: Int = 10,
        generatedAtUnixMs: Int64
    ) -> IncidentReport {
        var totals = Totals()
        var targetsSeen = Set<String>()
        var rules: [String: RuleRow] = [:]
        var sources: [String: SourceRow] = [:]
        var targets: [String: TargetRow] = [:]
        var blocks = BlockTracker(periodEnd: until)
        var fileBlocks = FileBlocks()
        var responses = ResponseClock()
        var refusals = Refusals()

        for incident in incidents {
            totals.records += 1
            targetsSeen.insert(incident.target)
            var day = DailySummary(day: "")
            day.count(incident)
            totals.add(day)

            var source = sources[incident.source] ?? SourceRow(source: incident.source)
            source.add(incident.action)
            sources[incident.source] = source

            if let rule = incident.ruleId {
                let engine = incident.wazuh?.ruleId != nil ? "wazuh" : "detector"
                let key = engine + "\u{0}" + rule
                var row = rules[key] ?? RuleRow(rule: rule, engine: engine)
                if row.description == nil { row.description = incident.wazuh?.ruleDescription ?? incident.detection?.ruleDescription }
                switch incident.action {
                case .detect: row.detected += 1
                case .block, .refresh: row.blocked += 1
                case .refuse: row.refused += 1
                case .unblock, .expire: break
                }
                rules[key] = row
            }

            let parsed = try? BlockTarget.parse(incident.target).target
            if let parsed {
                var row = targets[incident.target] ?? TargetRow(
                    target: incident.target, kind: parsed.kind.rawValue, firstSeen: incident.time, lastSeen: incident.time)
                switch incident.action {
                case .detect: row.detected += 1
                case .block, .refresh: row.blocked += 1
                case .refuse: row.refused += 1
                case .unblock, .expire: break
                }
                if let outcome = incident.outcome {
                    row.droppedPackets += outcome.droppedPackets
                    row.droppedBytes += outcome.droppedBytes
                }
                row.lastSeen = incident.time
                targets[incident.target] = row
                blocks.take(incident)
            } else if incident.source == BlockSource.file.rawValue {
                switch incident.action {
                case .block: fileBlocks.loads += 1
                case .expire:
                    fileBlocks.expiryRecords += 1
                    fileBlocks.droppedPackets += incident.outcome?.droppedPackets ?? 0
                    fileBlocks.droppedBytes += incident.outcome?.droppedBytes ?? 0
                default: break
                }
            }

            responses.take(incident)

            if incident.action == .refuse || (incident.action == .detect && incident.isMalformedDetection) {
                let kind = incident.refusalKind
                if incident.action == .refuse { refusals.refused += 1 } else { refusals.malformedDetections += 1 }
                refusals.byKind[kind, default: 0] += 1
                refusals.rows.append(RefusalRow(time: incident.time, target: incident.target, source: incident.source,
                                                rule: incident.ruleId, kind: kind, error: incident.error))
            }
        }
        totals.distinctTargets = targetsSeen.count

        let ranked = targets.values.sorted { a, b in
            if a.droppedPackets != b.droppedPackets { return a.droppedPackets > b.droppedPackets }
            let (aCount, bCount) = (a.detected + a.blocked + a.refused, b.detected + b.blocked + b.refused)
            if aCount != bCount { return aCount > bCount }
            return a.target < b.target
        }
        return IncidentReport(
            generatedAt: Incident.rfc3339(unixMilliseconds: generatedAtUnixMs), log: log,
            period: Period(since: Incident.rfc3339(unixMilliseconds: since), sinceUnixMs: since,
                           until: Incident.rfc3339(unixMilliseconds: until), untilUnixMs: until),
            totals: totals, days: DailySummary.make(incidents),
            rules: rules.values.sorted { ($0.blocked + $0.detected + $0.refused, $1.rule, $1.engine) > ($1.blocked + $1.detected + $1.refused, $0.rule, $0.engine) },
            sources: sources.values.sorted { ($0.total, $1.source) > ($1.total, $0.source) },
            topTargets: Array(ranked.prefix(max(0, top))),
            blocks: blocks.finish(), fileBlocks: fileBlocks, timeToRespond: responses.finish(), refusals: refusals, chain: chain)
    }
}

extension IncidentReport.Totals {
    mutating func add(_ day: DailySummary) {
        detected += day.detected
        blocked += day.blocked
        refreshed += day.refreshed
        unblocked += day.unblocked
        expired += day.expired
        refused += day.refused
        droppedPackets += day.droppedPackets
        droppedBytes += day.droppedBytes
    }
}

extension IncidentReport.SourceRow {
    mutating func add(_ action: Incident.Action) {
        switch action {
        case .detect: detected += 1
        case .block: blocked += 1
        case .refresh: refreshed += 1
        case .unblock: unblocked += 1
        case .expire: expired += 1
        case .refuse: refused += 1
        }
    }

    var total: Int { detected + blocked + refreshed + unblocked + expired + refused }
}

extension Incident {
    /// A detection that blocked nothing because its address could not be read.
    var isMalformedDetection: Bool {
        refusal == .malformed || (action == .detect && refusal == nil && (error?.contains("cannot be parsed") ?? false))
    }

    /// The refusal's kind: as recorded, else (a record older than the field) read from its
    /// error, whose wording the writers keep; "unclassified" when neither tells.
    var refusalKind: String {
        if let refusal { return refusal.rawValue }
        if isMalformedDetection { return RefusalKind.malformed.rawValue }
        guard let error else { return "unclassified" }
        if error.contains("is allowlisted by") || error.hasPrefix("white-listed") { return RefusalKind.allowlisted.rawValue }
        if error.hasPrefix("refusing to block") { return RefusalKind.notBlockable.rawValue }
        return "unclassified"
    }
}

/// Follows each target's block from the record that set it to the one that ended it.
private struct BlockTracker {
    let periodEnd: Int64
    var open: [String: Int] = [:]
    var rows: [IncidentReport.BlockRow] = []
    /// The expiry of each open row, in milliseconds; nil when permanent.
    var expiries: [Int: Int64?] = [:]

    init(periodEnd: Int64) { self.periodEnd = periodEnd }

    mutating func take(_ incident: Incident) {
        switch incident.action {
        case .block:
            if let index = open.removeValue(forKey: incident.target) {
                rows[index].ending = .superseded
                rows[index].ended = incident.time
            }
            open[incident.target] = rows.count
            expiries[rows.count] = incident.expiresAt.flatMap(Incident.unixMilliseconds(rfc3339:))
            rows.append(IncidentReport.BlockRow(
                target: incident.target, source: incident.source, rule: incident.ruleId, reason: incident.reason,
                started: incident.time, ending: .inForce, requestedSeconds: incident.requestedSeconds, expiresAt: incident.expiresAt))
        case .refresh:
            let index = open[incident.target] ?? {
                // Set before the period: only its refresh is in it.
                let index = rows.count
                rows.append(IncidentReport.BlockRow(
                    target: incident.target, source: incident.source, rule: incident.ruleId, reason: incident.reason,
                    started: nil, ending: .inForce))
                open[incident.target] = index
                return index
            }()
            rows[index].refreshes += 1
            rows[index].requestedSeconds = incident.requestedSeconds
            rows[index].expiresAt = incident.expiresAt
            expiries[index] = incident.expiresAt.flatMap(Incident.unixMilliseconds(rfc3339:))
        case .unblock, .expire:
            let index = open.removeValue(forKey: incident.target) ?? {
                let index = rows.count
                rows.append(IncidentReport.BlockRow(
                    target: incident.target, source: incident.source, rule: incident.ruleId, reason: incident.reason,
                    started: nil, ending: .inForce, requestedSeconds: incident.requestedSeconds))
                return index
            }()
            rows[index].ending = incident.action == .unblock ? .unblocked : .expired
            rows[index].ended = incident.time
            expiries[index] = nil
            if let outcome = incident.outcome {
                rows[index].lastedSeconds = outcome.lastedSeconds
                rows[index].droppedPackets = outcome.droppedPackets
                rows[index].droppedBytes = outcome.droppedBytes
            }
        case .refuse, .detect:
            break
        }
    }

    mutating func finish() -> [IncidentReport.BlockRow] {
        for index in open.values {
            if let expiry = expiries[index] ?? nil, expiry < periodEnd { rows[index].ending = .expiredUnrecorded }
        }
        return rows
    }
}

/// The time from each detection or alert to the block that answered it.
private struct ResponseClock {
    /// The latest detect record's time, by rule and log line: the detector's block carries the
    /// same detection as the record of the rule firing.
    var detections: [String: Int64] = [:]
    var times: [Double] = []
    var report = IncidentReport.ResponseTimes()

    static func key(_ detection: Incident.Detection) -> String {
        [detection.ruleId, detection.logSource ?? "", detection.log].joined(separator: "\u{0}")
    }

    mutating func take(_ incident: Incident) {
        switch incident.action {
        case .detect:
            if let detection = incident.detection { detections[Self.key(detection)] = incident.timeUnixMs }
        case .block, .refresh:
            report.responses += 1
            let start = incident.wazuh?.alertTime.flatMap(Incident.unixMilliseconds(rfc3339:))
                ?? incident.detection.flatMap { detections[Self.key($0)] }
            guard let start else {
                report.notMeasurable += 1
                return
            }
            guard incident.timeUnixMs >= start else {
                report.clockSkewed += 1
                return
            }
            report.measured += 1
            times.append(Double(incident.timeUnixMs - start) / 1000)
        case .unblock, .expire, .refuse:
            break
        }
    }

    mutating func finish() -> IncidentReport.ResponseTimes {
        let sorted = times.sorted()
        report.medianSeconds = Statistics.median(sorted)
        report.p95Seconds = Statistics.percentile(95, of: sorted)
        report.maxSeconds = sorted.last
        return report
    }
}

/// Summaries of sorted values.
public enum Statistics {
    /// The middle value, or the mean of the two middle values; nil for none.
    public static func median(_ sorted: [Double]) -> Double? {
        guard !sorted.isEmpty else { return nil }
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

    /// The nearest-rank percentile: the smallest value at least `percent` % of the values are
    /// at most. nil for none.
    public static func percentile(_ percent: Int, of sorted: [Double]) -> Double? {
        guard !sorted.isEmpty else { return nil }
        let rank = (percent * sorted.count + 99) / 100
        return sorted[min(sorted.count, max(1, rank)) - 1]
    }
}
