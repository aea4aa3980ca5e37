import Foundation
import Glibc
import Testing

/// Text an attacker chose reaches logs and terminals escaped, and root never writes
/// through a link planted where a log should be.
@Suite(.enabled(if: Privileges.canUseBPF, Privileges.bpfReason))
struct UntrustedTextTests {
    @Test func controlCharactersFromExecdAreEscapedInTheLog() throws {
        let home = try WazuhHome()
        let message = Messages.add("203.0.113.95").replacingOccurrences(of: "\"level\":5", with: "\"level\":5,\"x\":\"a\u{1b}[31mb\"")
        _ = try ExecdEmulator(home: home).run(message + "\u{0}")
        let log = try String(contentsOfFile: home.logPath, encoding: .utf8)
        #expect(!log.contains("\u{1b}") && !log.contains("\u{0}"), "raw control characters in \(home.logPath)")
        #expect(log.contains("a\\x1b[31mb"), "\(log)")
    }

    @Test func aSymlinkInPlaceOfTheActiveResponseLogIsNotFollowed() throws {
        let home = try WazuhHome()
        let victim = "/tmp/portcullis-victim-\(UUID().uuidString.prefix(8))"
        try "secret\n".write(toFile: victim, atomically: true, encoding: .utf8)
        defer { unlink(victim) }
        try? FileManager.default.removeItem(atPath: home.logPath)
        try #require(symlink(victim, home.logPath) == 0)
        _ = try ExecdEmulator(home: home).run(Messages.add("203.0.113.96"))
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "secret\n")
    }

    @Test func listEscapesAReasonsControlCharacters() throws {
        let pins = "/sys/fs/bpf/portcullis-test-text-\(UUID().uuidString.prefix(8))"
        defer {
            _ = try? Command.portcullis(["purge", "--yes"], pins: pins)
            try? FileManager.default.removeItem(atPath: Command.incidentLog(pins: pins))
        }
        let block = try Command.portcullis(["block", "203.0.113.97", "--for", "1m", "--reason", "evil\u{1b}[2J\nline"], pins: pins)
        #expect(block.status == 0, "\(block)")
        let list = try Command.portcullis(["list"], pins: pins)
        #expect(!list.stdout.contains("\u{1b}"), "\(list)")
        #expect(list.stdout.contains("evil\\x1b[2J\\x0aline"), "\(list)")
    }
}
