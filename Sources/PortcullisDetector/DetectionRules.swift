import FoundationEssentials
import Glibc
import PortcullisCore
import Yams

/// A decoder in Wazuh's format: a parent picks the lines (`program_name`, `prematch`), its
/// children extract fields (`regex` with `order`). (`@unchecked Sendable` for its
/// patterns; see ``Pattern``.)
public struct DecoderDefinition: @unchecked Sendable {
    public enum Offset: String, Sendable { case start, afterParent = "after_parent", afterPrematch = "after_prematch", afterRegex = "after_regex" }
    public var name: String
    public var parent: String?
    public var programName: Pattern?
    public var prematch: Pattern?
    public var prematchOffset: Offset = .start
    public var regex: Pattern?
    public var regexOffset: Offset = .start
    /// The fields the regex's groups fill, in order; `user` is Wazuh's old name for `dstuser`.
    public var order: [String] = []
    public var origin: String
}

/// A rule in Wazuh's model. Portcullis's built-in rules, a YAML rule file and Wazuh's own
/// XML files all become these, and ``Detector`` evaluates them as Wazuh's analysisd does.
/// (`@unchecked Sendable` for its patterns; see ``Pattern``.)
public struct DetectionRule: @unchecked Sendable {
    public var id: String
    public var level: Int
    public var description: String
    public var groups: [String]
    public var noAlert = false
    public var decodedAs: String?
    /// `<program_name>` (an OS_Match on the pre-decoded program).
    public var programName: Pattern?
    /// A YAML rule's `programs:`: the program must be one of these, exactly.
    public var programs: [String]?
    public var match: Pattern?
    public var regex: Pattern?
    /// A YAML rule's named groups (`srcip`, `user`, `srcport`) set the fields a decoder left unset.
    public var capturesFields = false
    public var ifSID: [String] = []
    public var ifGroup: String?
    public var ifLevel: Int?
    public var ifMatchedSID: String?
    public var frequency: Int?
    /// Seconds; Wazuh's default when a frequency rule gives none.
    public var timeframe = 360
    /// Seconds after firing during which this rule reports its parent instead.
    public var ignore = 0
    public var sameSourceIP = false
    /// `overwrite="yes"`: replaces the earlier rule with this id where it stands in the tree.
    public var overwrite = false
    /// `<user>`, `<field name>`, ...: one of the named fields must be set and match.
    public var fieldConditions: [(fields: [String], pattern: Pattern)] = []
    /// file:line, for messages.
    public var origin: String
    /// Why this rule never matches: it has a condition Portcullis does not evaluate, and
    /// matching without it could block addresses Wazuh would not.
    public var disabledBecause: String?

    public init(id: String, level: Int, description: String, groups: [String], origin: String) {
        (self.id, self.level, self.description, self.groups, self.origin) = (id, level, description, groups, origin)
    }
}

public struct RulesError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(description: String) { self.description = description }
}

/// Decoders and rules in load order, with the warnings loading them raised.
public struct RuleSet: Sendable {
    public var decoders: [DecoderDefinition]
    public var rules: [DetectionRule]
    /// file:line: what was not understood and is therefore not applied.
    public var warnings: [String]

    init(decoders: [DecoderDefinition], rules: [DetectionRule], warnings: [String] = []) {
        (self.decoders, self.rules, self.warnings) = (decoders, rules, warnings)
    }

    /// Portcullis's own sshd decoder and rules: Wazuh's ids, levels and descriptions.
    public static func builtIn() -> RuleSet {
        // The built-in text is tested; a failure here is a bug in the shipped rules, not user input.
        (try? RuleSet(wazuhXML: Array(BuiltInRules.sshd.utf8), file: "built-in sshd rules")) ?? RuleSet(decoders: [], rules: [])
    }

    /// This set with `other`'s decoders and rules after it. A YAML rule with the id of an
    /// earlier rule replaces it (as `overwrite="yes"` does in Wazuh's files).
    public func adding(_ other: RuleSet) -> RuleSet {
        RuleSet(decoders: decoders + other.decoders, rules: rules + other.rules, warnings: warnings + other.warnings)
    }

