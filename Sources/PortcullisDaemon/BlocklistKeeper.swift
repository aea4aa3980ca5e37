import Logging
import PortcullisBPF
import PortcullisConfig
import PortcullisControl
import PortcullisCore
import PortcullisIncidents
import PortcullisLedger
import NIOCore
import NIOPosix
import PortcullisFleet
import Synchronization

/// The daemon's single writer: every change to the blocklist, from the control
/// API, the sweeper or a reload, runs on this actor one at a time, and also
/// holds the pin directory's lock while it writes, so a CLI that bypasses the
/// daemon is serialized with it too. A refresh therefore cannot interleave with
/// the sweep that would have removed the entry it refreshes.
actor BlocklistKeeper {
    /// The single writer's own thread: its ledger commits wait for the disk (fsync) and must not
    /// hold a thread of the cooperative pool while they do.
    private static let writerThread = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private nonisolated let executor = BlocklistKeeper.writerThread.next().executor
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    private var blocklist: LocalBlocklist
    /// Where the blocklist lives and how its maps are made, to make them again if they are lost.
    private let location: BlocklistLocation
    private let recorder: IncidentRecorder
    /// What is wrong with the data plane now (its pins gone, an interface not attached); empty
    /// while it enforces the blocklist as configured.
    private(set) var problems: [String] = []
    private var lastRecovery: ContinuousClock.Instant?
    /// A second handle on the same ledger and maps, for answers that only read: a scrape or a
    /// listing never waits behind a change, and a change never waits behind them.
    let reader: BlocklistReader
    let metrics: DaemonMetrics
    let logger: Logger
    private(set) var configuration: DaemonConfiguration
    /// The fleet's node, told of every change this host makes so its outbox is published at once.
    private(set) var fleet: FleetSync?

    init(configuration: DaemonConfiguration, metrics: DaemonMetrics, logger: Logger) throws(ServiceError) {
        let recorder = IncidentRecorder(
            log: IncidentLog(path: configuration.incidentLog, stateDirectory: configuration.stateDirectory), node: configuration.fleet?.node
        ) { [logger, metrics] message in
            Self.missingRecord(message, logger: logger, metrics: metrics)
        }
        let location = BlocklistLocation(
            pins: PinDirectory(path: configuration.pinDirectory),
            stateDirectory: IncidentLog.resolveStateDirectory(option: configuration.stateDirectory))
        let capacity = Capacity(exact: configuration.capacityExact, prefixes: configuration.capacityPrefixes)
        let (blocklist, report) = try LocalBlocklist.open(location, creatingWith: capacity, reconcile: true, recorder: recorder)
        if blocklist.datapath.capacity != capacity {
            logger.warning("the pinned state has capacity \(blocklist.datapath.capacity); the configured capacity applies only to a new state (portcullis purge)")
        }
        for line in report.lines { logger.notice("\(line)") }
        self.blocklist = blocklist
        self.blocklist.fleetShare = configuration.fleet?.share ?? []
        self.location = location
        self.recorder = recorder
        self.reader = BlocklistReader(try LocalBlocklist.open(location, creatingWith: nil, recorder: recorder).0)
        self.metrics = metrics
        self.logger = logger
        self.configuration = configuration
    }

    var datapath: Datapath { blocklist.datapath }

    // MARK: - The data plane's health

    /// What keeps the data plane from enforcing the blocklist as configured.
    func inspect() -> [String] {
        var found: [String] = []
        let pins = location.pins
        let version = try? Datapath.layoutVersion(in: pins)
        if version == nil {
            found.append("the pins in \(pins.path) are gone (removed, or bpffs unmounted): nothing is dropped")
            return found
        }
        let attachments = (try? datapath.attachments()) ?? []
        for interface in configuration.interfaces {
            let attached = attachments.contains { $0.interface == interface.name && $0.namespace == interface.netns && $0.isActive }
            if !attached {
                found.append("not attached to \(interface.name)\(interface.netns.map { " in netns \($0)" } ?? "")")
            }
        }
        return found
    }

    /// Finds what is wrong and mends it: lost pins are made again from the ledger (every block
    /// still in force and the allowlist), and the configured interfaces attached again.
    /// Returns what is still wrong afterwards.
    @discardableResult
    func mend() -> [String] {
        let found = inspect()
        guard !found.isEmpty else {
            if !problems.isEmpty { logger.notice("the data plane enforces the blocklist again") }
            problems = []
            metrics.recordDataplane(healthy: true)
            return []
        }
        // The same trouble again (an interface that cannot be attached) is retried every 10 s,
        // not every second; lost pins are made again at once.
        let pinsLost = found.contains { $0.hasPrefix("the pins in") }
        if !pinsLost, found == problems, let last = lastRecovery, ContinuousClock.now - last < .seconds(10) {
            return problems
        }
        lastRecovery = ContinuousClock.now
        if !pinsLost && !configuration.reattach {
            for problem in found where !problems.contains(problem) { logger.error("\(problem); not attaching again (reattach: false)") }
            problems = found
            metrics.recordDataplane(healthy: false)
            return problems
        }
        for problem in found where !problems.contains(problem) { logger.error("\(problem); recovering") }
        if found.contains(where: { $0.hasPrefix("the pins in") }) {
            do {
                let capacity = Capacity(exact: configuration.capacityExact, prefixes: configuration.capacityPrefixes)
                let (restored, report) = try LocalBlocklist.open(location, creatingWith: capacity, reconcile: true, recorder: recorder)
                for line in report.lines { logger.notice("\(line)") }
                blocklist = restored
                blocklist.fleetShare = configuration.fleet?.share ?? []
                reader.replace(try LocalBlocklist.open(location, creatingWith: nil, recorder: recorder).0)
            } catch {
                logger.error("cannot make the maps again: \(error.description)")
            }
        }
        apply(configuration, previous: nil)
        problems = inspect()
        metrics.recordDataplane(healthy: problems.isEmpty)
        return problems
    }

    // MARK: - Changes

    func attach(_ fleet: FleetSync) { self.fleet = fleet }

    func block(_ request: BlockRequest, context: IncidentContext) throws(ServiceError) -> BlockOutcome {
        defer { fleet?.changed() }
        let outcome = try blocklist.block(request, context: context)
        metrics.recordBlock(outcome.change, source: outcome.entry.source ?? request.source)
        noteMissingRecord(outcome.recordWarning)
        return outcome
    }

    func block(batch: BlockBatch) throws(ServiceError) -> BatchResult {
        defer { fleet?.changed() }
        let result = try blocklist.block(batch: batch)
        metrics.recordBatch(result.outcome, source: batch.source)
        noteMissingRecord(result.recordWarning(from: batch.origin))
        return result
    }

    func unblock(_ target: BlockTarget, requestedBy source: BlockSource, onlyOwn: Bool, origin: String? = nil,
                 context: IncidentContext, throttle: Bool = false) throws(ServiceError) -> UnblockResult {
        defer { fleet?.changed() }
        let result = try blocklist.unblock(target, requestedBy: source, onlyOwn: onlyOwn, origin: origin, context: context, throttle: throttle)
        if case .removed(let entry) = result.outcome { metrics.recordUnblock(source: entry.source) }
        noteMissingRecord(result.recordWarning)
        return result
    }

    func flush(_ owner: BlockOwner) throws(ServiceError) -> FlushResult {
        let result = try blocklist.flush(owner)
        for entry in result.removed { metrics.recordUnblock(source: entry.source) }
        if let warning = result.record.warning(after: "\(result.removedCount) blocks of \(owner.source.rawValue) are lifted") {
            Self.missingRecord(warning, logger: logger, metrics: metrics)
        }
        if !result.removed.isEmpty {
            logger.info("flushed \(result.removedCount) blocks of \(owner.origin ?? owner.source.rawValue)")
        }
        return result
    }

    /// A change's record that was not written: the client is told in the answer, and the
    /// daemon's log and metrics keep it for whoever watches the host.
    private func noteMissingRecord(_ warning: String?) {
        if let warning { Self.missingRecord(warning, logger: logger, metrics: metrics) }
    }

    private static func missingRecord(_ warning: String, logger: Logger, metrics: DaemonMetrics) {
        logger.error("\(warning)")
        metrics.recordIncidentRecordFailure()
    }

    /// Expired blocks removed in slices, with the other writers' requests served between them.
    static let sweepSlice = 512

    func sweep() async throws(ServiceError) -> SweepReport {
        let started = ContinuousClock.now
        var removed: [BlockEntry] = []
        var bySource: [String: Int] = [:]
        var scanned = 0
        var record = IncidentRecordStatus.written
        while true {
            let slice = try blocklist.sweep(atMost: Self.sweepSlice, rounds: 1)
            removed += slice.removed
            scanned += slice.scanned
            record = record.combined(with: slice.record)
            for (source, count) in slice.removedBySource { bySource[source, default: 0] += count }
            if slice.removedCount < Self.sweepSlice { break }
            // A block waiting behind this sweep goes first.
            await Task.yield()
        }
        let report = SweepReport(removed: removed, removedCount: removed.count, removedBySource: bySource,
                                 scanned: scanned, elapsed: ContinuousClock.now - started, record: record)
        metrics.recordSweep(report)
        noteMissingRecord(report.recordWarning)
        if report.removedCount > 0 {
            logger.info("swept \(report.removedCount) expired blocks in \(Int(report.elapsed.fractionalSeconds * 1000)) ms")
        }
        return report
    }

    func recordDetection(_ detection: Incident.Detection, target: String, error: String? = nil, unreadable: Bool = false) {
        blocklist.index(blocklist.recorder.recordDetection(detection, target: target, error: error, unreadable: unreadable))
        metrics.recordDetection(rule: detection.ruleId)
    }

    func recordRefusal(_ target: String, detection: Incident.Detection, error: String, kind: Incident.RefusalKind) {
        blocklist.index(blocklist.recorder.recordRefusal(target, source: BlockSource.detector.rawValue, error: error, kind: kind,
                                                         context: IncidentContext(detection: detection)))
    }

    /// Why `target` may not be blocked now (loopback, unspecified, allowlisted), or nil.
    func refusal(for target: BlockTarget) throws(ServiceError) -> Refusal? {
        try blocklist.refusal(for: target)
    }

    func allow(_ target: BlockTarget) throws(ServiceError) -> AllowlistChange {
        defer { fleet?.changed() }
        return try blocklist.allow(target)
    }

    func disallow(_ target: BlockTarget) throws(ServiceError) -> AllowlistChange {
        defer { fleet?.changed() }
        return try blocklist.disallow(target)
    }

    func status() throws(ServiceError) -> DaemonStatus {
        let attachments = try ServiceError.mapping { () throws(DatapathError) in try datapath.attachments() }
        return DaemonStatus(
            pinDirectory: datapath.pins.path,
            ledger: blocklist.ledger.path,
            attachments: attachments.map { AttachmentRecord($0) },
            maps: try reader.mapUsageNow(),
            sweepIntervalSeconds: configuration.sweepInterval.fractionalSeconds,
            incidentLog: configuration.incidentLog, fleet: fleet?.health())
    }

    // MARK: - Configuration

    /// Makes the pinned state match `configuration`: the allowlist entries it
    /// owns, and the interfaces it names (attached, and detached when removed).
    func apply(_ configuration: DaemonConfiguration, previous: DaemonConfiguration?) {
        do {
            let (added, removed) = try blocklist.synchronizeConfiguredAllowlist(configuration.allowlist)
            for target in added { logger.info("allowlist: added \(target) from the configuration") }
            for target in removed { logger.info("allowlist: removed \(target), no longer in the configuration") }
        } catch {
            logger.error("cannot apply the allowlist: \(error.description)")
        }
        for interface in configuration.interfaces {
            let mode = XDPMode(rawValue: interface.mode) ?? .auto
            do {
                let (attachment, existing) = try datapath.attach(
                    interface: interface.name, namespace: interface.netns, mode: mode,
                    sharing: interface.cooperative ? .cooperative : .exclusive,
                    priority: interface.priority ?? XDPSharing.defaultPriority)
                let how = existing ? "kept the attachment on" : "attached to"
                let shared = attachment.sharing == .cooperative ? ", in libxdp's dispatcher at priority \(attachment.priority.map(String.init) ?? "?")" : ""
                logger.info("\(how) \(attachment.displayName) (\(attachment.mode?.rawValue ?? "?") mode, program \(attachment.programID)\(shared))")
            } catch {
                logger.error("cannot attach to \(interface.name)\(interface.netns.map { " in netns \($0)" } ?? ""): \(error.description)")
            }
        }
        if let previous {
            for interface in previous.interfaces
            where !configuration.interfaces.contains(where: { $0.name == interface.name && $0.netns == interface.netns }) {
                detach(interface)
            }
            for (name, changed) in [
                ("pin_dir", previous.pinDirectory != configuration.pinDirectory),
                ("control_socket", previous.controlSocket != configuration.controlSocket),
                ("control_group", previous.controlGroup != configuration.controlGroup),
                ("metrics_address", previous.metricsAddress != configuration.metricsAddress),
                ("capacity", previous.capacityExact != configuration.capacityExact || previous.capacityPrefixes != configuration.capacityPrefixes),
            ] where changed {
                logger.warning("\(name) changed: it takes effect at the next start")
            }
        }
        var kept = configuration
        if let previous {
            // What only a restart applies stays as it was, so status tells the truth.
            kept.pinDirectory = previous.pinDirectory
            kept.controlSocket = previous.controlSocket
            kept.controlGroup = previous.controlGroup
            kept.metricsAddress = previous.metricsAddress
            kept.capacityExact = previous.capacityExact
            kept.capacityPrefixes = previous.capacityPrefixes
        }
        self.configuration = kept
    }

    func detachConfiguredInterfaces() {
        for interface in configuration.interfaces { detach(interface) }
    }

    private func detach(_ interface: DaemonConfiguration.Interface) {
        let place = interface.name + (interface.netns.map { " in netns \($0)" } ?? "")
        do {
            if try datapath.detach(interface: interface.name, namespace: interface.netns) {
                logger.info("detached from \(place)")
            }
        } catch {
            logger.error("cannot detach from \(place): \(error.description)")
        }
    }
}

