import Logging
import PortcullisBPF
import PortcullisConfig
import PortcullisControl
import PortcullisCore
import PortcullisIncidents

/// The daemon's single writer: every change to the blocklist, from the control
/// API, the sweeper or a reload, runs on this actor one at a time, and also
/// holds the pin directory's lock while it writes, so a CLI that bypasses the
/// daemon is serialized with it too. A refresh therefore cannot interleave with
/// the sweep that would have removed the entry it refreshes.
actor BlocklistKeeper {
    private let blocklist: LocalBlocklist
    let metrics: DaemonMetrics
    let logger: Logger
    private(set) var configuration: DaemonConfiguration

    init(configuration: DaemonConfiguration, metrics: DaemonMetrics, logger: Logger) throws(DatapathError) {
        let datapath = try Datapath.open(
            PinDirectory(path: configuration.pinDirectory),
            creatingWith: Capacity(exact: configuration.capacityExact, prefixes: configuration.capacityPrefixes))
        if datapath.capacity != Capacity(exact: configuration.capacityExact, prefixes: configuration.capacityPrefixes) {
            logger.warning("the pinned state has capacity \(datapath.capacity); the configured capacity applies only to a new state (portcullis purge)")
        }
        let recorder = IncidentRecorder(log: IncidentLog(path: configuration.incidentLog)) { [logger] message in
            logger.error("incident record: \(message)")
        }
        self.blocklist = LocalBlocklist(datapath: datapath, recorder: recorder)
        self.metrics = metrics
        self.logger = logger
        self.configuration = configuration
    }

    var datapath: Datapath { blocklist.datapath }

    // MARK: - Changes

    func block(_ request: BlockRequest, context: IncidentContext) throws(ServiceError) -> BlockOutcome {
        let outcome = try blocklist.block(request, context: context)
        metrics.recordBlock(outcome.change, source: outcome.entry.source ?? request.source)
        return outcome
    }

    func block(batch: BlockBatch) throws(ServiceError) -> BatchResult {
        let result = try blocklist.block(batch: batch)
        metrics.recordBatch(result.outcome, source: batch.source)
        return result
    }

    func unblock(_ target: BlockTarget, requestedBy source: BlockSource, onlyOwn: Bool, context: IncidentContext) throws(ServiceError) -> UnblockOutcome {
        let outcome = try blocklist.unblock(target, requestedBy: source, onlyOwn: onlyOwn, context: context)
        if case .removed(let entry) = outcome { metrics.recordUnblock(source: entry.source) }
        return outcome
    }

    func sweep() throws(ServiceError) -> SweepReport {
        let report = try blocklist.sweep()
        metrics.recordSweep(report)
        if report.removedCount > 0 {
            logger.info("swept \(report.removedCount) expired blocks of \(report.scanned) in \(Int(report.elapsed.fractionalSeconds * 1000)) ms")
        }
        return report
    }

    func recordDetection(_ detection: Incident.Detection, target: String, error: String? = nil) {
        blocklist.recorder.recordDetection(detection, target: target, error: error)
        metrics.recordDetection(rule: detection.ruleId)
    }

    func recordRefusal(_ target: String, detection: Incident.Detection, error: String) {
        blocklist.recorder.recordRefusal(target, source: BlockSource.detector.rawValue, error: error, context: IncidentContext(detection: detection))
    }

    /// Why `target` may not be blocked now (loopback, unspecified, allowlisted), or nil.
    func refusal(for target: BlockTarget) throws(ServiceError) -> Refusal? {
        try blocklist.refusal(for: target)
    }

    func allow(_ target: BlockTarget) throws(ServiceError) -> AllowlistChange { try blocklist.allow(target) }
    func disallow(_ target: BlockTarget) throws(ServiceError) -> AllowlistChange { try blocklist.disallow(target) }

    // MARK: - Reading

    func list() throws(ServiceError) -> [BlockEntry] { try blocklist.list() }
    func allowlist() throws(ServiceError) -> [BlockTarget] { try blocklist.allowlist() }
    func statistics() throws(ServiceError) -> PacketStatistics { try blocklist.statistics() }

    /// One block, read from the map by its key: an answer for one target never walks the blocklist.
    func entry(for target: BlockTarget) throws(ServiceError) -> BlockEntry? {
        do {
            return try datapath.entry(for: target)
        } catch {
            throw ServiceError(error)
        }
    }

    func status() throws(ServiceError) -> DaemonStatus {
        do throws(DatapathError) {
            return DaemonStatus(
                pinDirectory: datapath.pins.path,
                attachments: try datapath.attachments().map { AttachmentRecord($0) },
                maps: try datapath.mapUsage(),
                sweepIntervalSeconds: configuration.sweepInterval.fractionalSeconds,
                incidentLog: configuration.incidentLog)
        } catch {
            throw ServiceError(error)
        }
    }

    /// Everything the metrics endpoint shows, read in one turn of the actor.
    func metricsSnapshot() throws(ServiceError) -> MetricsSnapshot {
        let blocks = try blocklist.list()
        do throws(DatapathError) {
            return MetricsSnapshot(
                byInterface: try datapath.statisticsByInterface(),
                attachments: try datapath.attachments(),
                blocks: blocks,
                maps: try datapath.mapUsage())
        } catch {
            throw ServiceError(error)
        }
    }

    // MARK: - Configuration

    /// Makes the pinned state match `configuration`: the allowlist entries it
    /// owns, and the interfaces it names (attached, and detached when removed).
    func apply(_ configuration: DaemonConfiguration, previous: DaemonConfiguration?) {
        do {
            let (added, removed) = try datapath.synchronizeConfiguredAllowlist(configuration.allowlist)
            for target in added { logger.info("allowlist: added \(target) from the configuration") }
            for target in removed { logger.info("allowlist: removed \(target), no longer in the configuration") }
        } catch {
            logger.error("cannot apply the allowlist: \(error.description)")
        }
        for interface in configuration.interfaces {
            let mode = XDPMode(rawValue: interface.mode) ?? .auto
            do {
                let (attachment, existing) = try datapath.attach(interface: interface.name, namespace: interface.netns, mode: mode)
                let how = existing ? "kept the attachment on" : "attached to"
                logger.info("\(how) \(attachment.displayName) (\(attachment.mode?.rawValue ?? "?") mode, program \(attachment.programID))")
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

struct MetricsSnapshot {
    let byInterface: [UInt32: PacketStatistics]
    let attachments: [Attachment]
    let blocks: [BlockEntry]
    let maps: [MapUsage]
}

public struct DaemonStatus: Codable, Sendable {
    public let pinDirectory: String
    public let attachments: [AttachmentRecord]
    public let maps: [MapUsage]
    public let sweepIntervalSeconds: Double
    public let incidentLog: String
}
