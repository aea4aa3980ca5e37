/// What a user asked to block or allow: a single address or a prefix.
public enum BlockTarget: Hashable, Sendable, Comparable, CustomStringConvertible {
    case address(IPAddress)
    case prefix(IPPrefix)

    public var family: AddressFamily {
        switch self {
        case .address(let a): return a.family
        case .prefix(let p): return p.family
        }
    }

    /// The target as a prefix (/32 or /128 for a single address), the shape LPM-trie keys take.
    public var kind: BlockKind {
        if case .prefix = self { return .prefix }
        return .address
    }

    public var asPrefix: IPPrefix {
        switch self {
        case .address(let a): return IPPrefix(host: a)
        case .prefix(let p): return p
        }
    }

    public var description: String {
        switch self {
        case .address(let a): return a.description
        case .prefix(let p): return p.description
        }
    }

    /// Sorts like the covered ranges: by network address, wider first, and a bare address
    /// before an equivalent full-length prefix so the order is total.
    public static func < (lhs: BlockTarget, rhs: BlockTarget) -> Bool {
        let l = lhs.asPrefix
        let r = rhs.asPrefix
        if l != r { return l < r }
        if case .address = lhs, case .prefix = rhs { return true }
        return false
    }
}

public struct ParsedTarget: Sendable, Equatable {
    public let target: BlockTarget
    /// One line per normalization applied, in the order applied; empty when the input was canonical in shape.
    public let notes: [String]

    public init(target: BlockTarget, notes: [String]) {
        self.target = target
        self.notes = notes
    }
}

extension BlockTarget {
    /// Parses "ADDR" or "ADDR/LEN", normalizing (with notes) rather than rejecting
    /// mapped addresses, host bits and full-length prefixes.
    public static func parse(_ text: String) throws(AddressError) -> ParsedTarget {
        try withBytes(of: text) { TargetParser.parse($0) }.get()
    }

    /// Throws when blocking the target could cut the host off from itself or is meaningless.
    public func validateBlockable() throws(AddressError) {
        switch self {
        case .address(let address):
            var effective = address
            // Defensive: parsing never yields a mapped .v6, but direct construction can.
            if case .v6(let v6) = address, let v4 = v6.mappedIPv4 {
                effective = .v4(v4)
            }
            if effective.isLoopback {
                throw .notBlockable(target: description, reason: "loopback addresses are never blocked")
            }
            if effective.isUnspecified {
                throw .notBlockable(
                    target: description,
                    reason: "the unspecified address is never a real source and is not blockable")
            }
        case .prefix(let prefix):
            for range in Loopback.ranges where range.family == prefix.family {
                if range.contains(prefix) {
                    throw .notBlockable(target: description, reason: "loopback addresses are never blocked")
                }
                if prefix.contains(range) {
                    let what = range.length == range.family.bitWidth
                        ? "the loopback address \(range.address)"
                        : "the loopback range \(range)"
                    throw .notBlockable(target: description, reason: "it contains \(what), which is never blocked")
                }
            }
        }
    }
}

private enum Loopback {
    /// Ordered so that the message for a huge IPv6 prefix names ::1 rather than the mapped range.
    static let ranges: [IPPrefix] = [
        IPPrefix(uncheckedNetwork: .v4(IPv4Address(127, 0, 0, 0)), length: 8),
        IPPrefix(uncheckedNetwork: .v6(IPv6Address(high: 0, low: 1)), length: 128),
        IPPrefix(uncheckedNetwork: .v6(IPv6Address(high: 0, low: 0xFFFF_7F00_0000)), length: 104),
    ]
}

