public enum AddressFamily: String, Sendable, Hashable, Codable {
    case ipv4, ipv6

    public var bitWidth: Int {
        switch self {
        case .ipv4: return 32
        case .ipv6: return 128
        }
    }
}

public enum IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)

    /// Strict parser; see `AddressParser` for the accepted forms. IPv4-mapped IPv6 input
    /// becomes `.v4` because the data path matches IPv4 packets against IPv4 keys only.
    public init(parsing text: String) throws(AddressError) {
        self = try withBytes(of: text) { AddressParser.parse($0) }.get().address
    }

    public var family: AddressFamily {
        switch self {
        case .v4: return .ipv4
        case .v6: return .ipv6
        }
    }

    public var isLoopback: Bool {
        switch self {
        case .v4(let a): return a.value >> 24 == 127
        case .v6(let a): return a.isLoopback
        }
    }

    public var isUnspecified: Bool {
        switch self {
        case .v4(let a): return a.value == 0
        case .v6(let a): return a.isUnspecified
        }
    }

    public var description: String {
        switch self {
        case .v4(let a): return a.description
        case .v6(let a): return a.description
        }
    }

    /// IPv4 sorts before IPv6 so listings group by family.
    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        switch (lhs, rhs) {
        case let (.v4(a), .v4(b)): return a < b
        case let (.v6(a), .v6(b)): return a < b
        case (.v4, .v6): return true
        case (.v6, .v4): return false
        }
    }

    /// Clears every bit after the first `length` bits.
    public func masked(to length: Int) -> IPAddress {
        switch self {
        case .v4(let a):
            return .v4(IPv4Address(a.value & IPv4Address.mask(length: length)))
        case .v6(let a):
            let m = IPv6Address.mask(length: length)
            return .v6(IPv6Address(high: a.high & m.high, low: a.low & m.low))
        }
    }
}

/// Byte-level address parsing. Failures are reported as small enums carrying positions so
/// that the success path never allocates; messages are only built once we know we failed.
enum AddressParser {
    struct Parsed {
        var address: IPAddress
        /// True when the text was an IPv4-mapped IPv6 address that we turned into `.v4`.
        var wasMapped: Bool
    }

    enum V4Failure {
        case empty
        case unexpected(at: Int)
        case emptyOctet(at: Int)
        case leadingZero(octetStart: Int)
        case outOfRange(octetStart: Int)
        case tooManyOctets
        case tooFewOctets(found: Int)
    }

    enum V6Failure {
        case leadingColon
        case trailingColon
        case unexpected(at: Int)
        case groupTooLong(groupStart: Int)
        case multipleDoubleColons
        case tooManyGroups
        case tooFewGroups(found: Int)
        case doubleColonWithoutZeros
        case embeddedIPv4(groupStart: Int, V4Failure)
        case embeddedIPv4TooEarly(groupStart: Int)
    }

    enum V4Outcome {
        case success(UInt32)
        case failure(V4Failure)
    }

    enum V6Outcome {
        case success(IPv6Address)
        case failure(V6Failure)
    }

    static func parse(_ p: UnsafeBufferPointer<UInt8>) -> Result<Parsed, AddressError> {
        // IPv4 first: it is the common case and it gives up within a few bytes on IPv6 text.
        let v4 = parseV4(p)
        if case .success(let value) = v4 {
            return .success(Parsed(address: .v4(IPv4Address(value)), wasMapped: false))
        }
        guard p.contains(byte: ASCII.colon) else {
            if case .failure(let failure) = v4 {
                return .failure(v4Error(p, failure))
            }
            return .failure(.invalidAddress(input: p.string, reason: "not an IP address"))
        }
        switch parseV6(p) {
        case .success(let address):
            if let mapped = address.mappedIPv4 {
                return .success(Parsed(address: .v4(mapped), wasMapped: true))
            }
            return .success(Parsed(address: .v6(address), wasMapped: false))
        case .failure(let failure):
            return .failure(v6Error(p, failure))
        }
    }

    // MARK: IPv4

