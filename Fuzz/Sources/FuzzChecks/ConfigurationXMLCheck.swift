import FoundationEssentials
import PortcullisCore
import PortcullisDetector

/// The ossec.conf-style XML reader, through both of its public readers: the active-response
/// file (`<command>`, `<active-response>`, `<global><white_list>`) and a Wazuh rule or
/// decoder file, which also compiles the patterns.
public enum ConfigurationXMLCheck {
    public static let target = "xml"

    public static func check(_ input: [UInt8]) throws(InvariantViolation) {
        // Every line an error or a warning names is a line of the file.
        let lines = 1...(1 + input.count { $0 == UInt8(ascii: "\n") })
        var configuration: ActiveResponseConfiguration?
        do {
            configuration = try ActiveResponseConfiguration.parse(Data(input), file: "fuzz.conf")
        } catch {
            try invariant(error.file == "fuzz.conf", "an error names \(error.file)")
            if let line = error.line { try invariant(lines.contains(line), "an error names line \(line) of \(lines.upperBound): \(error)") }
        }
        if let configuration { try checkConfiguration(configuration, lines: lines) }
        let rules: RuleSet
        do {
            rules = try RuleSet(wazuhXML: input, file: "fuzz.xml")
        } catch {
            try invariant(line(in: error.description, of: "fuzz.xml").map(lines.contains) == true, "an error names no line of the file: \(error)")
            return
        }
        try checkRules(rules, lines: lines)
    }

    /// N in "FILE:N: ...".
    static func line(in text: String, of file: String) -> Int? {
        guard text.hasPrefix(file + ":") else { return nil }
        return Int(text.dropFirst(file.count + 1).prefix { $0 != ":" })
    }

    static func checkConfiguration(_ configuration: ActiveResponseConfiguration, lines: ClosedRange<Int>) throws(InvariantViolation) {
        for warning in configuration.warnings {
            try invariant(line(in: warning, of: "fuzz.conf").map(lines.contains) == true, "a warning names no line of the file: \(warning)")
        }
        for (name, command) in configuration.commands {
            try invariant(name == command.name && !name.isEmpty && !name.hasPrefix("!"), "a command named '\(name)' is kept as \(command)")
            try invariant(!command.executable.isEmpty && !command.executable.contains("../"), "command \(name) runs '\(command.executable)'")
        }
        for response in configuration.responses {
            try invariant(configuration.commands[response.command] != nil, "a response runs the undefined command '\(response.command)'")
            try invariant(response.location == "local", "a response at '\(response.location)'")
            try invariant(!response.rulesIDs.isEmpty || !response.rulesGroups.isEmpty || response.level != nil, "a response for every alert: \(response)")
            try invariant(response.level.map { (0...16).contains($0) } ?? true, "a response at level \(response.level ?? -1)")
            try invariant(response.timeout.map { $0 > 0 && Int64($0) <= DurationText.maximumSeconds } ?? true, "a timeout of \(response.timeout ?? -1) s")
            try invariant(response.repeatedOffenders.allSatisfy { $0 > 0 && Int64($0) * 60 <= DurationText.maximumSeconds },
                          "repeated offenders \(response.repeatedOffenders)")
            try invariant(response.ipv6PrefixLength.map { (16...128).contains($0) } ?? true, "an IPv6 prefix of \(response.ipv6PrefixLength ?? -1)")
        }
        for target in configuration.whiteList {
            try invariant((try? BlockTarget.parse(target.description)) == ParsedTarget(target: target, notes: []),
                          "the white-listed \(target) does not read back from its own text")
        }
    }

    static func checkRules(_ rules: RuleSet, lines: ClosedRange<Int>) throws(InvariantViolation) {
        for warning in rules.warnings {
            try invariant(line(in: warning, of: "fuzz.xml").map(lines.contains) == true, "a warning names no line of the file: \(warning)")
        }
        for rule in rules.rules {
            try invariant(!rule.id.isEmpty && rule.id.allSatisfy(\.isNumber), "a rule with the id '\(rule.id)'")
            try invariant((0...16).contains(rule.level), "rule \(rule.id) at level \(rule.level)")
            try invariant(rule.frequency.map { (2...9999).contains($0) } ?? true, "rule \(rule.id) with a frequency of \(rule.frequency ?? -1)")
            try invariant(rule.ifMatchedSID == nil || rule.frequency != nil, "rule \(rule.id) has <if_matched_sid> and no frequency")
            try invariant(line(in: rule.origin, of: "fuzz.xml").map(lines.contains) == true, "rule \(rule.id) comes from \(rule.origin)")
        }
        for decoder in rules.decoders {
            try invariant(!decoder.name.isEmpty, "a decoder without a name")
            try invariant(decoder.parent != nil || decoder.programName != nil || decoder.prematch != nil, "decoder \(decoder.name) selects nothing")
            try invariant(line(in: decoder.origin, of: "fuzz.xml").map(lines.contains) == true, "decoder \(decoder.name) comes from \(decoder.origin)")
        }
    }
}
