import PortcullisBPF
import PortcullisCore
import PortcullisIncidents

/// Turns what the blocklist did into incident records, and writes them.
/// A record that cannot be written is a warning, never a reason to leave an
/// attacker unblocked.
public struct IncidentRecorder: Sendable {
    public let log: IncidentLog
    /// Where warnings go: stderr for the CLI, the active-response log for Wazuh, the daemon's log.
    public let warn: @Sendable (String) -> Void

    public init(log: IncidentLog, warn: @escaping @Sendable (String) -> Void) {
        self.log = log
        self.warn = warn
    }

    @discardableResult
    public func record(_ outcome: BlockOutcome, requested: Duration?, context: IncidentContext = .none) -> [Incident] {
        let entry = outcome.entry
        return write([Incident(
            timeUnixMs: entry.refreshedUnixMilliseconds ?? Incident.nowUnixMilliseconds(),
            action: outcome.change == .added ? .block : .refresh,
            target: entry.target.description, source: entry.source?.rawValue ?? "cli", reason: entry.reason,
            requestedSeconds: requested?.components.seconds, expiresAtUnixMs: entry.expiresUnixMilliseconds,
            wazuh: context.wazuh, detection: context.detection)])
    }

    @discardableResult
    public func recordUnblock(_ entry: BlockEntry, source: String, context: IncidentContext = .none) -> [Incident] {
        write([ending(entry, action: .unblock, source: source, at: Incident.nowUnixMilliseconds(), context: context)])
    }

    /// Expired blocks, each with its outcome. Blocks loaded from files are a
    /// policy, not incidents: they are summed into one record.
    @discardableResult
    public func recordExpiries(_ removed: [BlockEntry]) -> [Incident] {
        var records: [Incident] = []
        var fileBlocks = (count: 0, packets: UInt64(0), bytes: UInt64(0))
        let now = Incident.nowUnixMilliseconds()
        for entry in removed {
            if entry.source == .file {
                fileBlocks.count += 1
                fileBlocks.packets += entry.droppedPackets
                fileBlocks.bytes += entry.droppedBytes
            } else {
                records.append(ending(entry, action: .expire, source: entry.source?.rawValue ?? "cli",
                                      at: entry.expiresUnixMilliseconds ?? now, context: .none))
            }
        }
        if fileBlocks.count > 0 {
            records.append(Incident(
                timeUnixMs: now, action: .expire, target: "\(fileBlocks.count) blocks loaded from files", source: "file",
                outcome: .init(lastedSeconds: nil, droppedPackets: fileBlocks.packets, droppedBytes: fileBlocks.bytes)))
        }
        return write(records)
    }

    @discardableResult
    public func recordBatch(_ outcome: BatchOutcome, from name: String, reason: String, requested: Duration?) -> [Incident] {
        write([Incident(
            timeUnixMs: Incident.nowUnixMilliseconds(), action: .block,
            target: "\(outcome.total) targets from \(name)", source: "file", reason: reason,
            requestedSeconds: requested?.components.seconds)])
    }

    @discardableResult
    public func recordRefusal(_ target: String, source: String, error: String, context: IncidentContext = .none) -> [Incident] {
        write([Incident(timeUnixMs: Incident.nowUnixMilliseconds(), action: .refuse, target: target, source: source,
                        wazuh: context.wazuh, detection: context.detection, error: error)])
    }

    private func ending(_ entry: BlockEntry, action: Incident.Action, source: String, at time: Int64, context: IncidentContext) -> Incident {
        let lasted = entry.createdUnixMilliseconds.map { Double(max(0, time - $0)) / 1000 }
        return Incident(
            timeUnixMs: time, action: action, target: entry.target.description, source: source, reason: entry.reason,
            requestedSeconds: entry.requestedDuration?.components.seconds, wazuh: context.wazuh, detection: context.detection,
            outcome: .init(lastedSeconds: lasted, droppedPackets: entry.droppedPackets, droppedBytes: entry.droppedBytes))
    }

    /// A detection rule fired; `target` is the address it named, or the text it could not parse.
    @discardableResult
    public func recordDetection(_ detection: Incident.Detection, target: String, error: String? = nil) -> [Incident] {
        write([Incident(timeUnixMs: Incident.nowUnixMilliseconds(), action: .detect, target: target, source: "detector",
                        reason: detection.ruleDescription, detection: detection, error: error)])
    }

    /// The records as written, or none when they could not be.
    private func write(_ incidents: [Incident]) -> [Incident] {
        do {
            return try log.append(incidents)
        } catch {
            warn("the block took effect, but \(error.description)")
            return []
        }
    }
}

/// Who asked, for the record: Wazuh's alert, or the standalone detector's rule and log line.
public struct IncidentContext: Sendable {
    public var wazuh: Incident.Wazuh?
    public var detection: Incident.Detection?

    public static let none = IncidentContext()

    public init(wazuh: Incident.Wazuh? = nil, detection: Incident.Detection? = nil) {
        (self.wazuh, self.detection) = (wazuh, detection)
    }

    /// The context as the ledger stores it with a block: `{"wazuh":{…},"detection":{…}}`,
    /// absent members left out, as JSONEncoder would write the two Codable records; nil when
    /// there is none.
    ///
    /// Written by hand: the active response stores one per alert, in a process of its own,
    /// where JSONEncoder's first use (generic metadata, key lookups) is a measurable part of
    /// the whole response.
    public var storedJSON: String? {
        guard wazuh != nil || detection != nil else { return nil }
        func object(_ members: [(String, String?)]) -> String {
            "{" + members.compactMap { key, value in value.map { JSONStringLiteral.quoted(key) + ":" + $0 } }.joined(separator: ",") + "}"
        }
        let quoted: (String?) -> String? = { $0.map(JSONStringLiteral.quoted) }
        var members: [(String, String?)] = []
        if let wazuh {
            members.append(("wazuh", object([
                ("ruleId", quoted(wazuh.ruleId)), ("ruleLevel", quoted(wazuh.ruleLevel)),
                ("ruleDescription", quoted(wazuh.ruleDescription)), ("agentId", quoted(wazuh.agentId)),
                ("agentName", quoted(wazuh.agentName)), ("alertId", quoted(wazuh.alertId)), ("command", quoted(wazuh.command)),
            ])))
        }
        if let detection {
            members.append(("detection", object([
                ("ruleId", quoted(detection.ruleId)), ("ruleLevel", String(detection.ruleLevel)),
                ("ruleDescription", quoted(detection.ruleDescription)), ("user", quoted(detection.user)),
                ("log", quoted(detection.log)), ("logSource", quoted(detection.logSource)),
            ])))
        }
        return object(members)
    }
}
