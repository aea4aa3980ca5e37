import FoundationEssentials

/// One message from a log source, pre-decoded as Wazuh does: the header's timestamp,
/// hostname and program are taken off, and what is left is the text the rules look at.
public struct LogMessage: Sendable, Equatable {
    /// The program that logged it, without the pid: sshd, sshd-session, ... Empty when the
    /// line has no program tag (then only rules and decoders that ask for no program apply).
    public var program: String
    /// The text after `program[pid]: `.
    public var text: String
    /// The whole line as read, for the record.
    public var line: String
    /// The header's timestamp and hostname as written, when the line has them.
    public var timestamp: String?
    public var hostname: String?

    public init(program: String, text: String, line: String, timestamp: String? = nil, hostname: String? = nil) {
        (self.program, self.text, self.line) = (program, text, line)
        (self.timestamp, self.hostname) = (timestamp, hostname)
    }

    /// A syslog line with a program tag (see ``predecode(_:)`` for the headers read), or nil
    /// when the line names no program: no built-in rule can apply to it.
    public static func syslog(_ line: Substring) -> LogMessage? {
        let message = predecode(line)
        return message.program.isEmpty ? nil : message
    }

    /// Takes the header off a log line. The forms read, as Wazuh's pre-decoder reads them:
    ///
    /// - an optional `<PRI>` first;
    /// - RFC 5424: `<PRI>1 2026-11-28T07:00:00.1Z host sshd 123 - - text`;
    /// - classic syslog, `Nov 28 07:00:00 host sshd[123]: text`, also with milliseconds
    ///   (`07:00:00.123`), a year after the time (`Nov 28 07:00:00 2026`) or before the
    ///   month (`2026 Nov 28 07:00:00`), or the year between day and time (`Nov 28 2026 07:00:00`);
    /// - ISO 8601, `2026-11-28T07:00:00.123456+00:00 host sshd[123]: text` (offset as
    ///   `Z`, `+hh:mm` or `+hhmm`, fraction optional), as rsyslog writes auth.log;
    /// - a date and time with a space, `2020-03-25 08:01:34.584936-0700  localhost sshd[1551]: text`,
    ///   with any number of spaces before the host;
    /// - no header at all, `sshd[123]: text`, as `sshd -E` writes its own file;
    /// - Solaris's message id after the tag, `sshd[123]: [ID 800047 auth.notice] text`, which
    ///   is not part of the text.
    ///
    /// A line in no known form is all text, with no program.
    public static func predecode(_ line: Substring) -> LogMessage {
        var scanner = HeaderScanner(Array(line.utf8))
        var timestamp: String?
        var hostname: String?
        _ = scanner.priority()
        if let stamp = scanner.rfc5424Header() {
            return LogMessage(program: stamp.program, text: stamp.text, line: String(line), timestamp: stamp.timestamp, hostname: stamp.hostname)
        }
        let headerStart = scanner.position
        if let stamp = scanner.timestamp() {
            timestamp = stamp
            let afterTimestamp = scanner.position
            if scanner.spaces() >= 1, let host = scanner.hostname(), scanner.peekTag() {
                hostname = host
            } else {
                scanner.position = afterTimestamp
                _ = scanner.spaces()
            }
        } else {
            scanner.position = headerStart
        }
        let beforeTag = scanner.position
        if let program = scanner.tag() {
            scanner.solarisMessageID()
            return LogMessage(program: program, text: scanner.rest, line: String(line), timestamp: timestamp, hostname: hostname)
        }
        scanner.position = beforeTag
        return LogMessage(program: "", text: timestamp == nil ? String(line) : scanner.rest, line: String(line), timestamp: timestamp, hostname: hostname)
    }

    /// One line of `journalctl -o json`.
    public static func journal(_ line: Substring) -> LogMessage? {
        struct Entry: Decodable {
            let MESSAGE: Message?
            let SYSLOG_IDENTIFIER: String?
            let _COMM: String?
        }
        // journald writes a message that is not valid UTF-8 as an array of bytes.
        enum Message: Decodable {
            case text(String), bytes([UInt8])
            init(from decoder: any Decoder) throws {
                let container = try decoder.singleValueContainer()
                if let text = try? container.decode(String.self) { self = .text(text) } else { self = .bytes(try container.decode([UInt8].self)) }
            }
            var string: String {
                switch self {
                case .text(let text): text
                case .bytes(let bytes): String(decoding: bytes, as: UTF8.self)
                }
            }
        }
        guard let entry = try? JSONDecoder().decode(Entry.self, from: Data(line.utf8)),
              let message = entry.MESSAGE?.string,
              let program = entry.SYSLOG_IDENTIFIER ?? entry._COMM
        else { return nil }
        return LogMessage(program: program, text: message, line: String(line))
    }
}

/// Reads the parts of a log header from the bytes of a line; each reader either
/// consumes its part and returns it, or returns nil (callers restore `position`).
struct HeaderScanner {
    let bytes: [UInt8]
    var position = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var rest: String { String(decoding: bytes[min(position, bytes.count)...], as: UTF8.self) }
    private var current: UInt8? { position < bytes.count ? bytes[position] : nil }
    private func isDigit(_ byte: UInt8?) -> Bool { byte.map { $0 >= 0x30 && $0 <= 0x39 } ?? false }

    private mutating func take(_ byte: Character) -> Bool {
        guard current == byte.asciiValue else { return false }
        position += 1
        return true
    }

