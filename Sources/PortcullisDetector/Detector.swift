import PortcullisCore

/// A rule that fired, with what it extracted from the message.
public struct Alert: Sendable, Equatable {
    public let ruleID: String
    public let level: Int
    public let description: String
    public let groups: [String]
    /// The source address as written in the message, if the rule captured one.
    public let sourceText: String?
    /// The source address, or nil when it is missing or not a valid address.
    public let source: IPAddress?
    public let user: String?
    public let line: String

    public init(ruleID: String, level: Int, description: String, groups: [String], sourceText: String?,
                source: IPAddress?, user: String?, line: String) {
        (self.ruleID, self.level, self.description, self.groups) = (ruleID, level, description, groups)
        (self.sourceText, self.source, self.user, self.line) = (sourceText, source, user, line)
    }
}

/// Matches log messages against the rules, keeping the counts frequency rules need.
public struct Detector {
    public let rules: RuleSet
    private var windows: [String: [Duration]] = [:]

    public init(rules: RuleSet) { self.rules = rules }

    /// Every alert `message` raises: the most specific matching rule (a child
    /// refining its parent), and any frequency rule whose count it completes.
    /// `time` is a monotonic clock reading, for the frequency windows.
    public mutating func process(_ message: LogMessage, at time: Duration) -> [Alert] {
        guard let (chain, captures) = match(message) else { return [] }
        guard let final = chain.last else { return [] }
        let sourceText = captures["srcip"]
        let source = sourceText.flatMap { try? IPAddress(parsing: $0) }
        var alerts = [alert(final, sourceText: sourceText, source: source, user: captures["user"], line: message.line)]
        let matchedIDs = Set(chain.map(\.id))
        for rule in rules.rules {
            guard let frequency = rule.frequency, matchedIDs.contains(frequency.matched) else { continue }
            // A rule counting per source cannot count a line whose source is unknown.
            if frequency.sameSource && source == nil { continue }
            let key = rule.id + "|" + (frequency.sameSource ? source?.description ?? "" : "*")
            var window = windows[key, default: []].filter { time - $0 < frequency.timeframe }
            window.append(time)
            if window.count >= frequency.count {
                alerts.append(alert(rule, sourceText: sourceText, source: source, user: captures["user"], line: message.line))
                window.removeAll()
            }
            windows[key] = window.isEmpty ? nil : window
        }
        return alerts
    }

    private func alert(_ rule: DetectionRule, sourceText: String?, source: IPAddress?, user: String?, line: String) -> Alert {
        Alert(ruleID: rule.id, level: rule.level, description: rule.description, groups: rule.groups,
              sourceText: sourceText, source: source, user: user, line: line)
    }

    /// The first top-level rule that matches, then its children, deepest last.
    private func match(_ message: LogMessage) -> (chain: [DetectionRule], captures: [String: String])? {
        var chain: [DetectionRule] = []
        var captures: [String: String] = [:]
        var parent: String? = nil
        while true {
            let candidate = rules.rules.first { rule in
                rule.parent == parent && rule.frequency == nil && rule.programs.contains(message.program)
                    && rule.patterns.contains { pattern in
                        guard let found = try? pattern.firstMatch(in: message.text) else { return false }
                        for name in ["srcip", "user", "srcport"] {
                            if let value = found.output[name]?.substring { captures[name] = String(value) }
                        }
                        return true
                    }
            }
            guard let rule = candidate else { break }
            chain.append(rule)
            parent = rule.id
        }
        return chain.isEmpty ? nil : (chain, captures)
    }

    /// Forgets counts whose windows have passed, so memory stays bounded on a long-running host.
    public mutating func forgetStale(at time: Duration) {
        let longest = rules.rules.compactMap(\.frequency?.timeframe).max() ?? .zero
        windows = windows.filter { _, times in times.contains { time - $0 < longest } }
    }
}
