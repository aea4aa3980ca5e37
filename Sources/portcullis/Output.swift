import FoundationEssentials
import Glibc
import PortcullisControl
import PortcullisCore
import PortcullisSystem

/// How blocks and times are shown to people and to scripts.
enum Output {
    static func localTime(unixMilliseconds: Int64) -> String {
        var seconds = time_t(unixMilliseconds.floorDivided(by: 1000))
        var parts = tm()
        localtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let length = strftime(&buffer, buffer.count, "%Y-%m-%d %H:%M:%S %Z", &parts)
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A number with a fixed count of decimals, rounded half away from zero.
    static func fixed(_ value: Double, digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = Int64((abs(value) * scale).rounded())
        let whole = String(scaled / Int64(scale))
        let sign = value < 0 && scaled != 0 ? "-" : ""
        guard digits > 0 else { return sign + whole }
        return sign + whole + "." + leftPadded(String(scaled % Int64(scale)), to: digits, with: "0")
    }

    static func leftPadded(_ text: String, to width: Int, with pad: Character) -> String {
        String(repeating: pad, count: max(0, width - text.count)) + text
    }

    static func rightPadded(_ text: String, to width: Int) -> String {
        text + String(repeating: " ", count: max(0, width - text.count))
    }

    static func bytes(_ count: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : "\(fixed(value, digits: 1)) \(units[unit])"
    }

    /// A throttle's terms as `list` and `throttle` show them: "100/s burst 10", "... new connections".
    static func throttle(_ rate: ThrottleRate) -> String {
        "\(rate.packetsPerSecond)/s burst \(rate.burst)" + (rate.newConnectionsOnly ? ", new connections" : "")
    }

    static func duration(seconds: Double) -> String {
        DurationText.format(.milliseconds(Int64((seconds * 1000).rounded(.down))))
    }

    /// "1m40s", "permanent", "expired 3s ago".
    static func remaining(_ block: BlockRecord) -> String {
        guard let remaining = block.remainingSeconds else { return "permanent" }
        if block.expired { return "expired \(duration(seconds: -remaining)) ago" }
        return duration(seconds: remaining)
    }

    static func expiry(_ block: BlockRecord) -> String {
        block.expiresAtUnixMs.map { localTime(unixMilliseconds: $0) } ?? "never"
    }

    /// Pads columns to the widest cell; the last column is left ragged.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                index == cells.count - 1 ? cell : rightPadded(cell, to: widths[index])
            }.joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    static func json<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else { return "null" }
        return String(decoding: data, as: UTF8.self)
    }
}

extension Int64 {
    /// Division rounding toward negative infinity, so times before 1970 still format.
    func floorDivided(by divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? quotient - 1 : quotient
    }
}

/// Standard output through one buffer, written with as few write(2) calls as it takes: for
/// output of a million lines.
struct StandardOutput {
    private var buffer = JSONBytes(capacity: 1 << 17)

    mutating func write(_ text: String) {
        buffer.appendRaw(text)
        flushWhenFull()
    }

    /// JSON written by `body` straight into the buffer.
    mutating func writeJSON(_ body: (inout JSONBytes) -> Void) {
        body(&buffer)
        flushWhenFull()
    }

    private mutating func flushWhenFull() {
        if buffer.bytes.count >= 1 << 16 { flush() }
    }

    mutating func flush() {
        guard !buffer.bytes.isEmpty else { return }
        _ = SystemCall.writeAll(1, buffer.bytes)
        buffer.removeAll()
    }
}

