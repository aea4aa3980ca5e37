import Foundation
import PortcullisCore
@testable import PortcullisDetector
import Testing

/// The header forms Wazuh's pre-decoder reads.
struct PredecoderTests {
    static let forms: [(line: String, timestamp: String?, hostname: String?, program: String, text: String)] = [
        ("Nov 28 07:00:00 bastion sshd[1234]: Invalid user a from 203.0.113.9", "Nov 28 07:00:00", "bastion", "sshd", "Invalid user a from 203.0.113.9"),
        ("Nov  8 07:00:00 bastion sshd[1]: x", "Nov  8 07:00:00", "bastion", "sshd", "x"),
        ("Nov 28 07:00:00.123 bastion sshd[1]: x", "Nov 28 07:00:00.123", "bastion", "sshd", "x"),
        ("Nov 28 07:00:00 2026 bastion sshd[1]: x", "Nov 28 07:00:00 2026", "bastion", "sshd", "x"),
        ("Nov 28 2026 07:00:00 bastion sshd[1]: x", "Nov 28 2026 07:00:00", "bastion", "sshd", "x"),
        ("2026 Nov 28 07:00:00 bastion sshd[1]: x", "2026 Nov 28 07:00:00", "bastion", "sshd", "x"),
        ("2026-11-28T07:00:00.123456+00:00 bastion sshd[1]: x", "2026-11-28T07:00:00.123456+00:00", "bastion", "sshd", "x"),
        ("2026-11-28T07:00:00Z bastion sshd: x", "2026-11-28T07:00:00Z", "bastion", "sshd", "x"),
        ("2020-03-25 08:01:34.584936-0700  localhost sshd[1551]: Failed password for root from 192.0.2.4 port 22 ssh2",
         "2020-03-25 08:01:34.584936-0700", "localhost", "sshd", "Failed password for root from 192.0.2.4 port 22 ssh2"),
        ("2020-03-25 08:01:34 localhost sshd[1551]: x", "2020-03-25 08:01:34", "localhost", "sshd", "x"),
        ("<38>Nov 28 07:00:00 bastion sshd[1]: x", "Nov 28 07:00:00", "bastion", "sshd", "x"),
        ("<38>1 2026-11-28T07:00:00.1Z bastion sshd 123 - - x y", "2026-11-28T07:00:00.1Z", "bastion", "sshd", "x y"),
        ("<38>1 2026-11-28T07:00:00.1Z bastion sshd 123 ID47 [meta a=\"1\"] x y", "2026-11-28T07:00:00.1Z", "bastion", "sshd", "x y"),
        ("sshd[20247]: [ID 800047 auth.notice] Failed none for root from 192.168.1.1 port 36942 ssh2", nil, nil, "sshd",
         "Failed none for root from 192.168.1.1 port 36942 ssh2"),
        ("Nov 28 07:00:00 sol10 sshd[20247]: [ID 800047 auth.info] Failed none for root from 192.168.1.1 port 36942 ssh2",
         "Nov 28 07:00:00", "sol10", "sshd", "Failed none for root from 192.168.1.1 port 36942 ssh2"),
        ("sshd-session[99]: Invalid user x from 192.0.2.1", nil, nil, "sshd-session", "Invalid user x from 192.0.2.1"),
    ]

    @Test(arguments: forms)
    func headerForms(form: (line: String, timestamp: String?, hostname: String?, program: String, text: String)) {
        let message = LogMessage.predecode(Substring(form.line))
        #expect(message.timestamp == form.timestamp, "\(form.line)")
        #expect(message.hostname == form.hostname, "\(form.line)")
        #expect(message.program == form.program, "\(form.line)")
        #expect(message.text == form.text, "\(form.line)")
    }

    @Test func nearMissesHaveNoProgram() {
        // Not a month, a date without a time, a pid that is not a number: no header, no program.
        for line in ["Foo 28 07:00:00 bastion sshd[1]: x y", "no colon here at all", "sshd[abc]: Invalid user x from 192.0.2.1", "2026-11-28 bastion sshd[1]: x"] {
            let message = LogMessage.predecode(Substring(line))
            #expect(message.program != "sshd" || message.timestamp == nil, "\(line): \(message)")
        }
        #expect(LogMessage.predecode("no colon here at all").program == "")
        #expect(LogMessage.syslog("sshd[abc]: Invalid user x from 192.0.2.1")?.program != "sshd")
    }
}

