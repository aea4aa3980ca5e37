import PortcullisCore

/// What `portcullis logtest` reports for one line: the pre-decoding, the decoder and its
/// fields, the rule, and the responses the configuration would carry out. Nothing is
/// blocked and nothing is run: the session only keeps, as the daemon would, the counts
/// of frequency rules and the offenses of repeated offenders between its lines.
public struct LogtestReport: Sendable, Encodable, Equatable {
    public struct PreDecoding: Sendable, Encodable, Equatable {
        public var timestamp: String?
        public var hostname: String?
        public var program: String?
        public var text: String
    }
    public struct Decoding: Sendable, Encodable, Equatable {
        public var name: String
        public var child: String?
        public var fields: [String: String]
        /// The field names in the order the decoder set them (JSON objects have none).
        public var order: [String]
    }
    public struct Rule: Sendable, Encodable, Equatable {
        public var id: String
        public var level: Int
        public var description: String
        public var groups: [String]
        public var firedtimes: Int?
        public var frequency: Int?
        public var timeframe: Int?
    }
    public struct Count: Sendable, Encodable, Equatable {
        public var rule: String
        public var count: Int
        public var needed: Int
    }

    public var line: String
    public var predecoding: PreDecoding
    public var decoder: Decoding?
    /// The deepest rule that matched, even one that silences the line.
    public var rule: Rule?
    public var alert: Bool
    /// Why nothing fires, when nothing does.
    public var silence: String?
    public var counts: [Count]
    /// "firewall-drop 198.51.100.7 for 100s", or why there is none.
    public var responses: [String]

    /// The form people read.
    public var text: String {
        var lines = ["line: \(line)"]
        lines.append("  pre-decoding: timestamp \(quoted(predecoding.timestamp)), hostname \(quoted(predecoding.hostname)), program \(quoted(predecoding.program))")
        if let decoder {
            let fields = decoder.order.map { "\($0)=\(decoder.fields[$0] ?? "")" }.joined(separator: " ")
            lines.append("  decoder: \(decoder.name)\(decoder.child.map { " (\($0))" } ?? "")\(fields.isEmpty ? ", no fields" : ": \(fields)")")
        } else {
            lines.append("  decoder: none")
        }
        if let rule {
            var text = "  rule: \(rule.id) (level \(rule.level)) \(rule.description)"
            if !rule.groups.isEmpty { text += " [groups: \(rule.groups.joined(separator: ", "))]" }
            if let firedtimes = rule.firedtimes { text += " firedtimes \(firedtimes)" }
            if let frequency = rule.frequency, let timeframe = rule.timeframe { text += " (\(frequency) within \(timeframe)s)" }
            lines.append(text)
        }
        for count in counts where rule?.id != count.rule || !alert {
            lines.append("  count: rule \(count.rule) at \(count.count) of \(count.needed)")
        }
        if let silence { lines.append("  no alert: \(silence)") }
        for response in responses { lines.append("  response: \(response)") }
        return lines.joined(separator: "\n")
    }

    private func quoted(_ value: String?) -> String { value.map { "'\($0)'" } ?? "-" }
}

public struct LogtestSession {
    public let setup: DetectorSetup
    /// The daemon's allowlist, which binds every response as the white list does.
    public let allowlist: [BlockTarget]
    /// Lines one program wrote itself (`sshd -E`), as a `program:` source reads them.
    public let program: String?
    private var detector: Detector
    private var planner: ResponsePlanner
    /// Where a daemon would read its configuration from, for the messages.
    public let responsesFile: String?

    public init(setup: DetectorSetup, allowlist: [BlockTarget] = [], program: String? = nil, responsesFile: String? = nil) throws(RulesError) {
        (self.setup, self.allowlist, self.program, self.responsesFile) = (setup, allowlist, program, responsesFile)
        detector = try Detector(rules: setup.rules)
        planner = ResponsePlanner(configuration: setup.responses)
    }

    /// `time` is a monotonic reading, as the daemon gives its detector.
    public mutating func test(_ line: String, at time: Duration) -> LogtestReport {
        let message = program.map { LogMessage(program: $0, text: line, line: line) } ?? LogMessage.predecode(Substring(line))
        let evaluation = detector.evaluate(message, at: time)
        var fields: [String: String] = [:]
        for (name, value) in evaluation.fields where fields[name] == nil { fields[name] = value }
        var report = LogtestReport(
            line: line,
            predecoding: .init(timestamp: message.timestamp, hostname: message.hostname,
                               program: message.program.isEmpty ? nil : message.program, text: message.text),
            decoder: evaluation.decoder.map { .init(name: $0, child: evaluation.childDecoder, fields: fields, order: evaluation.fields.map(\.name)) },
            rule: evaluation.rule.map { rule in
                .init(id: rule.id, level: rule.level, description: rule.description, groups: rule.groups,
                      firedtimes: evaluation.alert?.firedTimes, frequency: rule.frequency, timeframe: rule.frequency == nil ? nil : rule.timeframe)
            },
            alert: evaluation.alert != nil, silence: evaluation.silence,
            counts: evaluation.counts.map { .init(rule: $0.rule, count: $0.count, needed: $0.needed) }, responses: [])
        guard let alert = evaluation.alert else { return report }
        report.responses = responses(to: alert, at: time)
        return report
    }

    private mutating func responses(to alert: Alert, at time: Duration) -> [String] {
        let configured = setup.responses.responses.contains { !$0.disabled }
        guard configured else { return ["none: no <active-response> is configured\(responsesFile == nil ? " (give --config with a detector.active_response file)" : "")"] }
        guard let address = alert.source else {
            return ["none: the alert has no source address\(alert.sourceText.map { " ('\($0)' is not one)" } ?? "")"]
        }
        if planner.isWhiteListed(address) { return ["none: \(address) is in the <white_list>"] }
        if address.isLoopback || address.isUnspecified { return ["none: \(address) is never blocked"] }
        if let entry = allowlist.first(where: { $0.contains(.address(address)) }) { return ["none: \(address) is in the daemon's allowlist (\(entry))"] }
        let plans = planner.plan(alert, at: time)
        guard !plans.isEmpty else { return ["none: no <active-response> names rule \(alert.ruleID), its groups or its level"] }
        return plans.map { plan in
            let length = plan.timeout.map { "for \(DurationText.format($0))" } ?? "until unblocked"
            let target = plan.target ?? .address(address)
            let offense = plan.offense > 1 ? " (offense \(plan.offense))" : ""
            if plan.command.isPortcullisBlock {
                return "\(plan.command.name) \(target) \(length)\(offense)"
            }
            return "\(plan.command.name): would run \(plan.command.executable) for \(address) \(length)\(offense)"
        }
    }
}
