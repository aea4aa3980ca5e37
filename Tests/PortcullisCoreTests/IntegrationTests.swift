import PortcullisCore
import Testing

@Suite struct IntegrationTests {
    static func target(_ text: String) throws -> BlockTarget { try BlockTarget.parse(text).target }

    @Test func anOriginNarrowsTheOwnerRuleToOneJail() {
        let sshd = BlockOwner(source: .fail2ban, origin: "fail2ban/sshd")
        #expect(BlockPolicy.mayLift(ownedBy: .fail2ban, origin: "fail2ban/sshd", isExpired: false, requestedBy: sshd))
        #expect(!BlockPolicy.mayLift(ownedBy: .fail2ban, origin: "fail2ban/nginx", isExpired: false, requestedBy: sshd))
        #expect(!BlockPolicy.mayLift(ownedBy: .cli, origin: "", isExpired: false, requestedBy: sshd))
        #expect(BlockPolicy.mayLift(ownedBy: .fail2ban, origin: "fail2ban/nginx", isExpired: false, requestedBy: BlockOwner(source: .fail2ban)))
        #expect(BlockPolicy.mayLift(ownedBy: .cli, origin: "", isExpired: true, requestedBy: sshd))
        #expect(BlockPolicy.mayLift(ownedBy: .crowdsec, origin: "crowdsec/cscli", isExpired: false, requestedBy: nil))
    }

    @Test func anAbsoluteExpiryWinsOverTheDuration() throws {
        let request = BlockRequest(target: try Self.target("203.0.113.9"), duration: .seconds(600), expiresUnixMilliseconds: 5_000)
        #expect(request.expiry(at: 1_000_000) == .at(5_000))
        #expect(BlockRequest(target: try Self.target("203.0.113.9"), duration: .seconds(2)).expiry(at: 1_000) == .at(3_000))
        #expect(BlockRequest(target: try Self.target("203.0.113.9"), duration: nil).expiry(at: 1_000) == .never)
    }

    @Test func aFail2banBanEndsAtItsTimePlusItsBantime() throws {
        let target = try Self.target("2001:db8::5")
        let ban = try Fail2ban.ban(target, jail: "sshd", time: 1_767_225_600.75, bantime: 600)
        let end: Int64 = 1_767_225_600_750 + 600_000
        #expect(ban.expiresUnixMilliseconds == end)
        #expect(ban.duration == .seconds(600))
        #expect(ban.source == .fail2ban && ban.origin == "fail2ban/sshd")
        #expect(ban.reason == "fail2ban jail sshd")
        // Restored an hour later: the same end, so a restart never lengthens a ban.
        let restored = try Fail2ban.ban(target, jail: "sshd", time: 1_767_225_600.75, bantime: 600, bancount: 2, restored: true)
        #expect(restored.expiresUnixMilliseconds == ban.expiresUnixMilliseconds)
        #expect(restored.reason == "fail2ban jail sshd, ban 2, restored")
        let permanent = try Fail2ban.ban(target, jail: "recidive", time: 1_767_225_600, bantime: -1)
        #expect(permanent.duration == nil && permanent.expiresUnixMilliseconds == nil)
        #expect(permanent.expiry(at: 0) == .never)
    }

    @Test func badFail2banTermsAreRefused() throws {
        let target = try Self.target("203.0.113.9")
        #expect(throws: Fail2banError.badJail("a b")) { try Fail2ban.ban(target, jail: "a b", time: 1, bantime: 1) }
        #expect(throws: Fail2banError.badJail("")) { try Fail2ban.validateJail("") }
        #expect(throws: Fail2banError.self) { try Fail2ban.ban(target, jail: "sshd", time: .nan, bantime: 1) }
        #expect(throws: Fail2banError.badBantime("0")) { try Fail2ban.ban(target, jail: "sshd", time: 1_000, bantime: 0) }
        #expect(throws: Fail2banError.self) { try Fail2ban.ban(target, jail: "sshd", time: 1_000, bantime: 10_000_000_000) }
    }

    @Test func sshguardLinesParseAndMaskToTheirPrefix() throws {
        #expect(try SshguardCommand.parse("block 203.0.113.9 4 32") == .block(try Self.target("203.0.113.9")))
        #expect(try SshguardCommand.parse("block 203.0.113.9 4 24") == .block(try Self.target("203.0.113.0/24")))
        #expect(try SshguardCommand.parse("release 2001:db8:1:2::77 6 64") == .release(try Self.target("2001:db8:1:2::/64")))
        #expect(try SshguardCommand.parse("block 2001:db8::77 6 128") == .block(try Self.target("2001:db8::77")))
        #expect(try SshguardCommand.parse("flush") == .flush)
        #expect(try SshguardCommand.parse("flushonexit") == .flushOnExit)
        for bad in ["block 203.0.113.9 6 32", "block 203.0.113.9 4 33", "block 203.0.113.9 4 0", "block 127.1 4 32",
                    "block 203.0.113.9 4", "unblock 203.0.113.9 4 32", "flush now", "", "block 2001:db8::1 4 32"] {
            #expect(throws: SshguardError.self, "\(bad)") { try SshguardCommand.parse(bad) }
        }
    }

