import Foundation
import Glibc
import PortcullisCore
import Testing
@testable import PortcullisIncidents

@Suite struct HardeningTests {
    @Test func tornLastLineIsCutOffByTheNextRecord() throws {
        let scratch = Scratch()
        for n in 1...3 { try scratch.log.append(Scratch.incident(n)) }
        let whole = scratch.bytes()
        let torn = Array(scratch.lines()[1].utf8.prefix(40))
        FileManager.default.createFile(atPath: scratch.logPath, contents: Data(whole + torn))
        // Readers survive it.
        #expect(try scratch.log.read().count == 3)
        let before = try scratch.log.verify()
        #expect(before.intact && before.interruptedWrite?.line == 4, "\(before.summary)")
        #expect(before.summary.contains("line 4 of \(scratch.logPath) is an interrupted write"))
        try scratch.log.append(Scratch.incident(4))
        let lines = scratch.lines()
        #expect(lines.count == 4)
        let kept = Array(scratch.bytes().prefix(whole.count)) == whole
        #expect(kept, "the whole records before the torn line were changed")
        let records = try scratch.log.read()
        #expect(records.last?.sequence == 4 && records.last?.previous == records[2].hash)
        let after = try scratch.log.verify()
        #expect(after.intact && after.chained == 4 && after.interruptedWrite == nil, "\(after.summary)")
    }

    @Test func aDirectoryThatCannotBeMadeIsNamed() throws {
        let scratch = Scratch()
        try #require(FileManager.default.createFile(atPath: scratch.directory + "/file", contents: Data()))
        let path = scratch.directory + "/file/log/incidents.jsonl"
        let log = IncidentLog(path: path, stateDirectory: scratch.stateDirectory)
        let error = #expect(throws: IncidentLogError.self) { try log.append(Scratch.incident(1)) }
        #expect(error?.description == "cannot create the directory \(scratch.directory)/file/log for the incident log \(path): \(String(cString: strerror(ENOTDIR))); create it, or give another path")
    }

    @Test func symbolicLinkIsRefused() throws {
        let scratch = Scratch()
        let real = scratch.directory + "/real.jsonl"
        FileManager.default.createFile(atPath: real, contents: Data())
        #expect(symlink(real, scratch.logPath) == 0)
        let error = #expect(throws: IncidentLogError.self) { try scratch.log.append(Scratch.incident(1)) }
        #expect(error?.description == "refusing the incident log \(scratch.logPath): it is a symbolic link; replace it with a regular file, or give the real path")
        #expect(throws: IncidentLogError.self) { try scratch.log.read() }
        #expect(throws: IncidentLogError.self) { try scratch.log.verify() }
        #expect(scratch.bytes(real).isEmpty)
        // A dangling link is not followed to create a file either.
        unlink(real)
        #expect(throws: IncidentLogError.self) { try scratch.log.append(Scratch.incident(1)) }
        #expect(access(real, F_OK) != 0)
    }

    @Test(.timeLimit(.minutes(1))) func fifoIsRefusedWithoutHanging() throws {
        let scratch = Scratch()
        #expect(mkfifo(scratch.logPath, 0o640) == 0)
        let error = #expect(throws: IncidentLogError.self) { try scratch.log.append(Scratch.incident(1)) }
        #expect(error?.description == "refusing the incident log \(scratch.logPath): it is a FIFO, not a regular file; move it away, or give another path")
        #expect(throws: IncidentLogError.self) { try scratch.log.read() }
        #expect(throws: IncidentLogError.self) { try scratch.log.verify() }
    }

    @Test func directoryIsRefused() throws {
        let scratch = Scratch()
        #expect(mkdir(scratch.logPath, 0o750) == 0)
        #expect(throws: IncidentLogError.self) { try scratch.log.append(Scratch.incident(1)) }
        #expect(throws: IncidentLogError.self) { try scratch.log.read() }
    }

    @Test func fileOfAnotherOwnerIsRefused() throws {
        guard geteuid() == 0 else {
            print("skipped: changing a file's owner needs root")
            return
        }
        let scratch = Scratch()
        try scratch.log.append(Scratch.incident(1))
        #expect(chown(scratch.logPath, 4242, 4242) == 0)
        let error = #expect(throws: IncidentLogError.self) { try scratch.log.append(Scratch.incident(2)) }
        #expect(error?.description.contains("it is owned by uid 4242, not root; check who wrote it, then chown root") == true)
        #expect(throws: IncidentLogError.self) { try scratch.log.read() }
        #expect(scratch.lines().count == 1)
    }

