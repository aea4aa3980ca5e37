import Foundation
import PortcullisCore
import PortcullisDetector
import Testing

struct LogMessageTests {
    @Test func classicSyslogLines() throws {
        let message = try #require(LogMessage.syslog("Nov 28 07:00:00 bastion sshd[1234]: Invalid user admin from 203.0.113.9 port 30855"))
        #expect(message.program == "sshd")
        #expect(message.text == "Invalid user admin from 203.0.113.9 port 30855")
        let padded = try #require(LogMessage.syslog("Nov  8 07:00:00 bastion sshd-session[99]: Connection closed by invalid user x 203.0.113.9 port 1 [preauth]"))
        #expect(padded.program == "sshd-session")
    }

    @Test func iso8601SyslogLines() throws {
        let message = try #require(LogMessage.syslog("2026-11-28T07:00:00.123456+00:00 bastion sshd[1234]: Failed password for root from 2001:db8::9 port 22 ssh2"))
        #expect(message.program == "sshd")
        #expect(message.text.hasPrefix("Failed password for root"))
    }

    @Test func journalEntries() throws {
        let line = #"{"__REALTIME_TIMESTAMP":"1795849766000000","_COMM":"sshd-session","SYSLOG_IDENTIFIER":"sshd-session","MESSAGE":"Invalid user bob from 203.0.113.4 port 4242","_SYSTEMD_UNIT":"ssh.service"}"#
        let message = try #require(LogMessage.journal(Substring(line)))
        #expect(message.program == "sshd-session")
        #expect(message.text == "Invalid user bob from 203.0.113.4 port 4242")
        let bytes = #"{"SYSLOG_IDENTIFIER":"sshd","MESSAGE":[73,110,118,97,108,105,100]}"#
        #expect(LogMessage.journal(Substring(bytes))?.text == "Invalid")
        #expect(LogMessage.journal("not json") == nil)
    }

    @Test func linesThatAreNotSyslogAreRefused() {
        #expect(LogMessage.syslog("") == nil)
        #expect(LogMessage.syslog("no colon here at all") == nil)
    }
}

struct RuleTests {
    func alerts(_ lines: [String], program: String = "sshd", spacing: Duration = .seconds(1)) throws -> [Alert] {
        var detector = try Detector(rules: .builtIn())
        var time = Duration.zero
        var alerts: [Alert] = []
        for line in lines {
            alerts += detector.process(LogMessage(program: program, text: line, line: line), at: time)
            time += spacing
        }
        return alerts
    }

    static let invalidUserForms: [(String, String, String?)] = [
        ("Invalid user admin from 203.0.113.9 port 30855", "203.0.113.9", "admin"),
        ("Invalid user admin from 203.0.113.9", "203.0.113.9", "admin"),
        ("Invalid user  from 203.0.113.9 port 30855", "203.0.113.9", ""),
        ("Invalid user oracle from 2001:db8::bad port 22", "2001:db8::bad", "oracle"),
        ("Failed none for invalid user admin from 203.0.113.9 port 30855 ssh2", "203.0.113.9", "admin"),
        ("Disconnected from invalid user admin 203.0.113.9 port 30855 [preauth]", "203.0.113.9", "admin"),
        ("Connection reset by invalid user admin 203.0.113.9 port 30855 [preauth]", "203.0.113.9", "admin"),
    ]

    @Test(arguments: invalidUserForms)
    func rule5710(line: String, source: String, user: String?) throws {
        for program in ["sshd", "sshd-session"] {
            let fired = try alerts([line], program: program)
            #expect(fired.map(\.ruleID) == ["5710"], "\(program): \(line)")
            #expect(fired.first?.source?.description == source)
            #expect(fired.first?.user == user)
            #expect(fired.first?.level == 5)
        }
    }

    @Test func rule5718DeniedUser() throws {
        let fired = try alerts(["User root from 203.0.113.9 not allowed because not listed in AllowUsers"])
        #expect(fired.map(\.ruleID) == ["5718"])
        #expect(fired.first?.source?.description == "203.0.113.9")
    }

