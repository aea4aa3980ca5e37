extension StringProtocol {
    /// Without leading and trailing spaces, tabs and line ends.
    ///
    /// Scalar by scalar rather than by Character: grapheme breaking, and the Unicode tables
    /// it loads, would be most of the cost of a short-lived process's first trim.
    public var trimmedSpace: String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let last = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        var trimmed = String.UnicodeScalarView()
        trimmed.append(contentsOf: scalars[first...last])
        return String(trimmed)
    }
}
