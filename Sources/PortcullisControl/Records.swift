import PortcullisBPF
import PortcullisCore
import PortcullisIncidents

/// A block as the control API and `--json` output show it. The same shape
/// whether the answer came from the daemon or from the maps directly.
public struct BlockRecord: Codable, Sendable, Equatable {
    public var target: String
    public var family: AddressFamily
    public var kind: BlockKind
    public var permanent: Bool
    public var expired: Bool
    public var remainingSeconds: Double?
    public var expiresAt: String?
    public var expiresAtUnixMs: Int64?
    public var droppedPackets: UInt64
    public var droppedBytes: UInt64
    public var reason: String
    public var source: BlockSource?
    /// Where within its source the block came from (`fail2ban/sshd`); absent when unknown.
    public var origin: String?
    public var createdAt: String?
    public var createdAtUnixMs: Int64?
    public var refreshedAt: String?
    public var refreshedAtUnixMs: Int64?
    public var requestedSeconds: Int64?
    /// A throttle's terms; absent for a block.
    public var throttle: Incident.Throttle?
    /// What a throttle let through; absent for a block.
    public var passedPackets: UInt64?
    /// The fleet node the block came from; absent when this host made it.
    public var node: String?

    public init(_ entry: BlockEntry) {
        target = entry.target.description
        family = entry.target.family
        if case .prefix = entry.target { kind = .prefix } else { kind = .address }
        permanent = entry.isPermanent
        expired = entry.isExpired
        remainingSeconds = entry.remaining?.fractionalSeconds
        expiresAt = entry.expiresUnixMilliseconds.map(Incident.rfc3339(unixMilliseconds:))
        expiresAtUnixMs = entry.expiresUnixMilliseconds
        droppedPackets = entry.droppedPackets
        droppedBytes = entry.droppedBytes
        reason = entry.reason
        source = entry.source
        origin = entry.origin.isEmpty ? nil : entry.origin
        createdAt = entry.createdUnixMilliseconds.map(Incident.rfc3339(unixMilliseconds:))
        createdAtUnixMs = entry.createdUnixMilliseconds
        refreshedAt = entry.refreshedUnixMilliseconds.map(Incident.rfc3339(unixMilliseconds:))
        refreshedAtUnixMs = entry.refreshedUnixMilliseconds
        requestedSeconds = entry.requestedDuration?.components.seconds
        throttle = entry.throttle.map(Incident.Throttle.init)
        passedPackets = entry.throttle == nil ? nil : entry.passedPackets
        node = entry.node
    }
}

extension BlockEntry {
    /// The block a daemon's answer describes; a record naming no valid target is a broken answer.
    public init(_ record: BlockRecord) throws(ServiceError) {
        let target: BlockTarget
        do {
            target = try BlockTarget.parse(record.target).target
        } catch {
            throw ServiceError(.failed, "the daemon answered with a block on '\(TerminalText.excerpt(record.target))', which is not a target: \(error.description)")
        }
        self.init(
            target: target, remaining: record.remainingSeconds.map { .milliseconds(Int64(($0 * 1000).rounded())) },
            expiresUnixMilliseconds: record.expiresAtUnixMs, isExpired: record.expired,
            droppedPackets: record.droppedPackets, droppedBytes: record.droppedBytes, reason: record.reason,
            source: record.source, createdUnixMilliseconds: record.createdAtUnixMs,
            refreshedUnixMilliseconds: record.refreshedAtUnixMs, requestedDuration: record.requestedSeconds.map { .seconds($0) },
            origin: record.origin ?? "", throttle: record.throttle?.terms, passedPackets: record.passedPackets ?? 0,
            node: record.node)
    }
}

/// POST /v1/blocks
public struct BlockBody: Codable, Sendable {
    public var target: String
    /// "100s", "1h30m"; absent for a permanent block.
    public var duration: String?
    public var reason: String?
    /// cli, file, wazuh, detector, api (the default), fail2ban, sshguard or crowdsec.
    public var source: String?
    /// Where within its source the request comes from: `fail2ban/sshd`, `crowdsec/cscli`.
    public var origin: String?
    /// When the block ends, in Unix milliseconds, instead of `duration` from now (which then
    /// is only what was asked, for the record): a ban fail2ban restores.
    public var expiresAtUnixMs: Int64?
    public var wazuh: Incident.Wazuh?
    /// The detection rule and log line, when the standalone detector asks.
    public var detection: Incident.Detection?
    /// Throttles the target instead of blocking it: packets per second, then the burst
    /// (default a tenth of the rate) and whether only new connections are policed.
    public var rate: UInt32?
    public var burst: UInt32?
    public var newConnections: Bool?

