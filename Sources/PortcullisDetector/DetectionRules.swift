import PortcullisCore
import Yams

/// A detection rule, Wazuh's ids and meaning in Portcullis's own format (see
/// dist/rules/sshd.yaml). A rule either matches messages (`match`, optionally
/// refining a `parent` rule) or counts the matches of another rule
/// (`frequency` of `matched` within `timeframe`, optionally from the same source).
public struct DetectionRule: @unchecked Sendable {
    public let id: String
    public let level: Int
    public let description: String
    public let groups: [String]
    public let programs: [String]
    public let parent: String?
    /// Regular expressions; a named group `srcip` captures the source, `user` and `srcport` are kept too.
    public let patterns: [Regex<AnyRegexOutput>]
    public let frequency: Frequency?

    public struct Frequency: Sendable {
        public let matched: String
        public let count: Int
        public let timeframe: Duration
        public let sameSource: Bool
    }
}

public struct RulesError: Error, CustomStringConvertible, Equatable {
    public let description: String
}

public struct RuleSet: @unchecked Sendable {
    public let rules: [DetectionRule]

    /// The rules Portcullis ships: sshd, Wazuh's 5710, 5712, 5716, 5718, 5720, 5760 and 5763.
    public static func builtIn() -> RuleSet {
        // The built-in text is tested; a failure here is a bug in the shipped rules, not user input.
        (try? RuleSet(yaml: BuiltInRules.sshd, file: "built-in sshd rules")) ?? RuleSet(rules: [])
    }

    init(rules: [DetectionRule]) { self.rules = rules }

    /// Rules from a YAML document: `programs:` (default for every rule) and `rules:`.
    public init(yaml: String, file: String) throws(RulesError) {
        func fail(_ node: Node?, _ message: String) -> RulesError {
            RulesError(description: "\(file)\(node?.mark.map { ":\($0.line)" } ?? ""): \(message)")
        }
        let root: Node?
        do { root = try Yams.compose(yaml: yaml) } catch { throw RulesError(description: "\(file): invalid YAML: \(error)".split(separator: "\n").first.map(String.init) ?? "\(file): invalid YAML") }
        guard let mapping = root?.mapping else { throw fail(root, "expected `programs:` and `rules:`") }
        var programs = ["sshd", "sshd-session"]
        if let list = mapping["programs"]?.sequence { programs = list.compactMap(\.string) }
        guard let ruleNodes = mapping["rules"]?.sequence else { throw fail(root, "no `rules:` list") }
        var rules: [DetectionRule] = []
        for node in ruleNodes {
            guard let rule = node.mapping else { throw fail(node, "a rule must be a mapping") }
            for key in rule.keys.compactMap(\.string)
            where !["id", "level", "description", "groups", "programs", "parent", "match", "frequency", "timeframe", "matched", "same_source"].contains(key) {
                throw fail(node, "unknown key \(key) in a rule")
            }
            guard let id = rule["id"]?.string, !id.isEmpty else { throw fail(node, "a rule needs an id") }
            guard let level = rule["level"]?.int, (0...16).contains(level) else { throw fail(node, "rule \(id): level must be 0 to 16") }
            let patterns = try (rule["match"]?.sequence ?? []).map { item throws(RulesError) -> Regex<AnyRegexOutput> in
                guard let text = item.string else { throw fail(item, "rule \(id): a match must be a string") }
                do { return try Regex(text) } catch { throw fail(item, "rule \(id): invalid regular expression: \(error)") }
            }
            var frequency: DetectionRule.Frequency?
            if let count = rule["frequency"]?.int {
                guard let matched = rule["matched"]?.string else { throw fail(node, "rule \(id): frequency needs `matched:`") }
                guard let timeText = rule["timeframe"]?.string, let timeframe = try? DurationText.parse(timeText) else {
                    throw fail(node, "rule \(id): frequency needs a `timeframe:` such as 120s")
                }
                guard count > 1 else { throw fail(node, "rule \(id): frequency must be at least 2") }
                frequency = .init(matched: matched, count: count, timeframe: timeframe, sameSource: rule["same_source"]?.bool ?? false)
            }
            guard patterns.isEmpty != (frequency == nil) else {
                throw fail(node, "rule \(id): give either `match:` patterns or a `frequency:`")
            }
            rules.append(DetectionRule(
                id: id, level: level, description: rule["description"]?.string ?? "rule \(id)",
                groups: (rule["groups"]?.sequence ?? []).compactMap(\.string),
                programs: (rule["programs"]?.sequence?.compactMap(\.string)) ?? programs,
                parent: rule["parent"]?.string, patterns: patterns, frequency: frequency))
        }
        let ids = Set(rules.map(\.id))
        for rule in rules {
            if let parent = rule.parent, !ids.contains(parent) { throw RulesError(description: "\(file): rule \(rule.id): no parent rule \(parent)") }
            if let matched = rule.frequency?.matched, !ids.contains(matched) { throw RulesError(description: "\(file): rule \(rule.id): no rule \(matched) to count") }
        }
        self.rules = rules
    }

