import Foundation
import Glibc
import Testing

/// Idle connections on the shared control socket, as any member of its group could open,
/// neither lock root out nor stay open for ever.
@Suite(.enabled(if: Privileges.canUseBPF && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl")
                && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"),
                "needs root, bpffs, curl and python3 (run as root; CI does)"))
struct ConnectionLimitTests {
    @Test func idleConnectionsOnTheSharedSocketNeitherBlockRootNorLinger() throws {
        let daemon = DaemonFixture()
        try daemon.write()
        try daemon.start()
        // 400 idle connections, more than the shared socket takes; kept open until told.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        holder.arguments = ["-c", """
            import socket, sys, time
            held = []
            for _ in range(400):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(0.2)
                try:
                    s.connect(sys.argv[1])
                except OSError:
                    s.close()
                    continue
                s.setblocking(False)
                held.append(s)
            print(len(held), flush=True)
            time.sleep(15)
            closed = 0
            for s in held:
                try:
                    if s.recv(1) == b"":
                        closed += 1
                except BlockingIOError:
                    pass
                except OSError:
                    closed += 1
            print(closed, flush=True)
            """, daemon.socket]
        let output = Pipe()
        holder.standardOutput = output
        try holder.run()
        defer { if holder.isRunning { holder.terminate() } }
        Thread.sleep(forTimeInterval: 2)

        let started = Date()
        let result = try Command.run(Command.portcullis, ["block", "203.0.113.90", "--for", "10m"], environment: [
            "PORTCULLIS_PIN_DIR": daemon.pins, "PORTCULLIS_CONTROL_SOCKET": daemon.socket,
            "PORTCULLIS_STATE_DIR": Command.stateDirectory(pins: daemon.pins),
            "PORTCULLIS_INCIDENT_LOG": "\(daemon.directory)/cli-incidents.jsonl",
        ])
        #expect(result.status == 0, "\(result)")
        #expect(Date().timeIntervalSince(started) < 3, "root waited behind the idle connections")
        // The daemon made the block (it is in the daemon's record, not a fallback's).
        let record = (try? String(contentsOfFile: daemon.incidentLog, encoding: .utf8)) ?? ""
        #expect(record.contains("203.0.113.90"), "the block did not go through the daemon")

        holder.waitUntilExit()
        let lines = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
        let opened = Int(lines.first ?? "") ?? 0
        let closed = Int(lines.dropFirst().first ?? "") ?? 0
        // The daemon takes 256 and the kernel queues up to its backlog; the rest are refused.
        #expect(opened >= 256, "\(lines)")
        // Those the daemon accepted were closed after 10 idle seconds.
        #expect(closed >= 200, "idle connections stayed open: \(lines)")
        #expect(try daemon.api("GET", "/v1/health").status == 200)
    }
}
