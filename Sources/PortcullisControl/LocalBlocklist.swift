import FoundationEssentials
import Glibc
import PortcullisBPF
import PortcullisCore
import PortcullisIncidents
import PortcullisLedger
import PortcullisSystem

/// Where a blocklist lives on this host: the pinned maps and the ledger's state directory.
public struct BlocklistLocation: Sendable, Equatable {
    public var pins: PinDirectory
    public var stateDirectory: String

    public init(pins: PinDirectory, stateDirectory: String) {
        (self.pins, self.stateDirectory) = (pins, stateDirectory)
    }

    /// `--state-dir` over `PORTCULLIS_STATE_DIR` over /var/lib/portcullis, as the incident key.
    public static func resolve(pinDirectory: String?, stateDirectory: String?) -> BlocklistLocation {
        BlocklistLocation(pins: PinDirectory.resolve(option: pinDirectory),
                          stateDirectory: IncidentLog.resolveStateDirectory(option: stateDirectory))
    }
}

/// What opening the blocklist did to bring the maps in line with the ledger.
public struct StartReport: Sendable, Equatable {
    /// The maps were missing (a reboot): created and filled from the ledger.
    public var restored = 0
    /// Layout 3 pins were found: their blocks and allowlist imported into the ledger.
    public var upgradedBlocks: Int?
    /// Blocks the ledger held that expired while nothing ran.
    public var expiredWhileDown = 0
    /// Ledger blocks the maps lacked (a crash between the two writes), now added.
    public var addedToMaps = 0
    /// Map entries whose expiry did not match the ledger's, now rewritten.
    public var expiriesRederived = 0
    /// Map entries the ledger did not know, now recorded in it.
    public var adopted = 0
    /// Map entries lifted in the ledger whose removal a crash interrupted, now removed.
    public var removedFromMaps = 0
    /// Map entries of a large batch that a crash stopped before its ledger commit, now removed.
    public var uncommittedBatchRemoved = 0
    /// Interfaces moved to the new program after an upgrade.
    public var movedAttachments: [String] = []
    /// Set when the wall clock reads earlier than the ledger's last change.
    public var clockWarning: String?

    public init() {}

    public var changedAnything: Bool {
        restored + expiredWhileDown + addedToMaps + expiriesRederived + adopted + removedFromMaps + uncommittedBatchRemoved > 0
            || upgradedBlocks != nil || !movedAttachments.isEmpty
    }

    /// One line per thing done, for the daemon's log and `attach`'s output.
    public var lines: [String] {
        var lines: [String] = []
        if let upgradedBlocks { lines.append("upgraded layout 3 pins: imported \(upgradedBlocks) blocks into the ledger") }
        if restored > 0 { lines.append("restored \(restored) blocks from the ledger into new maps") }
        if expiredWhileDown > 0 { lines.append("\(expiredWhileDown) blocks expired while Portcullis was down; recorded as expired") }
        if addedToMaps > 0 { lines.append("added \(addedToMaps) blocks the maps lacked (an interrupted change)") }
        if expiriesRederived > 0 { lines.append("re-derived the expiry of \(expiriesRederived) blocks from the ledger") }
        if adopted > 0 { lines.append("recorded \(adopted) blocks found in the maps but not in the ledger") }
        if removedFromMaps > 0 { lines.append("removed \(removedFromMaps) blocks lifted in the ledger but still in the maps") }
        if uncommittedBatchRemoved > 0 { lines.append("removed \(uncommittedBatchRemoved) blocks of a batch that a crash stopped before the ledger took it") }
        if !movedAttachments.isEmpty { lines.append("moved \(movedAttachments.joined(separator: ", ")) to the new program") }
        if let clockWarning { lines.append(clockWarning) }
        return lines
    }
}

/// The blocklist on this host: the ledger first, then the pinned maps, then the incident
/// record, under the pin directory's writer lock. The daemon serves the control API with
/// one; the CLI and the Wazuh active response use one directly when no daemon runs.
public final class LocalBlocklist: BlocklistService {
    public let datapath: Datapath
    public let ledger: Ledger
    public let recorder: IncidentRecorder
    public let location: BlocklistLocation
    /// The sources whose changes this host publishes to its fleet: each such change is queued
    /// in the ledger's outbox in the transaction that makes it. Empty outside a fleet.
    public var fleetShare: Set<BlockSource> = []

    init(datapath: Datapath, ledger: Ledger, recorder: IncidentRecorder, location: BlocklistLocation) {
        (self.datapath, self.ledger, self.recorder, self.location) = (datapath, ledger, recorder, location)
    }

    /// Opens the blocklist. When the maps are missing and the ledger is not (after a reboot),
    /// or when the maps need creating for a write (`capacity` given), creates them and fills
    /// them from the ledger before anything attaches; layout 3 pins are upgraded. With
    /// `reconcile`, also makes maps and ledger agree (a start: the daemon, `attach`).
    public static func open(
        _ location: BlocklistLocation, creatingWith capacity: Capacity?, capacityWasExplicit: Bool = false,
        reconcile: Bool = false, ledgerSync: LedgerSync = .everyCommit, recorder: IncidentRecorder
    ) throws(ServiceError) -> (LocalBlocklist, StartReport) {
        // Opened only to read or for one change, a ledger on a read-only file system is still read.
        let ledger = try ServiceError.mapping { () throws(LedgerError) in
            try Ledger.open(stateDirectory: location.stateDirectory, readingIfReadOnly: capacity == nil && !reconcile, sync: ledgerSync)
        }
        var report = StartReport()
        let pins = location.pins
        let version = try ServiceError.mapping { () throws(DatapathError) in try Datapath.layoutVersion(in: pins) }
        let datapath: Datapath
        var fresh = false
        switch version {
        case nil:
            let stored = try? ledger.setting("capacity_exact").flatMap { exact in
                try ledger.setting("capacity_prefixes").map { Capacity(exact: UInt32(exact), prefixes: UInt32($0)) }
            }
            let hasState = (try? ledger.isEmpty()) == false
            if let creation = capacity ?? (hasState ? stored ?? .standard : nil) {
                datapath = try ServiceError.mapping { () throws(DatapathError) in
                    try Datapath.open(pins, creatingWith: capacityWasExplicit ? creation : (stored ?? creation),
                                      capacityWasExplicit: capacityWasExplicit)
                }
                fresh = true
            } else {
                // Nothing to restore and nothing asked to create: reports that there is no state.
                datapath = try ServiceError.mapping { () throws(DatapathError) in try Datapath.open(pins) }
            }
        case 3:
            let upgrade = try Datapath.upgradeLegacy(pins, mapping: { ServiceError($0) }) { (legacy) throws(ServiceError) in
                try importLegacy(legacy, into: ledger)
            }
            datapath = upgrade.datapath
            report.upgradedBlocks = upgrade.legacy?.blocks.count ?? 0
            fresh = upgrade.legacy != nil
        case 4, 5:
            // Layout 4 had no throttle maps, layout 5 no drop tallies. Their blocks are all in the
            // ledger, so new maps of their size are filled from there (drop counters start again at zero).
            datapath = try ServiceError.mapping { () throws(DatapathError) in
                try Datapath.recreate(pins, capacity: try Datapath.storedCapacity(in: pins))
            }
            fresh = true
        default:
            datapath = try ServiceError.mapping { () throws(DatapathError) in
                try Datapath.open(pins, creatingWith: capacity, capacityWasExplicit: capacityWasExplicit)
            }
        }
        let blocklist = LocalBlocklist(datapath: datapath, ledger: ledger, recorder: recorder, location: location)
        try blocklist.start(restoring: fresh, reconcile: reconcile, report: &report)
        // After an upgrade, and at every start: an upgrade cut short after it replaced the maps
        // (the current layout from then on) left its links on the old program, which only this moves.
        if version == 3 || version == 4 || version == 5 || reconcile {
            report.movedAttachments = try ServiceError.mapping { () throws(DatapathError) in try datapath.moveAttachments() }
        }
        return (blocklist, report)
    }