struct MetricsSnapshot: Sendable {
    let byInterface: [UInt32: PacketStatistics]
    let attachments: [Attachment]
    let counts: LedgerCounts
    let maps: [MapUsage]
}

/// Answers that only read, on their own ledger connection and off the keeper: WAL lets them
/// run while the keeper writes. Serialized among themselves (a connection is used by one
/// thread at a time); each is a few indexed rows and map lookups.
final class BlocklistReader: @unchecked Sendable {
    // Unchecked: `blocklist` is only touched under `lock`.
    private var blocklist: LocalBlocklist
    /// The live view's sampling, shared by every viewer: its rounds are spaced however many ask.
    private var topSampler = TopSampler()
    private let lock = Mutex(())

    init(_ blocklist: LocalBlocklist) { self.blocklist = blocklist }

    /// Reads the maps made again after they were lost.
    func replace(_ fresh: LocalBlocklist) {
        lock.withLock { _ in
            blocklist = fresh
            topSampler = TopSampler()
        }
    }

    /// Runs `body` on NIO's blocking thread pool, one reader at a time.
    private func reading<T: Sendable>(_ body: @escaping @Sendable (LocalBlocklist) throws(ServiceError) -> T) async throws(ServiceError) -> T {
        do {
            return try await NIOThreadPool.singleton.runIfActive { [self] in
                try lock.withLock { _ throws(ServiceError) in try body(blocklist) }
            }
        } catch let error as ServiceError {
            throw error
        } catch {
            throw ServiceError(.unavailable, "the daemon is shutting down")
        }
    }

