import Foundation
import Testing

/// End to end in the netns lab: real traffic from the attacker namespace to the
/// bastion, through a native-mode XDP attachment on the bastion's veth, driven
/// only through the portcullis binary, each step a new process.
@Suite(.enabled(if: Privileges.canRunLab, Privileges.labReason))
struct LabTests {
    @Test func blockUnblockExpireSweepAndDetachOverIPv4() throws {
        let lab = try Lab()
        #expect(try lab.pingsAnswered() == 3, "the lab must pass traffic before anything is attached")

        let attach = try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--mode", "native"])
        try #require(attach.status == 0, "\(attach)")
        #expect(attach.stdout.contains("native"))
        let xdp = try #require(try lab.xdpOnBastion(), "no XDP program on the bastion's interface")
        #expect(!xdp.contains("xdpgeneric"), "attached in generic mode: \(xdp)")
        #expect(try lab.pingsAnswered() == 3, "attaching alone must not drop anything")

        // Block: the attacker is cut off, a neighbour on the same link is not.
        let block = try lab.portcullis(["block", Lab.attackerV4, "--reason", "lab test"])
        try #require(block.status == 0, "\(block)")
        #expect(try lab.pingsAnswered() == 0)
        #expect(try lab.pingsAnswered(from: Lab.otherV4) == 3)

        // The block outlived the process that made it; a new one lists it with its drops.
        let list = try lab.portcullis(["list", "--json"])
        let blocks = try #require(try decodeJSON(list.stdout) as? [[String: Any]])
        let entry = try #require(blocks.first { $0["target"] as? String == Lab.attackerV4 })
        #expect((entry["droppedPackets"] as? Int ?? 0) >= 3)
        #expect(entry["reason"] as? String == "lab test")
        #expect(entry["permanent"] as? Bool == true)

        // Unblock: traffic flows again at once.
        #expect(try lab.portcullis(["unblock", Lab.attackerV4]).status == 0)
        #expect(try lab.pingsAnswered() == 3)

        // Expiry lifts the block by itself, before any sweep.
        #expect(try lab.portcullis(["block", Lab.attackerV4, "--for", "2s"]).status == 0)
        #expect(try lab.pingsAnswered(count: 2) == 0)
        Thread.sleep(forTimeInterval: 2.2)
        #expect(try lab.pingsAnswered() == 3, "an expired block must not drop, swept or not")
        let expired = try #require(try decodeJSON(try lab.portcullis(["list", "--json"]).stdout) as? [[String: Any]])
        #expect(expired.count == 1 && expired.first?["expired"] as? Bool == true, "\(expired)")

        // The sweep removes it and reports what it dropped.
        let sweep = try lab.portcullis(["sweep", "--json"])
        let report = try #require(try decodeJSON(sweep.stdout) as? [String: Any])
        let removed = try #require(report["removed"] as? [[String: Any]])
        #expect(removed.map { $0["target"] as? String } == [Lab.attackerV4])
        #expect((removed.first?["droppedPackets"] as? Int ?? 0) >= 2)
        #expect(try lab.portcullis(["list"]).stdout.contains("nothing is blocked"))

        let stats = try #require(try decodeJSON(try lab.portcullis(["stats", "--json"]).stdout) as? [String: Any])
        #expect((stats["dropped"] as? Int ?? 0) >= 5)
        #expect((stats["passedExpired"] as? Int ?? 0) >= 3)

        // Detach removes the program from the interface.
        let detach = try lab.portcullis(["detach", lab.bastionInterface, "--netns", lab.bastionNamespace])
        #expect(detach.status == 0, "\(detach)")
        #expect(try lab.xdpOnBastion() == nil)
        #expect(try lab.portcullis(["status"]).stdout.contains("not attached"))
    }

