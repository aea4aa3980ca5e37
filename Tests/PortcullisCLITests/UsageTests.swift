import Foundation
import Testing

/// Usage errors: exit status 2, one line on stderr naming the problem, nothing
/// on stdout, and nothing changed (the pin directory is never even created).
@Suite struct UsageTests {
    static let badInvocations: [[String]] = [
        ["block", "127.1"],
        ["block", "010.0.0.1"],
        ["block", "0x7f.0.0.1"],
        ["block", "198.51.100.7/33"],
        ["block", "fe80::1%eth0"],
        ["block", "203.0.113.9", "--for", "10x"],
        ["block", "203.0.113.9", "--for", "0s"],
        ["block", "127.0.0.1"],
        ["block", "::1", "--for", "1h"],
        ["block", "0.0.0.0/0"],
        ["block"],
        ["block", "203.0.113.9", "--file", "/dev/null"],
        ["block", "203.0.113.9", "--capacity", "0"],
        ["block", "203.0.113.9", "--reason", String(repeating: "x", count: 1100)],
        ["unblock", "not-an-address"],
        ["throttle", "203.0.113.9"],
        ["throttle", "203.0.113.9", "--rate", "fast"],
        ["throttle", "203.0.113.9", "--rate", "0/s"],
        ["throttle", "203.0.113.9", "--rate", "20000000/s"],
        ["throttle", "203.0.113.9", "--rate", "10/s", "--burst", "0"],
        ["throttle", "127.0.0.1", "--rate", "10/s"],
        ["throttle", "--rate", "10/s"],
        ["unthrottle", "not-an-address"],
        ["wazuh", "install", "--burst", "5"],
        ["attach"],
        ["attach", "eth0", "--mode", "turbo"],
        ["attach", "eth0", "--priority", "20"],
        ["attach", "eth0", "--cooperative", "--priority", "-1"],
        ["allow"],
        ["allow", "192.0.2.1", "--list"],
        ["purge"],
        ["frobnicate"],
        ["list", "--bogus"],
        ["fail2ban", "ban", "a b", "203.0.113.9", "--time", "1767225600", "--bantime", "600"],
        ["fail2ban", "ban", "sshd", "203.0.113.9", "--time", "1767225600", "--bantime", "0"],
        ["fail2ban", "ban", "sshd", "203.0.113.9", "--time", "1767225600", "--bantime", "600", "--restored", "2"],
        ["fail2ban", "ban", "sshd", "127.0.0.1", "--time", "1767225600", "--bantime", "600"],
        ["fail2ban", "ban", "sshd", "203.0.113.9", "--bantime", "600"],
        ["fail2ban", "unban", "sshd", "not-an-address"],
        ["fail2ban", "flush", "../etc"],
        ["sshguard", "backend", "--safety-expiry", "0s"],
        ["list", "--source", "iptables"],
    ]

    @Test(arguments: badInvocations)
    func usageErrorsExitTwoWithOneLineAndChangeNothing(arguments: [String]) throws {
        let pins = "/tmp/portcullis-usage-\(UUID().uuidString.prefix(8))"
        let result = try Command.portcullis(arguments, pins: pins)
        #expect(result.status == 2, "\(arguments): \(result)")
        #expect(result.stderrLines.count == 1, "\(arguments): \(result)")
        #expect(result.stderr.hasPrefix("portcullis: "), "\(arguments): \(result)")
        #expect(result.stdout.isEmpty, "\(arguments): \(result)")
        #expect(!FileManager.default.fileExists(atPath: pins))
    }

    @Test func addressErrorsNameTheInputAndTheRule() throws {
        let result = try Command.portcullis(["block", "127.1"], pins: "/tmp/portcullis-usage-never")
        #expect(result.stderr.contains("'127.1'"))
        #expect(result.stderr.contains("four decimal octets"))
        let loopback = try Command.portcullis(["block", "127.0.0.1"], pins: "/tmp/portcullis-usage-never")
        #expect(loopback.stderr.contains("loopback"))
    }

    @Test func badLineInABlockFileIsNamedAndNothingIsBlocked() throws {
        let pins = "/tmp/portcullis-usage-\(UUID().uuidString.prefix(8))"
        let input = "203.0.113.1\n203.0.113.2 10m\n203.0.113.300\n"
        let result = try Command.portcullis(["block", "--file", "-"], pins: pins, input: input)
        #expect(result.status == 2, "\(result)")
        #expect(result.stderr.contains("line 3"), "\(result)")
        #expect(result.stderrLines.count == 1)
        #expect(!FileManager.default.fileExists(atPath: pins))
    }