    /// Wazuh's XML files, or directories of them (their `*.xml`, in name order, as Wazuh
    /// loads its ruleset), each holding `<decoder>`s or `<group>`s of `<rule>`s.
    public static func load(wazuhPaths paths: [String]) throws(RulesError) -> RuleSet {
        var set = RuleSet(decoders: [], rules: [])
        for path in paths {
            var status = stat()
            guard stat(path, &status) == 0 else {
                throw RulesError(description: "\(path): no such file or directory")
            }
            var files = [path]
            if (status.st_mode & S_IFMT) == S_IFDIR {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
                files = names.filter { $0.hasSuffix(".xml") }.sorted().map { "\(path)/\($0)" }
                if files.isEmpty { set.warnings.append("\(path): no .xml files in this directory") }
            }
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { throw RulesError(description: "\(file): cannot read the file") }
                set = set.adding(try RuleSet(wazuhXML: [UInt8](data), file: file))
            }
        }
        return set
    }

    /// One file in Wazuh's format. What Portcullis does not evaluate is a warning with the
    /// line, never silently dropped.
    public init(wazuhXML bytes: [UInt8], file: String) throws(RulesError) {
        let root: Element
        do { root = try ConfigurationXML.parse(bytes) } catch {
            throw RulesError(description: "\(file):\(error.line): not well-formed XML: \(error.message)")
        }
        var reader = WazuhXMLReader(file: file)
        for element in root.children { try reader.topLevel(element, groups: []) }
        self.init(decoders: reader.decoders, rules: reader.rules, warnings: reader.warnings)
    }

    /// Rules in Portcullis's YAML format: `programs:` (default for every rule) and `rules:`.
    /// A rule without a parent applies to every message of its programs; `match:` patterns
    /// are pcre2-style, and their named groups `srcip`, `user` and `srcport` set the fields.
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
            where !["id", "level", "description", "groups", "programs", "parent", "match", "frequency", "timeframe", "matched", "same_source", "ignore"].contains(key) {
                throw fail(node, "unknown key \(key) in a rule")
            }
            guard let id = rule["id"]?.string, !id.isEmpty else { throw fail(node, "a rule needs an id") }
            guard let level = rule["level"]?.int, (0...16).contains(level) else { throw fail(node, "rule \(id): level must be 0 to 16") }
            let sources = try (rule["match"]?.sequence ?? []).map { item throws(RulesError) -> String in
                guard let text = item.string else { throw fail(item, "rule \(id): a match must be a string") }
                do { _ = try Regex(text) } catch { throw fail(item, "rule \(id): invalid regular expression: \(error)") }
                return text
            }
            var definition = DetectionRule(
                id: id, level: level, description: rule["description"]?.string ?? "rule \(id)",
                groups: (rule["groups"]?.sequence ?? []).compactMap(\.string), origin: "\(file):\(node.mark?.line ?? 0)")
            definition.overwrite = true
            if !sources.isEmpty {
                // Several patterns are alternatives: one expression, each in its own group.
                let joined = sources.map { "(?:\($0))" }.joined(separator: "|")
                do { definition.regex = .pcre2(try Regex(joined), source: joined) } catch { throw fail(node, "rule \(id): the patterns cannot be combined: \(error)") }
                definition.capturesFields = true
            }
            if let parent = rule["parent"]?.string { definition.ifSID = [parent] } else {
                definition.programs = (rule["programs"]?.sequence?.compactMap(\.string)) ?? programs
            }
            if let count = rule["frequency"]?.int {
                guard let matched = rule["matched"]?.string else { throw fail(node, "rule \(id): frequency needs `matched:`") }
                guard let timeText = rule["timeframe"]?.string, let timeframe = try? DurationText.parse(timeText) else {
                    throw fail(node, "rule \(id): frequency needs a `timeframe:` such as 120s")
                }
                guard count > 1 else { throw fail(node, "rule \(id): frequency must be at least 2") }
                definition.frequency = count
                definition.timeframe = Int(timeframe.components.seconds)
                definition.ifMatchedSID = matched
                definition.programs = nil
                definition.sameSourceIP = rule["same_source"]?.bool ?? false
                if let ignore = rule["ignore"]?.string {
                    guard let duration = try? DurationText.parse(ignore) else { throw fail(node, "rule \(id): `ignore:` must be a duration such as 60s") }
                    definition.ignore = Int(duration.components.seconds)
                }
            }
            guard sources.isEmpty != (definition.frequency == nil) else {
                throw fail(node, "rule \(id): give either `match:` patterns or a `frequency:`")
            }
            rules.append(definition)
        }
        self.init(decoders: [], rules: rules)
    }
}

