extension StringProtocol {
    /// Without leading and trailing spaces, tabs and line ends.
    ///
    /// Scalar by scalar rather than by Character: grapheme breaking, and the Unicode tables
    /// it loads, would be most of the cost of a short-lived process's first trim.
    public var trimmedSpace: String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !Self.isSpace($0) }),
              let last = scalars.lastIndex(where: { !Self.isSpace($0) }) else { return "" }
        var trimmed = String.UnicodeScalarView()
        trimmed.append(contentsOf: scalars[first...last])
        return String(trimmed)
    }

    /// ASCII answered without Unicode's property tables, whose first lookup alone costs a
    /// short-lived process more than the rest of its trims.
    private static func isSpace(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09...0x0D, 0x20: true
        case 0..<0x80: false
        default: scalar.properties.isWhitespace
        }
    }
}
