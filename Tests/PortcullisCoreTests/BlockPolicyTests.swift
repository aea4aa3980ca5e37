import PortcullisCore
import Testing

@Suite struct BlockPolicyTests {
    typealias Terms = BlockTerms<Int>

    static func terms(_ expiry: Expiry<Int>, _ source: BlockSource?, reason: String = "", requested: Duration? = nil) -> Terms {
        Terms(expiry: expiry, source: source, reason: reason, requestedDuration: requested)
    }

    @Test func neverOutlastsEveryInstant() {
        #expect(Expiry<Int>.at(5) < .at(6))
        #expect(Expiry<Int>.at(Int.max) < .never)
        #expect(!(Expiry<Int>.never < .never))
        #expect(Expiry<Int>.never >= .at(0))
    }

    @Test func aNewTargetIsAdded() {
        let request = Self.terms(.at(100), .wazuh, reason: "sshd")
        let (terms, change) = BlockPolicy.refresh(nil, with: request)
        #expect(change == .added)
        #expect(terms == request)
    }

    @Test func aLongerRequestRefreshesAndTakesOwnership() {
        let current = Self.terms(.at(100), .wazuh, reason: "rule 5710", requested: .seconds(100))
        let request = Self.terms(.at(200), .cli, reason: "operator", requested: .seconds(200))
        let (terms, change) = BlockPolicy.refresh(current, with: request)
        #expect(change == .refreshed)
        #expect(terms == request)
    }

    @Test func aRefreshWithoutReasonKeepsTheReason() {
        let current = Self.terms(.at(100), .wazuh, reason: "rule 5710")
        let (terms, change) = BlockPolicy.refresh(current, with: Self.terms(.at(300), .wazuh))
        #expect(change == .refreshed)
        #expect(terms.reason == "rule 5710")
        #expect(terms.expiry == .at(300))
    }

    @Test(arguments: [Expiry<Int>.at(100), .at(50)])
    func theLongerBlockStaysWithItsOwnerAndReason(requested: Expiry<Int>) {
        let current = Self.terms(.at(100), .cli, reason: "operator", requested: .seconds(100))
        let (terms, change) = BlockPolicy.refresh(current, with: Self.terms(requested, .wazuh, reason: "rule 5710"))
        #expect(change == .keptLonger)
        #expect(terms == current)
    }

    @Test func aPermanentBlockIsNeverShortened() {
        let current = Self.terms(.never, .cli, reason: "operator")
        let (terms, change) = BlockPolicy.refresh(current, with: Self.terms(.at(Int.max), .detector))
        #expect(change == .keptLonger)
        #expect(terms.expiry == .never)
        #expect(terms.source == .cli)
    }

    @Test func aPermanentRequestReplacesATimedBlock() {
        let (terms, change) = BlockPolicy.refresh(Self.terms(.at(10), .wazuh), with: Self.terms(.never, .cli))
        #expect(change == .refreshed)
        #expect(terms.expiry == .never)
    }

    @Test func onlyTheOwnerLiftsALiveBlockWhenItNamesItself() {
        #expect(BlockPolicy.mayLift(ownedBy: .wazuh, isExpired: false, requestedBy: .wazuh))
        #expect(!BlockPolicy.mayLift(ownedBy: .cli, isExpired: false, requestedBy: .wazuh))
        #expect(!BlockPolicy.mayLift(ownedBy: nil, isExpired: false, requestedBy: .wazuh))
        // An expired block is nobody's; an operator's unblock names no owner and lifts anything.
        #expect(BlockPolicy.mayLift(ownedBy: .cli, isExpired: true, requestedBy: .wazuh))
        #expect(BlockPolicy.mayLift(ownedBy: .wazuh, isExpired: false, requestedBy: nil))
    }

    static func target(_ text: String) throws -> BlockTarget { try BlockTarget.parse(text).target }

    @Test func admissionRefusesLoopbackWhateverTheAllowlist() throws {
        #expect(throws: Refusal.self) { try Admission.check(try Self.target("127.0.0.1"), allowlist: []) }
        #expect(throws: Refusal.self) { try Admission.check(try Self.target("::1"), allowlist: []) }
        #expect(throws: Refusal.self) { try Admission.check(try Self.target("0.0.0.0/0"), allowlist: []) }
        #expect(throws: Refusal.self) { try Admission.checkBlockable(try Self.target("::")) }
    }

    @Test func admissionRefusesWhatAnAllowlistEntryCovers() throws {
        let allowlist = [try Self.target("192.0.2.0/24"), try Self.target("2001:db8::1")]
        let inside = try Self.target("192.0.2.7")
        do throws(Refusal) {
            try Admission.check(inside, allowlist: allowlist)
            Issue.record("192.0.2.7 was admitted although 192.0.2.0/24 is allowlisted")
        } catch {
            #expect(error == .allowlisted(inside, by: allowlist[0]))
            #expect(error.description.hasPrefix("refusing to block 192.0.2.7: it is allowlisted by 192.0.2.0/24"))
        }
        // A prefix that merely overlaps the entry is not inside it.
        try Admission.check(try Self.target("192.0.0.0/16"), allowlist: allowlist)
        try Admission.check(try Self.target("198.51.100.7"), allowlist: allowlist)
        #expect(throws: Refusal.self) { try Admission.check(try Self.target("2001:db8::1"), allowlist: allowlist) }
        try Admission.check(try Self.target("2001:db8::2"), allowlist: allowlist)
    }

    @Test func sourcesAreNamedStrictly() throws {
        #expect(try BlockSource.named("wazuh") == .wazuh)
        #expect(throws: UnknownBlockSource.self) { try BlockSource.named("Wazuh") }
        #expect(UnknownBlockSource(name: "x").description == "unknown source 'x' (cli, file, wazuh, detector, api, fail2ban, sshguard, crowdsec)")
    }
}
