import FoundationEssentials

/// The rules and responses the detector runs, loaded and checked together, so that the
/// daemon and `portcullis logtest` read a configuration the same way.
public struct DetectorSetup: Sendable {
    public let rules: RuleSet
    public let responses: ActiveResponseConfiguration
    /// file:line warnings from the rule files and the active-response file.
    public let warnings: [String]

    /// - wazuhRuleset: Wazuh's XML files or directories; when given, they replace the
    ///   built-in sshd rules, so that Wazuh's own files run without colliding with them.
    /// - ruleFiles: Portcullis YAML rule files, added after.
    public static func load(wazuhRuleset: [String], ruleFiles: [String], activeResponse: String?) throws(RulesError) -> DetectorSetup {
        var rules = wazuhRuleset.isEmpty ? RuleSet.builtIn() : try RuleSet.load(wazuhPaths: wazuhRuleset)
        for path in ruleFiles {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw RulesError(description: "\(path): cannot read the rules file")
            }
            rules = rules.adding(try RuleSet(yaml: String(decoding: data, as: UTF8.self), file: path))
        }
        // Building the tree finds every dangling if_sid and duplicate id now, not at the first line.
        _ = try Detector(rules: rules)
        var responses = ActiveResponseConfiguration()
        if let activeResponse {
            do { responses = try ActiveResponseConfiguration.load(path: activeResponse) } catch {
                throw RulesError(description: error.description)
            }
        }
        return DetectorSetup(rules: rules, responses: responses, warnings: rules.warnings + responses.warnings)
    }
}
