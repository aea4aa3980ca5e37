import FoundationEssentials
import Hummingbird
import ServiceLifecycle
import PortcullisBPF
import PortcullisControl
import PortcullisCore
import PortcullisIncidents
import PortcullisLedger
import PortcullisSystem
import Logging

/// The control API: HTTP with JSON over the Unix control socket.
///
///     POST   /v1/blocks            {"target", "duration"?, "reason"?, "source"?, "origin"?, "expiresAtUnixMs"?}
///                                  block or refresh; with "rate" (packets per second), "burst"?,
///                                  "newConnections"?: a throttle
///     POST   /v1/blocks/batch      {"items": [{"target", "durationSeconds"?}], ...}
///     GET    /v1/blocks            ?family=ipv4|ipv6 &kind=address|prefix &source= &expired=true|false
///                                  &contains=ADDRESS &limit=N (0: all; default 100) &offset=N
///                                  &after=TARGET (the blocks after it: a cursor for paging everything)
///     GET    /v1/block?target=T    one block
///     DELETE /v1/blocks?target=T   unblock (also POST /v1/unblock {"target", "source"?, "onlyOwn"?, "origin"?};
///                                  {"throttle": true} unthrottles)
///     POST   /v1/flush             {"source", "origin"?}: lift every block that owner holds, no other
///     POST   /v1/sweep             remove expired blocks now
///     GET    /v1/stats             packet counters
///     GET    /v1/allowlist         POST /v1/allowlist {"target"}   DELETE /v1/allowlist?target=T
///     GET    /v1/incidents         ?since=YYYY-MM-DD or RFC 3339 &address=A &limit=N
///     GET    /v1/top               ?blocks=N (256) &expiring=N (10) &incidents=N (10)
///                                  the live view: rates now, sampled at a bounded cost
///     GET    /v1/status            attachments and maps
///     GET    /v1/fleet             the fleet's health (404 outside a fleet)
///     GET    /v1/health
///
/// A bad request gets a 4xx status and `{"error": "..."}`, and changes nothing. A change whose
/// incident record could not be written still answers 200, since it is in force, with
/// `"incidentRecord": {"written": false, "log", "error"}` (see ``IncidentRecordBody``).
enum ControlAPI {
    static let maximumBody = ControlSocketClient.maximumBodyBytes
    /// Connections the shared socket (root and the control group) holds at once; the rest wait.
    static let sharedConnectionLimit = 256
    /// Connections root's own socket holds at once. With the shared socket's, far below the
    /// daemon's descriptor limit (the unit's LimitNOFILE=8192), which the maps, logs and
    /// user-defined commands also need.
    static let rootConnectionLimit = 64
    /// A connection that sends nothing for this long is closed.
    static let idleTimeout: Duration = .seconds(10)

