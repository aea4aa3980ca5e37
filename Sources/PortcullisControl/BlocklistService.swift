import FoundationEssentials
import PortcullisBPF
import PortcullisCore
import PortcullisIncidents
import PortcullisLedger
import PortcullisSystem

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
        /// The daemon is not running, or did not answer in time.
        case unavailable
        /// The request's deadline passed before the daemon got to it. Nothing changed.
        case expired
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
        case .expired: 408
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
        case 408: .expired
        default: .failed
        }
        self.init(kind, message)
    }

    /// Runs a data-path call, giving its failure the service's kind: the one place the two
    /// layers' errors meet.
    public static func mapping<T>(_ body: () throws(DatapathError) -> T) throws(ServiceError) -> T {
        do {
            return try body()
        } catch {
            throw ServiceError(error)
        }
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

/// What the CLI, the Wazuh active response and the daemon can ask of the blocklist, in
/// typed values: targets and requests in, outcomes out. Two implementations: the pinned
/// maps directly (``LocalBlocklist``), and the daemon over its control socket
/// (``RemoteBlocklist``); ``PreferredBlocklist`` picks one per call.
///
/// A change whose incident record could not be written still succeeds, since it is in force:
/// its outcome's `record` says so, through the daemon or not, for the caller to warn.
public protocol BlocklistService {
    /// Blocks or refreshes one target, after ``Admission``; a refusal is recorded and thrown.
    func block(_ request: BlockRequest, context: IncidentContext) throws(ServiceError) -> BlockOutcome
    /// Blocks every item or, when any is refused, none.
    func block(batch: BlockBatch) throws(ServiceError) -> BatchResult
    /// Lifts the block on `target` (with `throttle`, the throttle: each lifts only its own
    /// kind); with `onlyOwn`, only one `source` set (and, when `origin` is given, set from that
    /// origin), by ``BlockPolicy/mayLift(ownedBy:origin:isExpired:requestedBy:)``.
    func unblock(_ target: BlockTarget, requestedBy source: BlockSource, onlyOwn: Bool, origin: String?,
                 context: IncidentContext, throttle: Bool) throws(ServiceError) -> UnblockResult
    /// Lifts every block `owner` holds, and no other.
    func flush(_ owner: BlockOwner) throws(ServiceError) -> FlushResult
    /// The blocks `query` selects, a page of them, and how many it selects in all.
    func list(_ query: BlockQuery) throws(ServiceError) -> BlockListing
    /// One block, found by its key.
    func entry(for target: BlockTarget) throws(ServiceError) -> BlockEntry?
    func sweep() throws(ServiceError) -> SweepReport
    func allow(_ target: BlockTarget) throws(ServiceError) -> AllowlistChange
    func disallow(_ target: BlockTarget) throws(ServiceError) -> AllowlistChange
    func allowlist() throws(ServiceError) -> [BlockTarget]
    func statistics() throws(ServiceError) -> PacketStatistics
}

extension BlocklistService {
    /// Lifts the block on `target`, whatever its origin, leaving any throttle.
    public func unblock(_ target: BlockTarget, requestedBy source: BlockSource, onlyOwn: Bool, context: IncidentContext) throws(ServiceError) -> UnblockResult {
        try unblock(target, requestedBy: source, onlyOwn: onlyOwn, origin: nil, context: context, throttle: false)
    }

    /// Lifts the block on `target` from `origin`, leaving any throttle.
    public func unblock(_ target: BlockTarget, requestedBy source: BlockSource, onlyOwn: Bool, origin: String?,
                        context: IncidentContext) throws(ServiceError) -> UnblockResult {
        try unblock(target, requestedBy: source, onlyOwn: onlyOwn, origin: origin, context: context, throttle: false)
    }

    /// Lifts the block or (with `throttle`) the throttle on `target`, whatever its origin.
    public func unblock(_ target: BlockTarget, requestedBy source: BlockSource, onlyOwn: Bool, context: IncidentContext,
                        throttle: Bool) throws(ServiceError) -> UnblockResult {
        try unblock(target, requestedBy: source, onlyOwn: onlyOwn, origin: nil, context: context, throttle: throttle)
    }
}

extension BlocklistService {
    /// Why `target` may not be blocked now, by ``Admission/check(_:allowlist:)`` against
    /// this blocklist's allowlist, or nil: for callers that must refuse before committing
    /// to anything (the Wazuh response before check_keys, a load sent in chunks).
    public func refusal(for target: BlockTarget) throws(ServiceError) -> Refusal? {
        try refusal(for: [target])
    }

    /// The first refusal among `targets`, reading the allowlist once.
    public func refusal(for targets: some Collection<BlockTarget>) throws(ServiceError) -> Refusal? {
        // Loopback needs no state: refusing it never creates or opens any.
        for target in targets {
            do throws(Refusal) {
                try Admission.checkBlockable(target)
            } catch {
                return error
            }
        }
        let allowed = try allowlist()
        for target in targets {
            do throws(Refusal) {
                try Admission.check(target, allowlist: allowed)
            } catch {
                return error
            }
        }
        return nil
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
        do {
            return try BlockSource.named(name)
        } catch {
            throw ServiceError(.badRequest, error.description)
        }
    }
}

/// The blocklist through the daemon's control socket: the typed requests become the
/// control API's JSON here, and its answers typed values again.
public struct RemoteBlocklist: BlocklistService {
    public let client: ControlSocketClient

    public init(client: ControlSocketClient) { self.client = client }

    /// `body` is made only once a daemon answers: a batch of a million is not turned into
    /// lines, let alone encoded, for nobody.
    func call<Response: Decodable, Body: Encodable>(_ method: String, _ path: String, _ body: @autoclosure () -> Body?,
                                                    as _: Response.Type = Response.self) throws(ServiceError) -> Response {
        let response: ControlSocketClient.Response
        do {
            response = try client.send(method, path) { () throws(ControlSocketClient.Failure) -> [UInt8]? in
                guard let body = body() else { return nil }
                guard let data = try? JSONEncoder().encode(body) else { throw .failed("cannot encode the request") }
                return Array(data)
            }
        } catch {
            switch error {
            case .notRunning, .timedOut: throw ServiceError(.unavailable, error.description)
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

    func call<Response: Decodable>(_ method: String, _ path: String, as _: Response.Type = Response.self) throws(ServiceError) -> Response {
        try call(method, path, Optional<Int>.none)
    }

    /// `value` percent-encoded for a query string.
    public static func query(_ value: String) -> String {
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

    public func block(_ request: BlockRequest, context: IncidentContext) throws(ServiceError) -> BlockOutcome {
        let response: BlockResponse = try call("POST", "/v1/blocks", BlockBody(request, context: context))
        return try response.outcome()
    }

    public func block(batch: BlockBatch) throws(ServiceError) -> BatchResult {
        let response: BatchResponse = try call("POST", "/v1/blocks/batch", BatchBody(batch))
        return response.result
    }

    public func unblock(_ target: BlockTarget, requestedBy source: BlockSource, onlyOwn: Bool, origin: String?,
                        context: IncidentContext, throttle: Bool) throws(ServiceError) -> UnblockResult {
        let response: UnblockResponse = try call(
            "POST", "/v1/unblock",
            UnblockBody(target: target, source: source, onlyOwn: onlyOwn, origin: origin, wazuh: context.wazuh, throttle: throttle))
        return try response.result()
    }

    public func flush(_ owner: BlockOwner) throws(ServiceError) -> FlushResult {
        let response: FlushResponse = try call("POST", "/v1/flush", FlushBody(owner))
        return try response.result()
    }

    public func list(_ query: BlockQuery) throws(ServiceError) -> BlockListing {
        var parameters = ["limit=\(query.limit ?? 0)", "offset=\(query.offset)"]
        if let source = query.source { parameters.append("source=\(source.rawValue)") }
        if let family = query.family { parameters.append("family=\(family.rawValue)") }
        if let kind = query.kind { parameters.append("kind=\(kind.rawValue)") }
        if let containing = query.containing { parameters.append("contains=\(Self.query(containing.description))") }
        if let expired = query.expired { parameters.append("expired=\(expired)") }
        if let after = query.after { parameters.append("after=\(Self.query(after.description))") }
        let page: BlockPage = try call("GET", "/v1/blocks?" + parameters.joined(separator: "&"))
        var entries: [BlockEntry] = []
        entries.reserveCapacity(page.blocks.count)
        for record in page.blocks { entries.append(try BlockEntry(record)) }
        return BlockListing(entries: entries, total: page.total)
    }

    public func entry(for target: BlockTarget) throws(ServiceError) -> BlockEntry? {
        do {
            let record: BlockRecord = try call("GET", "/v1/block?target=\(Self.query(target.description))")
            return try BlockEntry(record)
        } catch {
            if error.kind == .notFound { return nil }
            throw error
        }
    }

    public func sweep() throws(ServiceError) -> SweepReport {
        let response: SweepResponse = try call("POST", "/v1/sweep")
        return try response.report()
    }

    public func allow(_ target: BlockTarget) throws(ServiceError) -> AllowlistChange {
        let response: AllowResponse = try call("POST", "/v1/allowlist", AllowBody(target: target.description))
        return response.change
    }

    public func disallow(_ target: BlockTarget) throws(ServiceError) -> AllowlistChange {
        let response: AllowResponse = try call("DELETE", "/v1/allowlist?target=\(Self.query(target.description))")
        return response.change
    }

    public func allowlist() throws(ServiceError) -> [BlockTarget] {
        let texts: [String] = try call("GET", "/v1/allowlist")
        var targets: [BlockTarget] = []
        for text in texts {
            do {
                targets.append(try BlockTarget.parse(text).target)
            } catch {
                throw ServiceError(.failed, "the daemon's allowlist holds '\(TerminalText.excerpt(text))', which is not a target: \(error.description)")
            }
        }
        return targets
    }

    public func statistics() throws(ServiceError) -> PacketStatistics {
        try call("GET", "/v1/stats")
    }

    /// The daemon's live view (`GET /v1/top`), sampled by its reader.
    public func top(blocks: Int, expiring: Int, incidents: Int) throws(ServiceError) -> TopSample {
        try call("GET", "/v1/top?blocks=\(blocks)&expiring=\(expiring)&incidents=\(incidents)")
    }

    /// The pins and ledger the daemon serves, from its status.
    public func location() throws(ServiceError) -> BlocklistLocation {
        struct Served: Decodable {
            let pinDirectory: String
            let ledger: String
        }
        let served: Served = try call("GET", "/v1/status")
        return BlocklistLocation(pins: PinDirectory(path: served.pinDirectory), stateDirectory: SystemCall.parent(of: served.ledger) ?? "/")
    }
}

/// The daemon when it runs, the pinned maps otherwise: a process that finds the
/// daemon down, or not answering in time (stopped, overloaded), still blocks, and while
/// the daemon answers it is the single writer. A request that timed out is not carried
/// out by the daemon later: it sees the request's deadline passed.
public final class PreferredBlocklist: BlocklistService {
    let remote: RemoteBlocklist
    let makeLocal: () throws(ServiceError) -> LocalBlocklist
    private var local: LocalBlocklist?
    /// Whether the last request went to the daemon.
    public private(set) var usedDaemon = false

    /// The pins and ledger the running daemon serves, or nil when none answers.
    public var daemonLocation: BlocklistLocation? { try? remote.location() }

    /// Whether a daemon answers on the control socket now.
    public var reachesDaemon: Bool {
        (try? remote.client.send("GET", "/v1/health").status) == 200
    }

    public init(socket: ControlSocketClient, local: @escaping () throws(ServiceError) -> LocalBlocklist) {
        self.remote = RemoteBlocklist(client: socket)
        self.makeLocal = local
    }

    /// Set once the daemon did not answer: the rest of this process's requests go to the
    /// maps at once, instead of each waiting out the timeout again.
    private var daemonUnavailable = false

    private func perform<T>(_ operation: (any BlocklistService) throws(ServiceError) -> T) throws(ServiceError) -> T {
        if !daemonUnavailable {
            do {
                let result = try operation(remote)
                usedDaemon = true
                return result
            } catch {
                guard error.kind == .unavailable else { throw error }
                daemonUnavailable = true
            }
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

    public func block(_ request: BlockRequest, context: IncidentContext) throws(ServiceError) -> BlockOutcome {
        try perform { s throws(ServiceError) in try s.block(request, context: context) }
    }
    public func block(batch: BlockBatch) throws(ServiceError) -> BatchResult { try perform { s throws(ServiceError) in try s.block(batch: batch) } }
    public func unblock(_ target: BlockTarget, requestedBy source: BlockSource, onlyOwn: Bool, origin: String?,
                        context: IncidentContext, throttle: Bool) throws(ServiceError) -> UnblockResult {
        try perform { s throws(ServiceError) in
            try s.unblock(target, requestedBy: source, onlyOwn: onlyOwn, origin: origin, context: context, throttle: throttle)
        }
    }
    public func flush(_ owner: BlockOwner) throws(ServiceError) -> FlushResult { try perform { s throws(ServiceError) in try s.flush(owner) } }
    public func list(_ query: BlockQuery) throws(ServiceError) -> BlockListing { try perform { s throws(ServiceError) in try s.list(query) } }
    public func entry(for target: BlockTarget) throws(ServiceError) -> BlockEntry? { try perform { s throws(ServiceError) in try s.entry(for: target) } }
    public func sweep() throws(ServiceError) -> SweepReport { try perform { s throws(ServiceError) in try s.sweep() } }
    public func allow(_ target: BlockTarget) throws(ServiceError) -> AllowlistChange { try perform { s throws(ServiceError) in try s.allow(target) } }
    public func disallow(_ target: BlockTarget) throws(ServiceError) -> AllowlistChange { try perform { s throws(ServiceError) in try s.disallow(target) } }
    public func allowlist() throws(ServiceError) -> [BlockTarget] { try perform { s throws(ServiceError) in try s.allowlist() } }
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
