import FoundationEssentials
import Glibc
import PortcullisCore
import PortcullisSystem

/// One line of the incident record: a block, refresh, unblock or expiry, with
/// who asked for it and, when a block ends, what it achieved. This is the
/// documentation of security incidents and their outcomes that HIPAA
/// §164.308(a)(6)(ii) asks for.
public struct Incident: Codable, Sendable, Equatable {
    public enum Action: String, Codable, Sendable {
        case block, refresh, unblock, expire
        /// A request that was not carried out (allowlisted, loopback, full map, bad input).
        case refuse
        /// A detection rule fired on a log line (the event; its response follows as its own record).
        case detect
    }

    /// What the standalone detector saw: the rule that fired and the log line.
    public struct Detection: Codable, Sendable, Equatable {
        public var ruleId: String
        public var ruleLevel: Int
        public var ruleDescription: String
        public var user: String?
        public var log: String
        public var logSource: String?

        public init(ruleId: String, ruleLevel: Int, ruleDescription: String, user: String?, log: String, logSource: String?) {
            (self.ruleId, self.ruleLevel, self.ruleDescription) = (ruleId, ruleLevel, ruleDescription)
            (self.user, self.log, self.logSource) = (user, log, logSource)
        }
    }

    public struct Wazuh: Codable, Sendable, Equatable {
        public var ruleId: String?
        public var ruleLevel: String?
        public var ruleDescription: String?
        public var agentId: String?
        public var agentName: String?
        public var alertId: String?
        /// The alert's `timestamp` as Wazuh wrote it ("2026-11-28T07:00:00.000+0000"): when the
        /// event was seen, the start of the time to respond.
        public var alertTime: String?
        public var command: String?

        public init(ruleId: String? = nil, ruleLevel: String? = nil, ruleDescription: String? = nil,
                    agentId: String? = nil, agentName: String? = nil, alertId: String? = nil, alertTime: String? = nil,
                    command: String? = nil) {
            (self.ruleId, self.ruleLevel, self.ruleDescription) = (ruleId, ruleLevel, ruleDescription)
            (self.agentId, self.agentName, self.alertId, self.alertTime, self.command) = (agentId, agentName, alertId, alertTime, command)
        }
    }

    /// Why a request was refused, for counting refusals by kind.
    public enum RefusalKind: String, Codable, Sendable, CaseIterable {
        /// An allowlist entry (or the detector's white list) covers the target.
        case allowlisted
        /// Loopback, the unspecified address, or a prefix holding loopback: never blocked.
        case notBlockable = "not-blockable"
        /// The maps or the ledger had no room.
        case full
        /// The address could not be read (a detection on a line with a malformed address).
        case malformed

        public init(_ refusal: Refusal) {
            switch refusal {
            case .allowlisted: self = .allowlisted
            case .notBlockable: self = .notBlockable
            }
        }
    }

    /// What a block did, recorded when it ends.
    public struct Outcome: Codable, Sendable, Equatable {
        public var lastedSeconds: Double?
        public var droppedPackets: UInt64
        public var droppedBytes: UInt64
        /// What a throttle let through; absent for a block.
        public var passedPackets: UInt64?

        public init(lastedSeconds: Double?, droppedPackets: UInt64, droppedBytes: UInt64, passedPackets: UInt64? = nil) {
            (self.lastedSeconds, self.droppedPackets, self.droppedBytes) = (lastedSeconds, droppedPackets, droppedBytes)
            self.passedPackets = passedPackets
        }
    }

    /// A throttle's terms; a record with them is about a throttle, not a block.
    public struct Throttle: Codable, Sendable, Equatable {
        public var rate: UInt32
        public var burst: UInt32
        /// Only packets that may open a connection are policed; absent when all are.
        public var newConnections: Bool?

        public init(_ rate: ThrottleRate) {
            (self.rate, self.burst) = (rate.packetsPerSecond, rate.burst)
            newConnections = rate.newConnectionsOnly ? true : nil
        }

        public var terms: ThrottleRate {
            ThrottleRate(packetsPerSecond: rate, burst: burst, newConnectionsOnly: newConnections == true)
        }
    }