/// Reads `<decoder>`, `<group>`, `<rule>` and `<var>` elements of Wazuh's files.
struct WazuhXMLReader {
    let file: String
    var decoders: [DecoderDefinition] = []
    var rules: [DetectionRule] = []
    var warnings: [String] = []
    /// `<var name="X">` definitions, substituted for `$X` in later text.
    var variables: [String: String] = [:]
    /// What substituting variables may add to a file, in all: far more than real rule files add.
    /// A variable may name earlier ones, so without a bound a few lines of them, each twice the
    /// one before, expand past any memory.
    static let maximumExpansion = 256 << 10
    var expansionLeft = maximumExpansion

    init(file: String) { self.file = file }

    func fail(_ element: Element, _ message: String) -> RulesError {
        RulesError(description: "\(file):\(element.line): <\(element.name)>: \(message)")
    }

    mutating func warn(_ element: Element, _ message: String) {
        warnings.append("\(file):\(element.line): \(message)")
    }

    mutating func text(_ element: Element) throws(RulesError) -> String { try substitute(element.text, in: element) }

    mutating func substitute(_ text: String, in element: Element) throws(RulesError) -> String {
        var value = text
        guard value.contains("$") else { return value }
        // Longest names first, so $BAD_WORDS_2 is not read as $BAD_WORDS followed by _2.
        for (name, replacement) in variables.sorted(by: { $0.key.count > $1.key.count }) {
            // Counted before replacing: one replacement of a long value can be the whole excess.
            let growth = value.ranges(of: "$" + name).count * (replacement.utf8.count - name.utf8.count - 1)
            guard growth <= expansionLeft else {
                throw fail(element, "its variables would expand the file by more than \(Self.maximumExpansion >> 10) KiB")
            }
            expansionLeft -= max(growth, 0)
            value = value.replacing("$" + name, with: replacement)
        }
        return value
    }

    mutating func topLevel(_ element: Element, groups: [String]) throws(RulesError) {
        switch element.name {
        case "group":
            let names = (element.attribute("name") ?? "").split(separator: ",").map(\.trimmedSpace).filter { !$0.isEmpty }
            for child in element.children { try topLevel(child, groups: groups + names) }
        case "rule": try rule(element, groups: groups)
        case "decoder": try decoder(element)
        case "var":
            guard let name = element.attribute("name"), !name.isEmpty else { throw fail(element, "a <var> needs a name attribute") }
            variables[name] = try text(element)
        default: warn(element, "<\(element.name)> is not supported here and is ignored")
        }
    }

    /// A pattern's text: spaces at either end are part of it (Wazuh's `<prematch>^Failed \S+ </prematch>`
    /// ends in one that the next regex relies on); only line breaks and tabs around it are layout.
    mutating func patternText(_ element: Element) throws(RulesError) -> String {
        var value = Substring(element.characters)
        while let first = value.first, first == "\n" || first == "\r" || first == "\t" { value = value.dropFirst() }
        while let last = value.last, last == "\n" || last == "\r" || last == "\t" { value = value.dropLast() }
        return try substitute(String(value), in: element)
    }

    mutating func pattern(_ element: Element, defaultType: String) throws(RulesError) -> Pattern {
        let text = try patternText(element)
        do { return try Pattern.compile(text, type: element.attribute("type"), defaultType: defaultType) } catch {
            throw fail(element, error.description)
        }
    }

