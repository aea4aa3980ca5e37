import PortcullisBPF
import PortcullisCore
import PortcullisIncidents
import PortcullisLedger
import PortcullisSystem

/// A change another node made, read from the fleet's change log and parsed, its times already
/// on this host's clock.
public struct RemoteChange: Sendable, Equatable {
    /// Its place in the change log: the cursor moves past it once applied (or refused).
    public let sequence: Int64
    public let node: String
    public let change: FleetChange

    public init(sequence: Int64, node: String, change: FleetChange) {
        (self.sequence, self.node, self.change) = (sequence, node, change)
    }
}

/// What applying a run of the fleet's changes did.
public struct FleetApplyReport: Sendable, Equatable {
    /// Blocks added or lengthened, tombstones that lifted a block, allowlist changes.
    public var applied = 0
    /// Changes that found the blocklist as they would leave it (a shorter block, an unblock of
    /// nothing): applying a change twice is the same as once.
    public var unchanged = 0
    /// Loopback, allowlisted: recorded as refusals, never applied.
    public var refused = 0
    /// Blocks that had already ended by this host's clock.
    public var expired = 0

    public init() {}

    public static func += (lhs: inout FleetApplyReport, rhs: FleetApplyReport) {
        lhs.applied += rhs.applied
        lhs.unchanged += rhs.unchanged
        lhs.refused += rhs.refused
        lhs.expired += rhs.expired
    }
}

extension LocalBlocklist {
    /// Up to this many changes in one application are recorded one record each; more (a
    /// snapshot, a large load on another node) are summed into one record per node, as a
    /// batch from a file is.
    static let fleetRecordsEach = 256

