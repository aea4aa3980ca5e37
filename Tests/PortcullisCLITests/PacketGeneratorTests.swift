import Foundation
import Testing

/// tools/pktgen.py: live XDP frames out of a lab interface, counted by Portcullis on the other side.
@Suite(.enabled(if: Privileges.canRunLab && FileManager.default.isExecutableFile(atPath: "/usr/sbin/bpftool"),
                "needs root, bpffs, iproute2 and bpftool (run as root; CI does)"))
struct PacketGeneratorTests {
    static var generator: String { Command.repositoryRoot.appendingPathComponent("tools/pktgen.py").path }

    func generate(_ arguments: [String]) throws -> Result {
        try Command.run("/usr/bin/env", ["python3", Self.generator] + arguments, timeout: 60)
    }

    @Test func everyFrameSentFromABlockedSourceIsDroppedByPortcullis() throws {
        try FloodLock.holding { try everyFrameSentFromABlockedSourceIsDropped() }
    }

    private func everyFrameSentFromABlockedSourceIsDropped() throws {
        let lab = try Lab()
        try #require(try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--mode", "native"]).status == 0)
        try #require(try lab.portcullis(["block", "198.51.100.0/25"]).status == 0)
        // The bastion's MAC from its namespace, so no resolving ping adds to the counts.
        let link = try Command.run("/usr/sbin/ip", ["-n", lab.bastionNamespace, "-j", "link", "show", "dev", lab.bastionInterface])
        let mac = try #require((try decodeJSON(link.stdout) as? [[String: Any]])?.first?["address"] as? String)
        let sent = try generate(["--netns", lab.attackerNamespace, "--interface", "\(lab.name)-a", "--src", "198.51.100.10",
                                 "--spread", "100", "--random", "--dst-mac", mac, "--count", "200000", "--duration", "20", "--json"])
        try #require(sent.status == 0, "\(sent)")
        let result = try #require(try decodeJSON(sent.stdout) as? [String: Any])
        #expect(result["sent"] as? Int == 200_000)
        let stats = try #require(try decodeJSON(try lab.portcullis(["stats", "--json"]).stdout) as? [String: Any])
        // Every generated frame that reached the bastion's XDP program was dropped; what passed is
        // the namespaces' own few frames (IPv6 neighbour and router discovery). On a busy 2-core
        // machine the receiving veth's ring can overflow before XDP runs, so those frames never
        // arrive: arrival is held to 90% of what was sent.
        let dropped = try #require(stats["dropped"] as? Int, "\(stats)")
        #expect(dropped >= 180_000 && dropped <= 200_000, "\(stats)")
        #expect((stats["passed"] as? Int ?? .max) < 20, "\(stats)")
        // Random sources from a spread of 100: the prefix block caught every one of them.
        #expect(try lab.portcullis(["list", "--json"]).stdout.contains("\"droppedPackets\" : \(dropped)"))
    }

    @Test func aGeneratorPinnedToACoreLoadsThatCoresQueue() throws {
        try FloodLock.holding { try aPinnedGeneratorLoadsItsCoresQueue() }
    }

    private func aPinnedGeneratorLoadsItsCoresQueue() throws {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let lab = try Lab()
        try #require(try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--mode", "native"]).status == 0)
        try #require(try lab.portcullis(["block", "198.51.100.2"]).status == 0)
        let link = try Command.run("/usr/sbin/ip", ["-n", lab.bastionNamespace, "-j", "link", "show", "dev", lab.bastionInterface])
        let mac = try #require((try decodeJSON(link.stdout) as? [[String: Any]])?.first?["address"] as? String)
        // veth's own per-queue counters of what XDP dropped, independent of the program that dropped it.
        func queueDrops() throws -> [Int: Int] {
            let out = try Command.run("/usr/bin/nsenter", ["--net=/run/netns/\(lab.bastionNamespace)", "ethtool", "-S", lab.bastionInterface])
            var drops: [Int: Int] = [:]
            for line in out.stdout.split(separator: "\n") {
                let parts = line.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2, parts[0].hasPrefix("rx_queue_"), parts[0].hasSuffix("_xdp_drops"),
                      let queue = Int(parts[0].dropFirst("rx_queue_".count).dropLast("_xdp_drops".count)),
                      let count = Int(parts[1]) else { continue }
                drops[queue] = count
            }
            return drops
        }
        let queues = try queueDrops()
        #expect(queues.count == min(cores, 8), "a queue per core: \(queues)")
        for core in 0..<min(cores, 2) {
            let before = try queueDrops()
            let sent = try generate(["--netns", lab.attackerNamespace, "--interface", "\(lab.name)-a", "--src", "198.51.100.2",
                                     "--dst-mac", mac, "--cpu", "\(core)", "--count", "50000", "--duration", "20", "--json"])
            try #require(sent.status == 0, "\(sent)")
            let after = try queueDrops()
            let grown = Dictionary(uniqueKeysWithValues: after.map { ($0.key, $0.value - (before[$0.key] ?? 0)) })
            #expect((grown[core] ?? 0) >= 45_000, "core \(core) sent to queue \(core): \(grown)")
            #expect(grown.filter { $0.key != core }.values.allSatisfy { $0 < 100 }, "only queue \(core) grew: \(grown)")
        }
    }

    @Test func itRefusesAnythingButALabNamespaceAndDocumentationAddresses() throws {
        let lab = try Lab()
        let refusals: [([String], String)] = [
            (["--netns", "no-such-namespace", "--interface", "x", "--src", "198.51.100.2"], "no network namespace"),
            (["--netns", lab.attackerNamespace, "--interface", "\(lab.name)-a", "--src", "10.0.0.1"], "not a documentation address"),
            (["--netns", lab.attackerNamespace, "--interface", "\(lab.name)-a", "--src", "198.51.100.2", "--dst", "8.8.8.8"], "not a documentation address"),
            (["--netns", lab.attackerNamespace, "--interface", "\(lab.name)-a", "--src", "198.51.100.250", "--spread", "100"], "runs past"),
            (["--netns", lab.attackerNamespace, "--interface", "eth0", "--src", "198.51.100.2"], "no interface"),
            (["--netns", lab.attackerNamespace, "--interface", "\(lab.name)-a", "--src", "198.51.100.2", "--cpu", "4096"], "not one of the cores"),
        ]
        for (arguments, message) in refusals {
            let result = try generate(arguments + ["--count", "10"])
            #expect(result.status != 0, "\(arguments)")
            #expect(result.stderr.contains(message), "\(arguments): \(result)")
        }
    }
}
