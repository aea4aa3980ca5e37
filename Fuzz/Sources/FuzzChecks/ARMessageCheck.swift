import PortcullisCore
import PortcullisWazuh

/// A line from execd: what an active response reads first (`ActiveResponseMessage.parse`),
/// and, on the same bytes, the two other readers of execd's lines: the reply to check_keys
/// and the keys of a check_keys line.
public enum ARMessageCheck {
    public static let target = "ar-message"

    static let commands: [String: ActiveResponseMessage.Command] = ["add": .add, "enable": .add, "delete": .delete, "disable": .delete]

    public static func check(_ input: [UInt8]) throws(InvariantViolation) {
        _ = try? ActiveResponseReply.parse(input)
        _ = CheckKeys.keys(in: input)
        let message: ActiveResponseMessage
        do {
            message = try ActiveResponseMessage.parse(input)
        } catch {
            return
        }
        try invariant(commands[message.commandWord] == message.command, "'\(message.commandWord)' was read as \(message.command)")
        let address = message.address
        if case .v6(let v6) = address {
            try invariant(v6.mappedIPv4 == nil, "the IPv4-mapped \(address) was not taken as its IPv4 address")
        }
        try invariant((try? IPAddress(parsing: address.description)) == address, "\(address) does not read back from its own text")
        _ = try? ExtraArguments(message.extraArguments)

        // execd's side of the protocol and this one agree: the message execd would write
        // for what was read reads back as the same thing.
        let alert = message.alert
        let rebuilt = ExecdMessage(
            adding: address, user: nil,
            rule: .init(level: 3, description: alert.ruleDescription ?? "", id: alert.ruleID ?? "", groups: []),
            fullLog: "", host: alert.agentName ?? "", timestamp: "", executable: "portcullis", extraArguments: message.extraArguments)
        for (command, expected) in [(ExecdMessage.Command.add, ActiveResponseMessage.Command.add), (.delete, .delete)] {
            let line = rebuilt.with(command).line
            let again: ActiveResponseMessage
            do {
                again = try ActiveResponseMessage.parse(Array(line.utf8))
            } catch {
                throw InvariantViolation(description: "execd's \(command) for what was read is refused (\(error)): \(line)")
            }
            try invariant(again.command == expected && again.address == address && again.extraArguments == message.extraArguments,
                          "execd's \(command) reads back as \(again.command) \(again.address) \(again.extraArguments): \(line)")
            try invariant(again.alert.ruleID == (alert.ruleID ?? "") && again.alert.ruleDescription == (alert.ruleDescription ?? "")
                          && again.alert.agentName == (alert.agentName ?? ""),
                          "execd's \(command) reads back with another rule or agent: \(again.alert) from \(line)")
        }
    }
}
