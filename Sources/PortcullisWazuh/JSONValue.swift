import FoundationEssentials
import PortcullisCore

/// Any JSON value, for messages whose shape is checked field by field, the
/// way Wazuh's own active-response library checks them.
public enum JSONValue: Sendable, Equatable, Decodable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    /// Parses one JSON text; nil when it is not JSON.
    public static func parse(_ bytes: some Collection<UInt8>) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: Data(bytes))
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    /// The value at a dotted path of object keys, e.g. `alert.data.srcip`.
    public subscript(path path: String) -> JSONValue? {
        var current: JSONValue? = self
        for key in path.split(separator: ".") { current = current?[String(key)] }
        return current
    }

    public var string: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    public var isObject: Bool {
        if case .object = self { return true }
        return false
    }

    public var isNumber: Bool {
        if case .number = self { return true }
        return false
    }

    /// A string, or a number written without a fraction (Wazuh sends rule ids either way).
    public var text: String? {
        switch self {
        case .string(let value): return value
        case .number(let value) where value == value.rounded() && abs(value) < 1e15: return String(Int64(value))
        case .number(let value): return String(value)
        default: return nil
        }
    }
}

/// Writes a JSON string literal, escaped per RFC 8259.
func jsonString(_ text: String) -> String { JSONStringLiteral.quoted(text) }
