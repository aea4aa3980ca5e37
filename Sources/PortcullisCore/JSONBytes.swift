/// JSON written straight into bytes, for the places that write it by hand: Wazuh's one-line
/// protocol messages and `list --json` of a million blocks, where building each value as a
/// String cost about ten microseconds a block. Strings are escaped per RFC 8259 as
/// JSONEncoder escapes them with `.withoutEscapingSlashes`.
public struct JSONBytes: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    /// Text copied as it is: punctuation, keys known to need no escaping, numbers already formatted.
    public mutating func appendRaw(_ text: String) {
        var text = text
        text.withUTF8 { bytes.append(contentsOf: $0) }
    }

    /// `value` as a JSON string literal, quotes included.
    public mutating func appendString(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { utf8 in
            var start = 0
            for (index, byte) in utf8.enumerated() where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<index]))
                appendEscape(byte)
                start = index + 1
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...]))
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private mutating func appendEscape(_ byte: UInt8) {
        let short: UInt8? = switch byte {
        case UInt8(ascii: "\""): UInt8(ascii: "\"")
        case UInt8(ascii: "\\"): UInt8(ascii: "\\")
        case UInt8(ascii: "\n"): UInt8(ascii: "n")
        case UInt8(ascii: "\r"): UInt8(ascii: "r")
        case UInt8(ascii: "\t"): UInt8(ascii: "t")
        case 0x08: UInt8(ascii: "b")
        case 0x0C: UInt8(ascii: "f")
        default: nil
        }
        bytes.append(UInt8(ascii: "\\"))
        if let short {
            bytes.append(short)
        } else {
            let hex = Array("0123456789abcdef".utf8)
            bytes.append(contentsOf: [UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
        }
    }

    /// A whole number in decimal. Concrete types, not generic: a generic call across the module
    /// boundary asks the witness table for each operation.
    public mutating func appendInteger(_ value: Int64) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        appendDigits(value.magnitude, minimumCount: 1)
    }

    public mutating func appendInteger(_ value: UInt64) {
        appendDigits(value, minimumCount: 1)
    }

    /// `value`'s decimal digits, zero-padded on the left to `minimumCount`.
    private mutating func appendDigits(_ value: UInt64, minimumCount: Int) {
        // Twenty digits hold any UInt64; written from the right, then copied once.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var remaining = value
            var index = 20
            repeat {
                index -= 1
                digits[index] = UInt8(ascii: "0") + UInt8(remaining % 10)
                remaining /= 10
            } while remaining > 0 || 20 - index < minimumCount
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: digits[index...]))
        }
    }

    /// `2026-12-02T17:26:47.316Z`, unquoted: RFC 3339 in UTC with milliseconds.
    public mutating func appendRFC3339(_ time: UTCTime) {
        if time.year < 0 { bytes.append(UInt8(ascii: "-")) }
        appendDigits(time.year.magnitude, minimumCount: 4)
        bytes.append(UInt8(ascii: "-"))
        appendDigits(UInt64(time.month), minimumCount: 2)
        bytes.append(UInt8(ascii: "-"))
        appendDigits(UInt64(time.day), minimumCount: 2)
        bytes.append(UInt8(ascii: "T"))
        appendDigits(UInt64(time.hour), minimumCount: 2)
        bytes.append(UInt8(ascii: ":"))
        appendDigits(UInt64(time.minute), minimumCount: 2)
        bytes.append(UInt8(ascii: ":"))
        appendDigits(UInt64(time.second), minimumCount: 2)
        bytes.append(UInt8(ascii: "."))
        appendDigits(UInt64(time.millisecond), minimumCount: 3)
        bytes.append(UInt8(ascii: "Z"))
    }

    /// Empties the bytes and keeps their storage, once they are written out.
    public mutating func removeAll() { bytes.removeAll(keepingCapacity: true) }
}