    mutating func decoder(_ element: Element) throws(RulesError) {
        guard let name = element.attribute("name"), !name.isEmpty else { throw fail(element, "a decoder needs a name attribute") }
        var decoder = DecoderDefinition(name: name, origin: "\(file):\(element.line)")
        for attribute in element.attributes where attribute.name != "name" {
            warn(element, "decoder \(name): the attribute \(attribute.name) is not supported and is ignored")
        }
        for child in element.children {
            switch child.name {
            case "parent": decoder.parent = try text(child)
            case "program_name": decoder.programName = try pattern(child, defaultType: "osmatch")
            case "prematch":
                decoder.prematch = try pattern(child, defaultType: "osregex")
                decoder.prematchOffset = try offset(child, allowed: [.afterParent])
            case "regex":
                decoder.regex = try pattern(child, defaultType: "osregex")
                decoder.regexOffset = try offset(child, allowed: [.afterParent, .afterPrematch, .afterRegex])
            case "order":
                decoder.order = try text(child).split(separator: ",").map(\.trimmedSpace).filter { !$0.isEmpty }
                    .map { $0 == "user" ? "dstuser" : $0 }
            case "type", "fts", "ftscomment", "accumulate", "use_own_name", "plugin_decoder", "json_null_field", "json_array_structure", "var":
                warn(child, "decoder \(name): <\(child.name)> is not supported and is ignored")
            default: warn(child, "decoder \(name): unknown element <\(child.name)> is ignored")
            }
        }
        if decoder.parent == nil && decoder.programName == nil && decoder.prematch == nil {
            throw fail(element, "decoder \(name) needs a <parent>, <program_name> or <prematch>")
        }
        decoders.append(decoder)
    }

    func offset(_ element: Element, allowed: [DecoderDefinition.Offset]) throws(RulesError) -> DecoderDefinition.Offset {
        guard let value = element.attribute("offset") else { return .start }
        guard let offset = DecoderDefinition.Offset(rawValue: value), allowed.contains(offset) else {
            throw fail(element, "offset '\(TerminalText.excerpt(value))' is not one of \(allowed.map(\.rawValue).joined(separator: ", "))")
        }
        return offset
    }

