/// What an origin may be: a name of a place within a source (`fail2ban/sshd`,
/// `crowdsec/cscli`), kept with the block and matched exactly by an unblock or a flush.
public enum OriginText {
    /// 1 to ``BlockRequest/maximumOriginBytes`` bytes, none of them a control character or a space.
    public static func isValid(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= BlockRequest.maximumOriginBytes
            && text.unicodeScalars.allSatisfy { $0.value > 0x20 && $0.value != 0x7F && !(0x80..<0xA0).contains($0.value) }
    }
}

/// fail2ban's terms, turned into the blocklist's: what its action tags (`<name>`, `<ip>`,
/// `<time>`, `<bantime>`, `<bancount>`, `<restored>`) ask for. Both of Portcullis's fail2ban
/// actions (the shell one, through `portcullis fail2ban ban`, and the Python one, through the
/// control API) come to the same request.
public enum Fail2ban {
    /// The origin of a jail's blocks.
    public static func origin(jail: String) -> String { "fail2ban/" + jail }

    /// A jail's name as fail2ban allows it in a section header, and short enough to be an origin.
    public static func validateJail(_ jail: String) throws(Fail2banError) {
        let allowed = jail.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "@"): true
            default: false
            }
        }
        guard !jail.isEmpty, jail.utf8.count <= 64, allowed else { throw .badJail(jail) }
    }

    /// The block a ban asks for. `time` is the ban's start (`<time>`, epoch seconds, with a
    /// fraction), `bantime` its length (`<bantime>`, seconds; negative: permanent). The block
    /// ends at `time` + `bantime`, not `bantime` from now: a ban restored at fail2ban's start
    /// carries its original `<time>` and its full `<bantime>`, so it ends when it would have.
    public static func ban(_ target: BlockTarget, jail: String, time: Double, bantime: Int64, bancount: Int = 0,
                           restored: Bool = false) throws(Fail2banError) -> BlockRequest {
        try validateJail(jail)
        guard time.isFinite, time > 0, time < 1e11 else { throw .badTime(String(time)) }
        var reason = "fail2ban jail \(jail)"
        if bancount > 1 { reason += ", ban \(bancount)" }
        if restored { reason += ", restored" }
        guard bantime >= 0 else {
            return BlockRequest(target: target, duration: nil, reason: reason, source: .fail2ban, origin: origin(jail: jail))
        }
        guard (1...DurationText.maximumSeconds).contains(bantime) else { throw .badBantime(String(bantime)) }
        let start = Int64((time * 1000).rounded(.down))
        return BlockRequest(target: target, duration: .seconds(bantime), reason: reason, source: .fail2ban,
                            origin: origin(jail: jail), expiresUnixMilliseconds: start + bantime * 1000)
    }
}

public enum Fail2banError: Error, Sendable, Equatable, CustomStringConvertible {
    case badJail(String)
    case badTime(String)
    case badBantime(String)

    public var description: String {
        switch self {
        case .badJail(let jail):
            "the jail name '\(TerminalText.excerpt(jail))' must be 1 to 64 letters, digits, '-', '_', '.' or '@'"
        case .badTime(let time):
            "the ban time '\(TerminalText.excerpt(time))' must be fail2ban's <time>, seconds since 1970"
        case .badBantime(let bantime):
            "the bantime '\(TerminalText.excerpt(bantime))' must be -1 (permanent) or 1 to \(DurationText.maximumSeconds) seconds"
        }
    }
}

/// One line of sshguard's backend protocol, as its blocker writes them to the backend's
/// standard input (`sshg-fw` in sshguard's source).
public enum SshguardCommand: Sendable, Equatable {
    /// `block ADDR 4|6 PREFIXLEN`: the address masked to the prefix sshguard asked for
    /// (sshguard sends the attacker's own address with its subnet size, unmasked).
    case block(BlockTarget)
    /// `release ADDR 4|6 PREFIXLEN`.
    case release(BlockTarget)
    /// Lift every block sshguard made.
    case flush
    /// Lift them all when sshguard exits (its blocker sends this first, at start).
    case flushOnExit

    /// The command on `line`; a line sshguard would not send is an error, as its own
    /// backends refuse it.
    public static func parse(_ text: some StringProtocol) throws(SshguardError) -> SshguardCommand {
        let line = String(text)
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        switch (words.first.map { String($0) } ?? "", words.count) {
        case ("flush", 1): return .flush
        case ("flushonexit", 1): return .flushOnExit
        case ("block", 4), ("release", 4):
            let target = try target(address: words[1], kind: words[2], length: words[3], line: line)
            return words[0] == "block" ? .block(target) : .release(target)
        default:
            throw .unknown(String(line))
        }
    }

    private static func target(address: Substring, kind: Substring, length: Substring, line: String) throws(SshguardError) -> BlockTarget {
        let parsed: IPAddress
        do {
            parsed = try IPAddress(parsing: String(address))
        } catch {
            throw .badAddress(String(line), error.description)
        }
        let family: AddressFamily
        switch kind {
        case "4": family = .ipv4
        case "6": family = .ipv6
        default: throw .unknown(String(line))
        }
        guard parsed.family == family, let bits = Int(length), (1...family.bitWidth).contains(bits) else {
            throw .badAddress(String(line), "the address, its kind \(kind) and the prefix length \(length) do not agree")
        }
        if bits == family.bitWidth { return .address(parsed) }
        do {
            return .prefix(try IPPrefix(address: parsed.masked(to: bits), length: bits))
        } catch {
            throw .badAddress(String(line), error.description)
        }
    }
}

public enum SshguardError: Error, Sendable, Equatable, CustomStringConvertible {
    case unknown(String)
    case badAddress(String, String)

    public var description: String {
        switch self {
        case .unknown(let line): "not an sshguard backend command: '\(TerminalText.excerpt(line))'"
        case .badAddress(let line, let why): "'\(TerminalText.excerpt(line))': \(why)"
        }
    }
}