    public var time: String
    public var timeUnixMs: Int64
    public var action: Action
    public var target: String
    /// cli, file, wazuh, detector or api
    public var source: String
    /// Where within its source the block came from: a fail2ban jail (`fail2ban/sshd`), a
    /// CrowdSec decision's origin, a Wazuh agent; absent when unknown.
    public var origin: String?
    public var reason: String?
    /// What was asked for; nil for a permanent block or where it does not apply.
    public var requestedSeconds: Int64?
    public var expiresAt: String?
    public var wazuh: Wazuh?
    public var detection: Detection?
    /// Present when the record is about a throttle.
    public var throttle: Throttle?
    public var outcome: Outcome?
    /// Why a request was refused.
    public var error: String?
    /// What kind of refusal `error` is; absent on records older than the field.
    public var refusal: RefusalKind?
    /// The fleet node the change came from: this host's name for its own changes, another's for
    /// one applied from the fleet; absent outside a fleet.
    public var node: String?
    /// The record's place in the hash chain: 1 for the first record of a chain, one more for each after.
    public var sequence: Int64?
    /// The `hash` of the record before this one; absent on the first record of a chain.
    public var previous: String?
    /// HMAC-SHA256, in hex, of this record's line without its `hash` member (see IncidentChain).
    public var hash: String?

    public init(timeUnixMs: Int64, action: Action, target: String, source: String, reason: String? = nil,
                requestedSeconds: Int64? = nil, expiresAtUnixMs: Int64? = nil, wazuh: Wazuh? = nil,
                detection: Detection? = nil, outcome: Outcome? = nil, error: String? = nil, refusal: RefusalKind? = nil,
                origin: String? = nil, throttle: ThrottleRate? = nil, node: String? = nil) {
        self.origin = origin.flatMap { $0.isEmpty ? nil : $0 }
        self.time = Incident.rfc3339(unixMilliseconds: timeUnixMs)
        self.timeUnixMs = timeUnixMs
        self.action = action
        self.target = target
        self.source = source
        self.reason = reason.flatMap { $0.isEmpty ? nil : $0 }
        self.requestedSeconds = requestedSeconds
        self.expiresAt = expiresAtUnixMs.map(Incident.rfc3339(unixMilliseconds:))
        self.wazuh = wazuh
        self.detection = detection
        self.outcome = outcome
        self.error = error
        self.refusal = refusal
        self.throttle = throttle.map(Throttle.init)
        self.node = node
    }

    /// RFC 3339 in UTC with milliseconds.
    public static func rfc3339(unixMilliseconds: Int64) -> String {
        UTCTime(unixMilliseconds: unixMilliseconds).rfc3339
    }

    public static func nowUnixMilliseconds() -> Int64 { WallClock.nowUnixMilliseconds() }
}


public struct IncidentLogError: Error, CustomStringConvertible {
    public let description: String

    public init(description: String) { self.description = description }
}

/// The append-only JSON-lines file of incidents, each record chained to the one
/// before it by an HMAC-SHA256 (see IncidentChain). A write is whole or absent:
/// one write(2) under an exclusive lock, fsync'd before the call returns, and cut
/// back to the file's old length if any of it fails, so concurrent writers never
/// interleave, a full disk leaves no partial line, and a record survives a crash
/// right after. The file is refused unless it is a regular file (never a symbolic
/// link or a FIFO) owned by root or by whoever runs the command.
public struct IncidentLog: Sendable {
    public static let defaultPath = "/var/log/portcullis/incidents.jsonl"
    public static let environmentVariable = "PORTCULLIS_INCIDENT_LOG"
    public static let defaultStateDirectory = "/var/lib/portcullis"
    public static let stateDirectoryVariable = "PORTCULLIS_STATE_DIR"

    public let path: String
    /// Holds `incident-key`, the chain's HMAC key (mode 0600).
    public let stateDirectory: String

    /// `stateDirectory` nil means $PORTCULLIS_STATE_DIR, then /var/lib/portcullis.
    public init(path: String, stateDirectory: String? = nil) {
        self.path = path
        self.stateDirectory = IncidentLog.resolveStateDirectory(option: stateDirectory)
    }

    /// `--incident-log` wins over `PORTCULLIS_INCIDENT_LOG`, which wins over the default;
    /// `--state-dir` over `PORTCULLIS_STATE_DIR` over /var/lib/portcullis.
    public static func resolve(option: String?, stateDirectory: String? = nil) -> IncidentLog {
        IncidentLog(path: setting(option: option, environment: environmentVariable) ?? defaultPath,
                    stateDirectory: stateDirectory)
    }