    /// The API on one Unix socket, with the connection limit and idle timeout every control socket has.
    static func server(
        router: Router<BasicRequestContext>, socketPath: String, connectionLimit: Int, label: String, logger: Logger,
        onRunning: @escaping @Sendable () -> Void
    ) -> some Service {
        Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: .seconds(Int64(idleTimeout.components.seconds)))),
            configuration: .init(
                address: .unixDomainSocket(path: socketPath), serverName: "portcullis",
                availableConnectionsDelegate: .maximum(connectionLimit, logger: logger)),
            onServerRunning: { _ in onRunning() },
            logger: Logger(label: label))
    }

    static func router(keeper: BlocklistKeeper) -> Router<BasicRequestContext> {
        let router = Router()
        router.middlewares.add(JSONErrors())
        router.middlewares.add(DeadlineMiddleware(logger: keeper.logger))
        let blocks = BlockRoutes(keeper: keeper)
        let allowlist = AllowlistRoutes(keeper: keeper)
        let state = StateRoutes(keeper: keeper)

        router.get("v1/health") { _, _ in
            let problems = await keeper.problems
            guard !problems.isEmpty else { return try json(["status": "ok"]) }
            return try json(HealthBody(status: "degraded", problems: problems), status: .serviceUnavailable)
        }
        router.post("v1/blocks", use: blocks.block)
        router.post("v1/blocks/batch", use: blocks.blockBatch)
        router.get("v1/blocks", use: blocks.list)
        router.get("v1/block", use: blocks.one)
        router.delete("v1/blocks", use: blocks.unblockByQuery)
        router.post("v1/unblock", use: blocks.unblock)
        router.post("v1/sweep", use: blocks.sweep)
        router.post("v1/flush", use: blocks.flush)
        router.get("v1/allowlist", use: allowlist.list)
        router.post("v1/allowlist", use: allowlist.allow)
        router.delete("v1/allowlist", use: allowlist.disallow)
        router.get("v1/stats", use: state.statistics)
        router.get("v1/incidents", use: state.incidents)
        router.get("v1/status", use: state.status)
        router.get("v1/top", use: state.top)
        router.get("v1/fleet") { _, _ in
            guard let fleet = await keeper.fleet else { throw ServiceError(.notFound, "this daemon is not in a fleet (no fleet: in its configuration)") }
            return try json(fleet.health())
        }
        return router
    }

    /// The listing a request's query parameters ask for. Every filter is answered by the
    /// ledger's indexes; only the page is read and formatted.
    static func query(_ parameters: Parameters) throws -> BlockQuery {
        var query = BlockQuery()
        if let family = parameters["family"].map(String.init) {
            guard let wanted = AddressFamily(rawValue: family) else { throw ServiceError(.badRequest, "family must be ipv4 or ipv6") }
            query.family = wanted
        }
        if let kind = parameters["kind"].map(String.init) {
            guard let wanted = BlockKind(rawValue: kind) else { throw ServiceError(.badRequest, "kind must be address or prefix") }
            query.kind = wanted
        }
        if let source = parameters["source"].map(String.init) {
            query.source = try RequestParsing.source(source, default: .api)
        }
        if let expired = parameters["expired"].map(String.init) {
            guard expired == "true" || expired == "false" else { throw ServiceError(.badRequest, "expired must be true or false") }
            query.expired = expired == "true"
        }
        if let contains = parameters["contains"].map(String.init) {
            do { query.containing = try IPAddress(parsing: contains) } catch { throw ServiceError(.badRequest, error.description) }
        }
        if let after = parameters["after"].map(String.init) {
            query.after = try RequestParsing.target(after).target
        }
        query.offset = try number("offset", parameters, default: 0)
        let limit = try number("limit", parameters, default: 100)
        query.limit = limit == 0 ? nil : limit
        return query
    }

    static func number(_ name: String, _ parameters: Parameters, default fallback: Int) throws -> Int {
        guard let text = parameters[Substring(name)] else { return fallback }
        guard let value = Int(text), value >= 0 else { throw ServiceError(.badRequest, "\(name) must be a whole number, not '\(TerminalText.excerpt(text))'") }
        return value
    }

    static func required(_ name: String, _ request: Request) throws -> String {
        guard let value = request.uri.queryParameters[Substring(name)].map(String.init), !value.isEmpty else {
            throw ServiceError(.badRequest, "the query parameter \(name) is missing")
        }
        return value
    }

    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, _ context: BasicRequestContext) async throws -> T {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: maximumBody)
        } catch {
            throw ServiceError(.badRequest, "the request body is larger than \(maximumBody >> 20) MiB")
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView))
        } catch DecodingError.keyNotFound(let key, _) {
            throw ServiceError(.badRequest, "the body lacks the field \(key.stringValue)")
        } catch DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ServiceError(.badRequest, "the field \(field) has the wrong type")
        } catch {
            throw ServiceError(.badRequest, "the body is not valid JSON")
        }
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(value)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

struct HealthBody: Encodable {
    let status: String
    let problems: [String]
}

/// Blocks: each handler turns the wire's JSON into typed requests for the keeper, and its
/// typed answer back into JSON.
struct BlockRoutes: Sendable {
    let keeper: BlocklistKeeper

    @Sendable func block(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let body = try await ControlAPI.decode(BlockBody.self, request, context)
        let parsed = try RequestParsing.target(body.target)
        let outcome = try await keeper.block(try body.request(defaultSource: .api), context: body.context)
        return try ControlAPI.json(BlockResponse(outcome, notes: parsed.notes))
    }

    @Sendable func blockBatch(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let body = try await ControlAPI.decode(BatchBody.self, request, context)
        return try ControlAPI.json(BatchResponse(try await keeper.block(batch: try body.batch())))
    }

    @Sendable func list(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let query = try ControlAPI.query(request.uri.queryParameters)
        let listing = try await keeper.reader.list(query)
        return try ControlAPI.json(BlockPage(
            total: listing.total, offset: query.offset, limit: query.limit ?? 0, blocks: listing.entries.map(BlockRecord.init)))
    }

    @Sendable func one(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let target = try RequestParsing.target(try ControlAPI.required("target", request)).target
        guard let entry = try await keeper.reader.entry(for: target) else {
            throw ServiceError(.notFound, "\(target) is not blocked")
        }
        return try ControlAPI.json(BlockRecord(entry))
    }

    @Sendable func unblockByQuery(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let target = try RequestParsing.target(try ControlAPI.required("target", request)).target
        let result = try await keeper.unblock(target, requestedBy: .api, onlyOwn: false, context: .none)
        return try ControlAPI.json(UnblockResponse(target: target, result))
    }

