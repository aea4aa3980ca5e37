/// Everything that can go wrong turning user text into an address, prefix or block target.
///
/// Each case keeps the offending input verbatim (so callers can compare errors) and a reason
/// phrased for the person who typed it; `description` joins them into one line.
public enum AddressError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Input that is not recognisably either family (empty, whitespace, words).
    case invalidAddress(input: String, reason: String)
    case invalidIPv4(input: String, reason: String)
    case invalidIPv6(input: String, reason: String)
    /// A prefix whose length is malformed or out of range, or whose host bits are set
    /// where that is not allowed (`IPPrefix.init`).
    case invalidPrefix(input: String, reason: String)
    /// A well-formed target that must never be blocked (loopback, unspecified).
    case notBlockable(target: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidAddress(input, reason):
            return "invalid address '\(TerminalText.excerpt(input))': \(reason)"
        case let .invalidIPv4(input, reason):
            return "invalid IPv4 address '\(TerminalText.excerpt(input))': \(reason)"
        case let .invalidIPv6(input, reason):
            return "invalid IPv6 address '\(TerminalText.excerpt(input))': \(reason)"
        case let .invalidPrefix(input, reason):
            return "invalid prefix '\(TerminalText.excerpt(input))': \(reason)"
        case let .notBlockable(target, reason):
            // "refusing to block ::: ..." would be hard to read, so quote targets ending in a colon.
            let shown = target.hasSuffix(":") ? "'\(target)'" : target
            return "refusing to block \(shown): \(reason)"
        }
    }
}