    public static func resolveStateDirectory(option: String?) -> String {
        setting(option: option, environment: stateDirectoryVariable) ?? defaultStateDirectory
    }

    public var keyPath: String { stateDirectory + "/" + IncidentKey.fileName }

    /// The rotated file `n` (logrotate's `path.1` is the newest).
    public func rotatedPath(_ n: Int) -> String { "\(path).\(n)" }

    /// Appends the records, chained to the last one; returns them as written (sequence, link
    /// and hash set).
    @discardableResult
    public func append(_ incidents: [Incident]) throws(IncidentLogError) -> [Incident] {
        guard !incidents.isEmpty else { return [] }
        try createParentDirectory()
        let file = try lockedForAppending()
        defer { file.close() }
        // A line without its end is a write a crash interrupted: cut it off, so
        // this record starts on a line of its own and the chain links to the last whole record.
        var length = try file.size()
        let whole = try file.endOfLastWholeLine(before: length)
        if whole < length {
            try file.truncate(to: whole)
            length = whole
        }
        var link = try file.lastLink(before: length)
        if link == .noRecords {
            // A new file (after rotation) continues the chain of the newest rotated one.
            link = try predecessorLink()
        }
        let key = try IncidentKey.loadOrCreate(directory: stateDirectory)
        var bytes: [UInt8] = []
        var previous: String?
        var sequence: Int64 = 1
        if case .chained(let hash, let last) = link { (previous, sequence) = (hash, last + 1) }
        var written: [Incident] = []
        for var incident in incidents {
            incident.sequence = sequence
            incident.previous = previous
            incident.hash = nil
            let line = IncidentChain.sealedLine(incident, key: key)
            bytes.append(contentsOf: line.bytes)
            bytes.append(UInt8(ascii: "\n"))
            incident.hash = line.hash
            written.append(incident)
            (previous, sequence) = (line.hash, sequence + 1)
        }
        try file.appendWhole(bytes, restoringLength: length)
        return written
    }

    @discardableResult
    public func append(_ incident: Incident) throws(IncidentLogError) -> [Incident] {
        try append([incident])
    }

    /// The sequence number of the log's last chained record, read from its end; nil when it
    /// holds none.
    public func lastSequence() throws(IncidentLogError) -> Int64? {
        guard let file = try IncidentFile.open(path, forWriting: false) else { return nil }
        defer { file.close() }
        if case .chained(_, let sequence) = try file.lastLink(before: try file.size()) { return sequence }
        return nil
    }

    /// Every record, oldest first; a line that is not a record (a torn write
    /// from a crash) is skipped rather than hiding the rest.
    public func read() throws(IncidentLogError) -> [Incident] {
        guard let file = try IncidentFile.open(path, forWriting: false) else { return [] }
        defer { file.close() }
        let decoder = JSONDecoder()
        var incidents: [Incident] = []
        try file.forEachLine(upTo: try file.size()) { line, _, _ in
            if let incident = try? decoder.decode(Incident.self, from: Data(line)) { incidents.append(incident) }
            return true
        }
        return incidents
    }

    /// Opens the log, creating it, and takes the exclusive lock; if the file was
    /// rotated away between the open and the lock, opens the new one instead.
    private func lockedForAppending() throws(IncidentLogError) -> IncidentFile {
        for _ in 0..<16 {
            guard let file = try IncidentFile.open(path, forWriting: true) else { continue }
            do throws(IncidentLogError) {
                try file.lock(exclusive: true)
                if try file.isStill(at: path) { return file }
            } catch {
                file.close()
                throw error
            }
            file.close()
        }
        throw IncidentLogError(description: "cannot lock the incident log \(path): it keeps being replaced; check what rotates or rewrites it")
    }

    /// The last record of `path.1`, read under a shared lock so a writer still
    /// finishing a record in it is waited for.
    private func predecessorLink() throws(IncidentLogError) -> IncidentFile.Link {
        guard let old = try IncidentFile.open(rotatedPath(1), forWriting: false) else { return .noRecords }
        defer { old.close() }
        try old.lock(exclusive: false)
        let length = try old.size()
        return try old.lastLink(before: try old.endOfLastWholeLine(before: length))
    }

    private func createParentDirectory() throws(IncidentLogError) {
        guard let directory = SystemCall.parent(of: path) else { return }
        try IncidentFile.createDirectories(directory, mode: 0o750, what: "the incident log \(path)")
    }
}
