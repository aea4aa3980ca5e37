import Crypto
import FoundationEssentials
import Glibc
import PortcullisSystem
import SystemPackage

/// The hash chain of the incident record. Each record carries `sequence`,
/// `previous` (the hash of the record before it) and `hash`: HMAC-SHA256, under
/// the key in the state directory, of the record's canonical encoding, which is
/// its sorted-keys JSON without the `hash` member. The sealed line is that
/// encoding with `,"hash":"HEX"` added as its last member, so the encoding the
/// hash covers is recovered byte for byte by removing that suffix: nothing is
/// re-encoded, and fields unknown to an older reader still count.
public enum IncidentChain {
    static let hashMember = Array(#","hash":""#.utf8)
    /// `,"hash":"` + 64 hex digits + `"}`.
    static let sealLength = hashMember.count + 64 + 2

    /// The sealed line of `incident` (whose `hash` must be nil) and its hash.
    static func sealedLine(_ incident: Incident, key: SymmetricKey) -> (bytes: [UInt8], hash: String) {
        let canonical = Array(incident.canonicalJSON.utf8)
        let hash = code(for: canonical, key: key)
        return (canonical.dropLast() + hashMember + Array(hash.utf8) + Array(#""}"#.utf8), hash)
    }

    /// The canonical encoding inside a sealed line and the hash it carries, or
    /// nil when the line does not end with a hash member as the writer puts it.
    public static func unsealed(_ line: [UInt8]) -> (canonical: [UInt8], hash: String)? {
        guard line.count > sealLength + 1, line.last == UInt8(ascii: "}") else { return nil }
        let sealStart = line.count - sealLength
        guard line[sealStart..<(sealStart + hashMember.count)].elementsEqual(hashMember),
              line[line.count - 2] == UInt8(ascii: "\"") else { return nil }
        let hex = line[(sealStart + hashMember.count)..<(line.count - 2)]
        guard hex.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) })
        else { return nil }
        return (Array(line[..<sealStart]) + [UInt8(ascii: "}")], String(decoding: hex, as: UTF8.self))
    }

    static func code(for canonical: [UInt8], key: SymmetricKey) -> String {
        hex(HMAC<SHA256>.authenticationCode(for: canonical, using: key))
    }

    /// The same, from an HMAC already keyed: copying it skips the key schedule for each record.
    static func code(for canonical: [UInt8], keyed: HMAC<SHA256>) -> String {
        var hmac = keyed
        hmac.update(data: canonical)
        return hex(hmac.finalize())
    }

    static func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}

/// The chain's key: 32 random bytes as 64 hex digits in `STATE_DIR/incident-key`,
/// mode 0600, made by the first writer. Whoever cannot read it cannot forge a record.
enum IncidentKey {
    static let fileName = "incident-key"

    /// nil when there is no key yet.
    static func load(directory: String) throws(IncidentLogError) -> SymmetricKey? {
        let path = directory + "/" + fileName
        guard let file = try IncidentFile.open(path, forWriting: false, what: "the incident key") else { return nil }
        defer { file.close() }
        let status = try file.status()
        guard status.st_mode & 0o077 == 0 else {
            throw IncidentLogError(description: "refusing the incident key \(path): others may read it (mode \(String(status.st_mode & 0o777, radix: 8))); chmod 600 \(path), and consider the chain forgeable by whoever read it")
        }
        let text = String(decoding: try file.bytes(at: 0, count: 256), as: UTF8.self).trimmedSpace
        guard let bytes = bytes(hex: text), bytes.count == 32 else {
            throw IncidentLogError(description: "the incident key \(path) is not 64 hex digits; restore it from a backup (without it the chain cannot be checked)")
        }
        return SymmetricKey(data: bytes)
    }

    /// The key, made now if there is none: written to a temporary file and linked
    /// into place, so a reader never sees half a key and two first writers agree.
    static func loadOrCreate(directory: String) throws(IncidentLogError) -> SymmetricKey {
        if let key = try load(directory: directory) { return key }
        try IncidentFile.createDirectories(directory, mode: 0o700, what: "the incident key")
        let path = directory + "/" + fileName
        let key = SymmetricKey(size: .bits256)
        let text = Array((key.withUnsafeBytes { IncidentChain.hex($0) } + "\n").utf8)
        let temporary = "\(directory)/.\(fileName).\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        let fd: CInt
        switch SystemCall.retryingInterrupts({ open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }) {
        case .success(let opened): fd = opened
        case .failure(let code): throw keyFailure("cannot create", temporary, code)
        }
        defer { unlink(temporary) }
        if case .failure(let code) = SystemCall.writeAll(fd, text) {
            close(fd)
            throw keyFailure("cannot write", temporary, code)
        }
        if case .failure(let code) = SystemCall.retryingInterrupts({ fsync(fd) }) {
            close(fd)
            throw keyFailure("cannot sync", temporary, code)
        }
        close(fd)
        switch SystemCall.retryingInterrupts({ link(temporary, path) }) {
        case .success, .failure(.fileExists): break
        case .failure(let code): throw keyFailure("cannot create", path, code)
        }
        // Best effort: the link survives a crash only once the directory is synced too.
        if case .success(let directoryFD) = SystemCall.retryingInterrupts({ open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }) {
            _ = SystemCall.retryingInterrupts { fsync(directoryFD) }
            close(directoryFD)
        }
        // Another first writer may have linked its key first: use whichever is in place.
        guard let placed = try load(directory: directory) else { throw keyFailure("cannot read back", path, .noSuchFileOrDirectory) }
        return placed
    }

    static func bytes(hex text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        func value(_ digit: UInt8) -> UInt8? {
            switch digit {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var bytes: [UInt8] = []
        var index = 0
        while index < digits.count {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    /// `code` is the errno of the failed call, taken by the caller: formatting the message could change errno.
    static func keyFailure(_ what: String, _ path: String, _ code: Errno) -> IncidentLogError {
        IncidentLogError(description: "\(what) the incident key \(path): \(IncidentFile.message(code)); run as root, or give a writable state directory with --state-dir or PORTCULLIS_STATE_DIR")
    }
}