    /// For callers already off the cooperative pool, or at start-up.
    func mapUsageNow() throws(ServiceError) -> [MapUsage] { try lock.withLock { _ throws(ServiceError) in try blocklist.mapUsage() } }

    func list(_ query: BlockQuery) async throws(ServiceError) -> BlockListing { try await reading { b throws(ServiceError) in try b.list(query) } }
    func entry(for target: BlockTarget) async throws(ServiceError) -> BlockEntry? { try await reading { b throws(ServiceError) in try b.entry(for: target) } }
    func allowlist() async throws(ServiceError) -> [BlockTarget] { try await reading { b throws(ServiceError) in try b.allowlist() } }
    func statistics() async throws(ServiceError) -> PacketStatistics { try await reading { b throws(ServiceError) in try b.statistics() } }
    /// The live view: a bounded round of sampling at most every ``TopSampler/minimumSpacing``.
    func top(blocks: Int, expiring: Int, incidents: Int) async throws(ServiceError) -> TopSample {
        try await reading { [self] b throws(ServiceError) in
            try topSampler.sample(b, blocks: blocks, expiring: expiring, incidents: incidents)
        }
    }

    func incidents(_ query: IncidentQuery, limit: Int?, log: IncidentLog) async throws(ServiceError) -> [Incident] {
        try await reading { b throws(ServiceError) in try b.incidents(query, limit: limit, log: log) }
    }