    /// Applies other nodes' changes, in their order, through this writer: the ledger first
    /// (with the cursor, in the same transaction), then the maps, then the record. The longer
    /// expiry wins, as locally; a tombstone lifts only a block that came from the fleet or from
    /// a shared source, and only when nothing here refreshed it since. Loopback and what this
    /// host's allowlist covers are refused and recorded. Work follows the changes, not the blocklist.
    public func applyFleet(_ changes: [RemoteChange], cursor: Int64?) throws(ServiceError) -> FleetApplyReport {
        let lock = try ServiceError.mapping { () throws(DatapathError) in try datapath.lockForWriting() }
        defer { withExtendedLifetime(lock) {} }
        let allowed = try ServiceError.mapping { () throws(DatapathError) in try datapath.allowlist() }
        let reading = try ServiceError.mapping { () throws(DatapathError) in try datapath.now() }
        let now = reading.unixMilliseconds
        var report = FleetApplyReport()
        var refusals: [(RemoteChange, Refusal)] = []
        var writes: [ExpiryWrite] = []
        var lifted: [(LedgerBlock, RemoteChange)] = []
        var blocked: [(LedgerBlock, BlockChange, RemoteChange)] = []
        var allows: [BlockTarget] = []
        var disallows: [BlockTarget] = []
        // Blocks new to this host, the bulk of a load made on another node, are written many rows
        // to a statement; a run is written before any other kind of change, or a second change
        // of one of its targets, so every change still applies in the log's order.
        var run: [(LedgerBlock, RemoteChange)] = []
        var runTargets: Set<BlockTarget> = []
        // Targets whose last change in this page lifted them.
        var liftedLast: Set<BlockTarget> = []
        func applyOne(_ requested: LedgerBlock, _ remote: RemoteChange, _ writer: inout LedgerWriter) throws(LedgerError) {
            let current = try writer.block(for: requested.target)
            let (merged, outcome) = Self.merge(requested, into: current, at: now)
            guard outcome != .keptLonger else {
                report.unchanged += 1
                return
            }
            try writer.put(merged, replacing: current)
            liftedLast.remove(merged.target)
            writes.append(ExpiryWrite(target: merged.target, expiry: Self.jiffies(merged.expiry, reading),
                                      keepsCounters: outcome == .refreshed))
            blocked.append((merged, outcome, remote))
            report.applied += 1
        }
        func writeRun(_ writer: inout LedgerWriter) throws(LedgerError) {
            guard !run.isEmpty else { return }
            let written = try writer.insertIfAbsent(many: run.map(\.0)[...])
            for ((requested, remote), isNew) in zip(run, written) {
                guard isNew else {
                    // Held here already (maybe expired): the merge rule decides, row by row.
                    try applyOne(requested, remote, &writer)
                    continue
                }
                liftedLast.remove(requested.target)
                writes.append(ExpiryWrite(target: requested.target, expiry: Self.jiffies(requested.expiry, reading), keepsCounters: false))
                blocked.append((requested, .added, remote))
                report.applied += 1
            }
            run.removeAll(keepingCapacity: true)
            runTargets.removeAll(keepingCapacity: true)
        }
        try ledgerWrite { (writer: inout LedgerWriter) throws(ServiceError) in
            try ServiceError.mapping { () throws(LedgerError) in
                for remote in changes {
                    let change = remote.change
                    if change.kind != .block && change.kind != .refresh || runTargets.contains(change.target) {
                        try writeRun(&writer)
                    }
                    switch change.kind {
                    case .block, .refresh:
                        do throws(Refusal) {
                            try Admission.check(change.target, allowlist: allowed)
                        } catch {
                            refusals.append((remote, error))
                            report.refused += 1
                            continue
                        }
                        if case .at(let end) = change.expiry, end <= now {
                            report.expired += 1
                            continue
                        }
                        let requestedDuration: Duration? = switch change.expiry {
                        case .never: nil
                        case .at(let end): .seconds(max(1, (end - change.timeUnixMilliseconds + 999) / 1000))
                        }
                        // Refreshed when the other node made it, not when it arrived here: a tombstone
                        // that node made later (in the same page, or while this host was down) lifts it.
                        let made = min(change.timeUnixMilliseconds, now)
                        let requested = LedgerBlock(
                            target: change.target, expiry: change.expiry, source: change.source, origin: "fleet node \(remote.node)",
                            reason: change.reason, createdUnixMilliseconds: made,
                            refreshedUnixMilliseconds: made, requestedDuration: requestedDuration, node: remote.node)
                        run.append((requested, remote))
                        runTargets.insert(change.target)
                    case .unblock:
                        guard let current = try writer.block(for: change.target),
                              current.node != nil || fleetShare.contains(current.source),
                              current.refreshedUnixMilliseconds <= change.timeUnixMilliseconds
                                || current.isExpired(atUnixMilliseconds: now) else {
                            report.unchanged += 1
                            continue
                        }
                        try writer.remove(current)
                        lifted.append((current, remote))
                        liftedLast.insert(current.target)
                        report.applied += 1
                    case .allow:
                        // The fleet's allowlist entries are an operator's (`portcullis allow`) on another node.
                        if try writer.allow(AllowlistEntry(target: change.target, origin: .command), atUnixMilliseconds: now) {
                            allows.append(change.target)
                            report.applied += 1
                        } else {
                            report.unchanged += 1
                        }
                    case .disallow:
                        // This host's configured entries are its own: only a command's entry is lifted.
                        let entries = try ledger.allowlist()
                        if entries.contains(where: { $0.target == change.target && $0.origin == .command }),
                           try writer.disallow(change.target) {
                            disallows.append(change.target)
                            report.applied += 1
                        } else {
                            report.unchanged += 1
                        }
                    }
                }
                try writeRun(&writer)
                if let cursor { try writer.setFleetCursor(cursor) }
                if report.applied > 0 { try writer.recordWrite(atUnixMilliseconds: now) }
            }
        }
        let removed = try ServiceError.mapping { () throws(DatapathError) in
            for target in allows { _ = try datapath.insertAllowed(target, origin: .command) }
            for target in disallows { _ = try datapath.removeAllowed(target) }
            try datapath.setExpiries(writes)
            // The maps take every write, then the removals of what the page left unblocked: a
            // target unblocked and blocked again in one page stays in the maps.
            return try datapath.removeBlocks(lifted.map(\.0.target).filter(liftedLast.contains))
        }
        if !lifted.isEmpty {
            try ServiceError.mapping { () throws(LedgerError) in try ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
                try writer.clearPendingRemovals(lifted.map(\.0.target))
            } }
        }
        recordFleet(blocked: blocked, lifted: lifted, counters: removed, refusals: refusals, at: now)
        return report
    }

    /// After a snapshot that replaced what this host knew of the fleet: lifts the blocks that
    /// came from other nodes and are no longer in force there (their tombstones were compacted
    /// away while this host was behind). Proportional to the fleet's blocks held here.
    public func dropFleetBlocks(notIn inForce: Set<BlockTarget>) throws(ServiceError) -> Int {
        let lock = try ServiceError.mapping { () throws(DatapathError) in try datapath.lockForWriting() }
        defer { withExtendedLifetime(lock) {} }
        var stale: [LedgerBlock] = []
        try ServiceError.mapping { () throws(LedgerError) in
            try ledger.forEachFleetBlock { block in
                if !inForce.contains(block.target) { stale.append(block) }
            }
        }
        guard !stale.isEmpty else { return 0 }
        let now = WallClock.nowUnixMilliseconds()
        try ServiceError.mapping { () throws(LedgerError) in
            try ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
                for block in stale { try writer.remove(block) }
                try writer.recordWrite(atUnixMilliseconds: now)
            }
        }
        let counters = try ServiceError.mapping { () throws(DatapathError) in try datapath.removeBlocks(stale.map(\.target)) }
        try ServiceError.mapping { () throws(LedgerError) in try ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
            try writer.clearPendingRemovals(stale.map(\.target))
        } }
        var byTarget: [BlockTarget: DataplaneBlock] = [:]
        for block in counters { byTarget[block.target] = block }
        let records = stale.map { block in
            var record = Incident(
                timeUnixMs: now, action: .unblock, target: block.target.description, source: block.source.rawValue,
                reason: "no longer in force in the fleet", node: block.node)
            let entry = Self.entry(block, counters: byTarget[block.target], at: now)
            record.outcome = .init(lastedSeconds: Double(max(0, now - block.createdUnixMilliseconds)) / 1000,
                                   droppedPackets: entry.droppedPackets, droppedBytes: entry.droppedBytes)
            return record
        }
        index(recorder.warned(recorder.write(records), after: "\(stale.count) fleet blocks no longer in force are lifted"))
        return stale.count
    }

    /// A row of the change log that is not a change (a target, a kind or a source no node
    /// writes): recorded as refused, never applied.
    public func recordMalformedFleetChange(_ target: String, node: String, error: String) {
        index(recorder.recordRefusal(TerminalText.excerpt(target), source: "fleet", error: error, kind: .malformed,
                                     context: IncidentContext(node: node)))
    }

    /// Changes waiting to be published, oldest first.
    public func fleetOutbox(limit: Int) throws(ServiceError) -> [OutboxEntry] {
        try ServiceError.mapping { () throws(LedgerError) in try ledger.outbox(limit: limit) }
    }

    /// Drops the outbox entries the database has taken.
    public func removeFleetOutbox(through id: Int64) throws(ServiceError) {
        try ServiceError.mapping { () throws(LedgerError) in
            try ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in try writer.removeOutbox(through: id) }
        }
    }

    /// A block of this host's as the fleet carries it.
    static func fleetChange(_ block: LedgerBlock, kind: FleetChange.Kind, at now: Int64) -> FleetChange {
        FleetChange(kind: kind, target: block.target, expiry: block.expiry, source: block.source, reason: block.reason,
                    timeUnixMilliseconds: now)
    }

    private func recordFleet(blocked: [(LedgerBlock, BlockChange, RemoteChange)], lifted: [(LedgerBlock, RemoteChange)],
                             counters: [DataplaneBlock], refusals: [(RemoteChange, Refusal)], at now: Int64) {
        for (remote, refusal) in refusals {
            index(recorder.recordRefusal(remote.change.target.description, source: remote.change.source.rawValue,
                                         error: refusal.description, kind: Incident.RefusalKind(refusal),
                                         context: IncidentContext(node: remote.node)))
        }
        var byTarget: [BlockTarget: DataplaneBlock] = [:]
        for block in counters { byTarget[block.target] = block }
        var records: [Incident] = []
        if blocked.count + lifted.count <= Self.fleetRecordsEach {
            for (block, change, remote) in blocked {
                let entry = Self.entry(block, counters: nil, at: now)
                records.append(Incident(
                    timeUnixMs: now, action: change == .added ? .block : .refresh, target: block.target.description,
                    source: block.source.rawValue, reason: block.reason, requestedSeconds: block.requestedDuration?.components.seconds,
                    expiresAtUnixMs: entry.expiresUnixMilliseconds, node: remote.node))
            }
            for (block, remote) in lifted {
                let entry = Self.entry(block, counters: byTarget[block.target], at: now)
                records.append(Incident(
                    timeUnixMs: now, action: .unblock, target: block.target.description, source: remote.change.source.rawValue,
                    reason: block.reason,
                    outcome: .init(lastedSeconds: Double(max(0, now - block.createdUnixMilliseconds)) / 1000,
                                   droppedPackets: entry.droppedPackets, droppedBytes: entry.droppedBytes),
                    node: remote.node))
            }
        } else {
            var blocksByNode: [String: Int] = [:]
            var liftsByNode: [String: Int] = [:]
            for (_, _, remote) in blocked { blocksByNode[remote.node, default: 0] += 1 }
            for (_, remote) in lifted { liftsByNode[remote.node, default: 0] += 1 }
            for (node, count) in blocksByNode.sorted(by: { $0.key < $1.key }) {
                records.append(Incident(timeUnixMs: now, action: .block, target: "\(count) targets from fleet node \(node)",
                                        source: "fleet", node: node))
            }
            for (node, count) in liftsByNode.sorted(by: { $0.key < $1.key }) {
                records.append(Incident(timeUnixMs: now, action: .unblock, target: "\(count) targets unblocked on fleet node \(node)",
                                        source: "fleet", node: node))
            }
        }
        guard !records.isEmpty else { return }
        index(recorder.warned(recorder.write(records), after: "\(blocked.count + lifted.count) fleet changes are applied"))
    }
}
