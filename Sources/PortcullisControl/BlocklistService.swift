import FoundationEssentials
import PortcullisBPF
import PortcullisCore
import PortcullisIncidents

/// A failure as the control API reports it, with the HTTP status it maps to.
public struct ServiceError: Error, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable {
        /// Malformed input: an address, a duration, a body. Nothing changed.
        case badRequest
        /// A request against a safety rule: allowlisted, loopback. Nothing changed.
        case refused
        /// A map reached its capacity. Nothing changed.
        case full
        case notFound
        case permission
        /// The daemon is not running.
        case unavailable
        case failed
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    public var httpStatus: Int {
        switch kind {
        case .badRequest: 400
        case .permission: 403
        case .notFound: 404
        case .refused: 409
        case .full: 507
        case .unavailable: 503
        case .failed: 500
        }
    }

    public init(status: Int, message: String) {
        let kind: Kind = switch status {
        case 400, 422: .badRequest
        case 401, 403: .permission
        case 404: .notFound
        case 409: .refused
        case 507: .full
        case 503: .unavailable
        default: .failed
        }
        self.init(kind, message)
    }

    public init(_ error: DatapathError) {
        let kind: Kind = switch error.kind {
        case .permission: .permission
        case .notFound: .notFound
        case .full: .full
        case .refused: .refused
        case .unsupported, .system: .failed
        }
        self.init(kind, error.description)
    }
}

/// What the CLI, the Wazuh active response and the control API can ask of the
/// blocklist. Two implementations: the pinned maps directly (``LocalBlocklist``),
/// and the daemon over its control socket (``RemoteBlocklist``).
public protocol BlocklistService {
    func block(_ body: BlockBody) throws(ServiceError) -> BlockResponse
    func block(batch: BatchBody) throws(ServiceError) -> BatchResponse
    func unblock(_ target: String, source: String, wazuh: Incident.Wazuh?) throws(ServiceError) -> UnblockResponse
    /// Unblocks only when `source` set the block; another source's block stays (``UnblockResponse/keptFor``).
    func unblock(_ target: String, ownedBy source: String, wazuh: Incident.Wazuh?) throws(ServiceError) -> UnblockResponse
    func list() throws(ServiceError) -> [BlockRecord]
    func sweep() throws(ServiceError) -> SweepResponse
    func allow(_ target: String) throws(ServiceError) -> AllowResponse
    func disallow(_ target: String) throws(ServiceError) -> AllowResponse
    func allowlist() throws(ServiceError) -> [String]
    func statistics() throws(ServiceError) -> PacketStatistics
}

extension BlocklistService {
    /// The allowlist entry that covers `target`, if any: such a target is never blocked.
    public func allowlistEntry(covering target: BlockTarget) throws(ServiceError) -> String? {
        try allowlist().first { text in (try? BlockTarget.parse(text).target)?.contains(target) == true }
    }
}

/// Parses what a request names, the same way on every path in.
public enum RequestParsing {
    public static func target(_ text: String) throws(ServiceError) -> ParsedTarget {
        do {
            return try BlockTarget.parse(text)
        } catch {
            throw ServiceError(.badRequest, error.description)
        }
    }

    public static func duration(_ text: String?) throws(ServiceError) -> Duration? {
        guard let text else { return nil }
        do {
            return try DurationText.parse(text)
        } catch {
            throw ServiceError(.badRequest, error.description)
        }
    }

    public static func source(_ name: String?, default fallback: BlockSource) throws(ServiceError) -> BlockSource {
        guard let name else { return fallback }
        guard let source = BlockSource(rawValue: name) else {
            throw ServiceError(.badRequest, "unknown source '\(name)' (cli, file, wazuh, detector or api)")
        }
        return source
    }
}

/// The blocklist in the pinned maps, with every change recorded as an incident.
/// The daemon serves the control API with one of these; the CLI and the Wazuh
/// active response use one directly when no daemon runs.
public final class LocalBlocklist: BlocklistService {
    public let datapath: Datapath
    public let recorder: IncidentRecorder
    let defaultSource: BlockSource