    static func parseV4(_ p: UnsafeBufferPointer<UInt8>) -> V4Outcome {
        let n = p.count
        if n == 0 { return .failure(.empty) }
        var value: UInt32 = 0
        var octet: UInt32 = 0
        var digits = 0
        var octetStart = 0
        var completed = 0
        var i = 0
        while i < n {
            let c = p[i]
            if let d = ASCII.digitValue(c) {
                if digits == 0 {
                    octetStart = i
                } else if p[octetStart] == ASCII.zero {
                    return .failure(.leadingZero(octetStart: octetStart))
                }
                digits += 1
                if digits > 3 { return .failure(.outOfRange(octetStart: octetStart)) }
                octet = octet &* 10 &+ UInt32(d)
            } else if c == ASCII.dot {
                if digits == 0 { return .failure(.emptyOctet(at: i)) }
                if octet > 255 { return .failure(.outOfRange(octetStart: octetStart)) }
                completed += 1
                if completed == 4 { return .failure(.tooManyOctets) }
                value = value << 8 | octet
                octet = 0
                digits = 0
            } else {
                return .failure(.unexpected(at: i))
            }
            i += 1
        }
        if digits == 0 { return .failure(.emptyOctet(at: n)) }
        if octet > 255 { return .failure(.outOfRange(octetStart: octetStart)) }
        completed += 1
        if completed != 4 { return .failure(.tooFewOctets(found: completed)) }
        return .success(value << 8 | octet)
    }

    static func v4Reason(_ p: UnsafeBufferPointer<UInt8>, _ failure: V4Failure) -> String {
        func octetText(from start: Int) -> String {
            let end = p.firstIndex(of: ASCII.dot, from: start) ?? p.count
            return p.string(start..<end)
        }
        switch failure {
        case .empty:
            return "the address is empty"
        case .unexpected(let at):
            let start = (p[..<at].lastIndex(of: ASCII.dot)).map { $0 + 1 } ?? 0
            let text = octetText(from: start)
            let lower = text.lowercased()
            if lower.hasPrefix("0x") {
                return "octet '\(TerminalText.excerpt(text))' is hexadecimal; only decimal octets are allowed"
            }
            if at < p.count, p[at] == ASCII.percent {
                return "zone ids ('\(TerminalText.excerpt(p.string(at..<p.count)))') are not allowed"
            }
            return "unexpected \(describeByte(p[at])) in octet '\(TerminalText.excerpt(text))'"
        case .emptyOctet(let at):
            if at == p.count { return "ends with a dot; expected four decimal octets" }
            if at == 0 { return "starts with a dot; expected four decimal octets" }
            return "empty octet between dots; expected four decimal octets"
        case .leadingZero(let start):
            let text = octetText(from: start)
            return "octet '\(TerminalText.excerpt(text))' has a leading zero, which some tools read as octal; write it without leading zeros"
        case .outOfRange(let start):
            return "octet \(TerminalText.excerpt(octetText(from: start))) is out of range 0-255"
        case .tooManyOctets:
            if p.count > 0, p[p.count - 1] == ASCII.dot {
                return "ends with a dot; expected four decimal octets"
            }
            let found = p.reduce(1) { $1 == ASCII.dot ? $0 + 1 : $0 }
            return "expected four decimal octets, found \(found)"
        case .tooFewOctets(let found):
            return "expected four decimal octets, found \(found)"
        }
    }

    static func v4Error(_ p: UnsafeBufferPointer<UInt8>, _ failure: V4Failure) -> AddressError {
        let input = p.string
        if case .empty = failure {
            return .invalidAddress(input: input, reason: "the address is empty")
        }
        if let general = generalProblem(p) {
            return .invalidAddress(input: input, reason: general)
        }
        // Words like "localhost" are not failed IPv4 attempts; say so instead of talking about octets.
        let looksNumeric = ASCII.digitValue(p[0]) != nil || p.contains(byte: ASCII.dot)
        guard looksNumeric else {
            return .invalidAddress(input: input, reason: "not an IPv4 or IPv6 address (host names are not resolved)")
        }
        return .invalidIPv4(input: input, reason: v4Reason(p, failure))
    }

    /// Problems that are worth reporting ahead of any family-specific detail.
    static func generalProblem(_ p: UnsafeBufferPointer<UInt8>) -> String? {
        if p.contains(where: ASCII.isWhitespace) {
            return "whitespace is not allowed"
        }
        if p.count > 0, p[0] == ASCII.openBracket || p[p.count - 1] == ASCII.closeBracket {
            return "brackets are not allowed; write the address without [ ]"
        }
        return nil
    }

    // MARK: IPv6