    /// This set with `other`'s rules after it; a rule with the same id replaces the earlier one.
    public func adding(_ other: RuleSet) -> RuleSet {
        let replaced = Set(other.rules.map(\.id))
        return RuleSet(rules: rules.filter { !replaced.contains($0.id) } + other.rules)
    }
}

enum BuiltInRules {
    /// Wazuh's sshd rules (0095-sshd_rules.xml) by id and meaning, written for
    /// OpenSSH 7 to 9.x messages, including those Wazuh's decoder misses (an empty user name).
    /// The user name is the attacker's to choose and may itself hold " from 192.0.2.1 port 1":
    /// every pattern is anchored to the end sshd writes, so the address is always the last one.
    static let sshd = #"""
    programs: [sshd, sshd-session]
    rules:
      - id: "5710"
        level: 5
        description: "sshd: Attempt to login using a non-existent user"
        groups: [invalid_login, authentication_failed]
        match:
          - '^Invalid user (?<user>.*) from (?<srcip>\S+)(?: port (?<srcport>\d+))?\s*$'
          - '^Failed \S+ for invalid user (?<user>.*) from (?<srcip>\S+)(?: port (?<srcport>\d+))?(?: ssh2)?\s*$'
          - '^Disconnected from invalid user (?<user>.*) (?<srcip>\S+) port (?<srcport>\d+)(?: \[preauth\])?\s*$'
          - '^Connection (?:closed|reset) by invalid user (?<user>.*) (?<srcip>\S+) port (?<srcport>\d+)(?: \[preauth\])?\s*$'
          - '^(?:error: )?PAM: User not known to the underlying authentication module for illegal user (?<user>.*) from (?<srcip>\S+)\s*$'
      - id: "5718"
        level: 5
        description: "sshd: Attempt to login using a denied user"
        groups: [invalid_login, authentication_failed]
        match:
          - '^User (?<user>.*) from (?<srcip>\S+) not allowed because (?:(?! from ).)*$'
      - id: "5716"
        level: 5
        description: "sshd: authentication failed"
        groups: [authentication_failed]
        match:
          - '^Failed \S+ for (?<user>.*) from (?<srcip>\S+)(?: port (?<srcport>\d+))?(?: ssh2)?\s*$'
          - '^error: PAM: Authentication \w+ for (?<user>.*) from (?<srcip>\S+)\s*$'
      - id: "5760"
        parent: "5716"
        level: 5
        description: "sshd: authentication failed"
        groups: [authentication_failed]
        match:
          - '^Failed (?:password|keyboard-interactive/pam) for'
      - id: "5712"
        level: 10
        description: "sshd: brute force trying to get access to the system. Non existent user."
        groups: [authentication_failures]
        frequency: 8
        timeframe: 120s
        matched: "5710"
        same_source: true
      - id: "5763"
        level: 10
        description: "sshd: brute force trying to get access to the system. Authentication failed."
        groups: [authentication_failures]
        frequency: 8
        timeframe: 120s
        matched: "5760"
        same_source: true
      - id: "5720"
        level: 10
        description: "sshd: Multiple authentication failures."
        groups: [authentication_failures]
        frequency: 8
        timeframe: 360s
        matched: "5716"
        same_source: true
    """#
}