    public init(datapath: Datapath, recorder: IncidentRecorder, defaultSource: BlockSource) {
        self.datapath = datapath
        self.recorder = recorder
        self.defaultSource = defaultSource
    }

    public func block(_ body: BlockBody) throws(ServiceError) -> BlockResponse {
        let parsed = try RequestParsing.target(body.target)
        let duration = try RequestParsing.duration(body.duration)
        let source = try RequestParsing.source(body.source, default: defaultSource)
        let reason = body.reason ?? ""
        guard reason.utf8.count <= BlockRequest.maximumReasonBytes else {
            throw ServiceError(.badRequest, "the reason is \(reason.utf8.count) bytes long; at most \(BlockRequest.maximumReasonBytes) are kept")
        }
        do {
            try parsed.target.validateBlockable()
        } catch {
            recorder.recordRefusal(parsed.target.description, source: source.rawValue, error: error.description, context: body.context)
            throw ServiceError(.badRequest, error.description)
        }
        do {
            let outcome = try datapath.block(BlockRequest(target: parsed.target, duration: duration, reason: reason, source: source))
            recorder.record(outcome, requested: duration, context: body.context)
            return BlockResponse(change: outcome.change.rawValue, block: BlockRecord(outcome.entry), notes: parsed.notes)
        } catch {
            if error.kind == .refused || error.kind == .full {
                recorder.recordRefusal(parsed.target.description, source: source.rawValue, error: error.description, context: body.context)
            }
            throw ServiceError(error)
        }
    }

    public func block(batch: BatchBody) throws(ServiceError) -> BatchResponse {
        let source = try RequestParsing.source(batch.source, default: .file)
        let reason = batch.reason ?? ""
        var requests: [BlockRequest] = []
        requests.reserveCapacity(batch.items.count)
        for item in batch.items {
            let parsed = try RequestParsing.target(item.target)
            if let seconds = item.durationSeconds, !(1...DurationText.maximumSeconds).contains(seconds) {
                throw ServiceError(.badRequest, "\(item.target): the duration must be from 1 to \(DurationText.maximumSeconds) seconds")
            }
            requests.append(BlockRequest(
                target: parsed.target, duration: item.durationSeconds.map { .seconds($0) }, reason: reason, source: source))
        }
        let started = ContinuousClock.now
        do {
            let outcome = try datapath.block(batch: requests)
            let elapsed = ContinuousClock.now - started
            recorder.recordBatch(outcome, from: batch.origin ?? "a batch", reason: reason, requested: nil)
            return BatchResponse(outcome, seconds: elapsed.fractionalSeconds)
        } catch {
            throw ServiceError(error)
        }
    }

    public func unblock(_ target: String, source: String, wazuh: Incident.Wazuh?) throws(ServiceError) -> UnblockResponse {
        try unblock(target, requester: source, onlyFrom: nil, wazuh: wazuh)
    }

    public func unblock(_ target: String, ownedBy source: String, wazuh: Incident.Wazuh?) throws(ServiceError) -> UnblockResponse {
        try unblock(target, requester: source, onlyFrom: try RequestParsing.source(source, default: .api), wazuh: wazuh)
    }

    private func unblock(_ target: String, requester: String, onlyFrom owner: BlockSource?, wazuh: Incident.Wazuh?) throws(ServiceError) -> UnblockResponse {
        let parsed = try RequestParsing.target(target)
        do {
            switch try datapath.unblock(parsed.target, onlyFrom: owner) {
            case .removed(let removed):
                recorder.recordUnblock(removed, source: requester, context: IncidentContext(wazuh: wazuh))
                return UnblockResponse(target: parsed.target.description, block: BlockRecord(removed))
            case .absent:
                return UnblockResponse(target: parsed.target.description, block: nil)
            case .keptForOwner(let kept):
                return UnblockResponse(target: parsed.target.description, block: BlockRecord(kept), keptFor: kept.source?.rawValue ?? "unknown")
            }
        } catch {
            throw ServiceError(error)
        }
    }

    public func list() throws(ServiceError) -> [BlockRecord] {
        do {
            return try datapath.list().sorted { $0.target < $1.target }.map(BlockRecord.init)
        } catch {
            throw ServiceError(error)
        }
    }