    @Sendable func unblock(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let body = try await ControlAPI.decode(UnblockBody.self, request, context)
        let target = try RequestParsing.target(body.target).target
        let source = try RequestParsing.source(body.source, default: .api)
        let result = try await keeper.unblock(
            target, requestedBy: source, onlyOwn: body.onlyOwn == true, origin: body.origin, context: IncidentContext(wazuh: body.wazuh),
            throttle: body.throttle == true)
        return try ControlAPI.json(UnblockResponse(target: target, result))
    }

    @Sendable func flush(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let body = try await ControlAPI.decode(FlushBody.self, request, context)
        return try ControlAPI.json(FlushResponse(try await keeper.flush(try body.owner())))
    }

    @Sendable func sweep(_ request: Request, context: BasicRequestContext) async throws -> Response {
        try ControlAPI.json(SweepResponse(try await keeper.sweep()))
    }
}

struct AllowlistRoutes: Sendable {
    let keeper: BlocklistKeeper

    @Sendable func list(_ request: Request, context: BasicRequestContext) async throws -> Response {
        try ControlAPI.json(try await keeper.reader.allowlist().map(\.description))
    }

    @Sendable func allow(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let body = try await ControlAPI.decode(AllowBody.self, request, context)
        let target = try RequestParsing.target(body.target).target
        return try ControlAPI.json(AllowResponse(target: target, change: try await keeper.allow(target)))
    }

    @Sendable func disallow(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let target = try RequestParsing.target(try ControlAPI.required("target", request)).target
        return try ControlAPI.json(AllowResponse(target: target, change: try await keeper.disallow(target)))
    }
}

struct StateRoutes: Sendable {
    let keeper: BlocklistKeeper

    @Sendable func statistics(_ request: Request, context: BasicRequestContext) async throws -> Response {
        try ControlAPI.json(try await keeper.reader.statistics())
    }

    @Sendable func top(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let parameters = request.uri.queryParameters
        func bounded(_ name: String, default fallback: Int, maximum: Int) throws -> Int {
            let value = try ControlAPI.number(name, parameters, default: fallback)
            guard value <= maximum else { throw ServiceError(.badRequest, "\(name) must be at most \(maximum)") }
            return value
        }
        let blocks = try bounded("blocks", default: TopSampler.maximumBlocks, maximum: TopSampler.maximumBlocks)
        let expiring = try bounded("expiring", default: 10, maximum: TopSampler.maximumExpiring)
        let incidents = try bounded("incidents", default: 10, maximum: TopSampler.maximumIncidents)
        return try ControlAPI.json(try await keeper.reader.top(blocks: blocks, expiring: expiring, incidents: incidents))
    }

    @Sendable func status(_ request: Request, context: BasicRequestContext) async throws -> Response {
        try ControlAPI.json(try await keeper.status())
    }

    @Sendable func incidents(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let parameters = request.uri.queryParameters
        let query = try IncidentQuery(
            since: parameters["since"].map(String.init), address: parameters["address"].map(String.init))
        let path = await keeper.configuration.incidentLog
        let limit = try ControlAPI.number("limit", parameters, default: 1000)
        // From the ledger's index of the record: the cost follows what is asked, not the log's length.
        return try ControlAPI.json(try await keeper.reader.incidents(query, limit: limit == 0 ? nil : limit, log: IncidentLog(path: path)))
    }
}

/// Refuses a request whose client has given up on it (its `Portcullis-Deadline` passed):
/// a daemon that was stopped or slow must not carry out, minutes later, a block or an
/// unblock its client already reported as failed, or did another way.
struct DeadlineMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let name = ControlSocketClient.deadlineHeader.lowercased()
        if let text = request.headers.first(where: { $0.name.canonicalName == name })?.value {
            guard let deadline = Int64(text) else {
                throw ServiceError(.badRequest, "the \(ControlSocketClient.deadlineHeader) header must be Unix milliseconds, not '\(TerminalText.excerpt(text))'")
            }
            let late = WallClock.nowUnixMilliseconds() - deadline
            if late > 0 {
                logger.warning("dropped \(request.method) \(request.uri.path): its client gave up \(late) ms ago")
                throw ServiceError(.expired, "the request's deadline passed \(late) ms ago; nothing was done")
            }
        }
        return try await next(request, context)
    }
}

/// Turns every failure into a JSON body with the status its kind maps to.
struct JSONErrors: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as ServiceError {
            return try ControlAPI.json(ErrorBody(error: error.message), status: .init(code: error.httpStatus))
        } catch let error as HTTPError {
            let message = error.body ?? (error.status == .notFound ? "no such endpoint: \(request.method) \(request.uri.path)" : "\(error.status)")
            return try ControlAPI.json(ErrorBody(error: message), status: error.status)
        } catch {
            return try ControlAPI.json(ErrorBody(error: "\(error)"), status: .internalServerError)
        }
    }
}

import Glibc
