import FoundationEssentials
@testable import PortcullisIncidents
import PortcullisCore
import Testing

/// The hand-written record is byte for byte what JSONEncoder writes, so old and new records
/// read and verify alike.
struct CanonicalJSONTests {
    static func encoded(_ incident: Incident) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(incident), as: UTF8.self)
    }

    static var incidents: [Incident] {
        var chained = Incident(timeUnixMs: 1_795_849_766_123, action: .block, target: "203.0.113.9", source: "wazuh",
                               reason: "wazuh rule 5710: sshd: \"non-existent\" user / \\ \u{1B}[31m\n\t\u{0}é 😀",
                               requestedSeconds: 100, expiresAtUnixMs: 1_795_849_866_123,
                               wazuh: Incident.Wazuh(ruleId: "5710", ruleLevel: "5", ruleDescription: "sshd: attempt",
                                                     agentId: "001", agentName: "bastion", alertId: "1795849766.1234",
                                                     alertTime: "2026-11-28T07:00:00.000+0000", command: "add"))
        chained.sequence = 42
        chained.previous = String(repeating: "ab", count: 32)
        var sealed = chained
        sealed.hash = String(repeating: "0f", count: 32)
        return [
            chained, sealed,
            Incident(timeUnixMs: 0, action: .refuse, target: "127.0.0.1", source: "cli", error: "loopback is never blocked", refusal: .notBlockable),
            Incident(timeUnixMs: -1_500, action: .detect, target: "2001:db8::/64", source: "detector",
                     detection: Incident.Detection(ruleId: "5760", ruleLevel: 10, ruleDescription: "sshd: authentication failed",
                                                   user: "root", log: "Failed password for root from 2001:db8::1 port 22 ssh2",
                                                   logSource: "/var/log/auth.log")),
            Incident(timeUnixMs: 5, action: .expire, target: "198.51.100.0/24", source: "file",
                     outcome: Incident.Outcome(lastedSeconds: 100, droppedPackets: 18_446_744_073_709_551_615, droppedBytes: 0)),
            Incident(timeUnixMs: 6, action: .unblock, target: "192.0.2.1", source: "api", reason: "",
                     outcome: Incident.Outcome(lastedSeconds: 0.125, droppedPackets: 3, droppedBytes: 180)),
            Incident(timeUnixMs: 7, action: .expire, target: "192.0.2.2", source: "api",
                     outcome: Incident.Outcome(lastedSeconds: 12_345.678, droppedPackets: 1, droppedBytes: 60)),
            Incident(timeUnixMs: 8, action: .expire, target: "192.0.2.3", source: "api",
                     outcome: Incident.Outcome(lastedSeconds: nil, droppedPackets: 0, droppedBytes: 0)),
            Incident(timeUnixMs: 8, action: .unblock, target: "192.0.2.0/24", source: "wazuh",
                     outcome: Incident.Outcome(lastedSeconds: 2, droppedPackets: 10, droppedBytes: 600, passedPackets: 20),
                     throttle: ThrottleRate(packetsPerSecond: 20, burst: 2, newConnectionsOnly: true)),
            Incident(timeUnixMs: 8, action: .block, target: "192.0.2.5", source: "cli",
                     throttle: ThrottleRate(packetsPerSecond: 1000, burst: 100)),
            Incident(timeUnixMs: 9, action: .refresh, target: "192.0.2.4", source: "detector",
                     wazuh: Incident.Wazuh(), detection: Incident.Detection(ruleId: "1", ruleLevel: -1, ruleDescription: "",
                                                                            user: nil, log: "", logSource: nil)),
            // Applied from another node of the fleet.
            Incident(timeUnixMs: 10, action: .block, target: "192.0.2.5", source: "api", expiresAtUnixMs: 70_000,
                     outcome: Incident.Outcome(lastedSeconds: 1, droppedPackets: 2, droppedBytes: 3), node: "bastion-2"),
        ]
    }

    @Test(arguments: incidents.indices)
    func isWhatJSONEncoderWrites(_ index: Int) throws {
        let incident = Self.incidents[index]
        #expect(incident.canonicalJSON == (try Self.encoded(incident)))
    }

    @Test(arguments: [0.5, 1e-7, 3.0, 1e21, 100.25, 2.0e15, 86_400.001])
    func doublesAreWrittenAsJSONEncoderWritesThem(_ seconds: Double) throws {
        let incident = Incident(timeUnixMs: 1, action: .expire, target: "192.0.2.9", source: "cli",
                                outcome: Incident.Outcome(lastedSeconds: seconds, droppedPackets: 0, droppedBytes: 0))
        #expect(incident.canonicalJSON == (try Self.encoded(incident)))
    }
}