    /// Records layout 3's blocks and allowlist in the ledger, before its maps are replaced.
    private static func importLegacy(_ legacy: LegacyState, into ledger: Ledger) throws(ServiceError) {
        let now = WallClock.nowUnixMilliseconds()
        try ServiceError.mapping { () throws(LedgerError) in
            try ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
                for old in legacy.blocks.sorted(by: { $0.target < $1.target }) {
                    let current = try writer.block(for: old.target)
                    try writer.put(LedgerBlock(
                        target: old.target, expiry: old.expiresUnixMilliseconds.map { .at($0) } ?? .never, source: old.source,
                        origin: "layout 3 pins", reason: old.reason, createdUnixMilliseconds: old.createdUnixMilliseconds,
                        refreshedUnixMilliseconds: old.refreshedUnixMilliseconds, requestedDuration: old.requestedDuration),
                        replacing: current)
                }
                for entry in legacy.allowlist { _ = try writer.allow(entry, atUnixMilliseconds: now) }
                try writer.recordWrite(atUnixMilliseconds: now)
            }
        }
    }

    // MARK: - Blocking

    public func block(_ request: BlockRequest, context: IncidentContext) throws(ServiceError) -> BlockOutcome {
        guard request.reason.utf8.count <= BlockRequest.maximumReasonBytes else {
            throw ServiceError(.badRequest, "the reason is \(request.reason.utf8.count) bytes long; at most \(BlockRequest.maximumReasonBytes) are kept")
        }
        guard request.origin.utf8.count <= BlockRequest.maximumOriginBytes else {
            throw ServiceError(.badRequest, "the origin is \(request.origin.utf8.count) bytes long; at most \(BlockRequest.maximumOriginBytes) are kept")
        }
        if let rate = request.throttle {
            do throws(ThrottleRateError) {
                try rate.check(ticksPerSecond: datapath.jiffiesPerSecond)
            } catch {
                throw ServiceError(.badRequest, error.description)
            }
        }
        do throws(Refusal) {
            try Admission.checkBlockable(request.target)
        } catch {
            index(recorder.recordRefusal(request.target.description, source: request.source.rawValue, error: error.description,
                                         kind: Incident.RefusalKind(error), context: context))
            throw ServiceError(.badRequest, error.description)
        }
        let lock = try ServiceError.mapping { () throws(DatapathError) in try datapath.lockForWriting() }
        defer { withExtendedLifetime(lock) {} }
        if let entry = try ServiceError.mapping({ () throws(DatapathError) in try datapath.allowlistEntry(covering: request.target) }) {
            let refusal = Refusal.allowlisted(request.target, by: entry)
            index(recorder.recordRefusal(request.target.description, source: request.source.rawValue, error: refusal.description,
                                         kind: .allowlisted, context: context))
            throw ServiceError(.refused, refusal.description)
        }
        let reading = try ServiceError.mapping { () throws(DatapathError) in try datapath.now() }
        let now = reading.unixMilliseconds
        if let end = request.expiresUnixMilliseconds, end <= now {
            throw ServiceError(.badRequest, "\(request.target): the block would end at \(Incident.rfc3339(unixMilliseconds: end)), which has passed; nothing was blocked")
        }
        let requested = ledgerBlock(for: request, origin: request.origin.isEmpty ? origin(of: request.source, context: context) : request.origin,
                                    context: context.storedJSON, at: now)
        let (merged, change, previous): (LedgerBlock, BlockChange, LedgerBlock?)
        do {
            (merged, change, previous) = try ledgerWrite { (writer: inout LedgerWriter) throws(ServiceError) in
                let current = try ServiceError.mapping { () throws(LedgerError) in try writer.block(for: request.target) }
                if request.throttle != nil, let current, current.throttle == nil, !current.isExpired(atUnixMilliseconds: now) {
                    throw ServiceError(.refused, "\(request.target) is blocked, and a block wins over a throttle; unblock it first to throttle it instead")
                }
                let (merged, change) = Self.merge(requested, into: current, at: now)
                if current == nil {
                    var new = NewTargets()
                    new.count(request.target)
                    try requireRoom(for: new, batch: false)
                }
                if change != .keptLonger {
                    try ServiceError.mapping { () throws(LedgerError) in
                        try writer.put(merged, replacing: current)
                        try writer.recordWrite(atUnixMilliseconds: now)
                        if fleetShare.contains(request.source) {
                            try writer.enqueue(Self.fleetChange(merged, kind: change == .added ? .block : .refresh, at: now))
                        }
                    }
                }
                return (merged, change, current)
            }
        } catch {
            if error.kind == .full {
                index(recorder.recordRefusal(request.target.description, source: request.source.rawValue, error: error.description,
                                             kind: .full, context: context))
            }
            throw error
        }
        CrashPoint.reached(.ledgerCommitted)
        if change != .keptLonger {
            let write = ExpiryWrite(target: request.target, expiry: Self.jiffies(merged.expiry, reading),
                                    keepsCounters: change == .refreshed, throttle: merged.throttle)
            do {
                try datapath.setExpiries([write])
            } catch {
                undo(merged, restoring: previous)
                throw ServiceError(error)
            }
        }
        var outcome = BlockOutcome(entry: try entry(merged, at: now), change: change)
        outcome.record = index(recorder.record(outcome, requested: request.duration, context: context))
        return outcome
    }

    public func block(batch: BlockBatch) throws(ServiceError) -> BatchResult {
        let started = ContinuousClock.now
        let lock = try ServiceError.mapping { () throws(DatapathError) in try datapath.lockForWriting() }
        defer { withExtendedLifetime(lock) {} }
        // Every item admitted, against the allowlist as the lock leaves it, before anything is written.
        let allowed = try ServiceError.mapping { () throws(DatapathError) in try datapath.allowlist() }
        for item in batch.items {
            do throws(Refusal) {
                try Admission.check(item.target, allowlist: allowed)
            } catch {
                throw ServiceError(.refused, error.description)
            }
        }
        let reading = try ServiceError.mapping { () throws(DatapathError) in try datapath.now() }
        let now = reading.unixMilliseconds
        // In key order: the ledger's B-tree is written front to back, and a target listed
        // twice comes out as neighbours, merged in the order given.
        let order = batch.items.indices.sorted { batch.items[$0].target < batch.items[$1].target || (batch.items[$0].target == batch.items[$1].target && $0 < $1) }
        // A large batch that fits however many of its targets are new writes the maps while
        // the ledger writes its rows, rather than after: the kernel's share of a million
        // (about a second) then hides behind the ledger's. Its range is marked in the ledger
        // first and the mark cleared with the commit, so whatever a crash or a failure leaves
        // in the maps of a batch that did not commit is taken out, not adopted.
        var mostNew = NewTargets()
        for item in batch.items { mostNew.count(item.target) }
        let overlapped = batch.items.count >= Self.overlappedBatchMinimum && (try? requireRoom(for: mostNew, batch: true)) != nil
        if overlapped, let first = order.first, let last = order.last {
            let range = batch.items[first].target...batch.items[last].target
            try ledgerWrite { (writer: inout LedgerWriter) throws(ServiceError) in
                try ServiceError.mapping { () throws(LedgerError) in try writer.markUncommittedBatch(range) }
            }
        }
        var outcome = BatchOutcome()
        var writes: [ExpiryWrite] = []
        writes.reserveCapacity(batch.items.count)
        let mapWriter = overlapped ? OverlappedMapWriter(datapath) : nil
        do {
            try ledgerWrite { (writer: inout LedgerWriter) throws(ServiceError) in
                var newTargets = NewTargets()
                var lastWasKnown = false
                var pending: (block: LedgerBlock, previous: LedgerBlock?, inMaps: Bool)?
                // Targets that look new (listed once, and not right after a known one), written
                // many rows to a statement once enough have gathered.
                var candidates: [LedgerBlock] = []
                candidates.reserveCapacity(LedgerWriter.rowsPerInsert * 4)
                func emit(_ write: ExpiryWrite) throws(ServiceError) {
                    writes.append(write)
                    try mapWriter?.offer(writes)
                }
                let publishing = fleetShare.contains(batch.source)
                func flush(_ item: (block: LedgerBlock, previous: LedgerBlock?, inMaps: Bool)?, writer: inout LedgerWriter) throws(ServiceError) {
                    guard let item else { return }
                    try ServiceError.mapping { () throws(LedgerError) in
                        try writer.put(item.block, replacing: item.previous)
                        if publishing { try writer.enqueue(Self.fleetChange(item.block, kind: item.inMaps ? .refresh : .block, at: now)) }
                    }
                    try emit(ExpiryWrite(target: item.block.target, expiry: Self.jiffies(item.block.expiry, reading), keepsCounters: item.inMaps))
                }
                /// A target the ledger may hold: looked up, merged with what it holds, written.
                func settle(_ requested: LedgerBlock, writer: inout LedgerWriter) throws(ServiceError) {
                    let current = try ServiceError.mapping { () throws(LedgerError) in try writer.block(for: requested.target) }
                    lastWasKnown = current != nil
                    let (merged, change) = Self.merge(requested, into: current, at: now)
                    outcome.count(change)
                    if current == nil { newTargets.count(requested.target) }
                    if change != .keptLonger { try flush((merged, current, change == .refreshed), writer: &writer) }
                }
                func writeCandidates(writer: inout LedgerWriter) throws(ServiceError) {
                    guard !candidates.isEmpty else { return }
                    let written = try ServiceError.mapping { () throws(LedgerError) in try writer.insertIfAbsent(many: candidates[...]) }
                    for (block, new) in zip(candidates, written) {
                        if new {
                            if publishing {
                                try ServiceError.mapping { () throws(LedgerError) in try writer.enqueue(Self.fleetChange(block, kind: .block, at: now)) }
                            }
                            outcome.count(.added)
                            newTargets.count(block.target)
                            try emit(ExpiryWrite(target: block.target, expiry: Self.jiffies(block.expiry, reading), keepsCounters: false))
                        } else {
                            try settle(block, writer: &writer)
                        }
                    }
                    lastWasKnown = written.last == false
                    candidates.removeAll(keepingCapacity: true)
                }
                for (position, index) in order.enumerated() {
                    let item = batch.items[index]
                    let requested = ledgerBlock(
                        for: BlockRequest(target: item.target, duration: item.duration, reason: batch.reason, source: batch.source),
                        origin: batch.origin, context: nil, at: now)
                    if let current = pending, current.block.target == item.target {
                        let (merged, change) = Self.merge(requested, into: current.block, at: now)
                        outcome.count(change)
                        pending = (merged, current.previous, current.inMaps)
                        continue
                    }
                    try flush(pending, writer: &writer)
                    pending = nil
                    // A target new to the ledger, listed once: written without a lookup. Targets
                    // come in order, so new ones and known ones come in runs: after a known one, look first.
                    let listedAgain = position + 1 < order.count && batch.items[order[position + 1]].target == item.target
                    if !listedAgain, !lastWasKnown {
                        candidates.append(requested)
                        if candidates.count >= LedgerWriter.rowsPerInsert * 4 { try writeCandidates(writer: &writer) }
                        continue
                    }
                    try writeCandidates(writer: &writer)
                    if !listedAgain, !lastWasKnown {
                        candidates.append(requested)
                        continue
                    }
                    let current = try ServiceError.mapping { () throws(LedgerError) in try writer.block(for: item.target) }
                    lastWasKnown = current != nil
                    let (merged, change) = Self.merge(requested, into: current, at: now)
                    outcome.count(change)
                    if current == nil { newTargets.count(item.target) }
                    if change != .keptLonger { pending = (merged, current, change == .refreshed) }
                }
                try writeCandidates(writer: &writer)
                try flush(pending, writer: &writer)
                try requireRoom(for: newTargets, batch: true)
                try ServiceError.mapping { () throws(LedgerError) in try writer.recordWrite(atUnixMilliseconds: now) }
                if let mapWriter {
                    try mapWriter.finish(writes)
                    try ServiceError.mapping { () throws(LedgerError) in try writer.clearUncommittedBatch() }
                    CrashPoint.reached(.batchInMapsBeforeCommit)
                }
            }
        } catch {
            guard let mapWriter else { throw error }
            // Nothing of the batch is in the ledger; take out of the maps what reached them.
            let reached = mapWriter.abandon()
            if undoUncommittedBatch(writes.prefix(reached), reading: reading) { throw error }
            throw ServiceError(error.kind, "\(error.description); what reached the maps of this batch is taken out at the next `portcullis attach` or daemon start")
        }
        CrashPoint.reached(.ledgerCommitted)
        if !overlapped {
            do {
                try datapath.setExpiries(writes)
            } catch {
                throw ServiceError(.failed, "the ledger holds the batch but the maps could not take it (\(error.description)); the next `portcullis attach` or daemon start applies it")
            }
        }
        let record = index(recorder.recordBatch(outcome, from: batch.origin, reason: batch.reason, requested: nil))
        return BatchResult(outcome: outcome, elapsed: ContinuousClock.now - started, record: record)
    }

    /// From this many items a batch writes the maps beside the ledger (see ``block(batch:)``);
    /// below it, the extra commit of its mark costs more than the overlap saves.
    static let overlappedBatchMinimum = 8_192

    /// Puts the maps back to what the ledger holds for the targets of a batch that did not
    /// commit, then clears the batch's mark; false when that failed (the next start does it).
    private func undoUncommittedBatch(_ written: ArraySlice<ExpiryWrite>, reading: ClockReading) -> Bool {
        do throws(ServiceError) {
            var restored: [ExpiryWrite] = []
            var removed: [BlockTarget] = []
            try ServiceError.mapping { () throws(LedgerError) in
                for write in written {
                    if let block = try ledger.block(for: write.target), !block.isExpired(atUnixMilliseconds: reading.unixMilliseconds) {
                        restored.append(ExpiryWrite(target: block.target, expiry: Self.jiffies(block.expiry, reading), keepsCounters: true,
                                                    throttle: block.throttle))
                    } else {
                        removed.append(write.target)
                    }
                }
            }
            try ServiceError.mapping { () throws(DatapathError) in
                try datapath.setExpiries(restored)
                _ = try datapath.removeBlocks(removed)
            }
            try ledgerWrite { (writer: inout LedgerWriter) throws(ServiceError) in
                try ServiceError.mapping { () throws(LedgerError) in try writer.clearUncommittedBatch() }
            }
            return true
        } catch {
            return false
        }
    }

    /// The refresh rule over ledger records: an expired block counts as absent (a new incident);
    /// a live one keeps its start and, when it lasts longer, everything.
    /// A block on a throttled target replaces the throttle (a new incident: it drops what the
    /// throttle let through); a throttle with another rate takes the new rate, whichever
    /// expiry the rule keeps.
    static func merge(_ requested: LedgerBlock, into current: LedgerBlock?, at now: Int64) -> (LedgerBlock, BlockChange) {
        guard let current, !current.isExpired(atUnixMilliseconds: now) else { return (requested, .added) }
        if current.throttle != nil && requested.throttle == nil { return (requested, .added) }
        let (terms, change) = BlockPolicy.refresh(current.terms, with: requested.terms)
        if change == .keptLonger, current.throttle != requested.throttle {
            var rerated = current
            rerated.throttle = requested.throttle
            rerated.refreshedUnixMilliseconds = requested.refreshedUnixMilliseconds
            return (rerated, .refreshed)
        }
        guard change == .refreshed else { return (current, change) }
        var merged = requested
        merged.createdUnixMilliseconds = current.createdUnixMilliseconds
        merged.expiry = terms.expiry
        merged.reason = terms.reason
        merged.requestedDuration = terms.requestedDuration
        if merged.context == nil { merged.context = current.context }
        return (merged, change)
    }

    private func ledgerBlock(for request: BlockRequest, origin: String, context: String?, at now: Int64) -> LedgerBlock {
        LedgerBlock(target: request.target, expiry: request.expiry(at: now), source: request.source, origin: origin, reason: request.reason,
                           createdUnixMilliseconds: now, refreshedUnixMilliseconds: now, requestedDuration: request.duration,
                           context: context, throttle: request.throttle)
    }

    private func origin(of source: BlockSource, context: IncidentContext) -> String {
        if let wazuh = context.wazuh {
            return ["agent", wazuh.agentId, wazuh.agentName].compactMap { $0 }.joined(separator: " ")
        }
        if let detection = context.detection { return detection.logSource ?? "detector" }
        return ""
    }

    /// How many targets of a change are new to each map.
    struct NewTargets {
        private var counts = [0, 0, 0, 0]

        private static func slot(_ family: AddressFamily, _ kind: BlockKind) -> Int {
            (family == .ipv6 ? 2 : 0) + (kind == .prefix ? 1 : 0)
        }

        mutating func count(_ target: BlockTarget) { counts[Self.slot(target.family, target.kind)] += 1 }

        func count(family: AddressFamily, kind: BlockKind) -> Int { counts[Self.slot(family, kind)] }
    }

    /// Throws, before anything is committed, when a map has no room for the new targets; the
    /// ledger's counts say how many entries each map holds.
    private func requireRoom(for new: NewTargets, batch: Bool) throws(ServiceError) {
        var counts: LedgerCounts?
        for family in [AddressFamily.ipv4, .ipv6] {
            for kind in BlockKind.allCases {
                let adding = new.count(family: family, kind: kind)
                guard adding > 0 else { continue }
                if counts == nil { counts = try ServiceError.mapping { () throws(LedgerError) in try ledger.counts() } }
                let held = counts?.count(family: family, kind: kind) ?? 0
                let capacity = Int(kind == .prefix ? datapath.capacity.prefixes : datapath.capacity.exact)
                let room = capacity - held
                guard adding > room else { continue }
                let map = Datapath.blockMapName(family: family, kind: kind)
                let what = kind == .prefix ? "prefixes" : "entries"
                let larger = kind == .prefix ? "--prefix-capacity" : "--capacity"
                let advice = "sweep or unblock entries, or recreate the state with a larger \(larger)"
                if !batch { throw ServiceError(.full, "map \(map) is full (capacity \(capacity)); \(advice)") }
                throw ServiceError(.full, "map \(map) has room for \(max(room, 0)) more \(what) (capacity \(capacity)) but the batch adds \(adding); nothing was blocked (\(advice))")
            }
        }
    }

    /// Puts back what a change replaced, when the maps refused it after the ledger took it.
    private func undo(_ block: LedgerBlock, restoring previous: LedgerBlock?) {
        _ = try? ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
            if let previous { try writer.put(previous, replacing: block) } else { try writer.remove(block) }
        }
    }

    func ledgerWrite<T>(_ body: (inout LedgerWriter) throws(ServiceError) -> T) throws(ServiceError) -> T {
        try ledger.write(body, mapping: ServiceError.init)
    }

    // MARK: - Unblocking

    /// Lifts the block on `target` (or, with `throttle`, the throttle: each lifts only its
    /// own kind, and the other is `absent`).
    public func unblock(_ target: BlockTarget, requestedBy source: BlockSource, onlyOwn: Bool, origin: String?,
                        context: IncidentContext, throttle: Bool) throws(ServiceError) -> UnblockResult {
        let lock = try ServiceError.mapping { () throws(DatapathError) in try datapath.lockForWriting() }
        defer { withExtendedLifetime(lock) {} }
        let now = WallClock.nowUnixMilliseconds()
        enum Decision { case absent, kept(LedgerBlock), removed(LedgerBlock) }
        let decision = try ledgerWrite { (writer: inout LedgerWriter) throws(ServiceError) -> Decision in
            guard let current = try ServiceError.mapping({ () throws(LedgerError) in try writer.block(for: target) }),
                  (current.throttle != nil) == throttle else { return .absent }
            guard BlockPolicy.mayLift(ownedBy: current.source, origin: current.origin, isExpired: current.isExpired(atUnixMilliseconds: now),
                                      requestedBy: onlyOwn ? BlockOwner(source: source, origin: origin) : nil) else { return .kept(current) }
            try ServiceError.mapping { () throws(LedgerError) in
                try writer.remove(current)
                try writer.recordWrite(atUnixMilliseconds: now)
                if fleetShare.contains(source) {
                    try writer.enqueue(FleetChange(kind: .unblock, target: target, source: source, reason: "", timeUnixMilliseconds: now))
                }
            }
            return .removed(current)
        }
        switch decision {
        case .absent: return UnblockResult(outcome: .absent)
        case .kept(let block): return UnblockResult(outcome: .keptForOwner(try entry(block, at: now)))
        case .removed(let block):
            CrashPoint.reached(.ledgerCommitted)
            let removed = try ServiceError.mapping { () throws(DatapathError) in try datapath.removeBlocks([target]) }
            let entry = Self.entry(block, counters: removed.first, at: now)
            let record = index(recorder.recordUnblock(entry, source: source.rawValue, context: context))
            return UnblockResult(outcome: .removed(entry), record: record)
        }
    }

    /// Lifts every block `owner` holds, found through the ledger's source index (the work
    /// follows that source's blocks, not the blocklist's), by the owner rule: fail2ban's
    /// `actionflush` for one jail, sshguard's `flush`. Every other source's block stays.
    public func flush(_ owner: BlockOwner) throws(ServiceError) -> FlushResult {
        let lock = try ServiceError.mapping { () throws(DatapathError) in try datapath.lockForWriting() }
        defer { withExtendedLifetime(lock) {} }
        let now = WallClock.nowUnixMilliseconds()
        // Read under the writer lock, so nothing changes between this and the write.
        let held = try ServiceError.mapping { () throws(LedgerError) in try ledger.blocks(BlockQuery(source: owner.source), at: now) }
        // Blocks only: a throttle is lifted by name (unthrottle), and lives in maps of its own.
        let lifted = held.filter {
            $0.throttle == nil && BlockPolicy.mayLift(ownedBy: $0.source, origin: $0.origin, isExpired: false, requestedBy: owner)
        }
        guard !lifted.isEmpty else { return FlushResult(removed: []) }
        try ledgerWrite { (writer: inout LedgerWriter) throws(ServiceError) in
            try ServiceError.mapping { () throws(LedgerError) in
                for block in lifted { try writer.remove(block) }
                try writer.recordWrite(atUnixMilliseconds: now)
            }
        }
        CrashPoint.reached(.ledgerCommitted)
        let counters = try ServiceError.mapping { () throws(DatapathError) in try datapath.removeBlocks(lifted.map(\.target)) }
        var byTarget: [BlockTarget: DataplaneBlock] = [:]
        for block in counters { byTarget[block.target] = block }
        let removed = lifted.map { Self.entry($0, counters: byTarget[$0.target], at: now) }
        let record = index(recorder.recordUnblocks(removed, source: owner.source.rawValue))
        return FlushResult(removed: removed, record: record)
    }

    // MARK: - Sweeping

    /// Removes the blocks that expired, found through the ledger's expiry index, and finishes
    /// removals a crash interrupted. A sweep that finds nothing writes nothing.
    public func sweep() throws(ServiceError) -> SweepReport {
        try sweep(atMost: 65_536, rounds: .max)
    }

    /// A sweep in slices: at most `rounds` rounds of at most `slice` expired blocks, so a
    /// caller that serves other writers between slices (the daemon) never makes a block wait
    /// for a whole sweep. The report's `removedCount` below `slice × rounds` says it finished.
    public func sweep(atMost slice: Int, rounds: Int) throws(ServiceError) -> SweepReport {
        let started = ContinuousClock.now
        let lock = try ServiceError.mapping { () throws(DatapathError) in try datapath.lockForWriting() }
        defer { withExtendedLifetime(lock) {} }
        let now = WallClock.nowUnixMilliseconds()
        var removed: [BlockEntry] = []
        var scanned = 0
        var round = 0
        while round < rounds {
            round += 1
            let expired = try ServiceError.mapping { () throws(LedgerError) in try ledger.expired(atUnixMilliseconds: now, limit: slice) }
            let pending = try ServiceError.mapping { () throws(LedgerError) in try ledger.pendingRemovals() }
            guard !expired.isEmpty || !pending.isEmpty else { break }
            scanned += expired.count
            try ServiceError.mapping { () throws(LedgerError) in
                try ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
                    for block in expired { try writer.remove(block, markingPending: false) }
                }
            }
            let targets = expired.map(\.target) + pending
            let counters = try ServiceError.mapping { () throws(DatapathError) in try datapath.removeBlocks(targets) }
            var byTarget: [BlockTarget: DataplaneBlock] = [:]
            for block in counters { byTarget[block.target] = block }
            for block in expired { removed.append(Self.entry(block, counters: byTarget[block.target], at: now)) }
            if !pending.isEmpty {
                try ServiceError.mapping { () throws(LedgerError) in
                    try ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in try writer.clearPendingRemovals(pending) }
                }
            }
            if expired.count < slice { break }
        }
        let record = removed.isEmpty ? .written : index(recorder.recordExpiries(removed))
        return SweepReport(removed: removed, scanned: scanned, elapsed: ContinuousClock.now - started, record: record)
    }

    // MARK: - The incident index

    /// Indexes records just written to the incident log. A failure costs only the index, which
    /// the next query rebuilds from the log.
    public func index(_ incidents: [Incident]) {
        IncidentIndex.add(incidents, of: recorder.log, to: ledger)
    }

    /// Indexes a change's records, and gives back whether they were written, for its outcome.
    func index(_ recording: IncidentRecording) -> IncidentRecordStatus {
        index(recording.incidents)
        return recording.status
    }

    /// The incidents `query` asks for, the last `limit` of them, from the ledger's index.
    public func incidents(_ query: IncidentQuery, limit: Int?, log: IncidentLog) throws(ServiceError) -> [Incident] {
        try IncidentIndex.incidents(query, limit: limit, log: log, ledger: ledger)
    }

    // MARK: - Reading

    public func list(_ query: BlockQuery) throws(ServiceError) -> BlockListing {
        let now = WallClock.nowUnixMilliseconds()
        let blocks = try ServiceError.mapping { () throws(LedgerError) in try ledger.blocks(query, at: now) }
        let total = try ServiceError.mapping { () throws(LedgerError) in try ledger.count(query, at: now) }
        let counters = try ServiceError.mapping { () throws(DatapathError) in try datapath.dataplaneBlocks(for: blocks.lazy.map(\.target)) }
        let entries = blocks.map { Self.entry($0, counters: counters[$0.target], at: now) }
        return BlockListing(entries: entries, total: total)
    }

    public func entry(for target: BlockTarget) throws(ServiceError) -> BlockEntry? {
        let now = WallClock.nowUnixMilliseconds()
        guard let block = try ServiceError.mapping({ () throws(LedgerError) in try ledger.block(for: target) }) else { return nil }
        return try entry(block, at: now)
    }

    /// The blocks that dropped most, read from the maps' counters and described by the ledger.
    public func top(_ count: Int) throws(ServiceError) -> [BlockEntry] {
        let now = WallClock.nowUnixMilliseconds()
        let all = try ServiceError.mapping { () throws(DatapathError) in try datapath.dataplaneBlocks() }
        let most = all.filter { $0.droppedPackets > 0 }.sorted { $0.droppedPackets > $1.droppedPackets }.prefix(count)
        var entries: [BlockEntry] = []
        for counters in most {
            guard let block = try ServiceError.mapping({ () throws(LedgerError) in try ledger.block(for: counters.target) }) else { continue }
            entries.append(Self.entry(block, counters: counters, at: now))
        }
        return entries
    }

    public func counts() throws(ServiceError) -> LedgerCounts {
        try ServiceError.mapping { () throws(LedgerError) in try ledger.counts() }
    }

    func entry(_ block: LedgerBlock, at now: Int64) throws(ServiceError) -> BlockEntry {
        let counters = try ServiceError.mapping { () throws(DatapathError) in try datapath.dataplaneBlock(for: block.target) }
        return Self.entry(block, counters: counters, at: now)
    }

    static func entry(_ block: LedgerBlock, counters: DataplaneBlock?, at now: Int64) -> BlockEntry {
        let expires: Int64? = switch block.expiry {
        case .never: nil
        case .at(let end): end
        }
        return BlockEntry(
            target: block.target, remaining: expires.map { .milliseconds($0 - now) }, expiresUnixMilliseconds: expires,
            isExpired: block.isExpired(atUnixMilliseconds: now),
            droppedPackets: counters?.droppedPackets ?? 0, droppedBytes: counters?.droppedBytes ?? 0,
            reason: block.reason, source: block.source,
            createdUnixMilliseconds: block.createdUnixMilliseconds, refreshedUnixMilliseconds: block.refreshedUnixMilliseconds,
            requestedDuration: block.requestedDuration, origin: block.origin, throttle: block.throttle,
            passedPackets: counters?.passedPackets ?? 0, node: block.node)
    }

    // MARK: - Allowlist

    public func allow(_ target: BlockTarget) throws(ServiceError) -> AllowlistChange {
        try allow(target, origin: .command)
    }

    public func allow(_ target: BlockTarget, origin: AllowOrigin) throws(ServiceError) -> AllowlistChange {
        let lock = try ServiceError.mapping { () throws(DatapathError) in try datapath.lockForWriting() }
        defer { withExtendedLifetime(lock) {} }
        let now = WallClock.nowUnixMilliseconds()
        let added = try ServiceError.mapping { () throws(LedgerError) in
            try ledger.write { (writer: inout LedgerWriter) throws(LedgerError) -> Bool in
                try writer.recordWrite(atUnixMilliseconds: now)
                let added = try writer.allow(AllowlistEntry(target: target, origin: origin), atUnixMilliseconds: now)
                if added, origin == .command, fleetShare.contains(.api) {
                    try writer.enqueue(FleetChange(kind: .allow, target: target, source: .api, reason: "", timeUnixMilliseconds: now))
                }
                return added
            }
        }
        let inMaps = try ServiceError.mapping { () throws(DatapathError) in try datapath.insertAllowed(target, origin: origin) }
        return added || inMaps ? .added : .unchanged
    }

    public func disallow(_ target: BlockTarget) throws(ServiceError) -> AllowlistChange {
        try disallow(target, publishing: fleetShare.contains(.api))
    }

    /// `publishing`: the removal goes to the fleet (an operator's, not the configuration's).
    func disallow(_ target: BlockTarget, publishing: Bool) throws(ServiceError) -> AllowlistChange {
        let lock = try ServiceError.mapping { () throws(DatapathError) in try datapath.lockForWriting() }
        defer { withExtendedLifetime(lock) {} }
        let now = WallClock.nowUnixMilliseconds()
        let removed = try ServiceError.mapping { () throws(LedgerError) in
            try ledger.write { (writer: inout LedgerWriter) throws(LedgerError) -> Bool in
                try writer.recordWrite(atUnixMilliseconds: now)
                let removed = try writer.disallow(target)
                if removed, publishing {
                    try writer.enqueue(FleetChange(kind: .disallow, target: target, source: .api, reason: "", timeUnixMilliseconds: now))
                }
                return removed
            }
        }
        let inMaps = try ServiceError.mapping { () throws(DatapathError) in try datapath.removeAllowed(target) }
        return removed || inMaps ? .removed : .absent
    }

    public func allowlist() throws(ServiceError) -> [BlockTarget] {
        try ServiceError.mapping { () throws(DatapathError) in try datapath.allowlist() }
    }

    public func allowlistEntries() throws(ServiceError) -> [AllowlistEntry] {
        try ServiceError.mapping { () throws(LedgerError) in try ledger.allowlist() }
    }

    /// Makes the configuration's entries exactly `targets`: adds the missing ones and removes
    /// configuration entries no longer listed. Entries added by a command are left alone.
    public func synchronizeConfiguredAllowlist(_ targets: [BlockTarget]) throws(ServiceError) -> (added: [BlockTarget], removed: [BlockTarget]) {
        let wanted = Set(targets)
        let existing = try allowlistEntries()
        var added: [BlockTarget] = []
        var removed: [BlockTarget] = []
        for entry in existing where entry.origin == .configuration && !wanted.contains(entry.target) {
            if try disallow(entry.target, publishing: false) == .removed { removed.append(entry.target) }
        }
        let present = Set(existing.map(\.target))
        for target in targets where !present.contains(target) {
            if try allow(target, origin: .configuration) == .added { added.append(target) }
        }
        return (added, removed)
    }

    public func statistics() throws(ServiceError) -> PacketStatistics {
        try ServiceError.mapping { () throws(DatapathError) in try datapath.statistics() }
    }

    public func mapUsage() throws(ServiceError) -> [MapUsage] {
        let counts = try counts()
        return try ServiceError.mapping { () throws(DatapathError) in
            try datapath.mapUsage(exactV4: counts.count(family: .ipv4, kind: .address), exactV6: counts.count(family: .ipv6, kind: .address))
        }
    }

    // MARK: - Start: restore, upgrade, reconcile

    private func start(restoring fresh: Bool, reconcile: Bool, report: inout StartReport) throws(ServiceError) {
        // Opening to read or to make one change touches nothing here: no lock, no write.
        guard fresh || reconcile else { return }
        let lock = try ServiceError.mapping { () throws(DatapathError) in try datapath.lockForWriting() }
        defer { withExtendedLifetime(lock) {} }
        let reading = try ServiceError.mapping { () throws(DatapathError) in try datapath.now() }
        let lastWrite = try ServiceError.mapping { () throws(LedgerError) in try ledger.lastWriteUnixMilliseconds() }
        // A clock that reads earlier than the last change (no RTC, not yet synced) is not
        // believed for blocks changed after it: each block's time left counts from its own last
        // change at the earliest, which never shortens one.
        let now = reading.unixMilliseconds
        if let lastWrite, lastWrite > now {
            report.clockWarning = "the wall clock reads \(Incident.rfc3339(unixMilliseconds: now)), earlier than the ledger's last change at \(Incident.rfc3339(unixMilliseconds: lastWrite)); each block's remaining time counts from its own last change at the earliest (check NTP and the RTC)"
        }
        // Remembered for a restore, which must create maps of the same size.
        let exact = try ServiceError.mapping { () throws(LedgerError) in try ledger.setting("capacity_exact") }
        let prefixes = try ServiceError.mapping { () throws(LedgerError) in try ledger.setting("capacity_prefixes") }
        if exact != Int64(datapath.capacity.exact) || prefixes != Int64(datapath.capacity.prefixes) {
            try ServiceError.mapping { () throws(LedgerError) in
                try ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
                    try writer.setSetting("capacity_exact", Int64(datapath.capacity.exact))
                    try writer.setSetting("capacity_prefixes", Int64(datapath.capacity.prefixes))
                }
            }
        }
        if fresh {
            try restore(reading: reading, now: now, report: &report)
        } else {
            try self.reconcile(reading: reading, now: now, report: &report)
        }
    }

    /// Fills new maps from the ledger: every block still in force, and the allowlist.
    private func restore(reading: ClockReading, now: Int64, report: inout StartReport) throws(ServiceError) {
        var writes: [ExpiryWrite] = []
        var expired: [LedgerBlock] = []
        try ServiceError.mapping { () throws(LedgerError) in
            try ledger.forEachBlock(BlockQuery(), at: now) { block in
                let from = Self.believedNow(now, for: block)
                if block.isExpired(atUnixMilliseconds: from) {
                    expired.append(block)
                } else {
                    writes.append(ExpiryWrite(target: block.target, expiry: Self.jiffies(block.expiry, reading, now: from), keepsCounters: false,
                                              throttle: block.throttle))
                }
            }
        }
        let allowlist = try allowlistEntries()
        try ServiceError.mapping { () throws(DatapathError) in
            for entry in allowlist { try datapath.insertAllowed(entry.target, origin: entry.origin) }
            try datapath.setExpiries(writes)
        }
        report.restored = writes.count
        // New maps hold nothing of a batch a crash stopped before its commit.
        if try ServiceError.mapping({ () throws(LedgerError) in try ledger.uncommittedBatch() }) != nil {
            try ledgerWrite { (writer: inout LedgerWriter) throws(ServiceError) in
                try ServiceError.mapping { () throws(LedgerError) in try writer.clearUncommittedBatch() }
            }
        }
        try retire(expired, at: now, report: &report)
    }

    /// Expired blocks found at start: lifted in the ledger, each with its expire record.
    private func retire(_ expired: [LedgerBlock], at now: Int64, report: inout StartReport) throws(ServiceError) {
        guard !expired.isEmpty else { return }
        try ServiceError.mapping { () throws(LedgerError) in
            try ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
                for block in expired { try writer.remove(block, markingPending: false) }
            }
        }
        let counters = try ServiceError.mapping { () throws(DatapathError) in try datapath.removeBlocks(expired.map(\.target)) }
        var byTarget: [BlockTarget: DataplaneBlock] = [:]
        for block in counters { byTarget[block.target] = block }
        report.expiredWhileDown = expired.count
        index(recorder.warned(recorder.recordExpiries(expired.map { Self.entry($0, counters: byTarget[$0.target], at: now) }),
                              after: "\(expired.count) blocks that expired while Portcullis was down are lifted"))
    }

    /// Makes maps and ledger agree after a crash or an outside change: the ledger wins, and
    /// what only the maps hold is recorded in it rather than lost.
    private func reconcile(reading: ClockReading, now: Int64, report: inout StartReport) throws(ServiceError) {
        let mapBlocks = try ServiceError.mapping { () throws(DatapathError) in try datapath.dataplaneBlocks() }
        var inMaps: [BlockTarget: DataplaneBlock] = [:]
        inMaps.reserveCapacity(mapBlocks.count)
        for block in mapBlocks { inMaps[block.target] = block }
        let pending = Set(try ServiceError.mapping { () throws(LedgerError) in try ledger.pendingRemovals() })
        let uncommitted = try ServiceError.mapping { () throws(LedgerError) in try ledger.uncommittedBatch() }
        var writes: [ExpiryWrite] = []
        var expired: [LedgerBlock] = []
        let tolerance = UInt64(datapath.jiffiesPerSecond) * 2
        try ServiceError.mapping { () throws(LedgerError) in
            try ledger.forEachBlock(BlockQuery(), at: now) { block in
                let mapped = inMaps.removeValue(forKey: block.target)
                let from = Self.believedNow(now, for: block)
                if block.isExpired(atUnixMilliseconds: from) {
                    expired.append(block)
                    return
                }
                let expiry = Self.jiffies(block.expiry, reading, now: from)
                guard let mapped else {
                    writes.append(ExpiryWrite(target: block.target, expiry: expiry, keepsCounters: false, throttle: block.throttle))
                    report.addedToMaps += 1
                    return
                }
                let agrees = switch (mapped.expiry, expiry) {
                case (.never, .never): true
                case (.at(let a), .at(let b)): (a > b ? a - b : b - a) <= tolerance
                default: false
                }
                if !agrees || mapped.throttle != block.throttle {
                    writes.append(ExpiryWrite(target: block.target, expiry: expiry, keepsCounters: mapped.throttle == block.throttle,
                                              throttle: block.throttle))
                    report.expiriesRederived += 1
                }
            }
        }
        // What is left in the maps, the ledger does not hold.
        var lifted: [BlockTarget] = []
        var adopted: [LedgerBlock] = []
        for (target, block) in inMaps {
            // Lifted in the ledger (an unblock, or a sweep, which marks nothing) and left in the
            // maps by a crash: removed. A live entry the ledger never knew is recorded instead.
            let expiredInMaps = if case .at(let jiffies) = block.expiry { jiffies <= reading.jiffies } else { false }
            if pending.contains(target) || expiredInMaps {
                lifted.append(target)
                continue
            }
            // Written by a batch that a crash stopped before its ledger commit: never taken.
            if let uncommitted, uncommitted.contains(target) {
                lifted.append(target)
                report.uncommittedBatchRemoved += 1
                continue
            }
            let expiry: Expiry<Int64> = switch block.expiry {
            case .never: .never
            case .at(let jiffies): .at(reading.unixMilliseconds(at: jiffies))
            }
            adopted.append(LedgerBlock(
                target: target, expiry: expiry, source: .cli, origin: "found in the maps at start",
                reason: "recorded by reconciliation", createdUnixMilliseconds: now, refreshedUnixMilliseconds: now,
                requestedDuration: nil, throttle: block.throttle))
        }
        let allowlist = try allowlistEntries()
        let allowedInMaps = try ServiceError.mapping { () throws(DatapathError) in try datapath.allowlistEntries() }
        let ledgerAllowed = Set(allowlist.map(\.target))
        let mapAllowed = Set(allowedInMaps.map(\.target))
        try ServiceError.mapping { () throws(LedgerError) in
            try ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
                for block in adopted { try writer.put(block, replacing: nil) }
                for entry in allowedInMaps where !ledgerAllowed.contains(entry.target) {
                    _ = try writer.allow(entry, atUnixMilliseconds: now)
                }
            }
        }
        report.adopted = adopted.count
        try ServiceError.mapping { () throws(DatapathError) in
            for entry in allowlist where !mapAllowed.contains(entry.target) {
                try datapath.insertAllowed(entry.target, origin: entry.origin)
            }
            try datapath.setExpiries(writes)
            report.removedFromMaps = try datapath.removeBlocks(lifted).count - report.uncommittedBatchRemoved
            try datapath.recountTries()
        }
        try ServiceError.mapping { () throws(LedgerError) in
            try ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
                try writer.clearPendingRemovals(Array(pending))
                if uncommitted != nil { try writer.clearUncommittedBatch() }
            }
        }
        try retire(expired, at: now, report: &report)
    }

    /// The time a start counts `block`'s remaining time from: the clock, unless it reads
    /// earlier than the block's own last change, which it cannot be.
    static func believedNow(_ now: Int64, for block: LedgerBlock) -> Int64 {
        max(now, block.refreshedUnixMilliseconds)
    }

    /// A wall-clock expiry in the maps' jiffies, counted from `now` (which may be later than
    /// the reading when the clock is not believed).
    static func jiffies(_ expiry: Expiry<Int64>, _ reading: ClockReading, now: Int64? = nil) -> Expiry<UInt64> {
        switch expiry {
        case .never: return .never
        case .at(let end):
            let left = end - (now ?? reading.unixMilliseconds)
            return .at(left > 0 ? reading.expiry(after: .milliseconds(left)) : reading.jiffies)
        }
    }
}