/// OS_Match and OS_Regex, Wazuh's own pattern languages.
struct PatternTests {
    func osRegex(_ pattern: String, _ text: String) throws -> OSRegex.Found? {
        try OSRegex(pattern).firstMatch(Array(text.utf8))
    }

    @Test func osMatchIsLiteralCaseInsensitiveWithAnchorsAndAlternatives() {
        #expect(OSMatch("invalid user").matches(Array("Failed password for INVALID USER x".utf8)))
        #expect(OSMatch("^Failed|^error: PAM: Authentication").matches(Array("error: PAM: authentication failure".utf8)))
        #expect(!OSMatch("^Failed").matches(Array("x Failed".utf8)))
        #expect(OSMatch("ssh2$").matches(Array("port 22 ssh2".utf8)))
        #expect(!OSMatch("ssh2$").matches(Array("ssh2 port".utf8)))
        #expect(OSMatch("^exact$").matches(Array("EXACT".utf8)))
        // A dot is a dot, and a trailing | (joining <match> lines) does not match everything.
        #expect(!OSMatch("a.c").matches(Array("abc".utf8)))
        #expect(!OSMatch("nothing|").matches(Array("something else".utf8)))
    }

    @Test func osRegexClassesRepetitionAndGroups() throws {
        let found = try #require(try osRegex(#"^Failed \S+ for (\S+) from (\S+) port (\d+)"#, "Failed password for root from 192.0.2.1 port 22 ssh2"))
        #expect(found.captures == ["root", "192.0.2.1", "22"])
        #expect(try osRegex(#"\d+"#, "no digits") == nil)
        #expect(try osRegex(#"^\w+$"#, "user-name@host_1")?.captures == [])
        #expect(try osRegex(#"^\w+$"#, "user name") == nil)
        #expect(try osRegex(#"a\.c"#, "xabcx") != nil, "\\. is any character")
        #expect(try osRegex(#"\(x\)"#, "a (x) b") != nil, "\\( and \\) are the characters")
        #expect(try osRegex(#"^abc$|^def$"#, "DEF") != nil, "alternatives; case-insensitive")
        #expect(try osRegex(#"x\p+y"#, "x:;y") != nil)
        #expect(try osRegex(#"a\s*b"#, "ab")?.end == 2)
        #expect(try osRegex(#"from (\.+) port"#, "from a from b port")?.captures == ["a from b"], "greedy, backtracking")
        #expect(throws: Pattern.CompileError.self) { try OSRegex(#"(unclosed"#) }
        #expect(throws: Pattern.CompileError.self) { try OSRegex(#"\q"#) }
    }

