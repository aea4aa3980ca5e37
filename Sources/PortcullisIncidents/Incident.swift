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
        public var command: String?

        public init(ruleId: String? = nil, ruleLevel: String? = nil, ruleDescription: String? = nil,
                    agentId: String? = nil, agentName: String? = nil, alertId: String? = nil, command: String? = nil) {
            (self.ruleId, self.ruleLevel, self.ruleDescription) = (ruleId, ruleLevel, ruleDescription)
            (self.agentId, self.agentName, self.alertId, self.command) = (agentId, agentName, alertId, command)
        }
    }

    /// What a block did, recorded when it ends.
    public struct Outcome: Codable, Sendable, Equatable {
        public var lastedSeconds: Double?
        public var droppedPackets: UInt64
        public var droppedBytes: UInt64

        public init(lastedSeconds: Double?, droppedPackets: UInt64, droppedBytes: UInt64) {
            (self.lastedSeconds, self.droppedPackets, self.droppedBytes) = (lastedSeconds, droppedPackets, droppedBytes)
        }
    }

    public var time: String
    public var timeUnixMs: Int64
    public var action: Action
    public var target: String
    /// cli, file, wazuh, detector or api
    public var source: String
    public var reason: String?
    /// What was asked for; nil for a permanent block or where it does not apply.
    public var requestedSeconds: Int64?
    public var expiresAt: String?
    public var wazuh: Wazuh?
    public var detection: Detection?
    public var outcome: Outcome?
    /// Why a request was refused.
    public var error: String?

    public init(timeUnixMs: Int64, action: Action, target: String, source: String, reason: String? = nil,
                requestedSeconds: Int64? = nil, expiresAtUnixMs: Int64? = nil, wazuh: Wazuh? = nil,
                detection: Detection? = nil, outcome: Outcome? = nil, error: String? = nil) {
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
    }

    /// RFC 3339 in UTC with milliseconds.
    public static func rfc3339(unixMilliseconds: Int64) -> String {
        var seconds = time_t(unixMilliseconds >= 0 ? unixMilliseconds / 1000 : (unixMilliseconds - 999) / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let length = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S", &parts)
        let milliseconds = Int(unixMilliseconds - Int64(seconds) * 1000)
        let fraction = String(milliseconds)
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            + "." + String(repeating: "0", count: 3 - fraction.count) + fraction + "Z"
    }

    public static func nowUnixMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}

public struct IncidentLogError: Error, CustomStringConvertible {
    public let description: String
}

/// The append-only JSON-lines file of incidents. Each record is written with
/// one write(2) under an exclusive lock and fsync'd before the call returns, so
/// concurrent writers never interleave and a record survives a crash right after.
public struct IncidentLog: Sendable {
    public static let defaultPath = "/var/log/portcullis/incidents.jsonl"
    public static let environmentVariable = "PORTCULLIS_INCIDENT_LOG"

    public let path: String

    public init(path: String) { self.path = path }

    /// `--incident-log` wins over `PORTCULLIS_INCIDENT_LOG`, which wins over the default.
    public static func resolve(option: String?) -> IncidentLog {
        IncidentLog(path: setting(option: option, environment: environmentVariable) ?? defaultPath)
    }

    public func append(_ incidents: [Incident]) throws(IncidentLogError) {
        guard !incidents.isEmpty else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var bytes: [UInt8] = []
        for incident in incidents {
            guard let data = try? encoder.encode(incident) else {
                throw IncidentLogError(description: "cannot encode an incident for \(incident.target)")
            }
            bytes.append(contentsOf: data)
            bytes.append(UInt8(ascii: "\n"))
        }
        try createParentDirectory()
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw failure("cannot open") }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw failure("cannot lock") }
        }
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                throw failure("cannot write")
            }
            offset += written
        }
        guard fdatasync(fd) == 0 else { throw failure("cannot sync") }
    }

    public func append(_ incident: Incident) throws(IncidentLogError) {
        try append([incident])
    }

    /// Every record, oldest first; a line that is not a record (a torn write
    /// from a crash) is skipped rather than hiding the rest.
    public func read() throws(IncidentLogError) -> [Incident] {
        let bytes: [UInt8]
        do {
            bytes = try readWholeFile(path)
        } catch {
            if error.code == ENOENT { return [] }
            throw IncidentLogError(description: "cannot read the incident log \(path): \(String(cString: strerror(error.code)))")
        }
        let decoder = JSONDecoder()
        return bytes.split(separator: UInt8(ascii: "\n")).compactMap { line in
            try? decoder.decode(Incident.self, from: Data(line))
        }
    }

    private func createParentDirectory() throws(IncidentLogError) {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        var built = ""
        for component in path[..<slash].split(separator: "/") {
            built += "/\(component)"
            if mkdir(built, 0o750) != 0 && errno != EEXIST { throw failure("cannot create directory \(built) for") }
        }
    }

    private func failure(_ what: String) -> IncidentLogError {
        IncidentLogError(description: "\(what) the incident log \(path): \(String(cString: strerror(errno)))")
    }
}
