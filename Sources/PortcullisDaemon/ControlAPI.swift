import FoundationEssentials
import Hummingbird
import PortcullisBPF
import PortcullisControl
import PortcullisCore
import PortcullisIncidents

/// The control API: HTTP with JSON over the Unix control socket.
///
///     POST   /v1/blocks            {"target", "duration"?, "reason"?, "source"?}  block or refresh
///     POST   /v1/blocks/batch      {"items": [{"target", "durationSeconds"?}], ...}
///     GET    /v1/blocks            ?family=ipv4|ipv6 &kind=address|prefix &source= &expired=true|false
///                                  &contains=ADDRESS &limit=N (0: all; default 100) &offset=N
///     GET    /v1/block?target=T    one block
///     DELETE /v1/blocks?target=T   unblock (also POST /v1/unblock {"target"})
///     POST   /v1/sweep             remove expired blocks now
///     GET    /v1/stats             packet counters
///     GET    /v1/allowlist         POST /v1/allowlist {"target"}   DELETE /v1/allowlist?target=T
///     GET    /v1/incidents         ?since=YYYY-MM-DD or RFC 3339 &address=A &limit=N
///     GET    /v1/status            attachments and maps
///     GET    /v1/health
///
/// A bad request gets a 4xx status and `{"error": "..."}`, and changes nothing.
enum ControlAPI {
    static let maximumBody = 16 << 20

    static func router(keeper: BlocklistKeeper) -> Router<BasicRequestContext> {
        let router = Router()
        router.middlewares.add(JSONErrors())

        router.get("v1/health") { _, _ in try json(["status": "ok"]) }

        router.post("v1/blocks") { request, context in
            let body = try await decode(BlockBody.self, request, context)
            return try json(await keeper.block(body))
        }
        router.post("v1/blocks/batch") { request, context in
            let body = try await decode(BatchBody.self, request, context)
            return try json(await keeper.block(batch: body))
        }
        router.get("v1/blocks") { request, _ in
            try json(await page(keeper.list(), request.uri.queryParameters))
        }
        router.get("v1/block") { request, _ in
            let target = try RequestParsing.target(try required("target", request)).target.description
            guard let block = try await keeper.list().first(where: { $0.target == target }) else {
                throw ServiceError(.notFound, "\(target) is not blocked")
            }
            return try json(block)
        }
        router.delete("v1/blocks") { request, _ in
            try json(await keeper.unblock(try required("target", request), source: "api", wazuh: nil))
        }
        router.post("v1/unblock") { request, context in
            let body = try await decode(UnblockBody.self, request, context)
            if body.onlyOwn == true {
                return try json(await keeper.unblock(body.target, ownedBy: body.source ?? "api", wazuh: body.wazuh))
            }
            return try json(await keeper.unblock(body.target, source: body.source ?? "api", wazuh: body.wazuh))
        }
        router.post("v1/sweep") { _, _ in try json(await keeper.sweep()) }
        router.get("v1/stats") { _, _ in try json(await keeper.statistics()) }
        router.get("v1/allowlist") { _, _ in try json(await keeper.allowlist()) }
        router.post("v1/allowlist") { request, context in
            let body = try await decode(AllowBody.self, request, context)
            return try json(await keeper.allow(body.target))
        }
        router.delete("v1/allowlist") { request, _ in
            try json(await keeper.disallow(try required("target", request)))
        }
        router.get("v1/incidents") { request, _ in
            let parameters = request.uri.queryParameters
            let query = try IncidentQuery(
                since: parameters["since"].map(String.init), address: parameters["address"].map(String.init))
            let path = await keeper.configuration.incidentLog
            let limit = try number("limit", parameters, default: 1000)
            do {
                return try json(Array(query.filter(try IncidentLog(path: path).read()).suffix(limit == 0 ? Int.max : limit)))
            } catch let error as IncidentLogError {
                throw ServiceError(.failed, error.description)
            }
        }
        router.get("v1/status") { _, _ in try json(await keeper.status()) }
        return router
    }

    static func page(_ blocks: [BlockRecord], _ parameters: Parameters) throws -> BlockPage {
        var selected = blocks
        if let family = parameters["family"].map(String.init) {
            guard family == "ipv4" || family == "ipv6" else { throw ServiceError(.badRequest, "family must be ipv4 or ipv6") }
            selected = selected.filter { $0.family == family }
        }
        if let kind = parameters["kind"].map(String.init) {
            guard kind == "address" || kind == "prefix" else { throw ServiceError(.badRequest, "kind must be address or prefix") }
            selected = selected.filter { $0.kind == kind }
        }
        if let source = parameters["source"].map(String.init) {
            _ = try RequestParsing.source(source, default: .api)
            selected = selected.filter { $0.source == source }
        }
        if let expired = parameters["expired"].map(String.init) {
            guard expired == "true" || expired == "false" else { throw ServiceError(.badRequest, "expired must be true or false") }
            selected = selected.filter { $0.expired == (expired == "true") }
        }
        if let contains = parameters["contains"].map(String.init) {
            let address: IPAddress
            do { address = try IPAddress(parsing: contains) } catch { throw ServiceError(.badRequest, error.description) }
            selected = selected.filter { record in
                switch try? BlockTarget.parse(record.target).target {
                case .address(let blocked): blocked == address
                case .prefix(let prefix): prefix.contains(address)
                case nil: false
                }
            }
        }
        let offset = try number("offset", parameters, default: 0)
        let limit = try number("limit", parameters, default: 100)
        let window = selected.dropFirst(offset).prefix(limit == 0 ? Int.max : limit)
        return BlockPage(total: selected.count, offset: offset, limit: limit, blocks: Array(window))
    }

    static func number(_ name: String, _ parameters: Parameters, default fallback: Int) throws -> Int {
        guard let text = parameters[Substring(name)] else { return fallback }
        guard let value = Int(text), value >= 0 else { throw ServiceError(.badRequest, "\(name) must be a whole number, not '\(text)'") }
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
