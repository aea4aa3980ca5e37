import PortcullisCore

/// A rule that fired, with what the decoder extracted from the message.
public struct Alert: Sendable, Equatable {
    public let ruleID: String
    public let level: Int
    public let description: String
    public let groups: [String]
    /// The source address as written in the message, if the decoder found one.
    public let sourceText: String?
    /// The source address, or nil when it is missing or not a valid address.
    public let source: IPAddress?
    public let user: String?
    public let line: String
    /// The decoder's fields: srcip, srcport, srcuser, dstuser, ...
    public var fields: [String: String] = [:]
    /// How many times this rule has fired, this one included (Wazuh's firedtimes).
    public var firedTimes = 1

    public init(ruleID: String, level: Int, description: String, groups: [String], sourceText: String?,
                source: IPAddress?, user: String?, line: String) {
        (self.ruleID, self.level, self.description, self.groups) = (ruleID, level, description, groups)
        (self.sourceText, self.source, self.user, self.line) = (sourceText, source, user, line)
    }
}

/// Everything the detector concluded about one message, for `portcullis logtest`.
public struct Evaluation: Sendable {
    public var message: LogMessage
    /// The top-level decoder that took the message (what `decoded_as` names), and its child.
    public var decoder: String?
    public var childDecoder: String?
    /// The fields, in the order the decoders set them.
    public var fields: [(name: String, value: String)] = []
    /// The deepest rule that matched, even when it raises no alert.
    public var rule: DetectionRule?
    public var alert: Alert?
    /// Why no alert was raised, when none was.
    public var silence: String?
    /// Frequency rules whose count this message advanced: (rule id, count in the window, needed).
    public var counts: [(rule: String, count: Int, needed: Int)] = []
}

/// Decodes messages and evaluates the rules as Wazuh's analysisd does:
///
/// - The first top-level decoder whose `program_name` and `prematch` match takes the
///   message; the first of its children whose prematch and regex match sets the fields,
///   and children after it with the same name add theirs (Wazuh's sibling decoders; such
///   a continuation is never tried on its own).
/// - Rules form a tree. A rule with `if_sid` (or `if_group`, `if_level`, or a frequency
///   rule's `if_matched_sid`) is a child of each rule it names; the rest are top-level.
///   Among siblings, level 0 rules are tried first (they silence), then higher levels, then load order.
/// - The first top-level rule that matches is followed down: the first child that matches
///   is taken, and so on; the deepest match is the result, one per message. Level 0 (or
///   `noalert`) there silences the message.
/// - A frequency rule matches when, with this message, `frequency` messages whose result
///   was its `if_matched_sid` fell within `timeframe` (from the same `srcip` with
///   `same_source_ip`); those messages are then spent. After a rule with `ignore` fires,
///   for that many seconds it reports its parent instead.
public struct Detector {
    public let rules: RuleSet
    private let tree: RuleTree
    /// When each rule was the result, with the source, for the frequency rules counting it.
    private var history: [Int: RuleHistory] = [:]
    private var firedTimes: [Int: Int] = [:]
    private var ignoredSince: [Int: Duration] = [:]

    public init(rules: RuleSet) throws(RulesError) {
        self.rules = rules
        tree = try RuleTree(rules.rules)
    }

    /// The alert `message` raises, if any. `time` is a monotonic clock reading, for the
    /// frequency windows and `ignore`.
    public mutating func process(_ message: LogMessage, at time: Duration) -> [Alert] {
        evaluate(message, at: time).alert.map { [$0] } ?? []
    }