    public init(_ request: BlockRequest, context: IncidentContext) {
        target = request.target.description
        duration = request.duration.map { DurationText.format($0) }
        reason = request.reason.isEmpty ? nil : request.reason
        source = request.source.rawValue
        origin = request.origin.isEmpty ? nil : request.origin
        expiresAtUnixMs = request.expiresUnixMilliseconds
        (wazuh, detection) = (context.wazuh, context.detection)
        (rate, burst) = (request.throttle?.packetsPerSecond, request.throttle?.burst)
        newConnections = request.throttle?.newConnectionsOnly == true ? true : nil
    }

    public var context: IncidentContext { IncidentContext(wazuh: wazuh, detection: detection) }

    /// The request this body asks for, parsed as every path in parses it.
    public func request(defaultSource: BlockSource) throws(ServiceError) -> BlockRequest {
        if let origin, !OriginText.isValid(origin) {
            throw ServiceError(.badRequest, "the origin '\(TerminalText.excerpt(origin))' must be 1 to \(BlockRequest.maximumOriginBytes) printable characters")
        }
        return BlockRequest(
            target: try RequestParsing.target(target).target, duration: try RequestParsing.duration(duration),
            reason: reason ?? "", source: try RequestParsing.source(source, default: defaultSource),
            origin: origin ?? "", expiresUnixMilliseconds: expiresAtUnixMs, throttle: try throttle())
    }

    private func throttle() throws(ServiceError) -> ThrottleRate? {
        guard let rate else {
            if burst != nil || newConnections != nil { throw ServiceError(.badRequest, "burst and newConnections throttle: give the rate too") }
            return nil
        }
        do throws(ThrottleRateError) {
            return try ThrottleRate.parse(rate: String(rate), burst: burst, newConnectionsOnly: newConnections == true)
        } catch {
            throw ServiceError(.badRequest, error.description)
        }
    }
}

/// Whether a change's incident record was written, as the control API and `--json` show it:
/// `{"written": true}`, or `{"written": false, "log": PATH, "error": WHY}`. Present on every
/// answer whose change called for a record; the change took effect either way. A daemon older
/// than this field sends none, which reads as written: it could not tell.
public struct IncidentRecordBody: Codable, Sendable, Equatable {
    public var written: Bool
    /// The incident log the record was for; set when it was not written.
    public var log: String?
    /// Why it was not written, and what to do about it.
    public var error: String?

    public init(_ status: IncidentRecordStatus) {
        switch status {
        case .written: (written, log, error) = (true, nil, nil)
        case .notWritten(let failure): (written, log, error) = (false, failure.log, failure.reason)
        }
    }

    public var status: IncidentRecordStatus {
        guard !written else { return .written }
        return .notWritten(IncidentRecordFailure(log: log ?? "the daemon's incident log", reason: error ?? "the daemon gave no reason"))
    }

    /// The status an answer carries, absent meaning written.
    static func status(_ body: IncidentRecordBody?) -> IncidentRecordStatus { body?.status ?? .written }
}

public struct BlockResponse: Codable, Sendable {
    public var change: BlockChange
    public var block: BlockRecord
    /// How the target was normalized, if it was.
    public var notes: [String]
    public var incidentRecord: IncidentRecordBody?

    public init(_ outcome: BlockOutcome, notes: [String] = []) {
        (change, block, self.notes) = (outcome.change, BlockRecord(outcome.entry), notes)
        incidentRecord = IncidentRecordBody(outcome.record)
    }

    public func outcome() throws(ServiceError) -> BlockOutcome {
        BlockOutcome(entry: try BlockEntry(block), change: change, record: IncidentRecordBody.status(incidentRecord))
    }
}

/// POST /v1/blocks/batch
public struct BatchBody: Codable, Sendable {
    public struct Item: Codable, Sendable {
        public var target: String
        public var durationSeconds: Int64?
        public init(target: String, durationSeconds: Int64?) { (self.target, self.durationSeconds) = (target, durationSeconds) }
    }
    public var items: [Item]?
    /// The same items as the lines of a block file ("TARGET [DURATION]"), instead of `items`:
    /// one JSON string for a million targets, decoded in a fraction of the time an array of
    /// objects takes.
    public var lines: String?
    public var reason: String?
    public var source: String?
    /// Where the items came from, for the incident record.
    public var origin: String?

