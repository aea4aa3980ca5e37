import Foundation
import Synchronization
import Testing

/// Bad input from execd: logged with Wazuh's own message, exit status 255, no
/// check_keys, nothing on stdout, nothing changed. No BPF is touched, so no root.
@Suite struct WazuhBadInputTests {
    static let cases: [(String, String?)] = [
        ("Cannot read input from stdin", nil),
        ("Invalid input format", "this is not json"),
        ("Invalid input format", #"{"version":"1","origin":{},"command":"add","parameters":{}}"#),
        ("Invalid input format", #"{"version":1,"command":"add","parameters":{"alert":{"data":{"srcip":"192.0.2.1"}}}}"#),
        ("Invalid value of 'command'", #"{"version":1,"origin":{},"command":"restart","parameters":{}}"#),
        ("Cannot read 'srcip' from data or invalid IP format",
         #"{"version":1,"origin":{"name":"","module":"wazuh-execd"},"command":"add","parameters":{"extra_args":[],"alert":{"rule":{"id":"5710"},"data":{"srcport":"30855"}}}}"#),
        ("Cannot read 'srcip' from data or invalid IP format", Messages.add("203.0.113.300")),
        ("Cannot read 'srcip' from data or invalid IP format", Messages.add("0x7f.0.0.1")),
    ]

    @Test(arguments: cases)
    func badInputIsLoggedAndRefused(expected: String, message: String?) throws {
        let home = try WazuhHome()
        let exchange = try ExecdEmulator(home: home).run(message, reply: .continue)
        #expect(exchange.status == 255, "\(exchange)")
        #expect(exchange.output.isEmpty, "nothing may reach stdout: \(exchange)")
        let log = try home.logMessages()
        #expect(log.first == "Starting")
        #expect(log.last == expected, "\(log)")
        #expect(!log.contains { $0.contains("check_keys") })
        #expect(!FileManager.default.fileExists(atPath: home.pins), "bad input must not create any state")
    }

    @Test func loopbackIsRefusedBeforeTheHandshake() throws {
        let home = try WazuhHome()
        let exchange = try ExecdEmulator(home: home).run(Messages.add("127.0.0.1"))
        #expect(exchange.status == 255)
        #expect(exchange.output.isEmpty)
        let log = try home.logMessages()
        #expect(log.last?.hasPrefix("Refusing to block") == true, "\(log)")
        #expect(!FileManager.default.fileExists(atPath: home.pins))
    }

    @Test func anOversizedMessageIsRefusedWithoutReadingToEndOfFile() throws {
        let home = try WazuhHome()
        // 70 KiB with no newline, and stdin left open: the executable must give up by itself.
        let huge = Messages.add("203.0.113.9").replacing("Invalid user admin", with: String(repeating: "A", count: 70_000))
        let exchange = try ExecdEmulator(home: home).run(huge, reply: .none, closeStdin: false, timeout: 10)
        #expect(exchange.status == 255)
        #expect(try home.logMessages().last == "Invalid input format")
        #expect(!FileManager.default.fileExists(atPath: home.pins))
    }
}

/// The full protocol against real pinned maps.
@Suite(.enabled(if: Privileges.canUseBPF, Privileges.bpfReason))
struct WazuhActiveResponseTests {
    func list(_ home: WazuhHome) throws -> [[String: Any]] {
        let result = try Command.portcullis(["list", "--json"], pins: home.pins)
        return try #require(try decodeJSON(result.stdout) as? [[String: Any]], "\(result)")
    }

    func incidents(_ home: WazuhHome) throws -> [[String: Any]] {
        let text = (try? String(contentsOfFile: home.incidentLog, encoding: .utf8)) ?? ""
        return try text.split(separator: "\n").map { try #require(try decodeJSON(String($0)) as? [String: Any]) }
    }

    @Test func addWithContinueBlocksAndLogsLikeWazuh() throws {
        let home = try WazuhHome()
        let message = Messages.add("203.0.113.9")
        let exchange = try ExecdEmulator(home: home).run(message)
        #expect(exchange.status == 0, "\(exchange)")
        let checkKeys = #"{"version":1,"origin":{"name":"firewall-drop-xdp","module":"active-response"},"command":"check_keys","parameters":{"keys":["203.0.113.9"]}}"#
        #expect(exchange.output == [checkKeys], "exactly one line, the check_keys message")
        #expect(try home.logMessages() == ["Starting", message, checkKeys, ExecdEmulator.with(message, command: "continue"), "Ended"])

        let blocks = try list(home)
        let block = try #require(blocks.first)
        #expect(blocks.count == 1)
        #expect(block["target"] as? String == "203.0.113.9")
        #expect(block["source"] as? String == "wazuh")
        #expect(block["reason"] as? String == "wazuh rule 5710: sshd: Attempt to login using a non-existent user")
        let remaining = try #require(block["remainingSeconds"] as? Double)
        #expect(remaining > 95 && remaining <= 100.1, "--for 100s from extra_args sets the block's own expiry")

        let record = try #require(try incidents(home).last)
        #expect(record["action"] as? String == "block")
        let wazuh = try #require(record["wazuh"] as? [String: Any])
        #expect(wazuh["ruleId"] as? String == "5710")
        #expect(wazuh["ruleDescription"] as? String == "sshd: Attempt to login using a non-existent user")
        #expect(wazuh["agentId"] as? String == "001")
        #expect(wazuh["alertId"] as? String == "1795849766.1234")
    }

    @Test func addWithAbortChangesNothing() throws {
        let home = try WazuhHome()
        let exchange = try ExecdEmulator(home: home).run(Messages.add("203.0.113.10"), reply: .abort)
        #expect(exchange.status == 0)
        #expect(exchange.output.count == 1)
        #expect(try home.logMessages().last == "Aborted")
        #expect(try list(home).isEmpty)
    }

    @Test func aBadReplyIsLoggedAndNothingIsBlocked() throws {
        let home = try WazuhHome()
        let exchange = try ExecdEmulator(home: home).run(Messages.add("203.0.113.11"), reply: .raw(#"{"command":"maybe"}"#))
        #expect(exchange.status == 255)
        #expect(try home.logMessages().last == "Invalid value of 'command'")
        #expect(try list(home).isEmpty)
    }

    @Test func deleteUnblocksAndUnknownDeletesSucceed() throws {
        let home = try WazuhHome()
        let emulator = ExecdEmulator(home: home)
        // Nothing ever blocked, not even state: still a success.
        let early = try emulator.run(Messages.delete("203.0.113.12"), withStdout: false)
        #expect(early.status == 0)
        #expect(try emulator.run(Messages.add("203.0.113.12")).status == 0)
        #expect(try list(home).count == 1)

        let before = home.logLines.count
        let delete = try emulator.run(Messages.delete("203.0.113.12"), withStdout: false)
        #expect(delete.status == 0)
        #expect(try home.logMessages().dropFirst(before) == ["Starting", Messages.delete("203.0.113.12"), "Ended"])
        #expect(try list(home).isEmpty)
        let record = try #require(try incidents(home).last)
        #expect(record["action"] as? String == "unblock")
        #expect((record["wazuh"] as? [String: Any])?["command"] as? String == "delete")
        #expect(record["outcome"] != nil)

        #expect(try emulator.run(Messages.delete("203.0.113.12"), withStdout: false).status == 0, "deleting again succeeds")
    }

    @Test func aRateInExtraArgsThrottlesOnAddAndUnthrottlesOnDelete() throws {
        let home = try WazuhHome()
        let emulator = ExecdEmulator(home: home)
        let extra = ["--for", "100s", "--rate", "20/s", "--new-connections"]
        #expect(try emulator.run(Messages.add("203.0.113.13", extra: extra)).status == 0)
        let throttle = try #require(try list(home).first?["throttle"] as? [String: Any])
        #expect(throttle["rate"] as? Int == 20)
        #expect(throttle["newConnections"] as? Bool == true)
        #expect((try incidents(home).last?["throttle"] as? [String: Any])?["rate"] as? Int == 20)
        // A delete from the block response (no rate) leaves the throttle; the throttle's own lifts it.
        #expect(try emulator.run(Messages.delete("203.0.113.13"), withStdout: false).status == 0)
        #expect(try list(home).count == 1)
        #expect(try emulator.run(Messages.delete("203.0.113.13", extra: extra), withStdout: false).status == 0)
        #expect(try list(home).isEmpty)
        let record = try #require(try incidents(home).last)
        #expect(record["action"] as? String == "unblock")
        #expect(record["throttle"] != nil)
    }

    @Test func aDeleteNeverLiftsABlockAnotherSourceOwns() throws {
        let home = try WazuhHome()
        #expect(try Command.portcullis(["block", "203.0.113.40", "--reason", "operator"], pins: home.pins).status == 0)
        let emulator = ExecdEmulator(home: home)
        #expect(try emulator.run(Messages.add("203.0.113.40")).status == 0)
        #expect(try emulator.run(Messages.delete("203.0.113.40"), withStdout: false).status == 0)
        let block = try #require(try list(home).first)
        #expect(block["permanent"] as? Bool == true, "the operator's permanent block stays")
        #expect(block["source"] as? String == "cli")
        #expect(try home.logMessages().contains { $0.contains("Keeping the block on 203.0.113.40: it was set by cli") })
    }

    @Test func addingAnActiveAddressRefreshesIt() throws {
        let home = try WazuhHome()
        let emulator = ExecdEmulator(home: home)
        #expect(try emulator.run(Messages.add("203.0.113.13", extra: ["--for", "30s"])).status == 0)
        #expect(try emulator.run(Messages.add("203.0.113.13", extra: ["--for", "1h"])).status == 0)
        let block = try #require(try list(home).first)
        #expect((block["remainingSeconds"] as? Double ?? 0) > 3500)
        #expect(try incidents(home).map { $0["action"] as? String } == ["block", "refresh"])
    }

    @Test func withoutForTheBlockLastsUntilDelete() throws {
        let home = try WazuhHome()
        #expect(try ExecdEmulator(home: home).run(Messages.add("203.0.113.14", extra: [])).status == 0)
        #expect(try list(home).first?["permanent"] as? Bool == true)
    }

    @Test func ipv6AndMappedAddresses() throws {
        let home = try WazuhHome()
        let emulator = ExecdEmulator(home: home)
        #expect(try emulator.run(Messages.add("2001:db8::bad")).status == 0)
        let mapped = try emulator.run(Messages.add("::ffff:198.51.100.77"))
        #expect(mapped.status == 0)
        #expect(mapped.output.first?.contains(#""keys":["198.51.100.77"]"#) == true, "\(mapped)")
        #expect(Set(try list(home).compactMap { $0["target"] as? String }) == ["2001:db8::bad", "198.51.100.77"])
    }

    @Test func allowlistedAddressesAreRefusedBeforeTheHandshake() throws {
        let home = try WazuhHome()
        #expect(try Command.portcullis(["allow", "192.0.2.0/24"], pins: home.pins).status == 0)
        let exchange = try ExecdEmulator(home: home).run(Messages.add("192.0.2.50"))
        #expect(exchange.status == 255)
        #expect(exchange.output.isEmpty, "no check_keys, so execd schedules no delete")
        #expect(try home.logMessages().last?.contains("allowlisted") == true)
        #expect(try list(home).isEmpty)
        #expect(try incidents(home).last?["action"] as? String == "refuse")
    }

    @Test func wazuh5Dialect() throws {
        let home = try WazuhHome()
        let enable = #"{"wazuh":{"active_response":{"name":"block-ip","extra_arguments":"--for 60s"},"agent":{"id":"002","name":"db"},"rule":{"id":"5710","description":"sshd: invalid user"}},"source":{"ip":"203.0.113.15"},"command":"enable"}"#
        let emulator = ExecdEmulator(home: home)
        #expect(try emulator.run(enable).status == 0)
        let block = try #require(try list(home).first)
        #expect(block["target"] as? String == "203.0.113.15")
        #expect((block["remainingSeconds"] as? Double ?? 0) > 55)
        let disable = enable.replacing(#""command":"enable""#, with: #""command":"disable""#)
        #expect(try emulator.run(disable, withStdout: false).status == 0)
        #expect(try list(home).isEmpty)
    }

    @Test func messagesUpTo64KiBAreAccepted() throws {
        let home = try WazuhHome()
        var message = Messages.add("203.0.113.16")
        message = message.replacing("Invalid user admin", with: String(repeating: "A", count: 65_000 - message.utf8.count))
        #expect(message.utf8.count <= 65_000)
        #expect(try ExecdEmulator(home: home).run(message).status == 0)
        #expect(try list(home).count == 1)
    }

    @Test func concurrentActiveResponsesAreSafe() throws {
        let home = try WazuhHome()
        // Create the state first, so the concurrent processes race on blocks, not on loading.
        #expect(try Command.portcullis(["allow", "192.0.2.1"], pins: home.pins).status == 0)
        let addresses = (1...24).map { "198.51.100.\($0 + 100)" } + Array(repeating: "198.51.100.200", count: 8)
        let statuses = Mutex([Int32]())
        DispatchQueue.concurrentPerform(iterations: addresses.count) { index in
            let status = (try? ExecdEmulator(home: home).run(Messages.add(addresses[index])).status) ?? -1
            statuses.withLock { $0.append(status) }
        }
        #expect(statuses.withLock { $0 } == Array(repeating: 0, count: addresses.count))
        #expect(try list(home).count == 25)
        let records = try incidents(home)
        #expect(records.filter { $0["action"] as? String == "block" }.count == 25)
        #expect(records.filter { $0["action"] as? String == "refresh" }.count == 7)
    }
}

/// In the lab: traffic from the alert's address stops after add and resumes after delete.
@Suite(.enabled(if: Privileges.canRunLab, Privileges.labReason))
struct WazuhLabTests {
    @Test func trafficStopsAfterAddAndResumesAfterDelete() throws {
        let lab = try Lab()
        let home = try WazuhHome(pins: lab.pins)
        try #require(try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--mode", "native"]).status == 0)
        #expect(try lab.pingsAnswered() == 3)
        let emulator = ExecdEmulator(home: home)
        #expect(try emulator.run(Messages.add(Lab.attackerV4)).status == 0)
        #expect(try lab.pingsAnswered() == 0)
        #expect(try lab.pingsAnswered(from: Lab.otherV4) == 3)
        #expect(try emulator.run(Messages.delete(Lab.attackerV4), withStdout: false).status == 0)
        #expect(try lab.pingsAnswered() == 3)
    }
}
