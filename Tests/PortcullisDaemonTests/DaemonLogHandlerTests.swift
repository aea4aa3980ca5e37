import Foundation
import Glibc
import Logging
import PortcullisDaemon
import Testing

/// What the daemon logs is one line per record, whatever the record holds: no root needed.
@Suite struct DaemonLogHandlerTests {
    /// Logs through a handler writing into a pipe and returns what it wrote.
    static func logged(_ body: (Logger) -> Void) throws -> String {
        var ends: [CInt] = [0, 0]
        try #require(pipe(&ends) == 0)
        defer { close(ends[0]) }
        let logger = Logger(label: "portcullis") { DaemonLogHandler(label: $0, output: ends[1]) }
        body(logger)
        close(ends[1])
        return String(decoding: FileHandle(fileDescriptor: ends[0]).readDataToEndOfFile(), as: UTF8.self)
    }

    @Test func attackerTextCannotForgeARecordOrReachTheTerminal() throws {
        let text = try Self.logged { logger in
            logger.warning("rule fired for user root\n2026-12-02T00:00:00.000Z info portcullis: unblocked 203.0.113.9\u{1b}[2J\0",
                           metadata: ["user": "\u{1b}]0;pwned\u{07}"])
            logger.debug("below the level")
        }
        #expect(text.split(separator: "\n").count == 1, "one record, one line: \(text)")
        #expect(text.hasSuffix("\n"))
        #expect(!text.contains("\u{1b}") && !text.contains("\0") && !text.contains("\u{07}"), "raw control characters: \(text)")
        #expect(text.contains(" warning portcullis: rule fired for user root\\x0a2026-12-02"), "\(text)")
        #expect(text.contains(" user=\\x1b]0;pwned\\x07"), "\(text)")
    }

    @Test func aRecordStartsWithItsTimeInUTC() throws {
        let text = try Self.logged { $0.info("started") }
        let fields = text.split(separator: " ")
        #expect(fields.count == 4, "\(text)")
        #expect(fields.first?.hasSuffix("Z") == true && fields.first?.count == 24, "\(text)")
        #expect(text.hasSuffix(" info portcullis: started\n"), "\(text)")
    }
}