    /// The batch as `lines`, which the command line sends.
    public init(_ batch: BlockBatch) {
        var text = ""
        text.reserveCapacity(batch.items.count * 16)
        for item in batch.items {
            text += item.target.description
            if let seconds = item.duration?.components.seconds { text += " \(seconds)s" }
            text += "\n"
        }
        lines = text
        reason = batch.reason.isEmpty ? nil : batch.reason
        source = batch.source.rawValue
        origin = batch.origin
    }

    /// The batch this body asks for; any bad item refuses the whole body.
    public func batch() throws(ServiceError) -> BlockBatch {
        var parsed: [BlockBatch.Item] = []
        if let lines {
            do {
                try BlockFile.forEachEntry(in: lines) { parsed.append(BlockBatch.Item(target: $0.target, duration: $0.duration)) }
            } catch {
                throw ServiceError(.badRequest, "lines: \(error.description)")
            }
        }
        let items = items ?? []
        guard lines != nil || !items.isEmpty || self.items != nil else {
            throw ServiceError(.badRequest, "the body lacks the field items (or lines)")
        }
        parsed.reserveCapacity(parsed.count + items.count)
        for item in items {
            let target = try RequestParsing.target(item.target).target
            if let seconds = item.durationSeconds, !(1...DurationText.maximumSeconds).contains(seconds) {
                throw ServiceError(.badRequest, "\(item.target): the duration must be from 1 to \(DurationText.maximumSeconds) seconds")
            }
            parsed.append(BlockBatch.Item(target: target, duration: item.durationSeconds.map { .seconds($0) }))
        }
        return BlockBatch(
            items: parsed, reason: reason ?? "", source: try RequestParsing.source(source, default: .file),
            origin: origin ?? "a batch")
    }
}

public struct BatchResponse: Codable, Sendable {
    public var total: Int
    public var added: Int
    public var refreshed: Int
    public var keptLonger: Int
    public var seconds: Double
    public var incidentRecord: IncidentRecordBody?

    public init(_ result: BatchResult) {
        let outcome = result.outcome
        (total, added, refreshed, keptLonger) = (outcome.total, outcome.added, outcome.refreshed, outcome.keptLonger)
        seconds = result.elapsed.fractionalSeconds
        incidentRecord = IncidentRecordBody(result.record)
    }

    public var result: BatchResult {
        var outcome = BatchOutcome()
        (outcome.added, outcome.refreshed, outcome.keptLonger) = (added, refreshed, keptLonger)
        return BatchResult(outcome: outcome, elapsed: .milliseconds(Int64((seconds * 1000).rounded())),
                           record: IncidentRecordBody.status(incidentRecord))
    }
}

/// DELETE /v1/blocks?target=...
public struct UnblockResponse: Codable, Sendable {
    public var target: String
    public var wasBlocked: Bool
    public var block: BlockRecord?
    /// Set when the request named a source and another one owns the block, which stays.
    public var keptFor: BlockSource?
    /// Set when the block was lifted: only that is recorded.
    public var incidentRecord: IncidentRecordBody?

    public init(target: BlockTarget, _ result: UnblockResult) {
        self.target = target.description
        switch result.outcome {
        case .removed(let entry): (wasBlocked, block, keptFor) = (true, BlockRecord(entry), nil)
        case .absent: (wasBlocked, block, keptFor) = (false, nil, nil)
        // A block of unknown origin is nobody's to lift either; .cli stands for the operator.
        case .keptForOwner(let entry): (wasBlocked, block, keptFor) = (false, BlockRecord(entry), entry.source ?? .cli)
        }
        if case .removed = result.outcome { incidentRecord = IncidentRecordBody(result.record) }
    }

    public func result() throws(ServiceError) -> UnblockResult {
        guard let block else { return UnblockResult(outcome: .absent) }
        let entry = try BlockEntry(block)
        guard keptFor == nil && wasBlocked else { return UnblockResult(outcome: .keptForOwner(entry)) }
        return UnblockResult(outcome: .removed(entry), record: IncidentRecordBody.status(incidentRecord))
    }
}

