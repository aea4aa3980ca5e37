extension StringProtocol {
    /// Without leading and trailing spaces, tabs and line ends.
    public var trimmedSpace: String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}
