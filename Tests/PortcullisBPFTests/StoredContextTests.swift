import FoundationEssentials
import PortcullisControl
import PortcullisIncidents
import Testing

/// The context the ledger stores with a block reads back as the records it was made from.
struct StoredContextTests {
    struct Stored: Decodable, Equatable {
        let wazuh: Incident.Wazuh?
        let detection: Incident.Detection?
    }

    static let contexts: [IncidentContext] = [
        IncidentContext(wazuh: Incident.Wazuh(ruleId: "5710", ruleLevel: "5", ruleDescription: "sshd: \"quoted\" \\ and /",
                                              agentId: "001", agentName: "bastion\u{1B}[31m", alertId: "1.2", command: "add")),
        IncidentContext(wazuh: Incident.Wazuh(ruleId: "5763")),
        IncidentContext(detection: Incident.Detection(ruleId: "5760", ruleLevel: 10, ruleDescription: "sshd: authentication failed",
                                                      user: nil, log: "Failed password for root from 203.0.113.9\nport 22\u{0}", logSource: "/var/log/auth.log")),
        IncidentContext(wazuh: Incident.Wazuh(), detection: Incident.Detection(ruleId: "1", ruleLevel: -3, ruleDescription: "é 中 😀",
                                                                            user: "root", log: "", logSource: nil)),
    ]

    @Test(arguments: contexts.indices)
    func readsBackAsTheRecords(_ index: Int) throws {
        let context = Self.contexts[index]
        let json = try #require(context.storedJSON)
        let decoded = try JSONDecoder().decode(Stored.self, from: Data(json.utf8))
        #expect(decoded == Stored(wazuh: context.wazuh, detection: context.detection), "\(json)")
    }

    @Test func noContextStoresNothing() {
        #expect(IncidentContext.none.storedJSON == nil)
    }
}