/// What a listing found: a page of blocks and how many matched in all.
public struct BlockListing: Sendable {
    public let entries: [BlockEntry]
    public let total: Int

    public init(entries: [BlockEntry], total: Int) {
        (self.entries, self.total) = (entries, total)
    }
}

extension ServiceError {
    public init(_ error: LedgerError) {
        let kind: Kind = switch error.kind {
        case .full: .full
        case .permission, .readOnly: .permission
        case .busy: .unavailable
        case .corrupt, .newerSchema, .failed: .failed
        }
        self.init(kind, error.description)
    }

    /// Runs a ledger call, giving its failure the service's kind.
    public static func mapping<T>(_ body: () throws(LedgerError) -> T) throws(ServiceError) -> T {
        do {
            return try body()
        } catch {
            throw ServiceError(error)
        }
    }
}

/// Where a test may have the process killed, to prove that a crash there loses nothing:
/// `PORTCULLIS_TEST_CRASH_AT=ledger-committed` kills the process right after the ledger
/// committed a change and before the maps took it. Unset in production.
enum CrashPoint: String {
    case ledgerCommitted = "ledger-committed"
    /// A large batch whose map writes are done and whose ledger transaction is not committed.
    case batchInMapsBeforeCommit = "batch-in-maps-before-commit"