    public mutating func evaluate(_ message: LogMessage, at time: Duration) -> Evaluation {
        var evaluation = Evaluation(message: message)
        decode(message, into: &evaluation)
        var fields: [String: String] = [:]
        for (name, value) in evaluation.fields where fields[name] == nil { fields[name] = value }

        var chain: [Int] = []
        for root in tree.roots {
            if descend(root, message: message, decoder: evaluation.decoder, fields: &fields, chain: &chain, time: time, evaluation: &evaluation, depth: 0) { break }
        }
        guard var result = chain.last else {
            evaluation.silence = evaluation.decoder == nil
                ? "no decoder took the message (program '\(TerminalText.excerpt(message.program))'), and no rule matched it"
                : "no rule matched (decoder \(evaluation.decoder ?? ""))"
            return evaluation
        }
        for (name, value) in fields where !evaluation.fields.contains(where: { $0.name == name }) { evaluation.fields.append((name, value)) }
        evaluation.rule = tree.rules[result]
        var rule = tree.rules[result]
        if rule.level == 0 || rule.noAlert {
            evaluation.silence = "rule \(rule.id) (level \(rule.level)\(rule.noAlert ? ", noalert" : "")) matched: it silences the message"
            return evaluation
        }
        if rule.ignore > 0 {
            if let since = ignoredSince[result], time - since < .seconds(rule.ignore) {
                // Wazuh reports the parent while the rule is ignored.
                guard chain.count >= 2 else {
                    evaluation.silence = "rule \(rule.id) fired less than \(rule.ignore)s ago and is ignored until then"
                    return evaluation
                }
                chain.removeLast()
                result = chain[chain.count - 1]
                rule = tree.rules[result]
                evaluation.rule = rule
                if rule.level == 0 || rule.noAlert {
                    evaluation.silence = "rule \(tree.rules[result].id) is ignored for \(rule.ignore)s after firing; its parent \(rule.id) is level 0"
                    return evaluation
                }
            } else {
                ignoredSince[result] = time
            }
        }
        let sourceText = fields["srcip"]
        if let counted = rule.ifMatchedSID.flatMap({ tree.index[$0] }), rule.frequency != nil {
            // The messages counted are spent: the next alert needs a fresh run.
            history[counted]?.spend(since: time - .seconds(rule.timeframe), source: rule.sameSourceIP ? sourceText ?? "" : nil)
        }
        history[result, default: RuleHistory()].record(time, source: sourceText, keeping: tree.longestWindow[result])
        firedTimes[result, default: 0] += 1
        var alert = Alert(
            ruleID: rule.id, level: rule.level, description: rule.description, groups: rule.groups,
            sourceText: sourceText, source: sourceText.flatMap { try? IPAddress(parsing: $0) },
            user: fields["dstuser"] ?? fields["srcuser"], line: message.line)
        alert.fields = fields
        alert.firedTimes = firedTimes[result, default: 1]
        evaluation.alert = alert
        return evaluation
    }

    /// Follows `index` down the tree; true when it matched (its deepest match is then last in `chain`).
    private mutating func descend(_ index: Int, message: LogMessage, decoder: String?, fields: inout [String: String],
                                  chain: inout [Int], time: Duration, evaluation: inout Evaluation, depth: Int) -> Bool {
        let rule = tree.rules[index]
        guard depth < RuleTree.maximumDepth, rule.disabledBecause == nil else { return false }
        var captured = fields
        guard conditionsHold(rule, message: message, decoder: decoder, fields: &captured) else { return false }
        if let frequency = rule.frequency {
            guard let counted = rule.ifMatchedSID.flatMap({ tree.index[$0] }) else { return false }
            let source = captured["srcip"]
            if rule.sameSourceIP && source == nil { return false }
            let count = history[counted]?.count(since: time - .seconds(rule.timeframe), source: rule.sameSourceIP ? source ?? "" : nil) ?? 0
            evaluation.counts.append((rule.id, count + 1, frequency))
            guard count + 1 >= frequency else { return false }
        }
        fields = captured
        chain.append(index)
        for child in tree.children[index] {
            if descend(child, message: message, decoder: decoder, fields: &fields, chain: &chain, time: time, evaluation: &evaluation, depth: depth + 1) {
                return true
            }
        }
        return true
    }

    private func conditionsHold(_ rule: DetectionRule, message: LogMessage, decoder: String?, fields: inout [String: String]) -> Bool {
        if let decodedAs = rule.decodedAs, decodedAs != decoder { return false }
        if let programs = rule.programs, !programs.contains(message.program) { return false }
        if let programName = rule.programName, message.program.isEmpty || programName.match(message.program) == nil { return false }
        if let match = rule.match, match.match(message.text) == nil { return false }
        for condition in rule.fieldConditions {
            guard condition.fields.contains(where: { name in fields[name].map { condition.pattern.match($0) != nil } ?? false }) else { return false }
        }
        if let regex = rule.regex {
            guard let found = regex.match(message.text) else { return false }
            if rule.capturesFields {
                for (name, value) in found.named {
                    let field = name == "user" ? "dstuser" : name
                    if fields[field] == nil { fields[field] = value }
                }
            }
        }
        return true
    }

