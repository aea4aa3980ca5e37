/// Text from the record (reasons, targets, log lines: much of it written by
/// whoever attacked) made safe to print to a terminal: control characters
/// (C0, DEL, C1) become \xNN, bidirectional overrides \u{NNNN}, and a backslash
/// itself \\, so what is shown is never taken for an escape sequence or a new line.
public enum TerminalText {
    /// `escapingBackslash` false keeps backslashes as they are, for lines that are JSON
    /// (Wazuh's active-responses.log), whose own escapes must read as written.
    public static func escaped(_ text: String, escapingBackslash: Bool = true) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            let value = scalar.value
            if value < 0x20 || value == 0x7f || (0x80...0x9f).contains(value) {
                let hex = String(value, radix: 16, uppercase: false)
                out += "\\x" + (hex.count == 1 ? "0" : "") + hex
            } else if (0x202a...0x202e).contains(value) || (0x2066...0x2069).contains(value) || value == 0x200e || value == 0x200f {
                out += "\\u{" + String(value, radix: 16, uppercase: false) + "}"
            } else if scalar == "\\" && escapingBackslash {
                out += "\\\\"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// At most `limit` characters of `text`, escaped as by `escaped`, and "..." when cut: for
    /// quoting input inside a one-line error, which must stay one line and short however long
    /// the input was (a 50 MB `<timeout>` is named by its first 80 characters, not echoed).
    public static func excerpt(_ text: some StringProtocol, limit: Int = 80) -> String {
        let scalars = text.unicodeScalars
        guard let end = scalars.index(scalars.startIndex, offsetBy: limit, limitedBy: scalars.endIndex),
              end != scalars.endIndex else { return escaped(String(text)) }
        var head = String.UnicodeScalarView()
        head.append(contentsOf: scalars[scalars.startIndex..<end])
        return escaped(String(head)) + "..."
    }
}
