import PortcullisBPF
import PortcullisCore
import PortcullisIncidents

/// Turns what the blocklist did into incident records, and writes them.
/// A record that cannot be written is a warning, never a reason to leave an
/// attacker unblocked. The records of a change (a block, an unblock, a batch, a sweep) come
/// back with their status, for the outcome to carry to whoever asked, daemon or not; the
/// others (refusals, detections, expiries found at a start) have nobody to tell but `warn`.
public struct IncidentRecorder: Sendable {
    public let log: IncidentLog
    /// Where warnings go: stderr for the CLI, the active-response log for Wazuh, the daemon's log.
    public let warn: @Sendable (String) -> Void
    /// This host's fleet node name: its own records carry it; nil outside a fleet.
    public var node: String?

    public init(log: IncidentLog, node: String? = nil, warn: @escaping @Sendable (String) -> Void) {
        self.log = log
        self.node = node
        self.warn = warn
    }

    public func record(_ outcome: BlockOutcome, requested: Duration?, context: IncidentContext = .none) -> IncidentRecording {
        let entry = outcome.entry
        return write([Incident(
            timeUnixMs: entry.refreshedUnixMilliseconds ?? Incident.nowUnixMilliseconds(),
            action: outcome.change == .added ? .block : .refresh,
            target: entry.target.description, source: entry.source?.rawValue ?? "cli", reason: entry.reason,
            requestedSeconds: requested?.components.seconds, expiresAtUnixMs: entry.expiresUnixMilliseconds,
            wazuh: context.wazuh, detection: context.detection, origin: entry.origin, throttle: entry.throttle,
            node: context.node ?? entry.node)])
    }

    public func recordUnblock(_ entry: BlockEntry, source: String, context: IncidentContext = .none) -> IncidentRecording {
        write([ending(entry, action: .unblock, source: source, at: Incident.nowUnixMilliseconds(), context: context)])
    }

    /// The blocks a flush lifted, one record each with its outcome.
    public func recordUnblocks(_ entries: [BlockEntry], source: String) -> IncidentRecording {
        let now = Incident.nowUnixMilliseconds()
        return write(entries.map { ending($0, action: .unblock, source: source, at: now, context: .none) })
    }

    /// Expired blocks, each with its outcome. Blocks loaded from files are a
    /// policy, not incidents: they are summed into one record.
    public func recordExpiries(_ removed: [BlockEntry]) -> IncidentRecording {
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

    public func recordBatch(_ outcome: BatchOutcome, from name: String, reason: String, requested: Duration?) -> IncidentRecording {
        write([Incident(
            timeUnixMs: Incident.nowUnixMilliseconds(), action: .block,
            target: "\(outcome.total) targets from \(name)", source: "file", reason: reason,
            requestedSeconds: requested?.components.seconds)])
    }

    @discardableResult
    public func recordRefusal(_ target: String, source: String, error: String, kind: Incident.RefusalKind,
                              context: IncidentContext = .none) -> [Incident] {
        warned(write([Incident(timeUnixMs: Incident.nowUnixMilliseconds(), action: .refuse, target: target, source: source,
                               wazuh: context.wazuh, detection: context.detection, error: error, refusal: kind,
                               node: context.node)]),
               after: "the request to block \(target) was refused")
    }

    private func ending(_ entry: BlockEntry, action: Incident.Action, source: String, at time: Int64, context: IncidentContext) -> Incident {
        let lasted = entry.createdUnixMilliseconds.map { Double(max(0, time - $0)) / 1000 }
        return Incident(
            timeUnixMs: time, action: action, target: entry.target.description, source: source, reason: entry.reason,
            requestedSeconds: entry.requestedDuration?.components.seconds, wazuh: context.wazuh, detection: context.detection,
            outcome: .init(lastedSeconds: lasted, droppedPackets: entry.droppedPackets, droppedBytes: entry.droppedBytes,
                           passedPackets: entry.throttle == nil ? nil : entry.passedPackets),
            origin: entry.origin, throttle: entry.throttle, node: context.node ?? entry.node)
    }

    /// A detection rule fired; `target` is the address it named, or the text it could not parse.
    /// `unreadable`: the address could not be read, so nothing was blocked.
    @discardableResult
    public func recordDetection(_ detection: Incident.Detection, target: String, error: String? = nil, unreadable: Bool = false) -> [Incident] {
        warned(write([Incident(timeUnixMs: Incident.nowUnixMilliseconds(), action: .detect, target: target, source: "detector",
                               reason: detection.ruleDescription, detection: detection, error: error,
                               refusal: unreadable ? .malformed : nil)]),
               after: "rule \(detection.ruleId) fired on \(target)")
    }

    /// The records written, after telling `warn` when they were not.
    public func warned(_ recording: IncidentRecording, after change: @autoclosure () -> String) -> [Incident] {
        if let warning = recording.status.warning(after: change()) { warn(warning) }
        return recording.incidents
    }

    /// The records as written, or none and why.
    func write(_ incidents: [Incident]) -> IncidentRecording {
        var incidents = incidents
        if let node {
            for index in incidents.indices where incidents[index].node == nil { incidents[index].node = node }
        }
        do {
            return IncidentRecording(incidents: try log.append(incidents), status: .written)
        } catch {
            return IncidentRecording(incidents: [], status: .notWritten(IncidentRecordFailure(log: log.path, reason: error.description)))
        }
    }
}

/// What writing a change's records came to: the records as written (for the ledger's index), or
/// none and why.
public struct IncidentRecording: Sendable {
    public let incidents: [Incident]
    public let status: IncidentRecordStatus
}

/// Who asked, for the record: Wazuh's alert, or the standalone detector's rule and log line.
public struct IncidentContext: Sendable {
    public var wazuh: Incident.Wazuh?
    public var detection: Incident.Detection?
    /// The fleet node a change came from, when another node made it (not stored with the block's context).
    public var node: String?

    public static let none = IncidentContext()

    public init(wazuh: Incident.Wazuh? = nil, detection: Incident.Detection? = nil, node: String? = nil) {
        (self.wazuh, self.detection, self.node) = (wazuh, detection, node)
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
                ("agentName", quoted(wazuh.agentName)), ("alertId", quoted(wazuh.alertId)), ("alertTime", quoted(wazuh.alertTime)),
                ("command", quoted(wazuh.command)),
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

// What the operator is told when a change's record is missing, in the same words whichever
// process wrote the maps: the CLI on stderr, the Wazuh response in active-responses.log, the
// daemon in its log.

extension BlockOutcome {
    public var recordWarning: String? { record.warning(after: "\(entry.target) is blocked") }
}

extension UnblockResult {
    public var recordWarning: String? {
        guard case .removed(let entry) = outcome else { return nil }
        return record.warning(after: "\(entry.target) is unblocked")
    }
}

extension BatchResult {
    /// `origin` is where the targets came from: a file's path, "standard input".
    public func recordWarning(from origin: String) -> String? {
        record.warning(after: outcome.total == 1 ? "1 target from \(origin) is blocked" : "\(outcome.total) targets from \(origin) are blocked")
    }
}

extension SweepReport {
    public var recordWarning: String? {
        record.warning(after: removedCount == 1 ? "1 expired block was removed" : "\(removedCount) expired blocks were removed")
    }
}