    /// A filesystem with about 120 bytes left: a long record fails whole, and the file is as it was.
    @Test func fullFilesystemLeavesNoPartialRecord() throws {
        guard geteuid() == 0 else {
            print("skipped: mounting a small tmpfs needs root")
            return
        }
        let scratch = Scratch()
        let mountPoint = scratch.directory + "/small"
        #expect(mkdir(mountPoint, 0o700) == 0)
        guard mount("tmpfs", mountPoint, "tmpfs", 0, "size=8k,mode=0700") == 0 else {
            Issue.record("cannot mount a tmpfs at \(mountPoint): \(String(cString: strerror(errno)))")
            return
        }
        defer { umount2(mountPoint, Int32(MNT_DETACH)) }
        // The key lives elsewhere; the log and a filler share the 8 KiB.
        let log = IncidentLog(path: mountPoint + "/incidents.jsonl", stateDirectory: scratch.stateDirectory)
        let sizing = IncidentLog(path: scratch.directory + "/sizing.jsonl", stateDirectory: scratch.stateDirectory)
        try sizing.append(Scratch.incident(1, reason: "x"))
        let oneByteReason = scratch.bytes(sizing.path).count
        // First record: 4096 - 120 bytes, so its page has 120 bytes left.
        try log.append(Scratch.incident(1, reason: String(repeating: "x", count: 4096 - 120 - oneByteReason + 1)))
        #expect(scratch.bytes(log.path).count == 4096 - 120)
        // The filler takes every other page.
        let filler = open(mountPoint + "/filler", O_WRONLY | O_CREAT, 0o600)
        #expect(filler >= 0)
        let page = [UInt8](repeating: 0, count: 4096)
        while page.withUnsafeBytes({ write(filler, $0.baseAddress, $0.count) }) > 0 {}
        close(filler)
        let before = scratch.bytes(log.path)

        let error = #expect(throws: IncidentLogError.self) {
            try log.append(Scratch.incident(2, reason: String(repeating: "y", count: 1000)))
        }
        #expect(error?.description.contains("No space left on device; the record was not written and nothing of it was left in the file; free space on its filesystem") == true,
                "\(error?.description ?? "")")
        let after = scratch.bytes(log.path)
        let unchanged = after == before
        #expect(unchanged, "the log is \(after.count) bytes, was \(before.count)")
        #expect(try log.read().count == 1)
        #expect(try log.verify().intact)

        // With room again, the chain goes on from the whole record.
        unlink(mountPoint + "/filler")
        try log.append(Scratch.incident(3))
        let report = try log.verify()
        #expect(report.intact && report.chained == 2, "\(report.summary)")
    }

    @Test func controlCharactersAreEscapedForTerminals() {
        #expect(TerminalText.escaped("\u{1b}[31mred\u{1b}[0m") == "\\x1b[31mred\\x1b[0m")
        #expect(TerminalText.escaped("a\nb\r\0c\t\u{7f}") == "a\\x0ab\\x0d\\x00c\\x09\\x7f")
        #expect(TerminalText.escaped("\u{9b}2J") == "\\x9b2J")
        #expect(TerminalText.escaped("evil\u{202e}txt.exe") == "evil\\u{202e}txt.exe")
        #expect(TerminalText.escaped(#"C:\x1b"#) == #"C:\\x1b"#)
        #expect(TerminalText.escaped("sshd: invalid user é 用户") == "sshd: invalid user é 用户")
    }

    @Test func verifyReportEscapesAnAttackersTarget() throws {
        let scratch = Scratch()
        try scratch.log.append(Incident(timeUnixMs: 1_780_000_000_000, action: .refuse, target: "x\u{1b}]0;owned\u{7}", source: "wazuh",
                                        error: "bad address"))
        try scratch.log.append(Scratch.incident(2))
        var lines = scratch.lines()
        lines[0] = lines[0].replacingOccurrences(of: "bad address", with: "fine")
        scratch.write(lines)
        let report = try scratch.log.verify()
        #expect(report.problem?.kind == .changed)
        #expect(report.summary.contains("refuse x\\x1b]0;owned\\x07)"))
        #expect(!report.summary.contains("\u{1b}"))
    }
}
