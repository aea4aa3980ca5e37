import PortcullisBPF
import PortcullisControl
import PortcullisCore
import Prometheus
import Synchronization

/// The daemon's Prometheus metrics. Counters of what the daemon did are kept
/// as it does it; what the kernel counts is read at each scrape.
final class DaemonMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let sweepDuration: DurationHistogram
    /// Made at start, so it reads 0 until a write fails: an alert on it needs the series to exist.
    private let incidentRecordFailures: Counter
    /// The kernel's counters as last exported, to turn absolute values into increments.
    private let exported = Mutex<[String: UInt64]>([:])

    init() {
        sweepDuration = registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(
                namespace: "portcullis", metricName: "sweep_duration", unitName: "seconds",
                helpText: "Time each sweep of expired blocks took."),
            buckets: [.milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5)])
        incidentRecordFailures = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "portcullis", metricName: "incident_record_failures_total", unitName: "",
                helpText: "Incident record writes that failed (a full or read-only filesystem, a log that cannot be opened); the change each was for took effect."),
            labels: [])
        gauge("up", labels: [], help: "1 while the Portcullis daemon runs.").set(to: 1.0)
    }

    func recordDataplane(healthy: Bool) {
        gauge("dataplane_healthy", labels: [],
              help: "1 while the pins are in place and every configured interface is attached; 0 while the daemon recovers them.")
            .set(to: healthy ? 1 : 0)
    }

    func recordBlock(_ change: BlockChange, source: BlockSource) {
        let name = change == .added ? "blocks_added_total" : "blocks_refreshed_total"
        let help = change == .added ? "Blocks added, by who asked." : "Blocks refreshed (blocked again while active), by who asked."
        counter(name, labels: [("source", source.rawValue)], help: help).increment()
    }

    func recordBatch(_ outcome: BatchOutcome, source: BlockSource) {
        counter("blocks_added_total", labels: [("source", source.rawValue)], help: "Blocks added, by who asked.")
            .increment(by: Int64(outcome.added))
        counter("blocks_refreshed_total", labels: [("source", source.rawValue)], help: "Blocks refreshed (blocked again while active), by who asked.")
            .increment(by: Int64(outcome.refreshed + outcome.keptLonger))
    }

    func recordDetection(rule: String) {
        counter("detections_total", labels: [("rule", rule)], help: "Detection rules that fired on watched logs, by rule id.").increment()
    }

    func recordUnblock(source: BlockSource?) {
        counter("blocks_removed_total", labels: [("source", source?.rawValue ?? "unknown")], help: "Blocks lifted by an unblock, by who had blocked them.").increment()
    }

    func recordIncidentRecordFailure() { incidentRecordFailures.increment() }

    func recordSweep(_ report: SweepReport) {
        sweepDuration.record(report.elapsed)
        for (source, count) in report.removedBySource {
            counter("blocks_expired_total", labels: [("source", source)], help: "Blocks removed by a sweep after they expired, by who had blocked them.").increment(by: Int64(count))
        }
    }

    /// One pull of CrowdSec's decision stream, and whether the Local API answered.
    func recordCrowdSecPull(ok: Bool) {
        gauge("crowdsec_lapi_up", labels: [], help: "1 while CrowdSec's Local API answers the decision stream; 0 while it does not (the blocks in force stay).")
            .set(to: ok ? 1 : 0)
        counter("crowdsec_pulls_total", labels: [("result", ok ? "ok" : "error")],
                help: "Pulls of CrowdSec's decision stream, by whether the Local API answered.").increment()
    }

    /// What became of CrowdSec's decisions: blocked, lifted, refused (loopback, allowlisted) or
    /// skipped (not a ban, a scope other than Ip and Range, filtered out, expired).
    func recordCrowdSecDecisions(_ count: Int, outcome: String) {
        guard count > 0 else { return }
        counter("crowdsec_decisions_total", labels: [("outcome", outcome)],
                help: "CrowdSec decisions by what the bouncer did with them.").increment(by: Int64(count))
    }

    /// What one round of applying other nodes' changes did.
    func recordFleetApply(_ report: FleetApplyReport) {
        counter("fleet_changes_applied_total", labels: [], help: "Other nodes' changes applied here (blocks, tombstones, allowlist entries).")
            .increment(by: Int64(report.applied))
        counter("fleet_changes_refused_total", labels: [],
                help: "Other nodes' changes refused here (malformed, loopback, this host's allowlist); each is in the incident record.")
            .increment(by: Int64(report.refused))
    }

    /// The fleet's health as the node last saw it, set at each scrape.
    func recordFleet(_ health: FleetHealth) {
        gauge("fleet_connected", labels: [], help: "1 while this node reads the fleet's change log.").set(to: health.connected ? 1 : 0)
        gauge("fleet_publishing", labels: [], help: "1 while this node's own changes can be published.").set(to: health.publishing ? 1 : 0)
        gauge("fleet_cursor", labels: [], help: "The last change log sequence applied here.").set(to: Double(health.cursor ?? 0))
        gauge("fleet_lag_events", labels: [], help: "Changes in the log not applied here yet.").set(to: Double(health.lagEvents))
        gauge("fleet_lag_seconds", labels: [], help: "From the commit of the newest change applied to its being in force here.")
            .set(to: health.lagSeconds ?? 0)
        gauge("fleet_last_apply_timestamp_seconds", labels: [], help: "When another node's change was last applied here (Unix time).")
            .set(to: Double(health.lastApplyUnixMs ?? 0) / 1000)
        gauge("fleet_outbox", labels: [], help: "This host's changes waiting to be published.").set(to: Double(health.outbox))
        gauge("fleet_clock_skew_seconds", labels: [], help: "This host's clock less the database's.")
            .set(to: Double(health.skewMilliseconds ?? 0) / 1000)
    }

    /// `portcullis_NAME`, with its help text.
    private func counter(_ name: String, labels: [(String, String)], help: String) -> Counter {
        registry.makeCounter(
            descriptor: MetricNameDescriptor(namespace: "portcullis", metricName: name, unitName: "", helpText: help), labels: labels)
    }

    private func gauge(_ name: String, labels: [(String, String)], help: String) -> Gauge {
        registry.makeGauge(
            descriptor: MetricNameDescriptor(namespace: "portcullis", metricName: name, unitName: "", helpText: help), labels: labels)
    }

    /// Brings the kernel-side metrics up to date and renders everything.
    func render(_ snapshot: MetricsSnapshot) -> [UInt8] {
        var names: [UInt32: (interface: String, netns: String)] = [:]
        for attachment in snapshot.attachments where attachment.isActive && attachment.interfaceIndex < PacketStatistics.interfaceSlots {
            names[attachment.interfaceIndex] = (attachment.interface, attachment.namespace ?? "")
        }
        exported.withLock { last in
            for (slot, stats) in snapshot.byInterface {
                let (interface, netns) = names[slot] ?? (slot == 0 ? "other" : "ifindex\(slot)", "")
                let classes: [(String, UInt64)] = [
                    ("dropped", stats.dropped), ("passed", stats.passed), ("passed_allowed", stats.passedAllowed),
                    ("passed_expired", stats.passedExpired), ("not_ip", stats.notIP), ("parse_failed", stats.parseFailed),
                ]
                func export(_ name: String, _ labels: [(String, String)], _ value: UInt64, help: String) {
                    let key = name + labels.map { "|\($0.0)=\($0.1)" }.joined()
                    let previous = last[key] ?? 0
                    // A counter only grows; a smaller value means the state was recreated.
                    let delta = value >= previous ? value - previous : value
                    counter(name, labels: labels, help: help).increment(by: Int64(clamping: delta))
                    last[key] = value
                }
                let where_ = [("interface", interface), ("netns", netns)]
                export("packets_seen_total", where_, stats.seen, help: "Packets the XDP program saw.")
                for (verdict, value) in classes {
                    export("packets_total", where_ + [("verdict", verdict)], value,
                           help: "Packets by verdict: dropped, passed, passed_allowed, passed_expired, not_ip, parse_failed.")
                }
                export("dropped_bytes_total", where_, stats.droppedBytes, help: "Bytes of the dropped packets.")
            }
        }
        for family in [AddressFamily.ipv4, .ipv6] {
            for kind in BlockKind.allCases {
                gauge("blocks_active", labels: [("family", family.rawValue), ("kind", kind.rawValue)],
                      help: "Blocks held, by family and kind; an expired block counts until the next sweep.")
                    .set(to: Double(snapshot.counts.count(family: family, kind: kind)))
            }
        }
        for map in snapshot.maps {
            gauge("map_entries", labels: [("map", map.name)], help: "Entries in each BPF map.")
                .set(to: Double(map.entries))
            gauge("map_capacity", labels: [("map", map.name)], help: "Capacity of each BPF map.")
                .set(to: Double(map.capacity))
            if let memory = map.memoryBytes {
                gauge("map_memory_bytes", labels: [("map", map.name)], help: "Kernel memory each BPF map holds.").set(to: Double(memory))
            }
        }
        return registry.emitToBuffer()
    }
}