    public func sweep() throws(ServiceError) -> SweepResponse {
        do {
            let report = try datapath.sweep()
            recorder.recordExpiries(report.removed)
            var bySource: [String: Int] = [:]
            for entry in report.removed { bySource[entry.source?.rawValue ?? "unknown", default: 0] += 1 }
            return SweepResponse(
                removedCount: report.removed.count, removedBySource: bySource, removed: report.removed.prefix(SweepResponse.listedLimit).map(BlockRecord.init),
                scanned: report.scanned, seconds: report.elapsed.fractionalSeconds)
        } catch {
            throw ServiceError(error)
        }
    }

    public func allow(_ target: String) throws(ServiceError) -> AllowResponse {
        let parsed = try RequestParsing.target(target)
        do {
            let added = try datapath.allow(parsed.target)
            return AllowResponse(target: parsed.target.description, change: added ? "added" : "unchanged")
        } catch {
            throw ServiceError(error)
        }
    }

    public func disallow(_ target: String) throws(ServiceError) -> AllowResponse {
        let parsed = try RequestParsing.target(target)
        do {
            let removed = try datapath.disallow(parsed.target)
            return AllowResponse(target: parsed.target.description, change: removed ? "removed" : "absent")
        } catch {
            throw ServiceError(error)
        }
    }

    public func allowlist() throws(ServiceError) -> [String] {
        do {
            return try datapath.allowlist().map(\.description)
        } catch {
            throw ServiceError(error)
        }
    }

    public func statistics() throws(ServiceError) -> PacketStatistics {
        do {
            return try datapath.statistics()
        } catch {
            throw ServiceError(error)
        }
    }
}

/// The blocklist through the daemon's control socket.
public struct RemoteBlocklist: BlocklistService {
    public let client: ControlSocketClient

    public init(client: ControlSocketClient) { self.client = client }

    func call<Response: Decodable>(_ method: String, _ path: String, _ body: (some Encodable)? = Optional<Int>.none,
                                   as _: Response.Type = Response.self) throws(ServiceError) -> Response {
        let response: ControlSocketClient.Response
        do {
            // Encoded only once a daemon answers: a large batch must not be encoded for nobody.
            response = try client.send(method, path) { () throws(ControlSocketClient.Failure) -> [UInt8]? in
                guard let body else { return nil }
                guard let data = try? JSONEncoder().encode(body) else { throw .failed("cannot encode the request") }
                return Array(data)
            }
        } catch {
            switch error {
            case .notRunning: throw ServiceError(.unavailable, error.description)
            case .permissionDenied: throw ServiceError(.permission, error.description)
            case .failed: throw ServiceError(.failed, error.description)
            }
        }
        let decoder = JSONDecoder()
        guard (200..<300).contains(response.status) else {
            let message = (try? decoder.decode(ErrorBody.self, from: Data(response.body)))?.error
                ?? "the daemon answered \(response.status)"
            throw ServiceError(status: response.status, message: message)
        }
        do {
            return try decoder.decode(Response.self, from: Data(response.body))
        } catch {
            throw ServiceError(.failed, "cannot read the daemon's answer to \(method) \(path): \(error)")
        }
    }