    static let armed: CrashPoint? = setting(option: nil, environment: "PORTCULLIS_TEST_CRASH_AT").flatMap(CrashPoint.init(rawValue:))

    static func reached(_ point: CrashPoint) {
        if armed == point { kill(getpid(), SIGKILL) }
    }
}

/// The map writes of one overlapped batch, handed to one worker thread a chunk at a time while
/// the caller goes on writing the ledger: chunk n is written while the rows of chunk n+1 are.
///
/// The worker is the only user of the maps between a hand-off and the next join; the batch's
/// writer holds the writer lock throughout and does not touch them meanwhile.
final class OverlappedMapWriter {
    private struct Maps: @unchecked Sendable { let datapath: Datapath }

    static let chunk = 65_536
    private let maps: Maps
    private var worker: JoinableThread<DatapathError?>?
    /// How many of the batch's writes have been handed to a worker.
    private(set) var handedOff = 0

    init(_ datapath: Datapath) {
        maps = Maps(datapath: datapath)
    }

    /// Hands the writes since the last hand-off to a worker once there is a chunk of them.
    func offer(_ writes: [ExpiryWrite]) throws(ServiceError) {
        guard writes.count - handedOff >= Self.chunk else { return }
        try handOff(writes)
    }

    /// Hands off the rest and waits for every write to be done.
    func finish(_ writes: [ExpiryWrite]) throws(ServiceError) {
        if writes.count > handedOff { try handOff(writes) }
        try join()
    }

    /// Waits for a running worker, whatever it found; the number of writes handed off, all
    /// of which may have reached the maps.
    func abandon() -> Int {
        _ = worker?.join()
        worker = nil
        return handedOff
    }

    private func handOff(_ writes: [ExpiryWrite]) throws(ServiceError) {
        try join()
        let chunk = Array(writes[handedOff...])
        let maps = maps
        switch JoinableThread<DatapathError?>.start({
            do throws(DatapathError) {
                try maps.datapath.setExpiries(chunk)
                return nil
            } catch {
                return error
            }
        }) {
        case .success(let started):
            worker = started
            handedOff = writes.count
        case .failure(let code):
            throw ServiceError(.failed, "cannot start a thread for the map writes: \(code); nothing was blocked")
        }
    }

    private func join() throws(ServiceError) {
        guard let running = worker else { return }
        worker = nil
        if let error = running.join() { throw ServiceError(error) }
    }
}