    private mutating func digits(_ count: ClosedRange<Int>) -> Bool {
        var taken = 0
        while taken < count.upperBound, isDigit(current) { position += 1; taken += 1 }
        return count.contains(taken)
    }

    mutating func spaces() -> Int {
        var count = 0
        while current == 0x20 { position += 1; count += 1 }
        return count
    }

    /// `<PRI>`, as a relay or a syslog socket writes it.
    mutating func priority() -> Bool {
        let start = position
        if take("<"), digits(1...3), take(">") { return true }
        position = start
        return false
    }

    private static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

    private mutating func month() -> Bool {
        guard position + 3 <= bytes.count else { return false }
        let name = String(decoding: bytes[position..<(position + 3)].map(asciiLowercase), as: UTF8.self)
        guard Self.months.contains(name) else { return false }
        position += 3
        return true
    }

    /// hh:mm:ss with an optional fraction.
    private mutating func clock() -> Bool {
        guard digits(2...2), take(":"), digits(2...2), take(":"), digits(2...2) else { return false }
        let beforeFraction = position
        if !(take(".") && digits(1...9)) { position = beforeFraction }
        return true
    }

    /// Z, +hh:mm, +hhmm or +hh.
    private mutating func zone() {
        let start = position
        if take("Z") { return }
        guard take("+") || take("-") else { return }
        guard digits(2...2) else { position = start; return }
        let afterHours = position
        if take(":") { if !digits(2...2) { position = afterHours } } else if !digits(2...2) { position = afterHours }
    }

    /// One of the timestamp forms of ``LogMessage/predecode(_:)``, as written.
    mutating func timestamp() -> String? {
        let start = position
        func written() -> String { String(decoding: bytes[start..<position], as: UTF8.self) }
        // 2026-11-28T07:00:00... or 2026-11-28 07:00:00...
        if digits(4...4), take("-"), digits(2...2), take("-"), digits(2...2), take("T") || take(" "), clock() {
            zone()
            return written()
        }
        position = start
        // 2026 Nov 28 07:00:00
        if digits(4...4), take(" "), month(), take(" "), spaces() >= 0, digits(1...2), take(" "), clock() {
            return written()
        }
        position = start
        // Nov 28 07:00:00[.mmm][ 2026]  or  Nov 28 2026 07:00:00
        if month(), take(" ") {
            _ = spaces()
            guard digits(1...2), take(" ") else { position = start; return nil }
            let beforeYear = position
            if digits(4...4), take(" "), clock() { return written() }
            position = beforeYear
            guard clock() else { position = start; return nil }
            let beforeTrailingYear = position
            if !(take(" ") && digits(4...4) && (current == 0x20)) { position = beforeTrailingYear }
            return written()
        }
        position = start
        return nil
    }

    /// A hostname: letters, digits and `.-_:@` (an IPv6 address is a hostname too).
    mutating func hostname() -> String? {
        let start = position
        while let byte = current, byte != 0x20 {
            let allowed = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ":")
                || byte == UInt8(ascii: "@") || byte == UInt8(ascii: "/")
            guard allowed else { position = start; return nil }
            position += 1
        }
        guard position > start, take(" ") else { position = start; return nil }
        return String(decoding: bytes[start..<(position - 1)], as: UTF8.self)
    }

    /// Whether a program tag follows, without consuming it.
    func peekTag() -> Bool {
        var copy = self
        return copy.tag() != nil
    }

    /// `program[pid]: ` or `program: `; the program.
    mutating func tag() -> String? {
        let start = position
        while let byte = current, byte != 0x20, byte != UInt8(ascii: "["), byte != UInt8(ascii: ":") { position += 1 }
        guard position > start else { position = start; return nil }
        let program = String(decoding: bytes[start..<position], as: UTF8.self)
        if take("[") {
            guard digits(1...10), take("]") else { position = start; return nil }
        }
        guard take(":") else { position = start; return nil }
        _ = take(" ")
        return program
    }

    /// Solaris's `[ID 800047 auth.notice] `.
    mutating func solarisMessageID() {
        let start = position
        guard take("["), take("I"), take("D"), take(" "), digits(1...12), take(" ") else { position = start; return }
        while let byte = current, byte != UInt8(ascii: "]"), byte != 0x20 { position += 1 }
        guard take("]") else { position = start; return }
        _ = take(" ")
    }

    /// RFC 5424: `1 TIMESTAMP HOST APP PROCID MSGID SD MSG`, each `-` when absent.
    mutating func rfc5424Header() -> (timestamp: String, hostname: String, program: String, text: String)? {
        let start = position
        guard take("1"), take(" ") else { position = start; return nil }
        var fields: [String] = []
        for _ in 0..<5 {
            let fieldStart = position
            while let byte = current, byte != 0x20 { position += 1 }
            guard position > fieldStart, take(" ") else { position = start; return nil }
            fields.append(String(decoding: bytes[fieldStart..<(position - 1)], as: UTF8.self))
        }
        // Structured data: `-` or one or more [..] elements.
        if take("-") {
            _ = take(" ")
        } else if current == UInt8(ascii: "[") {
            while let byte = current {
                position += 1
                if byte == UInt8(ascii: "]") && current != UInt8(ascii: "[") { break }
            }
            _ = take(" ")
        } else {
            position = start
            return nil
        }
        let program = fields[2] == "-" ? "" : fields[2]
        return (fields[0], fields[1], program, rest)
    }
}
