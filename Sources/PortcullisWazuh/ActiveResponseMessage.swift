import PortcullisCore

/// Why a message from execd was refused. Each description is the exact line
/// Wazuh's own active responses log for the same failure, so the manager's
/// decoders and the operators' habits keep working.
public enum ActiveResponseError: Error, Equatable, CustomStringConvertible {
    case noInput
    case invalidFormat
    case invalidCommand
    case noAddress

    public var description: String {
        switch self {
        case .noInput: "Cannot read input from stdin"
        case .invalidFormat: "Invalid input format"
        case .invalidCommand: "Invalid value of 'command'"
        case .noAddress: "Cannot read 'srcip' from data or invalid IP format"
        }
    }
}

/// One message execd sends to an active response, in the Wazuh 4.2+ form
/// (`add`/`delete`, with `version`, `origin` and `parameters`) or the Wazuh 5
/// form (`enable`/`disable`, the address in `source.ip`).
public struct ActiveResponseMessage: Sendable, Equatable {
    public enum Command: String, Sendable {
        case add, delete
    }

    public let command: Command
    /// The command word as sent: add, delete, enable or disable.
    public let commandWord: String
    /// The address to act on; an IPv4-mapped IPv6 address is already its IPv4 address.
    public let address: IPAddress
    /// `parameters.extra_args`, from the `<extra_args>` of the `<command>`.
    public let extraArguments: [String]
    public let alert: AlertSummary

    /// Parses the first line execd writes. Checks the fields the way Wazuh's
    /// active-response library does, then takes the address from the first
    /// present string of `data.win.eventdata.ipAddress`,
    /// `data.win.eventdata.destinationIp` and `data.srcip` (Wazuh 5: `source.ip`).
    public static func parse(_ line: some Collection<UInt8>) throws(ActiveResponseError) -> ActiveResponseMessage {
        guard let json = JSONValue.parse(line), json.isObject else { throw .invalidFormat }
        guard let word = json["command"]?.string else { throw .invalidFormat }
        let command: Command
        let modern: Bool
        switch word {
        case "add": (command, modern) = (.add, false)
        case "delete": (command, modern) = (.delete, false)
        case "enable": (command, modern) = (.add, true)
        case "disable": (command, modern) = (.delete, true)
        default:
            // Malformed envelopes are reported as such before the command word is judged.
            try checkEnvelope(json)
            throw .invalidCommand
        }
        if !modern { try checkEnvelope(json) }

        let alert = json[path: "parameters.alert"] ?? json
        let candidates: [JSONValue?] = modern
            ? [json[path: "source.ip"], alert[path: "source.ip"], alert[path: "data.srcip"]]
            : [alert[path: "data.win.eventdata.ipAddress"], alert[path: "data.win.eventdata.destinationIp"], alert[path: "data.srcip"]]
        guard let text = candidates.lazy.compactMap({ $0?.string }).first else { throw .noAddress }
        let address: IPAddress
        do {
            address = try IPAddress(parsing: text)
        } catch {
            throw .noAddress
        }
        var extra: [String] = []
        let extraValue = json[path: "parameters.extra_args"] ?? json[path: "wazuh.active_response.extra_arguments"]
        switch extraValue {
        case .array(let items): extra = items.compactMap(\.string)
        case .string(let text): extra = text.split(separator: " ").map(String.init)
        default: break
        }
        return ActiveResponseMessage(
            command: command, commandWord: word, address: address, extraArguments: extra,
            alert: AlertSummary(alert: alert, root: json))
    }

    private static func checkEnvelope(_ json: JSONValue) throws(ActiveResponseError) {
        guard json["version"]?.isNumber == true, json["origin"]?.isObject == true,
              json["parameters"]?.isObject == true
        else { throw .invalidFormat }
    }
}

/// What the incident record keeps of the alert that triggered a response.
public struct AlertSummary: Sendable, Equatable {
    public let ruleID: String?
    public let ruleLevel: String?
    public let ruleDescription: String?
    public let agentID: String?
    public let agentName: String?
    public let alertID: String?
    /// When Wazuh saw the event, as it wrote it.
    public let timestamp: String?

    init(alert: JSONValue, root: JSONValue) {
        let rule = alert["rule"] ?? root[path: "wazuh.rule"]
        ruleID = rule?["id"]?.text
        ruleLevel = rule?["level"]?.text
        ruleDescription = rule?["description"]?.string
        let agent = alert["agent"] ?? root[path: "wazuh.agent"]
        agentID = agent?["id"]?.text
        agentName = agent?["name"]?.string
        alertID = alert["id"]?.text
        timestamp = alert["timestamp"]?.string
    }

    /// "wazuh rule 5710: sshd: Attempt to login using a non-existent user"
    public var reason: String {
        var text = "wazuh"
        if let ruleID { text += " rule \(ruleID)" }
        if let ruleDescription { text += ": \(ruleDescription)" }
        return text
    }
}

/// The reply execd sends after check_keys: the original message with
/// `command` set to `continue` or `abort`.
public enum ActiveResponseReply: Equatable, Sendable {
    case `continue`, abort

    public static func parse(_ line: some Collection<UInt8>) throws(ActiveResponseError) -> ActiveResponseReply {
        guard let json = JSONValue.parse(line), json.isObject, let word = json["command"]?.string else {
            throw .invalidFormat
        }
        switch word {
        case "continue": return .continue
        case "abort": return .abort
        default: throw .invalidCommand
        }
    }
}

public enum CheckKeys {
    /// The line an active response writes to ask execd whether the same key is
    /// already active, byte for byte as Wazuh's own library writes it.
    public static func line(program name: String, keys: [String]) -> String {
        let list = keys.map(jsonString).joined(separator: ",")
        return #"{"version":1,"origin":{"name":"# + jsonString(name)
            + #","module":"active-response"},"command":"check_keys","parameters":{"keys":["# + list + "]}}"
    }
}