    private func decode(_ message: LogMessage, into evaluation: inout Evaluation) {
        for parent in rules.decoders where parent.parent == nil {
            if let programName = parent.programName {
                guard !message.program.isEmpty, programName.match(message.program) != nil else { continue }
            }
            var parentEnd = 0
            if let prematch = parent.prematch {
                guard let found = prematch.match(message.text) else { continue }
                parentEnd = found.end
            }
            evaluation.decoder = parent.name
            if let regex = parent.regex {
                let start = parent.regexOffset == .afterPrematch ? parentEnd : 0
                if let found = regex.match(message.text, from: start) { set(found, order: parent.order, into: &evaluation) }
            }
            var taken: String?
            // Where the last regex ended, for a sibling's offset="after_regex".
            var regexEnd = parentEnd
            var seen: Set<String> = []
            for child in rules.decoders where child.parent == parent.name {
                if let taken, child.name != taken { break }
                // A child with the name of an earlier one continues it (Wazuh's sibling
                // decoders): it is tried only after that one matched.
                let continuesEarlier = !seen.insert(child.name).inserted
                if continuesEarlier && taken == nil { continue }
                var childEnd = parentEnd
                if let prematch = child.prematch {
                    guard let found = prematch.match(message.text, from: child.prematchOffset == .afterParent ? parentEnd : 0) else { continue }
                    childEnd = found.end
                }
                if let regex = child.regex {
                    let start = switch child.regexOffset {
                    case .start: 0
                    case .afterParent: parentEnd
                    case .afterPrematch: childEnd
                    case .afterRegex: regexEnd
                    }
                    guard let found = regex.match(message.text, from: start) else { continue }
                    set(found, order: child.order, into: &evaluation)
                    regexEnd = found.end
                }
                taken = child.name
                evaluation.childDecoder = evaluation.childDecoder ?? child.name
            }
            return
        }
    }

    private func set(_ found: Pattern.Match, order: [String], into evaluation: inout Evaluation) {
        for (name, value) in zip(order, found.captures) {
            guard let value, !evaluation.fields.contains(where: { $0.name == name }) else { continue }
            evaluation.fields.append((name, value))
        }
    }

    /// Forgets counts whose windows have passed, so memory stays bounded on a long-running host.
    public mutating func forgetStale(at time: Duration) {
        for (rule, window) in tree.longestWindow {
            history[rule]?.forget(before: time - window)
            if history[rule]?.isEmpty == true { history[rule] = nil }
        }
        // Results no frequency rule counts need no history at all.
        for rule in history.keys where tree.longestWindow[rule] == nil { history[rule] = nil }
    }
}

/// When a rule was a message's result, by source and in all, for the frequency rules
/// counting it. Times arrive in order, so the oldest are at the front: counting is a
/// binary search and forgetting a cut, and a long attack costs no more per line than a short one.
struct RuleHistory {
    private var all: [Duration] = []
    private var bySource: [String: [Duration]] = [:]

    var isEmpty: Bool { all.isEmpty && bySource.isEmpty }

    /// `keeping`: the longest timeframe counting this rule; older entries can never count again.
    /// nil: no frequency rule counts this one, so nothing is kept.
    mutating func record(_ time: Duration, source: String?, keeping window: Duration?) {
        guard let window else { return }
        all.append(time)
        bySource[source ?? "", default: []].append(time)
        Self.cut(&all, before: time - window)
        if var times = bySource[source ?? ""] {
            Self.cut(&times, before: time - window)
            bySource[source ?? ""] = times
        }
    }

    /// Entries after `start`; from one source, or (nil) from any.
    func count(since start: Duration, source: String?) -> Int {
        let times = source.map { bySource[$0] ?? [] } ?? all
        return times.count - Self.firstIndex(in: times, after: start)
    }

    /// Removes the entries a frequency rule just counted. A per-source rule spends that
    /// source's; a rule counting every source spends the common run. No sshd rule is counted
    /// both ways, so the two never disagree on what was spent.
    mutating func spend(since start: Duration, source: String?) {
        if let source {
            if var times = bySource[source] {
                times.removeSubrange(Self.firstIndex(in: times, after: start)...)
                bySource[source] = times.isEmpty ? nil : times
            }
        } else {
            all.removeSubrange(Self.firstIndex(in: all, after: start)...)
        }
    }

    mutating func forget(before start: Duration) {
        Self.cut(&all, before: start)
        bySource = bySource.compactMapValues { times in
            var kept = times
            Self.cut(&kept, before: start)
            return kept.isEmpty ? nil : kept
        }
    }

    /// The first index whose time is after `start` (inside a window that begins there).
    private static func firstIndex(in times: [Duration], after start: Duration) -> Int {
        var low = 0, high = times.count
        while low < high {
            let middle = (low + high) / 2
            if times[middle] > start { high = middle } else { low = middle + 1 }
        }
        return low
    }