/// POST /v1/unblock
public struct UnblockBody: Codable, Sendable {
    public var target: String
    public var source: String?
    /// true: lift the block only when `source` set it.
    public var onlyOwn: Bool?
    /// With `onlyOwn`: lift it only when it also came from this origin (one fail2ban jail).
    public var origin: String?
    public var wazuh: Incident.Wazuh?
    /// true: lift a throttle, not a block.
    public var throttle: Bool?

    public init(target: BlockTarget, source: BlockSource, onlyOwn: Bool, origin: String? = nil, wazuh: Incident.Wazuh?,
                throttle: Bool = false) {
        (self.target, self.source, self.onlyOwn, self.wazuh) = (target.description, source.rawValue, onlyOwn ? true : nil, wazuh)
        self.origin = origin
        self.throttle = throttle ? true : nil
    }
}

/// POST /v1/flush: lift every block one source (and, when given, one origin of it) holds.
public struct FlushBody: Codable, Sendable {
    public var source: String
    public var origin: String?

    public init(_ owner: BlockOwner) { (source, origin) = (owner.source.rawValue, owner.origin) }

    public func owner() throws(ServiceError) -> BlockOwner {
        BlockOwner(source: try RequestParsing.source(source, default: .api), origin: origin)
    }
}

public struct FlushResponse: Codable, Sendable {
    /// How many blocks were lifted.
    public var removedCount: Int
    /// The blocks lifted, the first ``SweepResponse/listedLimit`` of them.
    public var removed: [BlockRecord]
    /// Set when blocks were lifted: only then is anything recorded.
    public var incidentRecord: IncidentRecordBody?

    public init(_ result: FlushResult) {
        removedCount = result.removedCount
        removed = result.removed.prefix(SweepResponse.listedLimit).map(BlockRecord.init)
        if result.removedCount > 0 { incidentRecord = IncidentRecordBody(result.record) }
    }

    /// The result as far as the answer carries it: the first ``SweepResponse/listedLimit`` lifted blocks.
    public func result() throws(ServiceError) -> FlushResult {
        var entries: [BlockEntry] = []
        for record in removed { entries.append(try BlockEntry(record)) }
        return FlushResult(removed: entries, removedCount: removedCount, record: IncidentRecordBody.status(incidentRecord))
    }
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
    /// How many of them each source had blocked ("unknown" for a block of no known source).
    public var removedBySource: [String: Int]
    /// The removed blocks, the first ``SweepResponse/listedLimit`` of them: a sweep of a
    /// million expired blocks answers with a count, not a million records.
    public var removed: [BlockRecord]
    public var scanned: Int
    public var seconds: Double
    /// Set when blocks were removed: only then are expiries recorded.
    public var incidentRecord: IncidentRecordBody?

    public static let listedLimit = 1000

    public init(_ report: SweepReport) {
        removedCount = report.removedCount
        removedBySource = report.removedBySource
        removed = report.removed.prefix(Self.listedLimit).map(BlockRecord.init)
        scanned = report.scanned
        seconds = report.elapsed.fractionalSeconds
        if report.removedCount > 0 { incidentRecord = IncidentRecordBody(report.record) }
    }

    /// The report as far as the answer carries it: the first ``listedLimit`` removed blocks.
    public func report() throws(ServiceError) -> SweepReport {
        var entries: [BlockEntry] = []
        for record in removed { entries.append(try BlockEntry(record)) }
        return SweepReport(
            removed: entries, removedCount: removedCount, removedBySource: removedBySource, scanned: scanned,
            elapsed: .milliseconds(Int64((seconds * 1000).rounded())), record: IncidentRecordBody.status(incidentRecord))
    }
}

/// POST /v1/allowlist, DELETE /v1/allowlist?target=...
public struct AllowBody: Codable, Sendable {
    public var target: String
    public init(target: String) { self.target = target }
}

public struct AllowResponse: Codable, Sendable {
    public var target: String
    public var change: AllowlistChange
    public init(target: BlockTarget, change: AllowlistChange) { (self.target, self.change) = (target.description, change) }
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
    /// exclusive, or cooperative (through libxdp's dispatcher, at `priority`, in dispatcher `dispatcherId`).
    public let sharing: String
    public let priority: UInt32?
    public let dispatcherId: UInt32?

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
        sharing = attachment.sharing.rawValue
        priority = attachment.priority
        dispatcherId = attachment.dispatcherID
    }
}