    static func query(_ value: String) -> String {
        var out = ""
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(UnicodeScalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }

    public func block(_ body: BlockBody) throws(ServiceError) -> BlockResponse {
        try call("POST", "/v1/blocks", body)
    }

    public func block(batch: BatchBody) throws(ServiceError) -> BatchResponse {
        try call("POST", "/v1/blocks/batch", batch)
    }

    public func unblock(_ target: String, source: String, wazuh: Incident.Wazuh?) throws(ServiceError) -> UnblockResponse {
        try call("POST", "/v1/unblock", UnblockBody(target: target, source: source, onlyOwn: nil, wazuh: wazuh))
    }

    public func unblock(_ target: String, ownedBy source: String, wazuh: Incident.Wazuh?) throws(ServiceError) -> UnblockResponse {
        try call("POST", "/v1/unblock", UnblockBody(target: target, source: source, onlyOwn: true, wazuh: wazuh))
    }

    public func list() throws(ServiceError) -> [BlockRecord] {
        let page: BlockPage = try call("GET", "/v1/blocks?limit=0")
        return page.blocks
    }

    public func sweep() throws(ServiceError) -> SweepResponse {
        try call("POST", "/v1/sweep")
    }

    public func allow(_ target: String) throws(ServiceError) -> AllowResponse {
        try call("POST", "/v1/allowlist", AllowBody(target: target))
    }

    public func disallow(_ target: String) throws(ServiceError) -> AllowResponse {
        try call("DELETE", "/v1/allowlist?target=\(Self.query(target))")
    }

    public func allowlist() throws(ServiceError) -> [String] {
        try call("GET", "/v1/allowlist")
    }

    public func statistics() throws(ServiceError) -> PacketStatistics {
        try call("GET", "/v1/stats")
    }
}

/// The daemon when it runs, the pinned maps otherwise: a process that finds the
/// daemon down still blocks, and while the daemon runs it is the single writer.
public final class PreferredBlocklist: BlocklistService {
    let remote: RemoteBlocklist
    let makeLocal: () throws(ServiceError) -> LocalBlocklist
    private var local: LocalBlocklist?
    /// Whether the last request went to the daemon.
    public private(set) var usedDaemon = false

    /// Whether a daemon answers on the control socket now.
    public var reachesDaemon: Bool {
        (try? remote.client.send("GET", "/v1/health").status) == 200
    }

    public init(socket: ControlSocketClient, local: @escaping () throws(ServiceError) -> LocalBlocklist) {
        self.remote = RemoteBlocklist(client: socket)
        self.makeLocal = local
    }

    private func perform<T>(_ operation: (any BlocklistService) throws(ServiceError) -> T) throws(ServiceError) -> T {
        do {
            let result = try operation(remote)
            usedDaemon = true
            return result
        } catch {
            guard error.kind == .unavailable else { throw error }
        }
        usedDaemon = false
        let local: LocalBlocklist
        if let existing = self.local {
            local = existing
        } else {
            local = try makeLocal()
            self.local = local
        }
        return try operation(local)
    }

    public func block(_ body: BlockBody) throws(ServiceError) -> BlockResponse { try perform { s throws(ServiceError) in try s.block(body) } }
    public func block(batch: BatchBody) throws(ServiceError) -> BatchResponse { try perform { s throws(ServiceError) in try s.block(batch: batch) } }
    public func unblock(_ target: String, source: String, wazuh: Incident.Wazuh?) throws(ServiceError) -> UnblockResponse {
        try perform { s throws(ServiceError) in try s.unblock(target, source: source, wazuh: wazuh) }
    }
    public func unblock(_ target: String, ownedBy source: String, wazuh: Incident.Wazuh?) throws(ServiceError) -> UnblockResponse {
        try perform { s throws(ServiceError) in try s.unblock(target, ownedBy: source, wazuh: wazuh) }
    }
    public func list() throws(ServiceError) -> [BlockRecord] { try perform { s throws(ServiceError) in try s.list() } }
    public func sweep() throws(ServiceError) -> SweepResponse { try perform { s throws(ServiceError) in try s.sweep() } }
    public func allow(_ target: String) throws(ServiceError) -> AllowResponse { try perform { s throws(ServiceError) in try s.allow(target) } }
    public func disallow(_ target: String) throws(ServiceError) -> AllowResponse { try perform { s throws(ServiceError) in try s.disallow(target) } }
    public func allowlist() throws(ServiceError) -> [String] { try perform { s throws(ServiceError) in try s.allowlist() } }
    public func statistics() throws(ServiceError) -> PacketStatistics { try perform { s throws(ServiceError) in try s.statistics() } }
}

/// The answer of `body`, or `absent` when no state was ever created (nothing blocked, nothing allowed).
public func whenStateExists<T>(or absent: T, _ body: () throws(ServiceError) -> T) throws(ServiceError) -> T {
    do {
        return try body()
    } catch {
        if error.kind == .notFound { return absent }
        throw error
    }
}
