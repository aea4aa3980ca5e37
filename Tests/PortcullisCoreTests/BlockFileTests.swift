import Testing
@testable import PortcullisCore

@Suite struct BlockFileTests {
    func entry(_ line: String, number: Int = 1) throws -> BlockFileEntry? {
        try BlockFile.parseLine(Substring(line), number: number)
    }

    /// A whole file reads as its lines one by one would, numbered as the lines of the file.
    @Test func wholeFilesReadAsTheirLines() throws {
        func entries(_ text: String) throws -> [String] {
            var found: [String] = []
            try BlockFile.forEachEntry(in: text) { found.append("\($0.line):\($0.target)") }
            return found
        }
        #expect(try entries("") == [])
        #expect(try entries("\n\n") == [])
        #expect(try entries("192.0.2.1") == ["1:192.0.2.1"])
        #expect(try entries("192.0.2.1\n") == ["1:192.0.2.1"])
        #expect(try entries("# feed\r\n192.0.2.1 1h\r\n\r\n2001:db8::/32\n198.51.100.7 # last") == ["2:192.0.2.1", "4:2001:db8::/32", "5:198.51.100.7"])
        let error = #expect(throws: BlockFileError.self) { try entries("192.0.2.1\n\nnot-an-address\n192.0.2.2") }
        #expect(error?.line == 3)
        #expect(throws: BlockFileError.self) { try entries("192.0.2.1\n127.0.0.1\n") }
    }

    func lineError(_ line: String, number: Int, sourceLocation: SourceLocation = #_sourceLocation) -> BlockFileError? {
        do {
            let e = try BlockFile.parseLine(Substring(line), number: number)
            Issue.record("expected '\(line)' to be rejected, got \(String(describing: e))", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }

    @Test(arguments: ["", "   ", "\t", "# a comment", "   # indented comment", "\t#", "\r\n", "\r", "\n", "#1.2.3.4 1h"])
    func blankAndCommentLinesAreSkipped(line: String) throws {
        #expect(try entry(line) == nil)
    }

    @Test func addressOnly() throws {
        let e = try #require(try entry("192.0.2.1", number: 7))
        #expect(e.target == .address(.v4(IPv4Address(192, 0, 2, 1))))
        #expect(e.duration == nil)
        #expect(e.line == 7)
        #expect(e.notes.isEmpty)
    }

    @Test func addressWithDurationAndComment() throws {
        let e = try #require(try entry("203.0.113.0/24 1h30m # scanner", number: 3))
        #expect(e.target.description == "203.0.113.0/24")
        #expect(e.duration == .seconds(5_400))
        #expect(e.line == 3)
    }

    @Test(arguments: [
        "2001:db8::1\t600",
        "  2001:db8::1   600  ",
        "\t2001:db8::1 \t 600\t# why",
        "2001:db8::1 600\r\n",
        "2001:db8::1 600\r",
        "2001:db8::1 600#x",
        "\u{FEFF}2001:db8::1 600",
    ])
    func whitespaceTabsAndCRLF(line: String) throws {
        let e = try #require(try entry(line))
        #expect(e.target.description == "2001:db8::1")
        #expect(e.duration == .seconds(600))
    }

    @Test func commentRightAfterAddress() throws {
        let e = try #require(try entry("192.0.2.1# note"))
        #expect(e.target.description == "192.0.2.1")
        #expect(e.duration == nil)
        let crlf = try #require(try entry("192.0.2.1\r\n"))
        #expect(crlf.target.description == "192.0.2.1")
    }

    @Test func notesAreCarried() throws {
        let e = try #require(try entry("::ffff:192.0.2.1 1d"))
        #expect(e.target.description == "192.0.2.1")
        #expect(e.notes == ["::ffff:192.0.2.1 is an IPv4-mapped address; using 192.0.2.1"])
        let hostBits = try #require(try entry("203.0.113.7/24"))
        #expect(hostBits.notes == ["203.0.113.7/24 has host bits set; using 203.0.113.0/24"])
    }

    @Test func badAddressNamesTheLine() {
        let error = lineError("300.1.1.1 1h", number: 12)
        #expect(error?.line == 12)
        #expect(error?.description == "line 12: invalid IPv4 address '300.1.1.1': octet 300 is out of range 0-255")
    }

    @Test func badDurationNamesTheLine() {
        let error = lineError("192.0.2.1 10x", number: 4)
        #expect(error?.description == "line 4: invalid duration '10x': unknown unit 'x'; use s, m, h, d or w")
    }

    @Test func extraFieldsAreErrors() throws {
        let error = lineError("192.0.2.1 1h extra", number: 9)
        #expect(error?.line == 9)
        #expect(error?.message.contains("unexpected extra field 'extra'") == true)
        #expect(lineError("192.0.2.1 1h 2h # comment", number: 1) != nil)
        #expect(try entry("192.0.2.1 1h #comment")?.duration == .seconds(3_600))
    }

    @Test func loopbackIsRefused() {
        let error = lineError("127.0.0.1 1h", number: 5)
        #expect(error?.description == "line 5: refusing to block 127.0.0.1: loopback addresses are never blocked")
        #expect(lineError("::/0", number: 6)?.message.contains("loopback") == true)
        #expect(lineError("0.0.0.0/0", number: 7)?.message.contains("loopback") == true)
        #expect(lineError("::", number: 8)?.message.contains("unspecified") == true)
    }

    @Test func lineSubstringsFromALargerBufferParse() throws {
        let text = "# header\n10.0.0.1 1h\n\n2001:db8::/48 2d # net\r\n"
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        var entries: [BlockFileEntry] = []
        for (index, line) in lines.enumerated() {
            if let e = try BlockFile.parseLine(line, number: index + 1) { entries.append(e) }
        }
        #expect(entries.map(\.line) == [2, 4])
        #expect(entries.map(\.target.description) == ["10.0.0.1", "2001:db8::/48"])
        #expect(entries.map(\.duration) == [.seconds(3_600), .seconds(172_800)])
    }

    @Test func parsesManyGeneratedLines() throws {
        var text = ""
        text.reserveCapacity(200_000 * 32)
        let durations = ["", " 1h", "\t90", " 2d # note", " 1h30m"]
        for i in 0..<200_000 {
            let a = (i >> 16) & 0xFF, b = (i >> 8) & 0xFF, c = i & 0xFF
            if i % 3 == 0 {
                text += "2001:db8:\(String(a, radix: 16)):\(String(b, radix: 16))::\(String(c, radix: 16))"
            } else {
                text += "10.\(a).\(b).\(c)"
            }
            if i % 7 == 0 { text += "/\(24 + i % 9)" }
            text += durations[i % durations.count]
            text += i % 2 == 0 ? "\n" : "\r\n"
        }
        var count = 0
        var number = 0
        // Split on the byte: as Characters, "\r\n" is a single grapheme and would not match "\n".
        for raw in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            number += 1
            if try BlockFile.parseLine(Substring(raw), number: number) != nil { count += 1 }
        }
        #expect(count == 200_000)
    }
}
