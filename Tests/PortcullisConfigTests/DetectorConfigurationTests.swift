import PortcullisConfig
import Testing

struct DetectorConfigurationTests {
    @Test func wazuhRulesetListsFilesAndDirectories() throws {
        let configuration = try DaemonConfiguration.parse("""
            detector:
              wazuh_ruleset:
                - /var/ossec/ruleset/decoders/0310-ssh_decoders.xml
                - /var/ossec/ruleset/rules
              sources:
                - file: /var/log/auth.log
            """, file: "portcullis.yaml")
        #expect(configuration.detector?.wazuhRuleset == ["/var/ossec/ruleset/decoders/0310-ssh_decoders.xml", "/var/ossec/ruleset/rules"])
        #expect(configuration.detector?.rules == [])
    }

    @Test(arguments: [
        ("wazuh_ruleset: relative/rules.xml", "portcullis.yaml:2"),
        ("wazuh_ruleset: []", "expected a list of Wazuh rule and decoder files"),
        ("wazuh_rulesets: [/x]", "unknown key (known: active_response, sources, rules, wazuh_ruleset, commands_dir)"),
    ])
    func badValuesAreRefusedWithTheLine(entry: String, fragment: String) {
        do {
            _ = try DaemonConfiguration.parse("detector:\n  \(entry)\n  sources: [{file: /var/log/auth.log}]\n", file: "portcullis.yaml")
            Issue.record("accepted \(entry)")
        } catch {
            #expect(error.description.contains(fragment), "\(error)")
        }
    }
}
