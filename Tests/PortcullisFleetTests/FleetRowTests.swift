import PortcullisControl
import PortcullisCore
import PortcullisFleet
import PortcullisLedger
import Testing

/// The strict reading of change log rows: what a node applies, and the one-line reason for
/// what it refuses. No database, no root.
struct FleetRowTests {
    /// This host's clock runs 250 ms ahead of the database's.
    static func parse(node: String = "bastion-2", kind: String = "block", target: String = "198.51.100.7/32",
                      expires: Int64? = 1_800_000_000_000, source: String = "detector", reason: String = "sshd: 5 failures",
                      made: Int64 = 1_799_999_000_000) -> Result<RemoteChange, FleetRowProblem> {
        FleetRow.parse(sequence: 42, node: node, kind: kind, target: target, expires: expires, source: source,
                       reason: reason, made: made, toLocal: { $0 + 250 })
    }

    @Test func aWellFormedBlockIsReadWithItsTimesOnThisHostsClock() throws {
        let change = try Self.parse().get()
        #expect(change.sequence == 42)
        #expect(change.node == "bastion-2")
        #expect(change.change == FleetChange(
            kind: .block, target: try BlockTarget.parse("198.51.100.7").target, expiry: .at(1_800_000_000_250),
            source: .detector, reason: "sshd: 5 failures", timeUnixMilliseconds: 1_799_999_000_250))
    }

    @Test func aPermanentBlockAndATombstoneCarryNoExpiry() throws {
        #expect(try Self.parse(expires: nil).get().change.expiry == .never)
        #expect(try Self.parse(kind: "unblock", expires: 1_800_000_000_000).get().change.expiry == .never)
        #expect(try Self.parse(target: "2001:db8::/48").get().change.target == (try BlockTarget.parse("2001:db8::/48").target))
    }

    static let malformed: [(String, String, String, String, String, String)] = [
        // node, kind, target, source, reason, what the refusal says
        ("bad node!", "block", "198.51.100.7/32", "api", "", "not a node name"),
        ("", "block", "198.51.100.7/32", "api", "", "not a node name"),
        ("n", "explode", "198.51.100.7/32", "api", "", "not a change"),
        ("n", "block", "198.51.100.7/32", "telnet", "", "unknown source 'telnet'"),
        ("n", "block", "not-an-address", "api", "", "not-an-address"),
        ("n", "block", "198.51.100.7/32", "api", "two\nlines", "control characters"),
        ("n", "block", "198.51.100.7/32", "api", String(repeating: "x", count: 5000), "bytes long"),
    ]

    @Test(arguments: malformed)
    func malformedRowsAreRefusedWithOneLine(row: (String, String, String, String, String, String)) {
        let (node, kind, target, source, reason, fragment) = row
        switch Self.parse(node: node, kind: kind, target: target, source: source, reason: reason) {
        case .success(let change): Issue.record("accepted: \(change)")
        case .failure(let problem):
            #expect(problem.description.contains(fragment), "\(problem)")
            #expect(!problem.description.contains("\n"))
        }
    }

    @Test func anExpiryBefore1970IsRefused() {
        guard case .failure(let problem) = Self.parse(expires: -5) else {
            Issue.record("accepted an expiry before 1970")
            return
        }
        #expect(problem.description.contains("before 1970"))
    }
}