    @Test func authenticationFailures5716And5760() throws {
        #expect(try alerts(["Failed password for root from 203.0.113.9 port 22 ssh2"]).map(\.ruleID) == ["5760"])
        #expect(try alerts(["Failed keyboard-interactive/pam for alice from 2001:db8::7 port 22 ssh2"]).map(\.ruleID) == ["5760"])
        #expect(try alerts(["Failed publickey for alice from 203.0.113.9 port 22 ssh2"]).map(\.ruleID) == ["5716"])
        #expect(try alerts(["error: PAM: Authentication failure for alice from 203.0.113.9"]).map(\.ruleID) == ["5716"])
    }

    @Test func otherProgramsAndHarmlessLinesFireNothing() throws {
        #expect(try alerts(["Invalid user admin from 203.0.113.9 port 1"], program: "cron").isEmpty)
        #expect(try alerts(["Accepted publickey for alice from 203.0.113.9 port 22 ssh2"]).isEmpty)
        #expect(try alerts(["Connection closed by authenticating user root 198.51.100.3 port 33935 [preauth]"]).isEmpty)
    }

    @Test func anUnparseableAddressStillRaisesTheAlertWithoutASource() throws {
        let fired = try alerts(["Invalid user admin from 999.1.1.1 port 22"])
        let alert = try #require(fired.first)
        #expect(alert.ruleID == "5710")
        #expect(alert.source == nil)
        #expect(alert.sourceText == "999.1.1.1")
    }

    @Test func bruteForce5712CountsEightFromOneSourceWithin120Seconds() throws {
        let attempts = (1...8).map { "Invalid user u\($0) from 203.0.113.9 port \($0)" }
        let fired = try alerts(attempts)
        #expect(fired.filter { $0.ruleID == "5712" }.count == 1)
        #expect(fired.last?.ruleID == "5712")
        #expect(fired.last?.source?.description == "203.0.113.9")
        #expect(fired.last?.level == 10)
    }

    @Test func bruteForceNeedsTheSameSource() throws {
        let mixed = (1...7).map { "Invalid user u from 203.0.113.9 port \($0)" } + ["Invalid user u from 203.0.113.10 port 8"]
        #expect(try !alerts(mixed).contains { $0.ruleID == "5712" })
    }

    @Test func bruteForceNeedsTheTimeframe() throws {
        let attempts = (1...8).map { "Invalid user u from 203.0.113.9 port \($0)" }
        // 20 s apart: the first has left the 120 s window when the eighth comes.
        #expect(try !alerts(attempts, spacing: .seconds(20)).contains { $0.ruleID == "5712" })
        #expect(try alerts(attempts, spacing: .seconds(16)).contains { $0.ruleID == "5712" })
    }

    @Test func bruteForce5763And5720() throws {
        let failed = (1...8).map { "Failed password for root from 203.0.113.9 port \($0) ssh2" }
        let ids = try alerts(failed).map(\.ruleID)
        // One result a line, as in Wazuh: seven 5760, then 5763 in its place.
        #expect(ids == Array(repeating: "5760", count: 7) + ["5763"])
        // 5720 counts the lines whose result was 5716 itself (Failed publickey, Failed none), over 360 s.
        let slow = (1...8).map { "Failed publickey for root from 203.0.113.9 port \($0) ssh2" }
        let slowIDs = try alerts(slow, spacing: .seconds(40)).map(\.ruleID)
        #expect(slowIDs == Array(repeating: "5716", count: 7) + ["5720"], "5720 allows 360 s")
        #expect(try !alerts(slow, spacing: .seconds(52)).contains { $0.ruleID == "5720" }, "7 × 52 s is past 360 s")
    }

