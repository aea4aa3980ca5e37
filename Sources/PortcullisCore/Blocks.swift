/// Who asked for a block; kept with the block and in the incident record.
public enum BlockSource: String, Sendable, Codable, CaseIterable {
    case cli, file, wazuh, detector, api
    /// The integrations: Portcullis as the blocking backend of fail2ban (an action), sshguard
    /// (a backend) and CrowdSec (a bouncer in the daemon).
    case fail2ban, sshguard, crowdsec

    /// The source named `text`, with an error that lists the known ones.
    public static func named(_ text: String) throws(UnknownBlockSource) -> BlockSource {
        guard let source = BlockSource(rawValue: text) else { throw UnknownBlockSource(name: text) }
        return source
    }
}

public struct UnknownBlockSource: Error, Sendable, Equatable, CustomStringConvertible {
    public let name: String
    public init(name: String) { self.name = name }
    public var description: String {
        "unknown source '\(name)' (\(BlockSource.allCases.map(\.rawValue).joined(separator: ", ")))"
    }
}

/// What a caller asks of the blocklist: block a target, for a while or until lifted.
public struct BlockRequest: Sendable, Equatable {
    public var target: BlockTarget
    /// nil blocks until unblocked.
    public var duration: Duration?
    public var reason: String
    public var source: BlockSource
    /// Where within its source the request comes from, kept with the block: a fail2ban jail
    /// (`fail2ban/sshd`), a CrowdSec decision's origin (`crowdsec/cscli`). An unblock or a flush
    /// may name it to lift only that origin's blocks. Empty lets the blocklist name it from
    /// the request's context (a Wazuh agent, the detector's log).
    public var origin: String
    /// When the block ends on the wall clock (Unix milliseconds), when the asker knows it
    /// rather than a duration from now: a ban fail2ban restores ends at its `<time>` plus
    /// its `<bantime>`, so a restart never lengthens it. With it, `duration` is only what was
    /// asked, for the record; nil counts `duration` from now.
    public var expiresUnixMilliseconds: Int64?
    /// Polices the target at this rate instead of dropping all it sends; nil blocks it.
    public var throttle: ThrottleRate?

    /// Longer reasons are refused at the edges, or cut at a character boundary where the
    /// text comes from elsewhere (a Wazuh rule's description).
    public static let maximumReasonBytes = 1024
    /// Longer origins are refused: an origin names a place (a jail, a decision's origin), not a story.
    public static let maximumOriginBytes = 256

    public init(target: BlockTarget, duration: Duration?, reason: String = "", source: BlockSource = .cli,
                origin: String = "", expiresUnixMilliseconds: Int64? = nil, throttle: ThrottleRate? = nil) {
        self.target = target
        self.duration = duration
        self.reason = reason
        self.source = source
        self.origin = origin
        self.expiresUnixMilliseconds = expiresUnixMilliseconds
        self.throttle = throttle
    }

    /// When the block requested at `now` (Unix milliseconds) ends: the absolute expiry when
    /// given, else `duration` from now, else never.
    public func expiry(at now: Int64) -> Expiry<Int64> {
        if let expiresUnixMilliseconds { return .at(expiresUnixMilliseconds) }
        guard let duration else { return .never }
        let (seconds, attoseconds) = duration.components
        let (milliseconds, overflow) = seconds.multipliedReportingOverflow(by: 1000)
        return overflow ? .never : .at(now.addingReportingOverflow(milliseconds + attoseconds / 1_000_000_000_000_000).partialValue)
    }
}

/// Who asks to lift blocks, for the owner rule: a source, and within it, when given, one
/// origin (one fail2ban jail's blocks, not another's).
public struct BlockOwner: Sendable, Equatable {
    public var source: BlockSource
    /// nil: any origin of `source`.
    public var origin: String?

    public init(source: BlockSource, origin: String? = nil) {
        (self.source, self.origin) = (source, origin)
    }
}

