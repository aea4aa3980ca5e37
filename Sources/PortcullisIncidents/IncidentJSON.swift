import PortcullisCore

extension Incident {
    /// The record as one JSON object with its keys sorted and slashes unescaped: byte for
    /// byte what JSONEncoder writes with `[.sortedKeys, .withoutEscapingSlashes]`, absent
    /// members left out.
    ///
    /// Written by hand because a record is written by short-lived processes (the active
    /// response, the CLI), where JSONEncoder's first use costs more than the HMAC and the
    /// fsync together. The key order below is the sorted order; tests hold it to JSONEncoder's.
    public var canonicalJSON: String {
        var members = JSONMembers()
        members.add("action", quoted: action.rawValue)
        if let detection {
            var nested = JSONMembers()
            nested.add("log", quoted: detection.log)
            nested.add("logSource", quoted: detection.logSource)
            nested.add("ruleDescription", quoted: detection.ruleDescription)
            nested.add("ruleId", quoted: detection.ruleId)
            nested.add("ruleLevel", raw: String(detection.ruleLevel))
            nested.add("user", quoted: detection.user)
            members.add("detection", raw: nested.object)
        }
        members.add("error", quoted: error)
        members.add("expiresAt", quoted: expiresAt)
        members.add("hash", quoted: hash)
        members.add("node", quoted: node)
        members.add("origin", quoted: origin)
        if let outcome {
            var nested = JSONMembers()
            nested.add("droppedBytes", raw: String(outcome.droppedBytes))
            nested.add("droppedPackets", raw: String(outcome.droppedPackets))
            nested.add("lastedSeconds", raw: outcome.lastedSeconds.map(Self.jsonNumber))
            nested.add("passedPackets", raw: outcome.passedPackets.map { String($0) })
            members.add("outcome", raw: nested.object)
        }
        members.add("previous", quoted: previous)
        members.add("reason", quoted: reason)
        members.add("refusal", quoted: refusal?.rawValue)
        members.add("requestedSeconds", raw: requestedSeconds.map { String($0) })
        members.add("sequence", raw: sequence.map { String($0) })
        members.add("source", quoted: source)
        members.add("target", quoted: target)
        if let throttle {
            var nested = JSONMembers()
            nested.add("burst", raw: String(throttle.burst))
            nested.add("newConnections", raw: throttle.newConnections.map { $0 ? "true" : "false" })
            nested.add("rate", raw: String(throttle.rate))
            members.add("throttle", raw: nested.object)
        }
        members.add("time", quoted: time)
        members.add("timeUnixMs", raw: String(timeUnixMs))
        if let wazuh {
            var nested = JSONMembers()
            nested.add("agentId", quoted: wazuh.agentId)
            nested.add("agentName", quoted: wazuh.agentName)
            nested.add("alertId", quoted: wazuh.alertId)
            nested.add("alertTime", quoted: wazuh.alertTime)
            nested.add("command", quoted: wazuh.command)
            nested.add("ruleDescription", quoted: wazuh.ruleDescription)
            nested.add("ruleId", quoted: wazuh.ruleId)
            nested.add("ruleLevel", quoted: wazuh.ruleLevel)
            members.add("wazuh", raw: nested.object)
        }
        return members.object
    }

    /// A double as JSONEncoder writes one: its shortest description, without a ".0".
    static func jsonNumber(_ value: Double) -> String {
        let text = value.description
        return text.hasSuffix(".0") ? String(text.dropLast(2)) : text
    }
}

/// The members of one JSON object, in the order added.
private struct JSONMembers {
    private var text = ""

    mutating func add(_ key: String, raw value: String?) {
        guard let value else { return }
        if !text.isEmpty { text += "," }
        text += "\"" + key + "\":" + value
    }

    mutating func add(_ key: String, quoted value: String?) {
        add(key, raw: value.map(JSONStringLiteral.quoted))
    }

    var object: String { "{" + text + "}" }
}
