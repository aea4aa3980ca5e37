import Foundation
import Testing

/// Portcullis beside another XDP program on the same interface: xdp-filter from Debian's
/// xdp-tools, which attaches through libxdp, denying the lab's second attacker address while
/// Portcullis blocks the first.
@Suite(.enabled(if: Privileges.canRunLab && XDPFilter.isInstalled, "needs the netns lab and xdp-filter (apt-get install xdp-tools; tools/setup.sh does)"))
struct SharingLabTests {
    @Test func besideXDPFilterExclusiveRefusesAndCooperativeShares() throws {
        let lab = try Lab()
        let filter = try XDPFilter(lab: lab)
        defer { filter.remove() }
        try filter.load()
        try filter.deny(Lab.otherV4)
        #expect(try lab.pingsAnswered(from: Lab.otherV4) == 0, "xdp-filter must drop the address it denies")
        #expect(try lab.pingsAnswered() == 3)
        let filterLine = try #require(try lab.xdpOnBastion(), "xdp-filter attached nothing")

        let blocked = try lab.portcullis(["block", Lab.attackerV4, "--for", "10m"])
        try #require(blocked.status == 0, "\(blocked)")
        let shared = try filter.usesDispatcher()

        // Exclusive (the default) names the program it finds and changes nothing.
        for mode in ["native", "auto"] {
            let refused = try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--mode", mode])
            #expect(refused.status == 1, "\(mode): \(refused)")
            #expect(refused.stderrLines.count == 1, "\(mode): \(refused)")
            #expect(refused.stderr.contains("never replaces"), "\(mode): \(refused)")
            #expect(refused.stderr.contains(shared ? "xdp_dispatcher" : "xdpfilt_"), "\(mode): \(refused)")
        }
        #expect(try lab.xdpOnBastion() == filterLine, "a refused attach changed the interface")
        #expect(try lab.pingsAnswered(from: Lab.otherV4) == 0)
        #expect(try lab.pingsAnswered() == 3, "Portcullis enforces nowhere yet")

        if shared {
            try sharesTheDispatcher(lab, filter)
        } else {
            try refusesWithoutADispatcher(lab, filter, filterLine: filterLine)
        }
    }

    /// A kernel that runs libxdp's dispatcher: both filters drop what they should, Portcullis
    /// first; detach takes only Portcullis off; xdp-filter leaving keeps Portcullis running.
    private func sharesTheDispatcher(_ lab: Lab, _ filter: XDPFilter) throws {
        let attach = try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--cooperative", "--json"])
        try #require(attach.status == 0, "\(attach)")
        let record = try #require(try decodeJSON(attach.stdout) as? [String: Any])
        #expect(record["sharing"] as? String == "cooperative")
        #expect(record["priority"] as? Int == 10)
        #expect(try lab.pingsAnswered() == 0, "Portcullis's block must drop in the dispatcher")
        #expect(try lab.pingsAnswered(from: Lab.otherV4) == 0, "xdp-filter must still drop after Portcullis joined")
        let order = try filter.status()
        let ours = try #require(order.range(of: "portcullis_xdp"), "\(order)")
        let theirs = try #require(order.range(of: "xdpfilt_"), "\(order)")
        #expect(ours.lowerBound < theirs.lowerBound, "Portcullis (priority 10) must run before xdp-filter (50): \(order)")

        let again = try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--cooperative"])
        #expect(again.status == 0 && again.stdout.contains("already attached"), "\(again)")
        let status = try lab.portcullis(["status"])
        #expect(status.stdout.contains("cooperative, priority 10"), "\(status)")

        let detach = try lab.portcullis(["detach", lab.bastionInterface, "--netns", lab.bastionNamespace])
        #expect(detach.status == 0, "\(detach)")
        #expect(!(try filter.status()).contains("portcullis_xdp"))
        #expect(try lab.pingsAnswered() == 3, "detached: Portcullis no longer drops")
        #expect(try lab.pingsAnswered(from: Lab.otherV4) == 0, "detaching Portcullis must leave xdp-filter running")

        let back = try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--cooperative"])
        try #require(back.status == 0, "\(back)")
        try filter.unload()
        #expect(try lab.pingsAnswered() == 0, "xdp-filter leaving must leave Portcullis in force")
        #expect(try lab.pingsAnswered(from: Lab.otherV4) == 3)
    }