    static func parseV6(_ p: UnsafeBufferPointer<UInt8>) -> V6Outcome {
        let n = p.count
        var groups = SIMD8<UInt16>()
        var count = 0
        var gap = -1
        var i = 0
        if n >= 2 && p[0] == ASCII.colon && p[1] == ASCII.colon {
            gap = 0
            i = 2
        } else if n >= 1 && p[0] == ASCII.colon {
            return .failure(.leadingColon)
        }
        while i < n {
            let groupStart = i
            var group: UInt16 = 0
            var digits = 0
            while i < n, let h = ASCII.hexValue(p[i]) {
                digits += 1
                if digits > 4 { return .failure(.groupTooLong(groupStart: groupStart)) }
                group = group << 4 | UInt16(h)
                i += 1
            }
            if i < n && p[i] == ASCII.dot {
                // Dotted quad: only allowed as the final 32 bits, so it must run to the end.
                if count > 6 { return .failure(.embeddedIPv4TooEarly(groupStart: groupStart)) }
                switch parseV4(p.slice(groupStart..<n)) {
                case .failure(let f):
                    return .failure(.embeddedIPv4(groupStart: groupStart, f))
                case .success(let v):
                    groups[count] = UInt16(truncatingIfNeeded: v >> 16)
                    groups[count + 1] = UInt16(truncatingIfNeeded: v)
                    count += 2
                }
                i = n
                break
            }
            if digits == 0 { return .failure(.unexpected(at: i)) }
            if count == 8 { return .failure(.tooManyGroups) }
            groups[count] = group
            count += 1
            if i == n { break }
            if p[i] != ASCII.colon { return .failure(.unexpected(at: i)) }
            i += 1
            if i == n { return .failure(.trailingColon) }
            if p[i] == ASCII.colon {
                if gap >= 0 { return .failure(.multipleDoubleColons) }
                gap = count
                i += 1
            }
        }
        if gap < 0 {
            if count < 8 { return .failure(.tooFewGroups(found: count)) }
        } else {
            if count > 7 { return .failure(.doubleColonWithoutZeros) }
            let tail = count - gap
            var expanded = SIMD8<UInt16>()
            for k in 0..<gap { expanded[k] = groups[k] }
            for k in 0..<tail { expanded[8 - tail + k] = groups[gap + k] }
            groups = expanded
        }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for k in 0..<4 {
            high = high << 16 | UInt64(groups[k])
            low = low << 16 | UInt64(groups[k + 4])
        }
        return .success(IPv6Address(high: high, low: low))
    }

    static func v6Error(_ p: UnsafeBufferPointer<UInt8>, _ failure: V6Failure) -> AddressError {
        let input = p.string
        if let general = generalProblem(p) {
            return .invalidIPv6(input: input, reason: general)
        }
        if let percent = p.firstIndex(of: ASCII.percent) {
            let zone = TerminalText.excerpt(p.string(percent..<p.count))
            return .invalidIPv6(input: input, reason: "zone ids ('\(zone)') are not allowed; remove the zone")
        }
        // "192.0.2.1:8080" reaches here because of the colon; it is an address with a port.
        if let colon = p.firstIndex(of: ASCII.colon), colon > 0,
           case .success = parseV4(p.slice(0..<colon)) {
            return .invalidIPv4(input: input, reason: "ports are not allowed; write the address alone")
        }
        let reason: String
        switch failure {
        case .leadingColon:
            reason = "starts with a single ':'; use '::' for leading zero groups"
        case .trailingColon:
            reason = "ends with a single ':'; use '::' for trailing zero groups"
        case .unexpected(let at):
            if p[at] == ASCII.colon {
                reason = "unexpected ':' at position \(at + 1); a group is empty or there are too many colons"
            } else {
                reason = "unexpected \(describeByte(p[at])) at position \(at + 1)"
            }
        case .groupTooLong(let start):
            var end = start
            while end < p.count, ASCII.hexValue(p[end]) != nil { end += 1 }
            reason = "group '\(TerminalText.excerpt(p.string(start..<end)))' has more than 4 hex digits"
        case .multipleDoubleColons:
            reason = "'::' may appear only once"
        case .tooManyGroups:
            reason = "too many groups; an IPv6 address has at most 8"
        case .tooFewGroups(let found):
            reason = "expected 8 groups, found \(found); use '::' to stand for zero groups"
        case .doubleColonWithoutZeros:
            reason = "'::' must stand for at least one zero group, but there are already 8 groups"
        case .embeddedIPv4TooEarly:
            reason = "an embedded IPv4 address may only fill the last 32 bits"
        case let .embeddedIPv4(start, f):
            let part = p.slice(start..<p.count)
            reason = "embedded IPv4 address '\(TerminalText.excerpt(part.string))' is invalid: \(v4Reason(part, f))"
        }
        return .invalidIPv6(input: input, reason: reason)
    }
}