    @Test func ipv6AndPrefixBlocks() throws {
        let lab = try Lab()
        try #require(try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace]).status == 0)
        #expect(try lab.pingsAnswered(from: Lab.attackerV6, to: Lab.bastionV6) == 3)

        #expect(try lab.portcullis(["block", Lab.attackerV6, "--for", "1h"]).status == 0)
        #expect(try lab.pingsAnswered(from: Lab.attackerV6, to: Lab.bastionV6) == 0)
        #expect(try lab.pingsAnswered(from: Lab.otherV6, to: Lab.bastionV6) == 3)
        #expect(try lab.pingsAnswered(from: Lab.attackerV4) == 3, "an IPv6 block must not touch IPv4")

        // A prefix covering both attacker addresses, with one allowlisted inside it.
        #expect(try lab.portcullis(["block", "198.51.100.0/30"]).status == 0)
        #expect(try lab.portcullis(["allow", Lab.otherV4]).status == 0)
        #expect(try lab.pingsAnswered(from: Lab.attackerV4) == 0)
        #expect(try lab.pingsAnswered(from: Lab.otherV4) == 3)
        let refused = try lab.portcullis(["block", Lab.otherV4])
        #expect(refused.status == 1 && refused.stderr.contains("allowlisted"), "\(refused)")

        #expect(try lab.portcullis(["unblock", "198.51.100.0/30"]).status == 0)
        #expect(try lab.pingsAnswered(from: Lab.attackerV4) == 3)
    }

    @Test func attachmentOutlivesTheProcessAndIsReportedByStatus() throws {
        let lab = try Lab()
        let first = try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--json"])
        try #require(first.status == 0, "\(first)")
        let again = try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--json"])
        #expect(again.status == 0)
        let firstJSON = try #require(try decodeJSON(first.stdout) as? [String: Any])
        let againJSON = try #require(try decodeJSON(again.stdout) as? [String: Any])
        #expect(againJSON["alreadyAttached"] as? Bool == true)
        #expect(firstJSON["programId"] as? Int == againJSON["programId"] as? Int, "a second attach must reuse the pinned program")

        let status = try #require(try decodeJSON(try lab.portcullis(["status", "--json", "--netns", lab.bastionNamespace]).stdout) as? [String: Any])
        let attachments = try #require(status["attachments"] as? [[String: Any]])
        #expect(attachments.count == 1)
        #expect(attachments.first?["mode"] as? String == "native")
        #expect(attachments.first?["active"] as? Bool == true)

        // Removing the interface's namespace leaves a defunct link that detach clears.
        _ = try Command.run("/usr/sbin/ip", ["netns", "del", lab.bastionNamespace])
        Thread.sleep(forTimeInterval: 0.3)
        let after = try #require(try decodeJSON(try lab.portcullis(["status", "--json"]).stdout) as? [String: Any])
        #expect((after["attachments"] as? [[String: Any]])?.first?["active"] as? Bool == false)
        #expect(try lab.portcullis(["detach", lab.bastionInterface, "--netns", lab.bastionNamespace]).status == 0)
    }

    /// Exclusive mode never replaces another XDP program: a second Portcullis state (to it,
    /// a program it does not manage) is refused with the program's name and id, and nothing changes.
    @Test func anotherXDPProgramIsNamedAndNeverReplaced() throws {
        let lab = try Lab()
        let first = try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--json"])
        try #require(first.status == 0, "\(first)")
        let programID = try #require((try decodeJSON(first.stdout) as? [String: Any])?["programId"] as? Int)
        let otherPins = lab.pins + "-other"
        defer { _ = try? Command.portcullis(["purge", "--yes"], pins: otherPins) }
        for mode in ["native", "generic", "auto"] {
            let refused = try Command.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--mode", mode], pins: otherPins)
            #expect(refused.status == 1, "\(mode): \(refused)")
            #expect(refused.stderr.contains("portcullis_xdp, id \(programID)"), "\(mode): \(refused)")
            #expect(refused.stderr.contains("never replaces"), "\(mode): \(refused)")
            #expect(refused.stderrLines.count == 1, "\(mode): \(refused)")
        }
        #expect(try lab.xdpOnBastion()?.contains("id \(programID)") == true)
        #expect(try lab.pingsAnswered() == 3)
    }
}
