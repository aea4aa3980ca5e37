import FoundationEssentials
import PortcullisCore

/// The message wazuh-execd sends an active-response executable: the execd side of the
/// protocol, for running user-defined `<command>`s the way execd runs them, so existing
/// scripts work unchanged.
public struct ExecdMessage: Sendable, Equatable, Encodable {
    public struct Origin: Sendable, Equatable, Encodable {
        public var name: String
        public var module: String
    }

    public struct Rule: Sendable, Equatable, Encodable {
        public var level: Int
        public var description: String
        public var id: String
        public var groups: [String]

        public init(level: Int, description: String, id: String, groups: [String]) {
            (self.level, self.description, self.id, self.groups) = (level, description, id, groups)
        }
    }

    public struct Agent: Sendable, Equatable, Encodable {
        public var id: String
        public var name: String
    }

    public struct AlertData: Sendable, Equatable, Encodable {
        public var srcip: String
        public var srcuser: String?
        public var dstuser: String?
    }

    public struct Alert: Sendable, Equatable, Encodable {
        public var timestamp: String
        public var rule: Rule
        public var agent: Agent
        public var fullLog: String
        public var data: AlertData

        enum CodingKeys: String, CodingKey {
            case timestamp, rule, agent, data
            case fullLog = "full_log"
        }
    }

    public struct Parameters: Sendable, Equatable, Encodable {
        public var extraArguments: [String]
        public var alert: Alert
        public var program: String

        enum CodingKeys: String, CodingKey {
            case alert, program
            case extraArguments = "extra_args"
        }
    }

    /// What execd asks: add, delete, or its answer to check_keys.
    public enum Command: String, Sendable, Encodable {
        case add, delete
        case `continue`, abort
    }

    public var version = 1
    public var origin: Origin
    public var command: Command
    public var parameters: Parameters

    /// An add for `address`, as execd builds one from an alert on this host.
    public init(adding address: IPAddress, user: String?, rule: Rule, fullLog: String, host: String,
                timestamp: String, executable: String, extraArguments: [String]) {
        origin = Origin(name: host, module: "portcullis")
        command = .add
        parameters = Parameters(
            extraArguments: extraArguments,
            alert: Alert(
                timestamp: timestamp, rule: rule,
                agent: Agent(id: "000", name: host), fullLog: fullLog,
                data: AlertData(srcip: address.description, srcuser: user, dstuser: user)),
            program: "active-response/bin/\(executable)")
    }

    /// The same message with another command: execd's reply to check_keys, and the delete after the timeout.
    public func with(_ command: Command) -> ExecdMessage {
        var message = self
        message.command = command
        return message
    }

    /// One line, as execd writes it to the executable's standard input.
    public var line: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Every field is a string, a number or an array of strings: encoding cannot fail.
        let data = (try? encoder.encode(self)) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}

extension CheckKeys {
    /// The keys of an executable's check_keys line, or nil when the line is not one: an
    /// executable that answers anything else gets no reply, as execd gives none.
    public static func keys(in line: some Collection<UInt8>) -> [String]? {
        guard let json = JSONValue.parse(line), json["command"]?.string == "check_keys" else { return nil }
        guard case .array(let values)? = json["parameters"]?["keys"] else { return [] }
        return values.compactMap(\.string)
    }
}