    /// Everything the metrics endpoint shows: counts the ledger keeps, never a walk of the blocks.
    func metricsSnapshot() async throws(ServiceError) -> MetricsSnapshot {
        try await reading { b throws(ServiceError) in
            let counts = try b.counts()
            return try ServiceError.mapping { () throws(DatapathError) in
                MetricsSnapshot(
                    byInterface: try b.datapath.statisticsByInterface(),
                    attachments: try b.datapath.attachments(),
                    counts: counts,
                    maps: try b.datapath.mapUsage(exactV4: counts.count(family: .ipv4, kind: .address),
                                                   exactV6: counts.count(family: .ipv6, kind: .address)))
            }
        }
    }
}

public struct DaemonStatus: Codable, Sendable {
    public let pinDirectory: String
    public let ledger: String
    public let attachments: [AttachmentRecord]
    public let maps: [MapUsage]
    public let sweepIntervalSeconds: Double
    public let incidentLog: String
    /// Absent outside a fleet.
    public var fleet: FleetHealth?
}

/// The fleet's way in: other nodes' changes are applied here, one writer as for every change.
extension BlocklistKeeper: FleetWriter {
    func fleetCursor() throws(ServiceError) -> Int64? {
        try ServiceError.mapping { () throws(LedgerError) in try blocklist.ledger.fleetCursor() }
    }

    func applyFleet(_ changes: [RemoteChange], cursor: Int64?) throws(ServiceError) -> FleetApplyReport {
        let report = try blocklist.applyFleet(changes, cursor: cursor)
        metrics.recordFleetApply(report)
        return report
    }

    func dropFleetBlocks(notIn inForce: Set<BlockTarget>) throws(ServiceError) -> Int {
        try blocklist.dropFleetBlocks(notIn: inForce)
    }

    func recordMalformedFleetChange(_ target: String, node: String, error: String) {
        blocklist.recordMalformedFleetChange(target, node: node, error: error)
        metrics.recordFleetApply({ var report = FleetApplyReport(); report.refused = 1; return report }())
    }

    func fleetOutbox(limit: Int) throws(ServiceError) -> [OutboxEntry] { try blocklist.fleetOutbox(limit: limit) }
    func removeFleetOutbox(through id: Int64) throws(ServiceError) { try blocklist.removeFleetOutbox(through: id) }
}