/// A block (or a throttle) as the control plane reports it.
public struct BlockEntry: Sendable, Equatable {
    public let target: BlockTarget
    /// nil for a permanent block.
    public let remaining: Duration?
    public let expiresUnixMilliseconds: Int64?
    public let isExpired: Bool
    public let droppedPackets: UInt64
    public let droppedBytes: UInt64
    public let reason: String
    public let source: BlockSource?
    /// Where within its source it came from (a fail2ban jail, a Wazuh agent); empty when unknown.
    public let origin: String
    public let createdUnixMilliseconds: Int64?
    public let refreshedUnixMilliseconds: Int64?
    /// What was asked for the last time it was set; nil when permanent or unknown.
    public let requestedDuration: Duration?
    /// A throttle's rate; nil for a block, which drops everything.
    public let throttle: ThrottleRate?
    /// What a throttle let through (a block passes nothing).
    public let passedPackets: UInt64
    /// The fleet node it came from; nil when this host made it.
    public var node: String?

    public init(target: BlockTarget, remaining: Duration?, expiresUnixMilliseconds: Int64?, isExpired: Bool,
                droppedPackets: UInt64, droppedBytes: UInt64, reason: String, source: BlockSource?,
                createdUnixMilliseconds: Int64?, refreshedUnixMilliseconds: Int64?, requestedDuration: Duration?,
                origin: String = "", throttle: ThrottleRate? = nil, passedPackets: UInt64 = 0, node: String? = nil) {
        (self.target, self.remaining, self.expiresUnixMilliseconds, self.isExpired) = (target, remaining, expiresUnixMilliseconds, isExpired)
        (self.droppedPackets, self.droppedBytes, self.reason, self.source) = (droppedPackets, droppedBytes, reason, source)
        (self.createdUnixMilliseconds, self.refreshedUnixMilliseconds) = (createdUnixMilliseconds, refreshedUnixMilliseconds)
        self.requestedDuration = requestedDuration
        self.origin = origin
        (self.throttle, self.passedPackets) = (throttle, passedPackets)
        self.node = node
    }

    public var isPermanent: Bool { remaining == nil }
}

/// What a block request did to the blocklist.
public enum BlockChange: String, Sendable, Codable, CaseIterable {
    /// The target was not blocked before.
    case added
    /// It was blocked; the expiry now follows the new request.
    case refreshed
    /// It was blocked for longer than the new request (or permanently); the longer expiry stays.
    case keptLonger = "kept-longer"
}

public struct BlockOutcome: Sendable {
    public let entry: BlockEntry
    public let change: BlockChange
    /// Whether the block's incident record was written; the block is in force either way.
    public var record: IncidentRecordStatus

    public init(entry: BlockEntry, change: BlockChange, record: IncidentRecordStatus = .written) {
        self.entry = entry
        self.change = change
        self.record = record
    }
}

/// How many targets of a batch each change befell.
public struct BatchOutcome: Sendable, Equatable {
    public init() {}

    public var added = 0
    public var refreshed = 0
    public var keptLonger = 0
    public var total: Int { added + refreshed + keptLonger }

    public mutating func count(_ change: BlockChange) {
        switch change {
        case .added: added += 1
        case .refreshed: refreshed += 1
        case .keptLonger: keptLonger += 1
        }
    }
}

/// What an unblock did.
public enum UnblockOutcome: Sendable {
    /// The block was lifted; this is how it stood, with its final counters.
    case removed(BlockEntry)
    /// Nothing blocked the target, which is not an error.
    case absent
    /// Blocked, but by another source than the one that asked: left in force.
    case keptForOwner(BlockEntry)
}

/// An unblock's outcome, and whether its incident record was written (only a lifted block
/// has one; the block is lifted either way).
public struct UnblockResult: Sendable {
    public var outcome: UnblockOutcome
    public var record: IncidentRecordStatus

    public init(outcome: UnblockOutcome, record: IncidentRecordStatus = .written) {
        (self.outcome, self.record) = (outcome, record)
    }
}

/// What a flush did: lifting every block one owner holds (fail2ban's `actionflush`,
/// sshguard's `flush`), and leaving every other.
public struct FlushResult: Sendable {
    /// The blocks lifted, with their final counters; a result that crossed the control
    /// socket holds only the first of them.
    public var removed: [BlockEntry]
    /// How many blocks were lifted.
    public var removedCount: Int
    /// Whether their incident records were written; the blocks are lifted either way.
    public var record: IncidentRecordStatus

