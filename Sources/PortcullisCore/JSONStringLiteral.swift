/// JSON string literals as ``JSONBytes`` writes them, for a value needed as a String.
public enum JSONStringLiteral {
    public static func quoted(_ value: String) -> String {
        var json = JSONBytes(capacity: value.utf8.count + 2)
        json.appendString(value)
        return String(decoding: json.bytes, as: UTF8.self)
    }
}