    mutating func rule(_ element: Element, groups: [String]) throws(RulesError) {
        guard let id = element.attribute("id"), !id.isEmpty, id.allSatisfy(\.isNumber) else { throw fail(element, "a rule needs a numeric id attribute") }
        guard let levelText = element.attribute("level"), let level = Int(levelText), (0...16).contains(level) else {
            throw fail(element, "rule \(id): level must be 0 to 16")
        }
        var rule = DetectionRule(id: id, level: level, description: "", groups: groups, origin: "\(file):\(element.line)")
        func seconds(_ name: String) throws(RulesError) -> Int? {
            guard let value = element.attribute(name) else { return nil }
            guard let number = Int(value), number >= 0, number <= 86_400 * 366 else { throw fail(element, "rule \(id): \(name) '\(TerminalText.excerpt(value))' is not a number of seconds") }
            return number
        }
        for attribute in element.attributes {
            switch attribute.name {
            case "id", "level": break
            case "frequency":
                guard let count = Int(attribute.value), (2...9999).contains(count) else { throw fail(element, "rule \(id): frequency must be 2 to 9999") }
                rule.frequency = count
            case "timeframe": rule.timeframe = try seconds("timeframe") ?? 360
            case "ignore": rule.ignore = try seconds("ignore") ?? 0
            case "noalert": rule.noAlert = attribute.value == "1" || attribute.value == "yes"
            case "overwrite": rule.overwrite = attribute.value == "yes"
            default: warn(element, "rule \(id): the attribute \(attribute.name) is not supported and is ignored")
            }
        }
        var matches: [String] = []
        var regexes: [String] = []
        var matchType: String?, regexType: String?
        var descriptions: [String] = []
        for child in element.children {
            if let negate = child.attribute("negate"), negate != "no" {
                // Wazuh's own ruleset uses negate; refusing the file would refuse the whole ruleset.
                warn(child, "rule \(id): negate on <\(child.name)> is not supported; rule \(id) is disabled")
                rule.disabledBecause = "negate at \(file):\(child.line) is not supported"
                continue
            }
            switch child.name {
            // Wazuh joins several <description> lines as written, spaces at the ends included.
            case "description": descriptions.append(try patternText(child))
            case "group": rule.groups += try text(child).split(separator: ",").map(\.trimmedSpace).filter { !$0.isEmpty }
            case "decoded_as": rule.decodedAs = try text(child)
            case "program_name": rule.programName = try pattern(child, defaultType: "osmatch")
            // Several <match> (or <regex>) elements are one pattern, concatenated, as in Wazuh.
            case "match":
                matches.append(try patternText(child))
                matchType = child.attribute("type") ?? matchType
            case "regex":
                regexes.append(try patternText(child))
                regexType = child.attribute("type") ?? regexType
            case "if_sid":
                rule.ifSID = try text(child).split(whereSeparator: { $0 == "," || $0 == " " }).map(String.init)
                guard !rule.ifSID.isEmpty, rule.ifSID.allSatisfy({ $0.allSatisfy(\.isNumber) }) else { throw fail(child, "rule \(id): if_sid must be rule ids") }
            case "if_group": rule.ifGroup = try text(child)
            case "if_level":
                guard let minimum = Int(try text(child)), (1...16).contains(minimum) else { throw fail(child, "rule \(id): if_level must be 1 to 16") }
                rule.ifLevel = minimum
            case "if_matched_sid":
                let matched = try text(child)
                guard !matched.isEmpty, matched.allSatisfy(\.isNumber) else { throw fail(child, "rule \(id): if_matched_sid must be one rule id") }
                rule.ifMatchedSID = matched
            case "same_source_ip", "same_srcip": rule.sameSourceIP = true
            // Conditions on decoded fields: OS_Match by default, as in Wazuh; `<user>` is either user.
            case "user", "id", "status", "action", "url", "extra_data", "system_name", "protocol", "srcport", "dstport":
                let names = child.name == "user" ? ["srcuser", "dstuser"] : [child.name]
                rule.fieldConditions.append((names, try pattern(child, defaultType: "osmatch")))
            case "field":
                guard let name = child.attribute("name"), !name.isEmpty else { throw fail(child, "rule \(id): <field> needs a name attribute") }
                rule.fieldConditions.append(([name == "user" ? "dstuser" : name], try pattern(child, defaultType: "osregex")))
            case "info", "mitre", "options", "compliance":
                // Reporting only: nothing to evaluate.
                break
            default:
                // A condition Portcullis does not evaluate would make the rule match more than Wazuh's,
                // and a block is not undone by an apology: the rule is kept but never matches.
                warn(child, "rule \(id): <\(child.name)> is not supported; rule \(id) is disabled")
                rule.disabledBecause = "<\(child.name)> at \(file):\(child.line) is not supported"
            }
        }
        rule.description = descriptions.joined().trimmedSpace
        if !matches.isEmpty { rule.match = try pattern(element, joined: matches.joined(), type: matchType, defaultType: "osmatch", id: id) }
        if !regexes.isEmpty { rule.regex = try pattern(element, joined: regexes.joined(), type: regexType, defaultType: "osregex", id: id) }
        if rule.frequency != nil && rule.ifMatchedSID == nil {
            warn(element, "rule \(id): a frequency without <if_matched_sid> is not supported; rule \(id) is disabled")
            rule.disabledBecause = "a frequency without <if_matched_sid> is not supported"
        }
        if rule.ifMatchedSID != nil && rule.frequency == nil {
            throw fail(element, "rule \(id): <if_matched_sid> needs a frequency attribute")
        }
        rules.append(rule)
    }

    func pattern(_ element: Element, joined: String, type: String?, defaultType: String, id: String) throws(RulesError) -> Pattern {
        do { return try Pattern.compile(joined, type: type, defaultType: defaultType) } catch {
            throw fail(element, "rule \(id): \(error.description)")
        }
    }
}