    private static func cut(_ times: inout [Duration], before start: Duration) {
        let first = firstIndex(in: times, after: start)
        if first > 0 { times.removeFirst(first) }
    }
}

/// The rules as Wazuh arranges them: children under each parent, higher levels first.
struct RuleTree {
    /// Deeper chains than this are refused when loading, so evaluation cannot exhaust the stack.
    static let maximumDepth = 64
    var rules: [DetectionRule] = []
    var index: [String: Int] = [:]
    var children: [[Int]] = []
    var roots: [Int] = []
    /// For each rule a frequency rule counts, the longest timeframe counting it.
    var longestWindow: [Int: Duration] = [:]

    init(_ definitions: [DetectionRule]) throws(RulesError) {
        var parentsOf: [[Int]] = []
        for definition in definitions {
            if let existing = index[definition.id] {
                // overwrite="yes" (and a YAML rule with a known id) replaces the rule where it stands.
                guard definition.overwrite else {
                    throw RulesError(description: "\(definition.origin): rule \(definition.id) is already defined at \(rules[existing].origin); add overwrite=\"yes\" to replace it")
                }
                rules[existing] = definition
                continue
            }
            let position = rules.count
            var parents: [Int] = []
            if !definition.ifSID.isEmpty {
                for id in definition.ifSID {
                    guard let parent = index[id] else {
                        throw RulesError(description: "\(definition.origin): rule \(definition.id): if_sid \(id) names no rule loaded before it")
                    }
                    parents.append(parent)
                }
            } else if let matched = definition.ifMatchedSID {
                guard let parent = index[matched] else {
                    throw RulesError(description: "\(definition.origin): rule \(definition.id): if_matched_sid \(matched) names no rule loaded before it")
                }
                parents.append(parent)
            } else if let group = definition.ifGroup {
                parents = rules.indices.filter { rules[$0].groups.contains(group) }
                guard !parents.isEmpty else {
                    throw RulesError(description: "\(definition.origin): rule \(definition.id): if_group \(group) names no group of a rule loaded before it")
                }
            } else if let minimum = definition.ifLevel {
                parents = rules.indices.filter { rules[$0].level >= minimum }
                guard !parents.isEmpty else {
                    throw RulesError(description: "\(definition.origin): rule \(definition.id): if_level \(minimum): no rule loaded before it has that level")
                }
            }
            let depthOfParents = parents.map { Self.depth(of: $0, parentsOf: parentsOf) }.max().map { $0 + 1 } ?? 0
            guard depthOfParents < Self.maximumDepth else {
                throw RulesError(description: "\(definition.origin): rule \(definition.id) is nested more than \(Self.maximumDepth) rules deep")
            }
            rules.append(definition)
            children.append([])
            parentsOf.append(parents)
            index[definition.id] = position
            if parents.isEmpty && definition.programs != nil {
                // A YAML rule without a parent: tried before the tree, in load order, or the
                // tree's level 0 root (5700, every sshd message) would always silence it first.
                let after = roots.lastIndex { rules[$0].programs != nil }.map { $0 + 1 } ?? 0
                roots.insert(position, at: after)
            } else if parents.isEmpty {
                Self.insert(position, into: &roots, rules: rules)
            } else {
                for parent in parents { Self.insert(position, into: &children[parent], rules: rules) }
            }
        }
        for rule in rules where rule.frequency != nil {
            guard let counted = rule.ifMatchedSID.flatMap({ index[$0] }) else { continue }
            longestWindow[counted] = max(longestWindow[counted] ?? .zero, .seconds(rule.timeframe))
        }
    }

    private static func depth(of rule: Int, parentsOf: [[Int]]) -> Int {
        var depth = 0
        var level = [rule]
        while !level.isEmpty, depth <= maximumDepth {
            level = Array(Set(level.flatMap { parentsOf[$0] }))
            if !level.isEmpty { depth += 1 }
        }
        return depth
    }

    /// Before the first sibling that sorts after it, as Wazuh inserts children: level 0 rules
    /// first (a rule that silences a line must win over one that alerts on it), then higher
    /// levels first; equal ones in load order.
    private static func insert(_ rule: Int, into list: inout [Int], rules: [DetectionRule]) {
        func priority(_ index: Int) -> Int { rules[index].level == 0 ? Int.max : rules[index].level }
        let position = list.firstIndex { priority($0) < priority(rule) } ?? list.count
        list.insert(rule, at: position)
    }
}