    /// A kernel that refuses freplace programs (this project's CI machine): libxdp attaches
    /// xdp-filter alone, so there is nothing to share. Cooperative mode says so and changes
    /// nothing, beside xdp-filter and on an empty interface, where libxdp would silently have
    /// attached Portcullis alone.
    private func refusesWithoutADispatcher(_ lab: Lab, _ filter: XDPFilter, filterLine: String) throws {
        print("SharingLabTests: this kernel cannot run libxdp's dispatcher (xdp-filter was attached on its own); checking that cooperative mode refuses cleanly")
        let beside = try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--cooperative"])
        #expect(beside.status == 1, "\(beside)")
        #expect(beside.stderrLines.count == 1, "\(beside)")
        #expect(beside.stderr.contains("attached on its own rather than through libxdp's dispatcher"), "\(beside)")
        #expect(try lab.xdpOnBastion() == filterLine)
        #expect(try lab.pingsAnswered(from: Lab.otherV4) == 0)

        try filter.unload()
        #expect(try lab.xdpOnBastion() == nil)
        let alone = try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--cooperative"])
        #expect(alone.status == 1, "\(alone)")
        #expect(alone.stderrLines.count == 1, "\(alone)")
        #expect(alone.stderr.contains("cannot run libxdp's dispatcher"), "\(alone)")
        #expect(alone.stderr.contains("nothing was changed"), "\(alone)")
        #expect(try lab.xdpOnBastion() == nil, "a refused cooperative attach left a program on the interface")
        let status = try #require(try decodeJSON(try lab.portcullis(["status", "--json"]).stdout) as? [String: Any])
        #expect((status["attachments"] as? [Any])?.isEmpty == true, "\(status)")
        #expect(try lab.pingsAnswered() == 3)

        // The interface is free again: exclusive mode works as ever.
        let exclusive = try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace])
        #expect(exclusive.status == 0, "\(exclusive)")
        #expect(try lab.pingsAnswered() == 0)
    }
}

/// xdp-filter on the lab's bastion interface. Its maps are pinned host-wide in
/// /sys/fs/bpf/xdp-filter (one deny list for every interface it filters), so what this adds
/// is taken out again, and the pin directories are removed only when this made them.
final class XDPFilter {
    static let binary = "/usr/sbin/xdp-filter"
    static let loader = "/usr/sbin/xdp-loader"
    static var isInstalled: Bool {
        FileManager.default.isExecutableFile(atPath: binary) && FileManager.default.isExecutableFile(atPath: loader)
    }

    private let lab: Lab
    private let madeFilterPins: Bool
    private let madeLibxdpPins: Bool
    private var denied: [String] = []
    private var loaded = false

    init(lab: Lab) throws {
        self.lab = lab
        madeFilterPins = !FileManager.default.fileExists(atPath: "/sys/fs/bpf/xdp-filter")
        madeLibxdpPins = !FileManager.default.fileExists(atPath: "/sys/fs/bpf/xdp")
    }

    private func inBastion(_ tool: String, _ arguments: [String]) throws -> Result {
        try Command.run("/usr/bin/nsenter", ["--net=/run/netns/\(lab.bastionNamespace)", tool] + arguments, timeout: 20)
    }

    func load() throws {
        let result = try inBastion(Self.binary, ["load", lab.bastionInterface, "--mode", "native"])
        try #require(result.status == 0, "xdp-filter load: \(result)")
        loaded = true
    }

    func deny(_ address: String) throws {
        let result = try inBastion(Self.binary, ["ip", address, "--mode", "src"])
        try #require(result.status == 0, "xdp-filter ip: \(result)")
        denied.append(address)
    }

    func unload() throws {
        let result = try inBastion(Self.binary, ["unload", lab.bastionInterface])
        try #require(result.status == 0, "xdp-filter unload: \(result)")
        loaded = false
    }

    /// `xdp-loader status` for the bastion's interface: the programs in order of priority.
    func status() throws -> String {
        let result = try inBastion(Self.loader, ["status", lab.bastionInterface])
        try #require(result.status == 0, "xdp-loader status: \(result)")
        return result.stdout
    }

    /// Whether libxdp put xdp-filter in its dispatcher, rather than alone on the interface.
    func usesDispatcher() throws -> Bool { try status().contains("xdp_dispatcher") }

    func remove() {
        for address in denied { _ = try? inBastion(Self.binary, ["ip", address, "--mode", "src", "--remove"]) }
        if loaded { _ = try? inBastion(Self.binary, ["unload", lab.bastionInterface]) }
        if madeFilterPins { try? FileManager.default.removeItem(atPath: "/sys/fs/bpf/xdp-filter") }
        if madeLibxdpPins { rmdir("/sys/fs/bpf/xdp") }
    }
}
