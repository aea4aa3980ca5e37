import PortcullisBPF
import PortcullisCore
import PortcullisIncidents

/// A block as the control API and `--json` output show it. The same shape
/// whether the answer came from the daemon or from the maps directly.
public struct BlockRecord: Codable, Sendable, Equatable {
    public var target: String
    public var family: String
    public var kind: String
    public var permanent: Bool
    public var expired: Bool
    public var remainingSeconds: Double?
    public var expiresAt: String?
    public var expiresAtUnixMs: Int64?
    public var droppedPackets: UInt64
    public var droppedBytes: UInt64
    public var reason: String
    public var source: String?
    public var createdAt: String?
    public var createdAtUnixMs: Int64?
    public var refreshedAt: String?
    public var requestedSeconds: Int64?

    public init(_ entry: BlockEntry) {
        target = entry.target.description
        family = entry.target.family.rawValue
        if case .prefix = entry.target { kind = "prefix" } else { kind = "address" }
        permanent = entry.isPermanent
        expired = entry.isExpired
        remainingSeconds = entry.remaining.map { duration in
            let (seconds, attoseconds) = duration.components
            return (Double(seconds) + Double(attoseconds) / 1e18)
        }
        expiresAt = entry.expiresUnixMilliseconds.map(Incident.rfc3339(unixMilliseconds:))
        expiresAtUnixMs = entry.expiresUnixMilliseconds
        droppedPackets = entry.droppedPackets
        droppedBytes = entry.droppedBytes
        reason = entry.reason
        source = entry.source?.rawValue
        createdAt = entry.createdUnixMilliseconds.map(Incident.rfc3339(unixMilliseconds:))
        createdAtUnixMs = entry.createdUnixMilliseconds
        refreshedAt = entry.refreshedUnixMilliseconds.map(Incident.rfc3339(unixMilliseconds:))
        requestedSeconds = entry.requestedDuration?.components.seconds
    }
}

/// POST /v1/blocks
public struct BlockBody: Codable, Sendable {
    public var target: String
    /// "100s", "1h30m"; absent for a permanent block.
    public var duration: String?
    public var reason: String?
    /// cli, file, wazuh, detector or api (the default).
    public var source: String?
    public var wazuh: Incident.Wazuh?
    /// The detection rule and log line, when the standalone detector asks.
    public var detection: Incident.Detection?

    public init(target: String, duration: String? = nil, reason: String? = nil, source: String? = nil,
                wazuh: Incident.Wazuh? = nil, detection: Incident.Detection? = nil) {
        (self.target, self.duration, self.reason, self.source) = (target, duration, reason, source)
        (self.wazuh, self.detection) = (wazuh, detection)
    }

    var context: IncidentContext { IncidentContext(wazuh: wazuh, detection: detection) }
}

public struct BlockResponse: Codable, Sendable {
    /// added, refreshed or kept-longer
    public var change: String
    public var block: BlockRecord
    /// How the target was normalized, if it was.
    public var notes: [String]

    public init(change: String, block: BlockRecord, notes: [String] = []) {
        (self.change, self.block, self.notes) = (change, block, notes)
    }
}

/// POST /v1/blocks/batch
public struct BatchBody: Codable, Sendable {
    public struct Item: Codable, Sendable {
        public var target: String
        public var durationSeconds: Int64?
        public init(target: String, durationSeconds: Int64?) { (self.target, self.durationSeconds) = (target, durationSeconds) }
    }
    public var items: [Item]
    public var reason: String?
    public var source: String?
    /// Where the items came from, for the incident record.
    public var origin: String?

    public init(items: [Item], reason: String?, source: String?, origin: String?) {
        (self.items, self.reason, self.source, self.origin) = (items, reason, source, origin)
    }
}

public struct BatchResponse: Codable, Sendable {
    public var total: Int
    public var added: Int
    public var refreshed: Int
    public var keptLonger: Int
    public var seconds: Double

    public init(_ outcome: BatchOutcome, seconds: Double) {
        (total, added, refreshed, keptLonger, self.seconds) = (outcome.total, outcome.added, outcome.refreshed, outcome.keptLonger, seconds)
    }
}

/// DELETE /v1/blocks?target=...
public struct UnblockResponse: Codable, Sendable {
    public var target: String
    public var wasBlocked: Bool
    public var block: BlockRecord?
    /// Set when the request named a source and another one owns the block, which stays.
    public var keptFor: String?

    public init(target: String, block: BlockRecord?, keptFor: String? = nil) {
        (self.target, self.wasBlocked, self.block, self.keptFor) = (target, block != nil && keptFor == nil, block, keptFor)
    }
}

/// POST /v1/unblock
public struct UnblockBody: Codable, Sendable {
    public var target: String
    public var source: String?
    /// true: lift the block only when `source` set it.
    public var onlyOwn: Bool?
    public var wazuh: Incident.Wazuh?
}

/// GET /v1/blocks
public struct BlockPage: Codable, Sendable {
    public var total: Int
    public var offset: Int
    public var limit: Int
    public var blocks: [BlockRecord]

    public init(total: Int, offset: Int, limit: Int, blocks: [BlockRecord]) {
        (self.total, self.offset, self.limit, self.blocks) = (total, offset, limit, blocks)
    }
}

/// POST /v1/sweep
public struct SweepResponse: Codable, Sendable {
    /// How many expired blocks were removed.
    public var removedCount: Int
    /// How many of them each source had blocked.
    public var removedBySource: [String: Int]
    /// The removed blocks, the first ``SweepResponse/listedLimit`` of them: a sweep of a
    /// million expired blocks answers with a count, not a million records.
    public var removed: [BlockRecord]
    public var scanned: Int
    public var seconds: Double

    public static let listedLimit = 1000

    public init(removedCount: Int, removedBySource: [String: Int], removed: [BlockRecord], scanned: Int, seconds: Double) {
        (self.removedCount, self.removedBySource, self.removed) = (removedCount, removedBySource, removed)
        (self.scanned, self.seconds) = (scanned, seconds)
    }
}

/// POST /v1/allowlist, DELETE /v1/allowlist?target=...
public struct AllowBody: Codable, Sendable {
    public var target: String
    public init(target: String) { self.target = target }
}

public struct AllowResponse: Codable, Sendable {
    public var target: String
    /// added, unchanged, removed or absent
    public var change: String
    public init(target: String, change: String) { (self.target, self.change) = (target, change) }
}

/// Every 4xx and 5xx answer.
public struct ErrorBody: Codable, Sendable, Error, CustomStringConvertible {
    public var error: String
    public init(error: String) { self.error = error }
    public var description: String { error }
}

extension Duration {
    public var fractionalSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// An XDP attachment, as `attach`, `status` and the control API show it.
public struct AttachmentRecord: Codable, Sendable {
    public let interface: String
    public let netns: String?
    public let ifindex: UInt32
    public let mode: String?
    public let programId: UInt32
    public let linkId: UInt32
    public let active: Bool

    /// Set on the answer to an attach: whether Portcullis was attached there already.
    public var alreadyAttached: Bool?

    public init(_ attachment: Attachment, alreadyAttached: Bool? = nil) {
        self.alreadyAttached = alreadyAttached
        interface = attachment.interface
        netns = attachment.namespace
        ifindex = attachment.interfaceIndex
        mode = attachment.mode?.rawValue
        programId = attachment.programID
        linkId = attachment.linkID
        active = attachment.isActive
    }
}

