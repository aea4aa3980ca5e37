import Foundation
import Glibc
import Testing

/// Requests carry a deadline: a client that gave up is never overtaken by a daemon that
/// wakes up later, and the Wazuh response still blocks when the daemon does not answer.
@Suite(.enabled(if: Privileges.canUseBPF && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"),
                "needs root, bpffs and curl (run as root; CI does)"))
struct DeadlineTests {
    @Test func theDaemonDropsARequestWhoseDeadlinePassed() throws {
        let daemon = DaemonFixture()
        try daemon.write()
        try daemon.start()
        let past = Int64(Date().timeIntervalSince1970 * 1000) - 1000
        let result = try Command.run("/usr/bin/curl", [
            "-s", "-w", "\n%{http_code}", "--unix-socket", daemon.socket, "-X", "POST",
            "-H", "Portcullis-Deadline: \(past)", "--data-binary", #"{"target":"203.0.113.77"}"#,
            "http://portcullis/v1/blocks",
        ])
        #expect(result.stdout.hasSuffix("\n408"), "\(result)")
        #expect(result.stdout.contains("deadline passed"), "\(result)")
        let blocks = try daemon.api("GET", "/v1/blocks?limit=0")
        #expect(!blocks.body.contains("203.0.113.77"), "\(blocks)")
    }

    @Test func aWazuhAddBlocksWhenTheDaemonDoesNotAnswer() throws {
        let daemon = DaemonFixture()
        try daemon.write()
        try daemon.start()
        let home = try WazuhHome(pins: daemon.pins, controlSocket: daemon.socket)
        daemon.signal(SIGSTOP)
        defer { daemon.signal(SIGCONT) }
        let started = Date()
        let exchange = try ExecdEmulator(home: home).run(Messages.add("203.0.113.78"), timeout: 20)
        let took = Date().timeIntervalSince(started)
        #expect(exchange.status == 0, "\(exchange)")
        #expect(took < 9, "took \(took) s: the response waited for a stopped daemon")
        // Straight from the maps, with no daemon in the way.
        let listed = try Command.portcullis(["list", "--json"], pins: daemon.pins)
        #expect(listed.stdout.contains(#""target" : "203.0.113.78""#), "\(listed)")

        daemon.signal(SIGCONT)
        Thread.sleep(forTimeInterval: 1)
        let (_, output) = try daemon.stop()
        // The requests the response gave up on reached the daemon late and were dropped.
        #expect(output.contains("its client gave up"), "\(output)")
        let record = (try? String(contentsOfFile: daemon.incidentLog, encoding: .utf8)) ?? ""
        #expect(!record.contains("203.0.113.78"), "the daemon carried out a request its client had given up on: \(record)")
    }

    @Test func aCheckKeysAnswerThatNeverComesEndsTheResponse() throws {
        let home = try WazuhHome()
        let started = Date()
        let exchange = try ExecdEmulator(home: home).run(Messages.add("203.0.113.79"), reply: .none, closeStdin: false, timeout: 20)
        #expect(exchange.status == 255, "\(exchange)")
        #expect(Date().timeIntervalSince(started) < 15)
        #expect(try home.logMessages().last == "No answer to check_keys within 10s; nothing was blocked")
        let listed = try Command.portcullis(["list", "--json"], pins: home.pins)
        #expect(!listed.stdout.contains("203.0.113.79"), "\(listed)")
    }
}
