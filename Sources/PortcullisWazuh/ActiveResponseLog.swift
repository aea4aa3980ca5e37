import PortcullisCore

/// Where Wazuh keeps its home and its active-response log, derived the way
/// Wazuh's own active responses derive them.
public enum WazuhPaths {
    /// The Wazuh home from the real path of the running executable: the part
    /// before `/active-response/bin/` (e.g. /var/ossec), or nil when the
    /// executable is not installed under an active-response directory.
    public static func home(fromExecutable path: String) -> String? {
        // Bytes, not String.firstRange(of:): the generic string search costs a fresh process
        // more than the rest of finding its home.
        let bytes = Array(path.utf8), marker = Array("/active-response/bin/".utf8)
        guard bytes.count >= marker.count,
              let start = (0...(bytes.count - marker.count)).first(where: { bytes[$0..<($0 + marker.count)].elementsEqual(marker) })
        else { return nil }
        return start == 0 ? "/" : String(decoding: bytes[..<start], as: UTF8.self)
    }

    public static let logRelativePath = "logs/active-responses.log"
}

/// One line of `logs/active-responses.log`:
/// `YYYY/MM/DD HH:MM:SS active-response/bin/NAME: MESSAGE`, local time.
public struct ActiveResponseLogLine: Sendable {
    public let year, month, day, hour, minute, second: Int
    public let program: String
    public let message: String

    public init(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, program: String, message: String) {
        (self.year, self.month, self.day, self.hour, self.minute, self.second) = (year, month, day, hour, minute, second)
        self.program = program
        self.message = message
    }

    public var text: String {
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : String(value) }
        // A message never spans lines: the manager reads this file line by line. Each run of
        // line ends becomes one space, none at either end; scalar by scalar, since grapheme
        // breaking the message would be much of a fresh response's cost of logging it.
        var flat = String.UnicodeScalarView()
        var lineEnded = false
        for scalar in message.unicodeScalars {
            switch scalar {
            case "\n", "\r", "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}", "\u{2029}":
                lineEnded = true
            default:
                if lineEnded, !flat.isEmpty { flat.append(" ") }
                lineEnded = false
                flat.append(scalar)
            }
        }
        return "\(year)/\(two(month))/\(two(day)) \(two(hour)):\(two(minute)):\(two(second)) \(program): \(String(flat))\n"
    }
}

/// Portcullis's own options, given through the `<extra_args>` of the `<command>`.
public struct ExtraArguments: Sendable, Equatable {
    /// `--for DURATION`: the block lifts by itself then, even if execd never sends delete.
    public var duration: Duration?
    /// `--pin-dir PATH`
    public var pinDirectory: String?
    /// `--rate N/s`, with `--burst M` and `--new-connections`: throttle the address instead of
    /// blocking it (the executable installed as firewall-throttle), and unthrottle on delete.
    public var throttle: ThrottleRate?
    /// Arguments not understood, to be logged and otherwise ignored.
    public var ignored: [String] = []

    public init(_ arguments: [String]) throws(ExtraArgumentsError) {
        var index = 0
        var (rate, burst, newConnections): (String?, UInt32?, Bool) = (nil, nil, false)
        func value(for option: String) throws(ExtraArgumentsError) -> String {
            index += 1
            guard index < arguments.count else { throw ExtraArgumentsError("\(option) needs a value") }
            return arguments[index]
        }
        while index < arguments.count {
            let argument = arguments[index]
            let (name, inline) = argument.firstIndex(of: "=").map {
                (String(argument[..<$0]), Optional(String(argument[argument.index(after: $0)...])))
            } ?? (argument, nil)
            switch name {
            case "--for":
                let text = if let inline { inline } else { try value(for: name) }
                do { duration = try DurationText.parse(text) } catch { throw ExtraArgumentsError(error.description) }
            case "--pin-dir":
                pinDirectory = if let inline { inline } else { try value(for: name) }
            case "--rate":
                rate = if let inline { inline } else { try value(for: name) }
            case "--burst":
                let text = if let inline { inline } else { try value(for: name) }
                guard let parsed = UInt32(text) else { throw ExtraArgumentsError("--burst needs a number of packets, not '\(TerminalText.excerpt(text))'") }
                burst = parsed
            case "--new-connections":
                newConnections = true
            default:
                ignored.append(argument)
            }
            index += 1
        }
        guard let rate else {
            if burst != nil || newConnections { throw ExtraArgumentsError("--burst and --new-connections throttle: give --rate N/s too") }
            return
        }
        do { throttle = try ThrottleRate.parse(rate: rate, burst: burst, newConnectionsOnly: newConnections) } catch {
            throw ExtraArgumentsError(error.description)
        }
    }
}

public struct ExtraArgumentsError: Error, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = "Invalid extra argument: \(description)" }
}
