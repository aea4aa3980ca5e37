import FoundationEssentials

/// One message from a log source, reduced to what the rules look at.
public struct LogMessage: Sendable, Equatable {
    /// The program that logged it, without the pid: sshd, sshd-session, ...
    public var program: String
    /// The text after `program[pid]: `.
    public var text: String
    /// The whole line as read, for the record.
    public var line: String

    public init(program: String, text: String, line: String) {
        (self.program, self.text, self.line) = (program, text, line)
    }

    /// A syslog line, classic (`Nov 28 07:00:00 host sshd[123]: ...`) or with an
    /// ISO-8601 timestamp (`2026-11-28T07:00:00.123456+00:00 host sshd[123]: ...`),
    /// as rsyslog writes auth.log; also sshd's own `-E` log file, which has no
    /// timestamp or host (`sshd[123]: ...`).
    public static func syslog(_ line: Substring) -> LogMessage? {
        var rest = line
        if line.first?.isNumber == true, let space = rest.firstIndex(of: " ") {
            // ISO 8601: one token, then the host.
            rest = rest[rest.index(after: space)...]
            guard let host = rest.firstIndex(of: " ") else { return nil }
            rest = rest[rest.index(after: host)...]
        } else if let month = line.prefix(3).first, month.isLetter, line.count > 16,
                  line[line.index(line.startIndex, offsetBy: 3)] == " " {
            // "Mmm dd hh:mm:ss host ": the date is 15 characters, then the host.
            rest = line.dropFirst(16)
            guard let host = rest.firstIndex(of: " ") else { return nil }
            rest = rest[rest.index(after: host)...]
        }
        // program[pid]: text   or   program: text
        guard let colon = rest.firstRange(of: ": ") else { return nil }
        var tag = rest[..<colon.lowerBound]
        if let bracket = tag.firstIndex(of: "[") { tag = tag[..<bracket] }
        guard !tag.isEmpty, !tag.contains(" ") else { return nil }
        return LogMessage(program: String(tag), text: String(rest[colon.upperBound...]), line: String(line))
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