    static let commands = ["attach", "detach", "block", "unblock", "allow", "disallow", "list", "stats", "sweep", "status", "purge",
                           "fail2ban", "sshguard"]

    /// sshguard's backend runs for sshguard's lifetime: a line it cannot carry out is one line on
    /// stderr, and it goes on, changing nothing.
    @Test func theSshguardBackendReportsBadLinesAndGoesOn() throws {
        let pins = "/tmp/portcullis-usage-\(UUID().uuidString.prefix(8))"
        let input = "hello\nblock 127.1 4 32\nblock 203.0.113.9 6 32\nrelease 203.0.113.9 4\n\n"
        let result = try Command.portcullis(["sshguard", "backend"], pins: pins, input: input)
        #expect(result.status == 0, "\(result)")
        #expect(result.stderrLines.count == 4, "\(result)")
        #expect(result.stderrLines.allSatisfy { $0.hasPrefix("sshg-fw-portcullis: ") && $0.hasSuffix("; ignored") }, "\(result)")
        #expect(!FileManager.default.fileExists(atPath: pins))
    }

    @Test(arguments: commands)
    func everyCommandHasHelpWithAnExample(command: String) throws {
        let result = try Command.portcullis([command, "--help"], pins: "/tmp/portcullis-usage-never")
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.contains("USAGE: portcullis \(command)"), "\(result)")
        #expect(result.stdout.contains("Example"), "\(command) --help has no example")
    }

    @Test func topLevelHelpListsEveryCommand() throws {
        let result = try Command.portcullis(["--help"], pins: "/tmp/portcullis-usage-never")
        #expect(result.status == 0)
        for command in Self.commands { #expect(result.stdout.contains("  \(command)"), "\(command) missing from help") }
    }
}

/// Environments Portcullis cannot work in give one clear line and exit 1.
@Suite struct EnvironmentErrorTests {
    @Test(.enabled(if: Privileges.isRoot, "checks the bpffs test as root, where only the filesystem can be wrong"))
    func pinDirectoryOutsideBPFFSIsAClearError() throws {
        let pins = "/tmp/portcullis-not-bpffs-\(UUID().uuidString.prefix(8))"
        let result = try Command.portcullis(["block", "192.0.2.1"], pins: pins)
        #expect(result.status == 1, "\(result)")
        #expect(result.stderrLines.count == 1)
        #expect(result.stderr.contains("not on a BPF filesystem"), "\(result)")
        #expect(!FileManager.default.fileExists(atPath: pins))
    }

    @Test(.enabled(if: Privileges.canUseBPF && FileManager.default.isExecutableFile(atPath: "/usr/sbin/runuser"),
                   "needs root to run the binary as an unprivileged user"))
    func unprivilegedUserIsToldToRunAsRoot() throws {
        let pins = "/sys/fs/bpf/portcullis-test-nobody-\(UUID().uuidString.prefix(6).lowercased())"
        defer {
            _ = try? Command.portcullis(["purge", "--yes"], pins: pins)
            try? FileManager.default.removeItem(atPath: Command.incidentLog(pins: pins))
        }
        let created = try Command.portcullis(["block", "192.0.2.1", "--for", "1m"], pins: pins)
        try #require(created.status == 0, "\(created)")
        // runuser drops to nobody; the binary must be reachable by it, which .build under /work is.
        for arguments in [["block", "192.0.2.2"], ["list"], ["unblock", "192.0.2.1"], ["status"]] {
            let result = try Command.run(
                "/usr/sbin/runuser", ["-u", "nobody", "--", Command.portcullis] + arguments,
                environment: Command.environment(pins: pins))
            #expect(result.status == 1, "\(arguments) as nobody must fail, not pass as an empty blocklist: \(result)")
            #expect(result.stderrLines.count == 1, "\(result)")
            #expect(result.stderr.contains("run as root"), "\(result)")
        }
        let list = try Command.portcullis(["list", "--json"], pins: pins)
        #expect(list.stdout.contains("192.0.2.1") && !list.stdout.contains("192.0.2.2"), "\(list)")
    }
}