    @Test func aPathologicalPatternGivesUp() throws {
        let text = Array(String(repeating: "a", count: 5000).utf8)
        let clock = ContinuousClock()
        let elapsed = try clock.measure { _ = try OSRegex(#"\w*\w*\w*\w*\w*b"#).firstMatch(text) }
        #expect(elapsed < .seconds(5))
    }
}

/// Wazuh's evaluation order and frequency semantics, on the built-in rules.
struct WazuhSemanticsTests {
    func results(_ lines: [String], spacing: Duration = .seconds(1), start: Duration = .zero) throws -> [String] {
        var detector = try Detector(rules: .builtIn())
        var time = start
        return lines.map { line in
            defer { time += spacing }
            let evaluation = detector.evaluate(LogMessage.predecode(Substring(line)), at: time)
            return evaluation.alert?.ruleID ?? "-"
        }
    }

    func evaluation(_ line: String) throws -> Evaluation {
        var detector = try Detector(rules: .builtIn())
        return detector.evaluate(LogMessage.predecode(Substring(line)), at: .zero)
    }

    static let cases: [(line: String, rule: String, source: String?, user: String?)] = [
        ("sshd[1]: Failed password for invalid user admin from 198.51.100.7 port 4242 ssh2", "5760", "198.51.100.7", "admin"),
        ("sshd[1]: Failed keyboard-interactive/pam for invalid user admin from 198.51.100.7 port 4242 ssh2", "5760", "198.51.100.7", "admin"),
        // Near miss: "Failed none" is not one of 5760's, so 5710 stands.
        ("sshd[1]: Failed none for invalid user admin from 198.51.100.7 port 4242 ssh2", "5710", "198.51.100.7", "admin"),
        ("sshd[1]: error: PAM: unknown user for illegal user oracle from 198.51.100.7", "5710", "198.51.100.7", "oracle"),
        ("2013-10-30T14:51:21.901728+01:00 srv sshd[12664]: Postponed keyboard-interactive for invalid user warez from 198.51.100.7 port 54197 ssh2 [preauth]", "5710", "198.51.100.7", "warez"),
        ("sshd[1]: Failed none for invalid user x from 198.51.100.7 port 1 ssh2 [preauth]", "5710", "198.51.100.7", "x"),
        ("sshd[1]: error: PAM: authentication error for illegal user oracle from 198.51.100.7", "5760", "198.51.100.7", "oracle"),
        ("sshd[1]: error: PAM: authentication error for root from 198.51.100.7", "5760", "198.51.100.7", "root"),
        ("sshd[1]: error: PAM: Authentication failure for root from 198.51.100.7", "5716", "198.51.100.7", "root"),
        ("sshd[20247]: [ID 800047 auth.notice] Failed none for root from 192.168.1.1 port 36942 ssh2", "5716", "192.168.1.1", "root"),
        ("2020-03-25 08:01:34.584936-0700  localhost sshd[1551]: Failed password for root from 192.0.2.4 port 22 ssh2", "5760", "192.0.2.4", "root"),
        ("sshd[1]: Bad protocol version identification 'GET / HTTP/1.1' from 198.51.100.8 port 5555", "5701", "198.51.100.8", nil),
        ("sshd[1]: Did not receive identification string from 198.51.100.9 port 6666", "5706", "198.51.100.9", nil),
        ("sshd[1]: error: maximum authentication attempts exceeded for root from 198.51.100.10 port 7 ssh2 [preauth]", "5758", "198.51.100.10", "root"),
        ("sshd[1]: error: maximum authentication attempts exceeded for invalid user bob from 198.51.100.10 port 7 ssh2 [preauth]", "5758", "198.51.100.10", "bob"),
        ("sshd[1]: reverse mapping checking getaddrinfo for evil.example [198.51.100.11] failed - POSSIBLE BREAK-IN ATTEMPT!", "5702", "198.51.100.11", nil),
        ("sshd[1]: User root from 198.51.100.12 not allowed because listed in DenyUsers", "5718", "198.51.100.12", "root"),
    ]

    @Test(arguments: cases)
    func theRuleWazuhWouldFire(example: (line: String, rule: String, source: String?, user: String?)) throws {
        let result = try evaluation(example.line)
        let alert = try #require(result.alert, "\(example.line): \(result.silence ?? "")")
        #expect(alert.ruleID == example.rule, "\(example.line)")
        #expect(alert.source?.description == example.source, "\(example.line)")
        #expect(alert.user == example.user, "\(example.line)")
        #expect(result.decoder == "sshd")
    }

    @Test func levelZeroSiblingsAreTriedFirst() throws {
        // Each would be 5710 ("invalid user") if 5711 and 5722, level 0, were not tried first.
        for (line, silencer) in [
            ("sshd[1]: error: PAM: User not known to the underlying authentication module for illegal user x from 198.51.100.7", "5711"),
            ("sshd[1]: input_userauth_request: invalid user opcione [preauth]", "5711"),
            ("sshd[1]: Connection closed by invalid user admin 198.51.100.7 port 22 [preauth]", "5722"),
        ] {
            let result = try evaluation(line)
            #expect(result.alert == nil, "\(line)")
            #expect(result.rule?.id == silencer, "\(line)")
        }
        // Near miss: "Disconnected from invalid user" is no "Disconnected from user" (5761).
        #expect(try evaluation("sshd[1]: Disconnected from invalid user admin 198.51.100.7 port 22 [preauth]").alert?.ruleID == "5710")
    }

    @Test func silencedAndForeignLines() throws {
        #expect(try evaluation("sshd[1]: Received disconnect from 198.51.100.7 port 22:11: bye").silence?.contains("5721") == true)
        #expect(try evaluation("sshd[1]: Accepted publickey for alice from 198.51.100.7 port 22 ssh2").silence?.contains("5700") == true)
        // Another program's line that reads like sshd's is not sshd's.
        let cron = try evaluation("Nov 28 07:00:00 bastion cron[1]: Invalid user admin from 198.51.100.7 port 1")
        #expect(cron.alert == nil)
        #expect(cron.decoder == nil)
        let huge = "Nov 28 07:00:00 bastion app[1]: " + String(repeating: "x", count: 10 << 20) + " sshd[1]: Invalid user a from 198.51.100.7"
        #expect(try evaluation(huge).alert == nil)
    }

    @Test func eightFailedPasswordsForInvalidUsersFire5763() throws {
        let lines = (1...8).map { "sshd[1]: Failed password for invalid user u\($0) from 198.51.100.7 port \($0) ssh2" }
        #expect(try results(lines) == Array(repeating: "5760", count: 7) + ["5763"])
        // Near miss: from two sources, neither reaches eight.
        let mixed = (1...8).map { "sshd[1]: Failed password for invalid user u from 198.51.100.\($0 % 2) port \($0) ssh2" }
        #expect(try !results(mixed).contains("5763"))
    }

    @Test func frequencyRulesKeepTheirIgnoreWindow() throws {
        // 5763: frequency 8, timeframe 120, ignore 60. The 8th fires; the counted lines are spent;
        // a second run of eight inside the ignore window reports the parent, 5760.
        let line = "sshd[1]: Failed password for root from 198.51.100.7 port 1 ssh2"
        let run = try results(Array(repeating: line, count: 16), spacing: .seconds(1))
        #expect(run == Array(repeating: "5760", count: 7) + ["5763"] + Array(repeating: "5760", count: 8))
        // 5 s apart, the second run's eighth comes 40 s after the first alert: still ignored...
        #expect(try results(Array(repeating: line, count: 16), spacing: .seconds(5)).filter { $0 == "5763" }.count == 1)
        // ...and 9 s apart it comes 72 s after: it fires again.
        #expect(try results(Array(repeating: line, count: 16), spacing: .seconds(9)).filter { $0 == "5763" }.count == 2)
    }

    @Test func deniedUsers5719CountWithoutTheSameSource() throws {
        let lines = (1...8).map { "sshd[1]: User u\($0) from 198.51.100.\($0) not allowed because not listed in AllowUsers" }
        #expect(try results(lines) == Array(repeating: "5718", count: 7) + ["5719"])
        #expect(try results(lines, spacing: .seconds(20)) == Array(repeating: "5718", count: 8), "outside 120 s")
    }

    @Test func firedTimesCount() throws {
        var detector = try Detector(rules: .builtIn())
        var last: Alert?
        for index in 1...3 {
            last = detector.evaluate(LogMessage.predecode("sshd[1]: Invalid user a from 198.51.100.\(index)"), at: .seconds(index)).alert
        }
        #expect(last?.ruleID == "5710")
        #expect(last?.firedTimes == 3)
    }
}

/// Wazuh's own XML format, loaded from files written for these tests.
struct WazuhFileTests {
    static let decoders = #"""
        <!-- A decoder in Wazuh's format, with OS_Regex and offsets. -->
        <decoder name="knockd">
          <program_name>^knockd</program_name>
        </decoder>
        <decoder name="knockd-stage">
          <parent>knockd</parent>
          <prematch>^\S+: </prematch>
          <regex offset="after_prematch">^(\S+): Stage (\d+)</regex>
          <order>srcip, id</order>
        </decoder>
        <decoder name="knockd-stage">
          <parent>knockd</parent>
          <regex offset="after_regex"> via (\w+)$</regex>
          <order>protocol</order>
        </decoder>
        <decoder name="knockd-open">
          <parent>knockd</parent>
          <regex>^(\S+): (\w+): OPEN SESAME</regex>
          <order>srcip, dstuser</order>
          <fts>name, srcip</fts>
        </decoder>
        """#

    static let rules = #"""
        <var name="KNOCKERS">scanner</var>
        <group name="knockd,">
          <rule id="100000" level="0">
            <decoded_as>knockd</decoded_as>
            <description>knockd messages.</description>
          </rule>
          <rule id="100001" level="3">
            <if_sid>100000</if_sid>
            <regex>Stage \d+$</regex>
            <description>knockd: a knock stage.</description>
            <group>$KNOCKERS,</group>
          </rule>
          <rule id="100002" level="7" frequency="3" timeframe="60">
            <if_matched_sid>100001</if_matched_sid>
            <same_source_ip />
            <description>knockd: several stages </description>
            <description>from one source.</description>
          </rule>
          <rule id="100003" level="9">
            <if_group>scanner</if_group>
            <match>Stage 9</match>
            <description>knockd: stage nine.</description>
          </rule>
          <rule id="100004" level="2">
            <if_sid>100000</if_sid>
            <match type="pcre2">OPEN\sSESAME$</match>
            <description>knockd: the door opened.</description>
          </rule>
          <rule id="100005" level="12">
            <if_sid>100000</if_sid>
            <match>OPEN SESAME</match>
            <srcip>!192.0.2.0/24</srcip>
            <description>knockd: opened from outside.</description>
          </rule>
          <rule id="100006" level="4">
            <if_level>12</if_level>
            <match>never</match>
            <description>knockd: below the high ones.</description>
          </rule>
        </group>
        """#

    static let local = #"""
        <group name="local,">
          <rule id="100004" level="6" overwrite="yes">
            <if_sid>100000</if_sid>
            <match type="pcre2">OPEN\sSESAME$</match>
            <description>knockd: the door opened (local level).</description>
          </rule>
          <rule id="5710" level="0" overwrite="yes">
            <if_sid>5700</if_sid>
            <match>invalid user</match>
            <description>not here</description>
          </rule>
        </group>
        """#

    func directory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-wazuh-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path + "/rules", withIntermediateDirectories: true)
        try Self.decoders.write(toFile: path + "/0100-knockd_decoders.xml", atomically: true, encoding: .utf8)
        try Self.rules.write(toFile: path + "/rules/0100-knockd_rules.xml", atomically: true, encoding: .utf8)
        try Self.local.write(toFile: path + "/rules/local_rules.xml", atomically: true, encoding: .utf8)
        return path
    }

    func message(_ text: String) -> LogMessage { LogMessage.predecode(Substring("Nov 28 07:00:00 gate knockd[7]: " + text)) }

    @Test func aRuleFileInWazuhsFormatIsLoadedAndMatched() throws {
        let path = try directory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        // A file and a directory, the way wazuh_ruleset names them; local_rules.xml sorts after 0100-.
        let set = try RuleSet.load(wazuhPaths: [path + "/0100-knockd_decoders.xml", path + "/rules"])
        // 5710's overwrite names a rule this set lacks: refused with the file and line.
        #expect(throws: RulesError.self) { try Detector(rules: set) }
        var fixed = set
        fixed.rules.removeAll { $0.id == "5710" }
        var detector = try Detector(rules: fixed)

        let stage = detector.evaluate(message("opener: 198.51.100.20: Stage 1"), at: .zero)
        #expect(stage.decoder == "knockd")
        #expect(stage.fields.map(\.name) == ["srcip", "id"])
        #expect(stage.alert?.ruleID == "100001")
        #expect(stage.alert?.groups == ["knockd", "scanner"])
        #expect(stage.alert?.source?.description == "198.51.100.20")
        _ = detector.evaluate(message("opener: 198.51.100.20: Stage 2"), at: .seconds(1))
        let third = detector.evaluate(message("opener: 198.51.100.20: Stage 3"), at: .seconds(2))
        #expect(third.alert?.ruleID == "100002")
        #expect(third.alert?.description == "knockd: several stages from one source.", "descriptions joined as written")
        // A sibling continues the decoder before it (offset after_regex), and is never tried alone.
        let via = detector.evaluate(message("opener: 198.51.100.21: Stage 5 via tcp"), at: .seconds(2))
        #expect(via.fields.map(\.name) == ["srcip", "id", "protocol"])
        let alone = detector.evaluate(message("hello via udp"), at: .seconds(2))
        #expect(alone.childDecoder == nil)
        #expect(alone.fields.isEmpty)
        // if_group: 100003 is a child of 100001 (group scanner), and its level puts it first.
        #expect(detector.evaluate(message("opener: 198.51.100.30: Stage 9"), at: .seconds(3)).alert?.ruleID == "100003")
        // overwrite="yes" from local_rules.xml: level 6. 100005 has an unsupported <srcip> and is disabled.
        let open = detector.evaluate(message("198.51.100.40: alice: OPEN SESAME"), at: .seconds(4))
        #expect(open.alert?.ruleID == "100004")
        #expect(open.alert?.level == 6)
        #expect(open.alert?.user == "alice")
        #expect(set.warnings.contains { $0.contains("0100-knockd_rules.xml:32") && $0.contains("<srcip>") && $0.contains("disabled") }, "\(set.warnings)")
        #expect(set.warnings.contains { $0.contains("0100-knockd_decoders.xml:20") && $0.contains("<fts>") }, "\(set.warnings)")
        // Another program: the decoder does not take it.
        #expect(detector.evaluate(LogMessage.predecode("Nov 28 07:00:00 gate other[7]: opener: 198.51.100.20: Stage 1"), at: .seconds(5)).alert == nil)
    }

    @Test func builtInRulesCanBeOverwrittenFromAWazuhFile() throws {
        let local = try RuleSet(wazuhXML: Array(Self.local.utf8), file: "local_rules.xml")
        var only5710 = local
        only5710.rules.removeAll { $0.id != "5710" }
        var detector = try Detector(rules: RuleSet.builtIn().adding(only5710))
        let result = detector.evaluate(LogMessage.predecode("sshd[1]: Invalid user x from 198.51.100.7"), at: .zero)
        #expect(result.alert == nil)
        #expect(result.silence?.contains("5710") == true)
    }

    static let invalid: [(String, String)] = [
        (#"<rule id="1" level="3"><if_sid>42</if_sid><match>x</match></rule>"#, "if_sid 42 names no rule"),
        (#"<rule id="1" level="30"><match>x</match></rule>"#, "level must be 0 to 16"),
        (#"<rule id="1" level="3"><regex>(x</regex></rule>"#, "unbalanced"),
        (#"<rule id="1" level="3" frequency="4"><if_matched_sid>1</if_matched_sid></rule>"#, "if_matched_sid 1 names no rule"),
        (#"<rule id="1" level="3"><match type="pcre2">(?&lt;x</match></rule>"#, "invalid pcre2"),
        (#"<decoder name="x"><order>a</order></decoder>"#, "needs a <parent>"),
        ("<group name=\"x\">\n<rule id=\"1\" level=\"3\"><match>a</match></rule>\n<rule id=\"1\" level=\"3\"><match>b</match></rule></group>", "local_rules.xml:3: rule 1 is already defined"),
    ]

    @Test func fieldConditionsAndUnsupportedNegation() throws {
        let text = """
            <decoder name="gate"><program_name>^gate$</program_name></decoder>
            <decoder name="gate-user"><parent>gate</parent><regex>^(\\S+) by (\\S+) from (\\S+)$</regex><order>action, user, srcip</order></decoder>
            <group name="gate,">
              <rule id="200" level="0"><decoded_as>gate</decoded_as><description>gate</description></rule>
              <rule id="201" level="6"><if_sid>200</if_sid><user>^root$</user><description>root at the gate</description></rule>
              <rule id="202" level="4"><if_sid>200</if_sid><field name="action">^deny$</field><description>denied</description></rule>
              <rule id="203" level="9"><if_sid>200</if_sid><match negate="yes">allow</match><description>not allowed</description></rule>
            </group>
            """
        let set = try RuleSet(wazuhXML: Array(text.utf8), file: "gate.xml")
        #expect(set.warnings.contains { $0.hasPrefix("gate.xml:7:") && $0.contains("negate") && $0.contains("disabled") }, "\(set.warnings)")
        var detector = try Detector(rules: set)
        func rule(_ line: String) -> String? { detector.evaluate(LogMessage.predecode(Substring("gate[1]: " + line)), at: .zero).alert?.ruleID }
        #expect(rule("deny by root from 198.51.100.1") == "201")
        #expect(rule("deny by alice from 198.51.100.1") == "202")
        #expect(rule("permit by alice from 198.51.100.1") == nil, "203 (negate) is disabled, not inverted")
    }

    @Test func variablesThatKeepDoublingAreRefusedNotExpanded() throws {
        // Each <var> twice the one before: 40 lines would be a terabyte.
        var text = "<var name=\"V0\">xx</var>\n"
        for index in 1..<40 { text += "<var name=\"V\(index)\">$V\(index - 1)$V\(index - 1)</var>\n" }
        let started = ContinuousClock.now
        #expect {
            try RuleSet(wazuhXML: Array(text.utf8), file: "local_rules.xml")
        } throws: { error in
            "\(error)".hasPrefix("local_rules.xml:") && "\(error)".contains("<var>: its variables would expand the file by more than")
        }
        #expect(ContinuousClock.now - started < .seconds(10))
        // A variable used many times within the bound is still substituted everywhere.
        let words = String(repeating: "x", count: 1000)
        let uses = (1...100).map { "<rule id=\"\($0)\" level=\"3\"><match>$W</match></rule>\n" }.joined()
        let set = try RuleSet(wazuhXML: Array("<var name=\"W\">\(words)</var>\n\(uses)".utf8), file: "local_rules.xml")
        #expect(set.rules.count == 100)
        #expect(set.rules.allSatisfy { if case .osMatch(let pattern) = $0.match { pattern.matches(Array(words.utf8)) } else { false } })
    }

    @Test(arguments: invalid)
    func invalidFilesAreRefusedWithFileAndLine(text: String, fragment: String) {
        do {
            _ = try Detector(rules: try RuleSet(wazuhXML: Array(text.utf8), file: "local_rules.xml"))
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.description.hasPrefix("local_rules.xml:"), "\(error)")
            #expect(error.description.contains(fragment), "\(error)")
        }
    }
}

struct LineAssemblerTests {
    @Test func linesAcrossChunksAndCRLF() {
        var assembler = LineAssembler(maximumLineBytes: 100)
        #expect(assembler.lines(in: Array("one\r\ntw".utf8)) == ["one"])
        #expect(assembler.lines(in: Array("o\nthree\n".utf8)) == ["two", "three"])
    }

    /// The tail of an overlong line must not become a line of its own.
    @Test func anOverlongLineIsDroppedWholeTailIncluded() {
        var assembler = LineAssembler(maximumLineBytes: 1024)
        let head = "Nov 28 07:00:00 bastion app[1]: " + String(repeating: "x", count: 5000)
        var lines = assembler.lines(in: Array(head.utf8))
        lines += assembler.lines(in: Array(" sshd[1]: Invalid user a from 198.51.100.7\nsshd[2]: next\n".utf8))
        #expect(lines == ["sshd[2]: next"])
        #expect(assembler.discardedLines == 1)
    }
}

struct IPv6PrefixResponseTests {
    func planner(_ extra: String, whiteList: String = "") throws -> ResponsePlanner {
        let text = """
            <ossec_config>
              <global>\(whiteList)</global>
              <active-response>
                <command>firewall-drop</command><location>local</location><rules_id>5710</rules_id><timeout>100</timeout>
                <repeated_offenders>10</repeated_offenders>
                \(extra)
              </active-response>
            </ossec_config>
            """
        return ResponsePlanner(configuration: try ActiveResponseConfiguration.parse(Data(text.utf8), file: "ossec.conf"))
    }

    func alert(_ source: String) throws -> Alert {
        Alert(ruleID: "5710", level: 5, description: "d", groups: [], sourceText: source,
              source: try IPAddress(parsing: source), user: nil, line: "")
    }

    @Test func anIPv6SourceIsBlockedByItsPrefix() throws {
        var planner = try planner("<ipv6_prefix>64</ipv6_prefix>")
        let first = try #require(planner.plan(try alert("2001:db8:1:2:aaaa::1"), at: .zero).first)
        #expect(first.target?.description == "2001:db8:1:2::/64")
        // A new address in the same /64, after the block ended: a repeated offender of the same prefix.
        let second = try #require(planner.plan(try alert("2001:db8:1:2:bbbb::9"), at: .seconds(200)).first)
        #expect(second.target?.description == "2001:db8:1:2::/64")
        #expect(second.offense == 2)
        #expect(second.timeout == .seconds(600))
        // IPv4 stays an address.
        #expect(planner.plan(try alert("198.51.100.7"), at: .zero).first?.target?.description == "198.51.100.7")
    }

    @Test func withoutTheOptionOrOverAWhiteListedAddressTheAddressIsBlocked() throws {
        var plain = try planner("")
        #expect(plain.plan(try alert("2001:db8:1:2:aaaa::1"), at: .zero).first?.target?.description == "2001:db8:1:2:aaaa::1")
        var listed = try planner("<ipv6_prefix>64</ipv6_prefix>", whiteList: "<white_list>2001:db8:1:2::10</white_list>")
        #expect(listed.plan(try alert("2001:db8:1:2:aaaa::1"), at: .zero).first?.target?.description == "2001:db8:1:2:aaaa::1")
    }

    @Test func aBadLengthIsRefusedWithTheLine() {
        #expect(throws: ActiveResponseConfigurationError.self) { try planner("<ipv6_prefix>8</ipv6_prefix>") }
    }
}

/// What `portcullis logtest` prints, through the session it runs.
struct LogtestTests {
    func session(responses: String? = nil, allowlist: [BlockTarget] = []) throws -> LogtestSession {
        var path: String?
        if let responses {
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-logtest-\(UUID().uuidString).conf").path
            try responses.write(toFile: file, atomically: true, encoding: .utf8)
            path = file
        }
        defer { if let path { try? FileManager.default.removeItem(atPath: path) } }
        let setup = try DetectorSetup.load(wazuhRuleset: [], ruleFiles: [], activeResponse: path)
        return try LogtestSession(setup: setup, allowlist: allowlist, responsesFile: path)
    }

    static let ossec = """
        <ossec_config>
          <global><white_list>198.51.100.200</white_list></global>
          <active-response>
            <command>firewall-drop</command><location>local</location>
            <rules_id>5710,5763</rules_id><timeout>100</timeout>
          </active-response>
        </ossec_config>
        """

    @Test(arguments: WazuhSemanticsTests.cases)
    func everyCaseReportsItsRule(example: (line: String, rule: String, source: String?, user: String?)) throws {
        var logtest = try session()
        let report = logtest.test(example.line, at: .zero)
        #expect(report.rule?.id == example.rule)
        #expect(report.alert)
        #expect(report.decoder?.name == "sshd")
        #expect(report.decoder?.fields["srcip"] == example.source)
        #expect(report.text.contains("rule: \(example.rule) "), "\(report.text)")
        #expect(report.responses.first?.hasPrefix("none: no <active-response> is configured") == true)
    }

    @Test func theResponseTheConfigurationWouldRun() throws {
        var logtest = try session(responses: Self.ossec, allowlist: [.address(try IPAddress(parsing: "198.51.100.50"))])
        let report = logtest.test("Nov 28 07:00:00 bastion sshd[1]: Invalid user admin from 198.51.100.7 port 22", at: .zero)
        #expect(report.predecoding == .init(timestamp: "Nov 28 07:00:00", hostname: "bastion", program: "sshd", text: "Invalid user admin from 198.51.100.7 port 22"))
        #expect(report.decoder?.order == ["srcuser", "srcip", "srcport"])
        #expect(report.rule?.firedtimes == 1)
        #expect(report.responses == ["firewall-drop 198.51.100.7 for 1m40s"])
        #expect(report.text.contains("  response: firewall-drop 198.51.100.7 for 1m40s"))
        #expect(logtest.test("sshd[1]: Invalid user admin from 198.51.100.200 port 22", at: .zero).responses == ["none: 198.51.100.200 is in the <white_list>"])
        #expect(logtest.test("sshd[1]: Invalid user admin from 198.51.100.50 port 22", at: .zero).responses.first?.contains("daemon's allowlist") == true)
        #expect(logtest.test("sshd[1]: Failed publickey for root from 198.51.100.7 port 22 ssh2", at: .zero).responses
            == ["none: no <active-response> names rule 5716, its groups or its level"])
        // The 5710 → 5760 chain: 5710's response does not fire for "Failed password for invalid user".
        let chained = logtest.test("sshd[1]: Failed password for invalid user x from 198.51.100.8 port 22 ssh2", at: .zero)
        #expect(chained.rule?.id == "5760")
        #expect(chained.responses == ["none: no <active-response> names rule 5760, its groups or its level"])
    }

    @Test func nothingFiresAndWhy() throws {
        var logtest = try session()
        let foreign = logtest.test("Nov 28 07:00:00 bastion cron[1]: Invalid user admin from 198.51.100.7 port 22", at: .zero)
        #expect(!foreign.alert)
        #expect(foreign.decoder == nil)
        #expect(foreign.text.contains("no alert: no decoder took the message (program 'cron')"), "\(foreign.text)")
        let silenced = logtest.test("sshd[1]: Connection closed by 198.51.100.7 port 22", at: .zero)
        #expect(silenced.rule?.id == "5722")
        #expect(silenced.silence?.contains("level 0") == true)
    }

    @Test func frequencyRulesShowTheirCountAndFiredTimes() throws {
        var logtest = try session(responses: Self.ossec)
        var reports: [LogtestReport] = []
        for index in 1...8 { reports.append(logtest.test("sshd[1]: Failed password for invalid user u\(index) from 198.51.100.9 port \(index) ssh2", at: .seconds(index))) }
        #expect(reports[6].counts.contains(.init(rule: "5763", count: 7, needed: 8)))
        let last = try #require(reports.last)
        #expect(last.rule == .init(id: "5763", level: 10, description: "sshd: brute force trying to get access to the system. Authentication failed.",
                                   groups: ["syslog", "sshd", "authentication_failures"], firedtimes: 1, frequency: 8, timeframe: 120))
        #expect(last.responses == ["firewall-drop 198.51.100.9 for 1m40s"])
        let json = String(decoding: try JSONEncoder().encode(last), as: UTF8.self)
        #expect(json.contains(#""firedtimes":1"#))
    }
}
