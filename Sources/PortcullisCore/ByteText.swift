// Shared helpers for the byte-level parsers. Everything here works on UTF-8 bytes so that
// the hot paths (block files with millions of lines) never build intermediate Strings.

enum ASCII {
    static let zero: UInt8 = 0x30
    static let dot: UInt8 = 0x2E
    static let colon: UInt8 = 0x3A
    static let slash: UInt8 = 0x2F
    static let hash: UInt8 = 0x23
    static let percent: UInt8 = 0x25
    static let space: UInt8 = 0x20
    static let tab: UInt8 = 0x09
    static let cr: UInt8 = 0x0D
    static let lf: UInt8 = 0x0A
    static let plus: UInt8 = 0x2B
    static let minus: UInt8 = 0x2D
    static let comma: UInt8 = 0x2C
    static let openBracket: UInt8 = 0x5B
    static let closeBracket: UInt8 = 0x5D

    @inline(__always)
    static func digitValue(_ byte: UInt8) -> UInt8? {
        let d = byte &- zero
        return d < 10 ? d : nil
    }

    @inline(__always)
    static func hexValue(_ byte: UInt8) -> UInt8? {
        let d = byte &- zero
        if d < 10 { return d }
        // Folding to lowercase with 0x20 is safe here because only a-f survive the range check.
        let l = (byte | 0x20) &- 0x61
        return l < 6 ? l &+ 10 : nil
    }

    @inline(__always)
    static func isBlank(_ byte: UInt8) -> Bool {
        byte == space || byte == tab
    }

    /// Any byte a user would perceive as whitespace, used only to pick a better error message.
    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == space || byte == tab || byte == cr || byte == lf || byte == 0x0B || byte == 0x0C
    }
}

extension UnsafeBufferPointer where Element == UInt8 {
    @inline(__always)
    func slice(_ range: Range<Int>) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(rebasing: self[range])
    }

    /// Only used on error paths, where allocating is acceptable.
    func string(_ range: Range<Int>) -> String {
        String(decoding: self[range], as: UTF8.self)
    }

    var string: String {
        String(decoding: self, as: UTF8.self)
    }

    func contains(byte: UInt8) -> Bool {
        for b in self where b == byte { return true }
        return false
    }

    func firstIndex(of byte: UInt8, from start: Int = 0) -> Int? {
        var i = start
        while i < count {
            if self[i] == byte { return i }
            i += 1
        }
        return nil
    }
}

/// Runs `body` over the string's UTF-8 bytes. `withUTF8` only copies when the string is not
/// already contiguous UTF-8 (e.g. a lazily bridged NSString), so native strings cost nothing.
@inline(__always)
func withBytes<R>(of text: String, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
    var text = text
    return text.withUTF8(body)
}

@inline(__always)
func withBytes<R>(of text: Substring, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
    var text = text
    return text.withUTF8(body)
}

/// Describes one offending byte for error messages, e.g. `'x'`, `a space`, `a non-ASCII character`.
func describeByte(_ byte: UInt8) -> String {
    switch byte {
    case ASCII.space: return "a space"
    case ASCII.tab: return "a tab"
    case ASCII.cr, ASCII.lf: return "a line break"
    case 0x80...: return "a non-ASCII character"
    case ..<0x20, 0x7F: return "control character \\u{" + String(byte, radix: 16) + "}"
    default: return "'" + String(UnicodeScalar(byte)) + "'"
    }
}

extension String {
    /// The longest prefix of at most `limit` bytes of UTF-8 that ends between characters.
    public func utf8Prefix(_ limit: Int) -> String {
        var result = ""
        var used = 0
        for character in self {
            let size = character.utf8.count
            guard used + size <= limit else { break }
            result.append(character)
            used += size
        }
        return result
    }
}