    @Test func goDurationsParseAsCrowdSecWritesThem() throws {
        #expect(try GoDuration.parse("1h59m58.674568093s") == .nanoseconds(7_198_674_568_093))
        #expect(try GoDuration.parse("-28.562216ms") == .zero - .nanoseconds(28_562_216))
        #expect(try GoDuration.parse("0s") == .zero)
        #expect(try GoDuration.parse("0") == .zero)
        #expect(try GoDuration.parse("1.5µs") == .nanoseconds(1_500))
        for bad in ["", "1", "1x", "h", "1..2s", "-", "1e3s"] {
            #expect(throws: GoDurationError.self, "\(bad)") { try GoDuration.parse(bad) }
        }
    }

    static func decision(_ id: Int64, _ value: String, scope: String = "Ip", type: String = "ban", duration: String = "59m59.5s",
                         origin: String = "cscli", scenario: String = "manual 'ban' from 'test'") -> CrowdSecDecision {
        CrowdSecDecision(id: id, origin: origin, scenario: scenario, scope: scope, type: type, value: value, duration: duration)
    }

    @Test func crowdsecBansBecomeBlocksAndOthersAreSkipped() throws {
        var stream = CrowdSecStream()
        let (changes, skipped) = stream.apply(new: [
            Self.decision(1, "203.0.113.9"),
            Self.decision(2, "2001:db8::/64", scope: "Range", duration: "2h"),
            Self.decision(3, "203.0.113.10", type: "captcha"),
            Self.decision(4, "FR", scope: "Country"),
            Self.decision(5, "not an address"),
            Self.decision(6, "203.0.113.11", duration: "-1s"),
            Self.decision(7, "203.0.113.0/24", scope: "Ip"),
        ], deleted: [])
        let first = BlockRequest(target: try Self.target("203.0.113.9"), duration: .seconds(3600), reason: "manual 'ban' from 'test'",
                                 source: .crowdsec, origin: "crowdsec/cscli")
        let second = BlockRequest(target: try Self.target("2001:db8::/64"), duration: .seconds(7200), reason: "manual 'ban' from 'test'",
                                  source: .crowdsec, origin: "crowdsec/cscli")
        #expect(changes == [.block(first, decision: 1), .block(second, decision: 2)])
        #expect(skipped.map(\.why) == [.type, .scope, .value, .expired, .value])
        #expect(stream.heldTargets == 2)
    }

    @Test func aDeletionLiftsOnlyWhenNoOtherDecisionHoldsTheTarget() throws {
        var stream = CrowdSecStream()
        let target = try Self.target("203.0.113.9")
        _ = stream.apply(new: [Self.decision(1, "203.0.113.9"), Self.decision(2, "203.0.113.9", origin: "crowdsec")], deleted: [])
        #expect(stream.apply(new: [], deleted: [Self.decision(1, "203.0.113.9", duration: "-1ms")]).changes.isEmpty)
        #expect(stream.apply(new: [], deleted: [Self.decision(2, "203.0.113.9", duration: "-1ms")]).changes == [.lift(target, decision: 2)])
        // A decision added and deleted between two pulls comes out lifted; so does one this
        // bouncer never saw (deleted while the daemon was down).
        #expect(stream.apply(new: [Self.decision(3, "203.0.113.9")], deleted: [Self.decision(3, "203.0.113.9")]).changes.last == .lift(target, decision: 3))
        #expect(stream.apply(new: [], deleted: [Self.decision(9, "198.51.100.7")]).changes == [.lift(try Self.target("198.51.100.7"), decision: 9)])
        // Not enforced, so never lifted either.
        #expect(stream.apply(new: [], deleted: [Self.decision(4, "203.0.113.10", type: "captcha")]).changes.isEmpty)
    }

    @Test func theFilterTakesOnlyTheConfiguredOriginsAndScenarios() {
        let filter = CrowdSecFilter(origins: ["crowdsec"], scenarios: ["ssh"])
        #expect(filter.admits(Self.decision(1, "203.0.113.9", origin: "CrowdSec", scenario: "crowdsecurity/ssh-bf")))
        #expect(!filter.admits(Self.decision(1, "203.0.113.9", origin: "cscli", scenario: "crowdsecurity/ssh-bf")))
        #expect(!filter.admits(Self.decision(1, "203.0.113.9", origin: "crowdsec", scenario: "crowdsecurity/http-probing")))
        var stream = CrowdSecStream(filter: filter)
        #expect(stream.apply(new: [Self.decision(1, "203.0.113.9")], deleted: []).skipped.first?.why == .filtered)
    }

    @Test func originsAreNamesNotText() {
        #expect(OriginText.isValid("fail2ban/sshd"))
        #expect(!OriginText.isValid(""))
        #expect(!OriginText.isValid("a b"))
        #expect(!OriginText.isValid("a\u{1B}[2J"))
        #expect(!OriginText.isValid(String(repeating: "a", count: 257)))
        #expect(CrowdSecStream.origin(of: Self.decision(1, "203.0.113.9", origin: "bad origin")) == "crowdsec/unknown")
    }
}
