import Foundation
import Testing

/// Throttles against live floods from tools/pktgen.py in the netns lab: a flood is cut to its
/// throttle's rate, a --new-connections throttle leaves an established TCP session working
/// under a SYN flood from the same address, and other sources pass as before.
@Suite(.enabled(if: Privileges.canRunLab && FileManager.default.isExecutableFile(atPath: "/usr/sbin/bpftool"),
                "needs root, bpffs, iproute2 and bpftool (run as root; CI does)"))
struct ThrottleLabTests {
    static var generator: String { Command.repositoryRoot.appendingPathComponent("tools/pktgen.py").path }

    @Test func aFloodIsCutToTheRateAndAnEstablishedSessionSurvivesASYNFlood() throws {
        try FloodLock.holding { try floods() }
    }

    private func floods() throws {
        let lab = try Lab()
        // Only read from the threads below, which end before the lab does.
        nonisolated(unsafe) let shared = lab
        let (attackerNamespace, bastionNamespace) = (lab.attackerNamespace, lab.bastionNamespace)
        try #require(try lab.portcullis(["attach", lab.bastionInterface, "--netns", lab.bastionNamespace, "--mode", "native"]).status == 0)
        let link = try Command.run("/usr/sbin/ip", ["-n", lab.bastionNamespace, "-j", "link", "show", "dev", lab.bastionInterface])
        let mac = try #require((try decodeJSON(link.stdout) as? [[String: Any]])?.first?["address"] as? String)
        func flood(from source: String, seconds: Int, proto: String) throws -> Double {
            let sent = try Command.run("/usr/bin/env", [
                "python3", Self.generator, "--netns", lab.attackerNamespace, "--interface", "\(lab.name)-a", "--src", source,
                "--dst-mac", mac, "--proto", proto, "--count", "100000000", "--duration", String(seconds), "--json",
            ], timeout: Double(seconds) + 30)
            try #require(sent.status == 0, "\(sent)")
            let result = try #require(try decodeJSON(sent.stdout) as? [String: Any])
            return try #require(result["seconds"] as? Double)
        }
        func throttle(_ target: String) throws -> [String: Any] {
            let list = try #require(try decodeJSON(try lab.portcullis(["list", "--json"]).stdout) as? [[String: Any]])
            return try #require(list.first { $0["target"] as? String == target }, "\(list)")
        }

        // A flood from one source, throttled to 2000/s: what passes is the rate over the flood
        // (and the burst), within 10%. Another source's pings all pass meanwhile, as before.
        #expect(try lab.pingsAnswered(from: Lab.otherV4, count: 5) == 5)
        try #require(try lab.portcullis(["throttle", "198.51.100.10", "--rate", "2000/s", "--burst", "200"]).status == 0)
        nonisolated(unsafe) var answeredDuringFlood = -1
        let pings = DispatchGroup()
        DispatchQueue.global().async(group: pings) {
            usleep(300_000)
            answeredDuringFlood = (try? shared.pingsAnswered(from: Lab.otherV4, count: 10)) ?? -1
        }
        let seconds = try flood(from: "198.51.100.10", seconds: 4, proto: "udp")
        pings.wait()
        #expect(answeredDuringFlood == 10)
        let cut = try throttle("198.51.100.10")
        let passed = try #require(cut["passedPackets"] as? Int)
        let dropped = try #require(cut["droppedPackets"] as? Int)
        let expected = 2000 * seconds + 200
        #expect(abs(Double(passed) - expected) <= 0.1 * 2000 * seconds, "passed \(passed) in \(seconds) s, expected \(expected)")
        #expect(dropped > 10 * passed, "the flood was cut: \(dropped) dropped")

        // A SYN flood from the address of an established TCP session, throttled to new
        // connections only: every echo of the session comes back while its SYNs are cut.
        try #require(try lab.portcullis(["throttle", Lab.attackerV4, "--rate", "100/s", "--new-connections"]).status == 0)
        let server = """
            import socket, time
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("\(Lab.bastionV4)", 7007)); s.listen(1); s.settimeout(10)
            c, _ = s.accept(); c.settimeout(10)
            while True:
                data = c.recv(64)
                if not data: break
                c.sendall(data)
            """
        let client = """
            import socket, time
            for attempt in range(50):
                try:
                    c = socket.create_connection(("\(Lab.bastionV4)", 7007), timeout=2, source_address=("\(Lab.attackerV4)", 0)); break
                except OSError: time.sleep(0.1)
            c.settimeout(2)
            sent = echoed = 0
            end = time.monotonic() + 5
            while time.monotonic() < end:
                sent += 1
                c.sendall(b"x" * 32)
                try:
                    if len(c.recv(64)) > 0: echoed += 1
                except OSError: pass
                time.sleep(0.05)
            c.close()
            print(sent, echoed)
            """
        nonisolated(unsafe) var session: Result?
        let running = DispatchGroup()
        DispatchQueue.global().async(group: running) {
            _ = try? Command.run("/usr/sbin/ip", ["netns", "exec", bastionNamespace, "python3", "-c", server], timeout: 20)
        }
        usleep(300_000)
        DispatchQueue.global().async(group: running) {
            session = try? Command.run("/usr/sbin/ip", ["netns", "exec", attackerNamespace, "python3", "-c", client], timeout: 20)
        }
        usleep(1_000_000)
        _ = try flood(from: Lab.attackerV4, seconds: 3, proto: "tcp-syn")
        running.wait()
        let counts = try #require(session?.stdout.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
        try #require(counts.count == 2, "\(String(describing: session))")
        #expect(counts[0] > 50 && counts[1] == counts[0], "sent and echoed: \(counts)")
        let synThrottle = try throttle(Lab.attackerV4)
        #expect((synThrottle["droppedPackets"] as? Int ?? 0) > 10_000, "\(synThrottle)")
    }
}
