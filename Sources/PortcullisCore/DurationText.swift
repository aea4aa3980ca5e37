public enum DurationError: Error, Equatable, Sendable, CustomStringConvertible {
    case empty
    case invalid(input: String, reason: String)
    case notPositive(input: String)
    case tooLarge(input: String)

    public var description: String {
        switch self {
        case .empty:
            return "invalid duration '': expected something like 90, 10m, 1h30m or 2d"
        case let .invalid(input, reason):
            return "invalid duration '\(TerminalText.excerpt(input))': \(reason)"
        case let .notPositive(input):
            return "invalid duration '\(TerminalText.excerpt(input))': must be longer than zero"
        case let .tooLarge(input):
            return "invalid duration '\(TerminalText.excerpt(input))': longer than the maximum of 100 years (\(DurationText.maximumSeconds / 86_400)d); omit the duration to block permanently"
        }
    }
}

/// Durations as users write them in commands and block files.
public enum DurationText {
    /// 100 years of 365.25 days. Anything longer is almost certainly a typo, and a bound
    /// keeps expiry arithmetic far away from overflow.
    public static let maximumSeconds: Int64 = 36_525 * 86_400

    /// Accepts "90" (bare seconds, as Wazuh timeouts are written) or unit groups such as
    /// "1w2d3h4m5s": units s, m, h, d, w, each at most once, largest first.
    public static func parse(_ text: String) throws(DurationError) -> Duration {
        try withBytes(of: text) { parse(bytes: $0) }.get()
    }

    public static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        if seconds < 0 || (seconds == 0 && attoseconds < 0) {
            return "-" + format(magnitude: seconds.magnitude, subSecond: attoseconds != 0)
        }
        return format(magnitude: seconds.magnitude, subSecond: attoseconds != 0)
    }

    private static func format(magnitude total: UInt64, subSecond: Bool) -> String {
        if total == 0 { return subSecond ? "<1s" : "0s" }
        // Days are the largest unit shown: "100d" reads better than "14w2d".
        let parts: [(UInt64, String)] = [
            (total / 86_400, "d"),
            (total / 3_600 % 24, "h"),
            (total / 60 % 60, "m"),
            (total % 60, "s"),
        ]
        var out = ""
        for (amount, unit) in parts where amount > 0 {
            out += String(amount)
            out += unit
        }
        return out
    }

    private static func unitSeconds(_ byte: UInt8) -> (rank: Int, seconds: Int64)? {
        switch byte {
        case 0x73: return (0, 1)          // s
        case 0x6D: return (1, 60)         // m
        case 0x68: return (2, 3_600)      // h
        case 0x64: return (3, 86_400)     // d
        case 0x77: return (4, 604_800)    // w
        default: return nil
        }
    }

    static func parse(bytes p: UnsafeBufferPointer<UInt8>) -> Result<Duration, DurationError> {
        let n = p.count
        if n == 0 { return .failure(.empty) }
        // Saturating at one past the maximum keeps every intermediate value small enough
        // that no digit string, however long, can overflow.
        let cap = maximumSeconds + 1
        var total: Int64 = 0
        var previousRank = Int.max
        var previousUnit: UInt8 = 0
        var i = 0
        while i < n {
            let numberStart = i
            var number: Int64 = 0
            while i < n, let d = ASCII.digitValue(p[i]) {
                number = min(number * 10 + Int64(d), cap)
                i += 1
            }
            if i == numberStart {
                return .failure(.invalid(input: p.string, reason: unexpectedReason(p, at: i)))
            }
            if i == n {
                guard numberStart == 0 else {
                    let digits = TerminalText.excerpt(p.string(numberStart..<n))
                    return .failure(.invalid(
                        input: p.string,
                        reason: "'\(digits)' has no unit; after another unit, write it as \(digits)s or \(digits)m"))
                }
                total = number
                break
            }
            let unitByte = p[i]
            guard let unit = unitSeconds(unitByte) else {
                return .failure(.invalid(input: p.string, reason: unexpectedReason(p, at: i)))
            }
            let name = String(UnicodeScalar(unitByte))
            if unit.rank == previousRank {
                return .failure(.invalid(input: p.string, reason: "unit '\(name)' appears more than once"))
            }
            if unit.rank > previousRank {
                return .failure(.invalid(
                    input: p.string,
                    reason: "'\(name)' comes after '\(String(UnicodeScalar(previousUnit)))'; write units largest first (w, d, h, m, s)"))
            }
            previousRank = unit.rank
            previousUnit = unitByte
            total = min(total + number * unit.seconds, cap)
            i += 1
        }
        if total == 0 { return .failure(.notPositive(input: p.string)) }
        if total > maximumSeconds { return .failure(.tooLarge(input: p.string)) }
        return .success(.seconds(total))
    }

    private static func unexpectedReason(_ p: UnsafeBufferPointer<UInt8>, at i: Int) -> String {
        let b = p[i]
        switch b {
        case ASCII.plus, ASCII.minus:
            return "signs are not allowed"
        case ASCII.dot, ASCII.comma:
            return "fractions are not allowed; use smaller units, e.g. 1h30m instead of 1.5h"
        case _ where ASCII.isWhitespace(b):
            return "spaces are not allowed; write units together, e.g. 1h30m"
        case _ where i > 0 && ASCII.digitValue(p[i - 1]) != nil:
            return "unknown unit \(describeByte(b)); use s, m, h, d or w"
        default:
            return "expected a number at \(describeByte(b))"
        }
    }
}