    public init(removed: [BlockEntry], removedCount: Int? = nil, record: IncidentRecordStatus = .written) {
        (self.removed, self.removedCount, self.record) = (removed, removedCount ?? removed.count, record)
    }
}

/// Many targets blocked at once, from one origin (a file, a feed), with one reason.
public struct BlockBatch: Sendable {
    public struct Item: Sendable, Equatable {
        public var target: BlockTarget
        /// nil blocks until unblocked.
        public var duration: Duration?

        public init(target: BlockTarget, duration: Duration?) {
            self.target = target
            self.duration = duration
        }
    }

    public var items: [Item]
    public var reason: String
    public var source: BlockSource
    /// Where the items came from, for the incident record: a file's path, "standard input".
    public var origin: String

    public init(items: [Item], reason: String = "", source: BlockSource = .file, origin: String) {
        (self.items, self.reason, self.source, self.origin) = (items, reason, source, origin)
    }

    public var requests: [BlockRequest] {
        items.map { BlockRequest(target: $0.target, duration: $0.duration, reason: reason, source: source) }
    }
}

public struct BatchResult: Sendable, Equatable {
    public var outcome: BatchOutcome
    public var elapsed: Duration
    /// Whether the batch's incident record was written; the blocks are in force either way.
    public var record: IncidentRecordStatus

    public init(outcome: BatchOutcome, elapsed: Duration, record: IncidentRecordStatus = .written) {
        self.outcome = outcome
        self.elapsed = elapsed
        self.record = record
    }

    /// Two chunks of one load, as one result.
    public static func + (lhs: BatchResult, rhs: BatchResult) -> BatchResult {
        var outcome = lhs.outcome
        outcome.added += rhs.outcome.added
        outcome.refreshed += rhs.outcome.refreshed
        outcome.keptLonger += rhs.outcome.keptLonger
        return BatchResult(outcome: outcome, elapsed: lhs.elapsed + rhs.elapsed, record: lhs.record.combined(with: rhs.record))
    }
}

public struct SweepReport: Sendable {
    /// The blocks removed, with what they dropped over their lifetime; a report that
    /// crossed the control socket holds only the first of them.
    public let removed: [BlockEntry]
    /// How many blocks were removed.
    public let removedCount: Int
    /// How many of them each source had blocked ("unknown" for a block of no known source).
    public let removedBySource: [String: Int]
    public let scanned: Int
    public let elapsed: Duration
    /// Whether the expiries' incident records were written; the blocks are removed either way.
    public var record: IncidentRecordStatus

    public init(removed: [BlockEntry], scanned: Int, elapsed: Duration, record: IncidentRecordStatus = .written) {
        (self.removed, self.scanned, self.elapsed, self.record) = (removed, scanned, elapsed, record)
        removedCount = removed.count
        var bySource: [String: Int] = [:]
        for entry in removed { bySource[entry.source?.rawValue ?? "unknown", default: 0] += 1 }
        removedBySource = bySource
    }

    /// A report whose `removed` is only the first of them, with the counts of all.
    public init(removed: [BlockEntry], removedCount: Int, removedBySource: [String: Int], scanned: Int, elapsed: Duration,
                record: IncidentRecordStatus = .written) {
        (self.removed, self.removedCount, self.removedBySource) = (removed, removedCount, removedBySource)
        (self.scanned, self.elapsed, self.record) = (scanned, elapsed, record)
    }
}

/// What an allow or disallow did to the allowlist.
public enum AllowlistChange: String, Sendable, Codable {
    case added, unchanged, removed, absent
}

/// Who put an allowlist entry there: a command (or the API), or the daemon's
/// configuration, which removes its own entries when they leave the file.
public enum AllowOrigin: String, Sendable, Equatable, Codable {
    case command, configuration
}

public struct AllowlistEntry: Sendable, Equatable {
    public let target: BlockTarget
    public let origin: AllowOrigin

    public init(target: BlockTarget, origin: AllowOrigin) {
        self.target = target
        self.origin = origin
    }
}