extension BlockRecord {
    /// The record as an element of a JSON array, byte for byte as ``Output/json(_:)`` formats a
    /// whole array (sorted keys, pretty, absent values left out): a streamed listing reads the
    /// same as one printed at once. Written by hand because JSONEncoder spends ~90 µs a record,
    /// 90 s for a million; a test holds the two to the same output.
    func appendJSONArrayElement(to json: inout JSONBytes) {
        var first = true
        func key(_ name: String) {
            json.appendRaw(first ? "  {\n    \"" : ",\n    \"")
            first = false
            json.appendRaw(name)
            json.appendRaw("\" : ")
        }
        func text(_ name: String, _ value: String?) {
            guard let value else { return }
            key(name)
            json.appendString(value)
        }
        func time(_ name: String, _ value: Int64?) {
            guard let value else { return }
            key(name)
            json.appendRaw("\"")
            json.appendRFC3339(UTCTime(unixMilliseconds: value))
            json.appendRaw("\"")
        }
        func number(_ name: String, _ value: Int64?) {
            guard let value else { return }
            key(name)
            json.appendInteger(value)
        }
        func number(_ name: String, _ value: UInt64) {
            key(name)
            json.appendInteger(value)
        }
        func flag(_ name: String, _ value: Bool) {
            key(name)
            json.appendRaw(value ? "true" : "false")
        }
        // The times are formatted from their milliseconds, which the record holds beside them.
        time("createdAt", createdAtUnixMs)
        number("createdAtUnixMs", createdAtUnixMs)
        number("droppedBytes", droppedBytes)
        number("droppedPackets", droppedPackets)
        flag("expired", expired)
        time("expiresAt", expiresAtUnixMs)
        number("expiresAtUnixMs", expiresAtUnixMs)
        text("family", family.rawValue)
        text("kind", kind.rawValue)
        text("node", node)
        text("origin", origin)
        if let passedPackets { number("passedPackets", passedPackets) }
        flag("permanent", permanent)
        text("reason", reason)
        time("refreshedAt", refreshedAtUnixMs)
        number("refreshedAtUnixMs", refreshedAtUnixMs)
        if let remainingSeconds {
            key("remainingSeconds")
            json.appendRaw(JSONText.number(remainingSeconds))
        }
        number("requestedSeconds", requestedSeconds)
        text("source", source?.rawValue)
        text("target", target)
        if let throttle {
            key("throttle")
            json.appendRaw("{\n      \"burst\" : ")
            json.appendInteger(UInt64(throttle.burst))
            if let newConnections = throttle.newConnections {
                json.appendRaw(",\n      \"newConnections\" : ")
                json.appendRaw(newConnections ? "true" : "false")
            }
            json.appendRaw(",\n      \"rate\" : ")
            json.appendInteger(UInt64(throttle.rate))
            json.appendRaw("\n    }")
        }
        json.appendRaw("\n  }")
    }

    var jsonArrayElement: String {
        var json = JSONBytes()
        appendJSONArrayElement(to: &json)
        return String(decoding: json.bytes, as: UTF8.self)
    }
}

/// JSON values as JSONEncoder writes them.
enum JSONText {
    static func quoted(_ value: String) -> String { JSONStringLiteral.quoted(value) }

    /// Whole numbers without a fraction, others in the shortest form that reads back the same.
    static func number(_ value: Double) -> String {
        if value.rounded() == value, abs(value) < 1e15 { return String(Int64(value)) }
        return value.description
    }
}

/// Writes `text` to `path` whole or not at all: beside it, synced, and renamed over it, so a
/// reader (fail2ban loading an action, a browser opening a report) never sees half a file.
/// `what` names the file in errors.
func writeFileAtomically(_ text: String, to path: String, mode: mode_t, what: String) throws {
    let temporary = "\(path).tmp-\(getpid())"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
    guard fd >= 0 else {
        throw RuntimeFailure("cannot write \(what) to \(TerminalText.escaped(path)): \(String(cString: strerror(errno))); check the directory exists and is writable")
    }
    var failure: String?
    if case .failure(let code) = SystemCall.writeAll(fd, Array(text.utf8)) {
        failure = "\(code)"
    } else if fchmod(fd, mode) != 0 || fsync(fd) != 0 {
        failure = String(cString: strerror(errno))
    }
    close(fd)
    if let failure {
        unlink(temporary)
        throw RuntimeFailure("cannot write \(what) to \(TerminalText.escaped(path)): \(failure); nothing was written")
    }
    guard rename(temporary, path) == 0 else {
        let reason = String(cString: strerror(errno))
        unlink(temporary)
        throw RuntimeFailure("cannot write \(what) to \(TerminalText.escaped(path)): \(reason)")
    }
}