enum TargetParser {
    static func parse(_ p: UnsafeBufferPointer<UInt8>) -> Result<ParsedTarget, AddressError> {
        guard let slash = p.firstIndex(of: ASCII.slash) else {
            switch AddressParser.parse(p) {
            case .failure(let error):
                return .failure(error)
            case .success(let parsed):
                var notes: [String] = []
                if parsed.wasMapped {
                    notes.append("\(p.string) is an IPv4-mapped address; using \(parsed.address)")
                }
                return .success(ParsedTarget(target: .address(parsed.address), notes: notes))
            }
        }

        if slash == 0 {
            return .failure(.invalidPrefix(input: p.string, reason: "the address before '/' is missing"))
        }
        let parsed: AddressParser.Parsed
        switch AddressParser.parse(p.slice(0..<slash)) {
        case .failure(let error): return .failure(error)
        case .success(let value): parsed = value
        }

        let writtenWidth = parsed.wasMapped ? 128 : parsed.address.family.bitWidth
        let writtenLength: Int
        switch parseLength(p.slice(slash + 1..<p.count), width: writtenWidth) {
        case .failure(let reason):
            return .failure(.invalidPrefix(input: p.string, reason: reason.text(width: writtenWidth, p.slice(slash + 1..<p.count))))
        case .success(let value):
            writtenLength = value
        }

        var notes: [String] = []
        var address = parsed.address
        var length = writtenLength
        var shown: String?  // text of the prefix as it stands after the previous note, built lazily

        if parsed.wasMapped {
            guard writtenLength >= 96 else {
                return .failure(.invalidPrefix(
                    input: p.string,
                    reason: "an IPv4-mapped prefix needs a length of at least 96 (96 plus the IPv4 prefix length)"))
            }
            length = writtenLength - 96
            let now = "\(address)/\(length)"
            notes.append("\(p.string) is an IPv4-mapped prefix; using \(now)")
            shown = now
        }

        let network = address.masked(to: length)
        if network != address {
            let now = "\(network)/\(length)"
            notes.append("\(shown ?? p.string) has host bits set; using \(now)")
            shown = now
            address = network
        }

        if length == address.family.bitWidth {
            notes.append("\(shown ?? p.string) is a single address; using \(address)")
            return .success(ParsedTarget(target: .address(address), notes: notes))
        }
        return .success(ParsedTarget(
            target: .prefix(IPPrefix(uncheckedNetwork: address, length: length)), notes: notes))
    }

    enum LengthFailure: Error {
        case missing
        case notDecimal
        case leadingZero
        case outOfRange

        func text(width: Int, _ p: UnsafeBufferPointer<UInt8>) -> String {
            let written = TerminalText.excerpt(p.string)
            switch self {
            case .missing: return "missing prefix length after '/'"
            case .notDecimal: return "prefix length '\(written)' must be plain decimal digits"
            case .leadingZero: return "prefix length '\(written)' has a leading zero"
            case .outOfRange:
                return "prefix length \(written) is out of range 0-\(width) for \(width == 32 ? "IPv4" : "IPv6")"
            }
        }
    }

    static func parseLength(_ p: UnsafeBufferPointer<UInt8>, width: Int) -> Result<Int, LengthFailure> {
        if p.count == 0 { return .failure(.missing) }
        var value = 0
        for b in p {
            guard let d = ASCII.digitValue(b) else { return .failure(.notDecimal) }
            // Stop accumulating once out of range so a long digit string cannot overflow.
            if value <= width { value = value * 10 + Int(d) }
        }
        if p.count > 1 && p[0] == ASCII.zero { return .failure(.leadingZero) }
        if value > width { return .failure(.outOfRange) }
        return .success(value)
    }
}

extension BlockTarget {
    /// Whether every address of `other` is inside this target.
    public func contains(_ other: BlockTarget) -> Bool {
        switch (self, other) {
        case (.address(let a), .address(let b)): a == b
        case (.address, .prefix): false
        case (.prefix(let p), .address(let a)): p.contains(a)
        case (.prefix(let p), .prefix(let q)): p.contains(q)
        }
    }
}

/// Whether a block holds a single address or a prefix.
public enum BlockKind: String, Codable, Sendable, CaseIterable {
    case address, prefix
}
