/// One day (UTC) of the incident record: `incidents --summary` prints these rows, and the period
/// report is built on the same counts, so the two never disagree.
public struct DailySummary: Codable, Sendable, Equatable {
    public var day: String
    public var blocked = 0
    public var refreshed = 0
    public var unblocked = 0
    public var expired = 0
    public var refused = 0
    public var detected = 0
    public var distinctTargets = 0
    public var droppedPackets: UInt64 = 0
    public var droppedBytes: UInt64 = 0
    /// The rule behind most blocks and refreshes that day, with their count: "5710 (3)".
    public var topRule: String?

    public init(day: String) { self.day = day }

    /// Records in the order given; the days come out in order.
    public static func make(_ incidents: [Incident]) -> [DailySummary] {
        var days: [String: DailySummary] = [:]
        var targets: [String: Set<String>] = [:]
        var rules: [String: [String: Int]] = [:]
        for incident in incidents {
            let day = String(incident.time.prefix(10))
            var row = days[day] ?? DailySummary(day: day)
            row.count(incident)
            targets[day, default: []].insert(incident.target)
            if let rule = incident.ruleId, incident.action == .block || incident.action == .refresh {
                rules[day, default: [:]][rule, default: 0] += 1
            }
            days[day] = row
        }
        return days.keys.sorted().compactMap { day in
            guard var row = days[day] else { return nil }
            row.distinctTargets = targets[day]?.count ?? 0
            if let (rule, count) = rules[day]?.max(by: { $0.value < $1.value || ($0.value == $1.value && $0.key > $1.key) }) {
                row.topRule = "\(rule) (\(count))"
            }
            return row
        }
    }

    /// Counts the record's action and adds what its outcome dropped.
    mutating func count(_ incident: Incident) {
        switch incident.action {
        case .block: blocked += 1
        case .refresh: refreshed += 1
        case .unblock: unblocked += 1
        case .expire: expired += 1
        case .refuse: refused += 1
        case .detect: detected += 1
        }
        if let outcome = incident.outcome {
            droppedPackets += outcome.droppedPackets
            droppedBytes += outcome.droppedBytes
        }
    }
}

extension Incident {
    /// The rule behind the record: Wazuh's, else the detector's.
    public var ruleId: String? { wazuh?.ruleId ?? detection?.ruleId }
}