    @Test func rulesAreDataAUserCanExtend() throws {
        let extra = try RuleSet(yaml: #"""
            rules:
              - id: "100100"
                level: 7
                description: "sshd: banner exchange from a scanner"
                groups: [recon]
                match: ['^banner exchange: Connection from (?<srcip>\S+) port \d+: invalid format']
            """#, file: "local.yaml")
        var detector = try Detector(rules: RuleSet.builtIn().adding(extra))
        let line = "banner exchange: Connection from 203.0.113.50 port 4444: invalid format"
        let fired = detector.process(LogMessage(program: "sshd", text: line, line: line), at: .zero)
        #expect(fired.map(\.ruleID) == ["100100"])
        #expect(fired.first?.groups == ["recon"])
    }

    static let badRules: [(String, String)] = [
        ("rules: [{id: '1', level: 3}]", "either `match:`"),
        ("rules: [{id: '1', level: 99, match: ['x']}]", "level"),
        ("rules: [{id: '1', level: 3, match: ['(unclosed']}]", "regular expression"),
        ("rules: [{id: '1', level: 3, frequency: 8, timeframe: 2m, matched: '42'}]", "if_matched_sid 42 names no rule"),
        ("rules: [{id: '1', level: 3, parent: '99999', match: ['x']}]", "if_sid 99999 names no rule"),
        ("rules: [{id: '1', level: 3, match: ['x'], colour: red}]", "unknown key colour"),
        ("nothing: here", "no `rules:`"),
    ]

    @Test(arguments: badRules)
    func badRuleFilesAreRefusedWithTheFile(text: String, fragment: String) {
        do {
            _ = try Detector(rules: RuleSet.builtIn().adding(try RuleSet(yaml: text, file: "local.yaml")))
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.description.hasPrefix("local.yaml"), "\(error)")
            #expect(error.description.contains(fragment), "\(error)")
        }
    }
}

struct ActiveResponseConfigurationTests {
    static let sample = """
        <ossec_config>
          <global>
            <white_list>192.0.2.10</white_list>
            <white_list>2001:db8:1::/48</white_list>
          </global>
          <command>
            <name>notify</name>
            <executable>notify.sh</executable>
            <timeout_allowed>yes</timeout_allowed>
            <extra_args>-v --tag ssh</extra_args>
          </command>
          <active-response>
            <command>firewall-drop</command>
            <location>local</location>
            <rules_id>5710,5712</rules_id>
            <timeout>100</timeout>
            <repeated_offenders>5,10</repeated_offenders>
          </active-response>
          <active-response>
            <command>notify</command>
            <location>local</location>
            <rules_group>authentication_failures</rules_group>
          </active-response>
          <active-response>
            <disabled>yes</disabled>
            <command>firewall-drop</command>
            <location>local</location>
            <level>3</level>
          </active-response>
          <syscheck><frequency>43200</frequency></syscheck>
        </ossec_config>
        """

    func parse(_ text: String) throws(ActiveResponseConfigurationError) -> ActiveResponseConfiguration {
        try ActiveResponseConfiguration.parse(Data(text.utf8), file: "ossec.conf")
    }

    @Test func parsesCommandsResponsesAndWhiteList() throws {
        let configuration = try parse(Self.sample)
        #expect(configuration.whiteList.map(\.description) == ["192.0.2.10", "2001:db8:1::/48"])
        #expect(configuration.commands["notify"]?.extraArguments == ["-v", "--tag", "ssh"])
        #expect(configuration.commands["firewall-drop"]?.isPortcullisBlock == true)
        #expect(configuration.responses.count == 3)
        #expect(configuration.responses[0].rulesIDs == ["5710", "5712"])
        #expect(configuration.responses[0].repeatedOffenders == [5, 10])
        #expect(configuration.responses[0].line == 12)
        #expect(configuration.warnings.contains { $0.contains("<syscheck>") })
    }

    @Test func plansFollowRulesGroupsLevelsAndRepeatedOffenders() throws {
        var planner = ResponsePlanner(configuration: try parse(Self.sample))
        func alert(_ id: String, level: Int = 5, groups: [String] = [], source: String = "203.0.113.9") -> Alert {
            Alert(ruleID: id, level: level, description: "d", groups: groups, sourceText: source,
                  source: try? IPAddress(parsing: source), user: nil, line: "")
        }
        let first = planner.plan(alert("5710"), at: .zero)
        #expect(first.map(\.command.name) == ["firewall-drop"])
        #expect(first.first?.timeout == .seconds(100))
        #expect(first.first?.offense == 1)
        let again = planner.plan(alert("5710"), at: .seconds(5))
        #expect(again.first?.offense == 1, "an alert while the response is active refreshes it, it is no new offense")
        #expect(again.first?.timeout == .seconds(100))
        #expect(planner.plan(alert("5710"), at: .seconds(200)).first?.timeout == .seconds(300), "second offense: 5 minutes")
        #expect(planner.plan(alert("5710"), at: .seconds(600)).first?.timeout == .seconds(600), "third: 10 minutes")
        #expect(planner.plan(alert("5710"), at: .seconds(1300)).first?.timeout == .seconds(600), "then the last stays")
        #expect(planner.plan(alert("5710", source: "203.0.113.10"), at: .seconds(1300)).first?.timeout == .seconds(100), "per address")
        #expect(planner.plan(alert("5712", level: 10, groups: ["authentication_failures"]), at: .seconds(2000)).map(\.command.name) == ["firewall-drop", "notify"])
        #expect(planner.plan(alert("5716"), at: .seconds(2000)).isEmpty, "the level-3 response is disabled")
        #expect(planner.isWhiteListed(try IPAddress(parsing: "2001:db8:1::99")))
        #expect(!planner.isWhiteListed(try IPAddress(parsing: "192.0.2.11")))
    }

    static let invalid: [(String, Int?, String)] = [
        ("<ossec_config><active-response><location>local</location><rules_id>1</rules_id></active-response></ossec_config>", 1, "needs a <command>"),
        ("<ossec_config>\n<active-response>\n<command>firewall-drop</command><location>server</location><rules_id>1</rules_id></active-response></ossec_config>", 2, "not supported"),
        ("<ossec_config>\n<active-response><command>firewall-drop</command><location>local</location>\n<timeout>soon</timeout><rules_id>1</rules_id></active-response></ossec_config>", 3, "positive number"),
        ("<ossec_config><active-response><command>nope</command><location>local</location><rules_id>1</rules_id></active-response></ossec_config>", 1, "no <command> named nope"),
        ("<ossec_config><global>\n\n<white_list>300.1.1.1</white_list></global></ossec_config>", 3, "300"),
        ("<ossec_config><active-response><command>firewall-drop</command><location>local</location><rules_id>57x0</rules_id></active-response></ossec_config>", 1, "rule ids"),
        ("<ossec_config><active-response><command>firewall-drop</command><location>local</location></active-response></ossec_config>", 1, "every alert"),
        ("<ossec_config><command><name>x</name><executable>../../bin/sh</executable></command></ossec_config>", 1, "../"),
        ("<ossec_config><active-response>", nil, "XML"),
    ]

    @Test(arguments: invalid)
    func invalidElementsAreRejectedWithFileAndLine(text: String, line: Int?, fragment: String) {
        do {
            _ = try parse(text)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.file == "ossec.conf")
            if let line { #expect(error.line == line, "\(error)") }
            #expect(error.description.contains(fragment), "\(error)")
        }
    }

    @Test func unknownElementsAreWarnedAbout() throws {
        let configuration = try parse("<ossec_config><active-response><command>firewall-drop</command><location>local</location><rules_id>5710</rules_id><colour>red</colour></active-response></ossec_config>")
        #expect(configuration.warnings.contains { $0.contains("<colour>") })
    }
}


/// The user name is the attacker's: an address written into it must never be the one blocked.
struct InjectionTests {
    static let lines: [String] = [
        "Invalid user x from 192.0.2.50 port 1 from 203.0.113.5 port 4444",
        "Connection reset by invalid user x 192.0.2.50 port 1 203.0.113.5 port 4444 [preauth]",
        "Disconnected from invalid user x 192.0.2.50 port 1 203.0.113.5 port 4444 [preauth]",
        "Failed password for invalid user x from 192.0.2.50 port 1 from 203.0.113.5 port 4444 ssh2",
        "Failed password for x from 192.0.2.50 port 1 from 203.0.113.5 port 4444 ssh2",
        "User x from 192.0.2.50 not allowed because y from 203.0.113.5 not allowed because not listed in AllowUsers",
    ]

    @Test(arguments: lines)
    func theAddressIsTheOneSshdWroteLast(line: String) throws {
        var detector = try Detector(rules: .builtIn())
        let alerts = detector.process(LogMessage(program: "sshd", text: line, line: line), at: .zero)
        #expect(!alerts.isEmpty, "\(line)")
        #expect(alerts.allSatisfy { $0.source?.description == "203.0.113.5" }, "\(line): \(alerts.map { $0.sourceText ?? "-" })")
    }
}

/// ossec.conf's XML, read by Portcullis's own reader.
struct ConfigurationXMLTests {
    func parse(_ text: String) throws(ActiveResponseConfigurationError) -> ActiveResponseConfiguration {
        try ActiveResponseConfiguration.parse(Data(text.utf8), file: "ossec.conf")
    }

    @Test func commentsEntitiesCDATAAndSeveralSections() throws {
        let configuration = try parse("""
            <?xml version="1.0" encoding="UTF-8"?>
            <!-- Wazuh - Agent - Default configuration -->
            <ossec_config>
              <command>
                <name>note &amp; tell</name>
                <executable>notify.sh</executable>
                <extra_args><![CDATA[--tag <ssh>]]> &#x41;&#66;</extra_args>
              </command>
            </ossec_config>
            <ossec_config>
              <global><white_list>192.0.2.10</white_list><alerts_log/></global>
              <active-response>
                <command>note &amp; tell</command>
                <location attribute="ignored">local</location>
                <rules_id>5710</rules_id>
              </active-response>
            </ossec_config>
            """)
        #expect(configuration.commands["note & tell"]?.extraArguments == ["--tag", "<ssh>", "AB"])
        #expect(configuration.responses.first?.line == 12)
        #expect(configuration.whiteList.map(\.description) == ["192.0.2.10"])
    }

    static let malformed: [(String, Int)] = [
        ("<ossec_config>\n<global>\n</ossec_config>", 3),
        ("<ossec_config>\n<global>", 2),
        ("<ossec_config>\n<!-- never closed\n</ossec_config>", 2),
        ("<ossec_config><global>a &bogus; b</global></ossec_config>", 1),
        ("<!DOCTYPE x [<!ENTITY e \"boom\">]><ossec_config/>", 1),
        ("stray text <ossec_config/>", 1),
        ("<ossec_config><global x=unquoted/></ossec_config>", 1),
    ]

    @Test(arguments: malformed)
    func malformedXMLIsRefusedWithItsLine(text: String, line: Int) {
        do {
            _ = try parse(text)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.line == line, "\(error)")
            #expect(error.message.hasPrefix("not well-formed XML"), "\(error)")
        }
    }

    /// 50,000 nested elements once overflowed the stack (releasing the tree recursed);
    /// now the reader stops at the 65th level, with the line.
    @Test func deepNestingIsRefusedWithItsLine() {
        let depth = 50_000
        let text = "<ossec_config>\n" + String(repeating: "<a>", count: depth) + String(repeating: "</a>", count: depth) + "</ossec_config>"
        do {
            _ = try parse(text)
            Issue.record("accepted \(depth) nested elements")
        } catch {
            #expect(error.line == 2, "\(error)")
            #expect(error.message.contains("nested more than 64"), "\(error)")
        }
        // 64 levels, the root included, are still a document.
        let deepest = String(repeating: "<a>", count: 63) + String(repeating: "</a>", count: 63)
        #expect((try? parse("<ossec_config>" + deepest + "</ossec_config>")) != nil)
    }

    @Test func anOversizedFileIsRefused() {
        let text = "<ossec_config>" + String(repeating: " ", count: 16 << 20) + "</ossec_config>"
        #expect(throws: ActiveResponseConfigurationError.self) { try parse(text) }
    }
}
