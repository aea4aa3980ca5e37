/// One parsed line of a block file.
public struct BlockFileEntry: Sendable, Equatable {
    public let target: BlockTarget
    /// nil when the line gives no duration: permanent, or whatever default the command applies.
    public let duration: Duration?
    /// 1-based, as editors show it.
    public let line: Int
    public let notes: [String]

    public init(target: BlockTarget, duration: Duration?, line: Int, notes: [String]) {
        self.target = target
        self.duration = duration
        self.line = line
        self.notes = notes
    }
}

public struct BlockFileError: Error, Equatable, Sendable, CustomStringConvertible {
    public let line: Int
    public let message: String

    public init(line: Int, message: String) {
        self.line = line
        self.message = message
    }

    public var description: String {
        "line \(line): \(message)"
    }
}

/// Block files: one "ADDR|CIDR [DURATION] [# comment]" per line, fields separated by any
/// mix of spaces and tabs. A '#' starts a comment wherever it appears, since no field can
/// contain one.
public enum BlockFile {
    public static func parseLine(_ line: Substring, number: Int) throws(BlockFileError) -> BlockFileEntry? {
        try withBytes(of: line) { parse(bytes: $0, number: number) }.get()
    }

    /// Every entry of a whole file's text, in order, line numbers counted from 1; the first bad
    /// line throws. Lines end at "\n" (a "\r" before it is dropped); blank and comment lines
    /// give nothing. Walks the bytes in place: a million lines are never a million substrings.
    public static func forEachEntry(in text: String, _ body: (BlockFileEntry) -> Void) throws(BlockFileError) {
        try withBytes(of: text) { (bytes: UnsafeBufferPointer<UInt8>) -> Result<Void, BlockFileError> in
            var start = 0
            var number = 0
            while start <= bytes.count {
                var end = start
                while end < bytes.count && bytes[end] != ASCII.lf { end += 1 }
                number += 1
                switch parse(bytes: UnsafeBufferPointer(rebasing: bytes[start..<end]), number: number) {
                case .failure(let error): return .failure(error)
                case .success(let entry?): body(entry)
                case .success(nil): break
                }
                start = end + 1
            }
            return .success(())
        }.get()
    }

    static func parse(bytes p: UnsafeBufferPointer<UInt8>, number: Int) -> Result<BlockFileEntry?, BlockFileError> {
        var end = p.count
        // Tolerate CRLF files and callers that hand us the line terminator too.
        while end > 0 && (p[end - 1] == ASCII.lf || p[end - 1] == ASCII.cr) { end -= 1 }
        var i = 0
        // A UTF-8 byte order mark, as some Windows editors write at the start of a file.
        if end >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF { i = 3 }

        func skipBlanks() {
            while i < end && ASCII.isBlank(p[i]) { i += 1 }
        }
        func field() -> Range<Int>? {
            skipBlanks()
            if i == end || p[i] == ASCII.hash { return nil }
            let start = i
            while i < end && !ASCII.isBlank(p[i]) && p[i] != ASCII.hash { i += 1 }
            return start..<i
        }

        guard let targetRange = field() else { return .success(nil) }
        let durationRange = field()
        if let extra = field() {
            return .failure(BlockFileError(
                line: number,
                message: "unexpected extra field '\(TerminalText.excerpt(p.string(extra)))'; expected ADDRESS[/LENGTH] [DURATION] [# comment]"))
        }

        let parsed: ParsedTarget
        switch TargetParser.parse(p.slice(targetRange)) {
        case .failure(let error):
            return .failure(BlockFileError(line: number, message: error.description))
        case .success(let value):
            parsed = value
        }
        do throws(Refusal) {
            try Admission.checkBlockable(parsed.target)
        } catch {
            return .failure(BlockFileError(line: number, message: error.description))
        }

        var duration: Duration?
        if let durationRange {
            switch DurationText.parse(bytes: p.slice(durationRange)) {
            case .failure(let error):
                return .failure(BlockFileError(line: number, message: error.description))
            case .success(let value):
                duration = value
            }
        }
        return .success(BlockFileEntry(target: parsed.target, duration: duration, line: number, notes: parsed.notes))
    }
}
