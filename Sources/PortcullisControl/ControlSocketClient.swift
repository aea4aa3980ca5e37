import FoundationEssentials
import Glibc
import PortcullisCore
import PortcullisSystem

/// A minimal blocking HTTP/1.1 client for the daemon's Unix control socket.
///
/// The CLI and the Wazuh active response are short-lived processes on a hot
/// path (an AR add must finish in a few milliseconds), so they speak to the
/// daemon with one connect, one write and one read, instead of starting an
/// event loop. The daemon's side is Hummingbird.
public struct ControlSocketClient: Sendable {
    public static let defaultPath = "/run/portcullis/control.sock"
    public static let environmentVariable = "PORTCULLIS_CONTROL_SOCKET"

    /// The header that carries a request's deadline (Unix milliseconds): the daemon carries
    /// out no request whose client has given up on it.
    public static let deadlineHeader = "Portcullis-Deadline"
    /// The largest request body the daemon reads; a client splits what would be larger.
    public static let maximumBodyBytes = 32 << 20
    public static let defaultTimeout: Duration = .seconds(15)

    public let path: String
    /// How long a request may take before this client gives up on it (and the daemon with it).
    public let timeout: Duration

    public init(path: String, timeout: Duration = Self.defaultTimeout) {
        self.path = path
        self.timeout = timeout
    }

    public func with(timeout: Duration) -> ControlSocketClient { ControlSocketClient(path: path, timeout: timeout) }

    /// `--control-socket` wins over `PORTCULLIS_CONTROL_SOCKET`, which wins over the default.
    /// Root talks to the daemon on root's own socket beside it, when the daemon made one.
    public static func resolve(option: String?) -> ControlSocketClient {
        let shared = setting(option: option, environment: environmentVariable) ?? defaultPath
        let root = rootSocketPath(for: shared)
        if geteuid() == 0, access(root, F_OK) == 0 { return ControlSocketClient(path: root) }
        return ControlSocketClient(path: shared)
    }

    /// Root's own socket for a shared one: `private/NAME` beside it, in a directory only root may enter.
    public static func rootSocketPath(for shared: String) -> String {
        guard let directory = SystemCall.parent(of: shared) else { return "private/\(shared)" }
        let name = shared[shared.index(after: shared.lastIndex(of: "/") ?? shared.startIndex)...]
        return "\(directory)/private/\(name)"
    }

    public struct Response: Sendable {
        public let status: Int
        public let body: [UInt8]
    }

    public enum Failure: Error, CustomStringConvertible, Sendable {
        /// No daemon listens there (no socket file, or a stale one).
        case notRunning
        /// A daemon listens, but this user may not talk to it.
        case permissionDenied(String)
        /// The daemon did not answer in time; it will not carry the request out later.
        case timedOut(Duration)
        case failed(String)

        public var description: String {
            switch self {
            case .notRunning: "the Portcullis daemon is not running"
            case .timedOut(let limit): "the Portcullis daemon did not answer within \(DurationText.format(limit)); it drops the request once it sees the deadline passed"
            case .permissionDenied(let path): "permission denied on the control socket \(path): run as root or as a member of its group (portcullis)"
            case .failed(let message): message
            }
        }
    }

    /// Connects, or tells that nobody listens.
    func connect() throws(Failure) -> CInt {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .failed("cannot create a socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw .failed("control socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if status != 0 {
            let code = errno
            close(fd)
            switch code {
            case ENOENT, ECONNREFUSED: throw .notRunning
            case EACCES, EPERM: throw .permissionDenied(path)
            default: throw .failed("cannot connect to \(path): \(String(cString: strerror(code)))")
            }
        }
        Self.setTimeouts(fd, timeout)
        return fd
    }

    /// One request, one response, then the connection closes.
    public func send(_ method: String, _ target: String, body: [UInt8]? = nil) throws(Failure) -> Response {
        try send(method, target) { () throws(Failure) -> [UInt8]? in body }
    }

    /// As ``send(_:_:body:)``, with the body made only once the connection is up.
    public func send(_ method: String, _ target: String, body makeBody: () throws(Failure) -> [UInt8]?) throws(Failure) -> Response {
        let fd = try connect()
        defer { close(fd) }
        let body = try makeBody()
        let deadline = WallClock.nowUnixMilliseconds() + Int64(timeout.components.seconds) * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000
        var head = "\(method) \(target) HTTP/1.1\r\nHost: portcullis\r\nConnection: close\r\nAccept: application/json\r\n"
        head += "\(Self.deadlineHeader): \(deadline)\r\n"
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        head += "\r\n"
        return try Self.exchange(fd, head: head, body: body, timeout: timeout, peer: "the daemon")
    }

    /// Sends one request on a connected socket (whose send and receive timeouts are set) and
    /// reads its whole response. `peer` names the other side in errors.
    static func exchange(_ fd: CInt, head: String, body: [UInt8]?, timeout: Duration, peer: String) throws(Failure) -> Response {
        var bytes = Array(head.utf8) + (body ?? [])
        var offset = 0
        while offset < bytes.count {
            switch SystemCall.retryingInterrupts({ bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }) {
            case .success(let written): offset += written
            case .failure(.wouldBlock): throw .timedOut(timeout)
            case .failure(let code): throw .failed("cannot send to \(peer): \(code)")
            }
        }
        bytes.removeAll()
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        // Known once the headers are in: how many bytes the whole response has.
        var expectedLength: Int?
        while true {
            let count: Int
            switch SystemCall.retryingInterrupts({ recv(fd, &chunk, chunk.count, 0) }) {
            case .success(let received): count = received
            case .failure(.wouldBlock): throw .timedOut(timeout)
            case .failure(let code): throw .failed("no answer from \(peer): \(code)")
            }
            if count == 0 { break }
            response.append(contentsOf: chunk[0..<count])
            if expectedLength == nil { expectedLength = Self.expectedLength(response) }
            if let expectedLength, response.count >= expectedLength, let complete = Self.parse(response) { return complete }
        }
        guard let complete = Self.parse(response, atEnd: true) else {
            throw .failed("the answer of \(peer) was cut short")
        }
        return complete
    }

    /// Sets both of a socket's timeouts.
    static func setTimeouts(_ fd: CInt, _ limit: Duration) {
        let (seconds, attoseconds) = limit.components
        var timeout = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The full length of a response with a Content-Length, once its headers have
    /// arrived; without one (chunked), the end of the connection tells.
    static func expectedLength(_ bytes: [UInt8]) -> Int? {
        guard let headerEnd = bytes.firstRange(of: [13, 10, 13, 10] as [UInt8]) else { return nil }
        let head = String(decoding: bytes[..<headerEnd.lowerBound], as: UTF8.self).lowercased()
        for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
            if let length = Int(line.dropFirst("content-length:".count).trimmingPrefix(" ")) {
                return headerEnd.upperBound + length
            }
        }
        return Int.max
    }

    /// Parses a full response, or returns nil when more bytes are needed.
    static func parse(_ bytes: [UInt8], atEnd: Bool = false) -> Response? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let headerEnd = bytes.firstRange(of: separator) else { return nil }
        let head = String(decoding: bytes[..<headerEnd.lowerBound], as: UTF8.self)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        guard let statusLine = lines.first, statusLine.hasPrefix("HTTP/1."),
              let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else { return atEnd ? Response(status: 502, body: []) : nil }
        var length: Int?
        var chunked = false
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingPrefix(" ")
            if name == "content-length" { length = Int(value) }
            if name == "transfer-encoding" && value.lowercased().contains("chunked") { chunked = true }
        }
        let body = Array(bytes[headerEnd.upperBound...])
        if chunked { return decodeChunked(body).map { Response(status: status, body: $0) } ?? (atEnd ? Response(status: 502, body: []) : nil) }
        if let length {
            guard body.count >= length else { return nil }
            return Response(status: status, body: Array(body.prefix(length)))
        }
        return atEnd ? Response(status: status, body: body) : nil
    }

    private static func decodeChunked(_ bytes: [UInt8]) -> [UInt8]? {
        var output: [UInt8] = []
        var index = 0
        while true {
            guard let lineEnd = bytes[index...].firstRange(of: [13, 10]) else { return nil }
            let sizeText = String(decoding: bytes[index..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingPrefix(" "), radix: 16) else { return nil }
            index = lineEnd.upperBound
            if size == 0 { return output }
            guard bytes.count >= index + size + 2 else { return nil }
            output.append(contentsOf: bytes[index..<index + size])
            index += size + 2
        }
    }
}

/// The same minimal blocking HTTP/1.1 client over TCP, for a plain-HTTP service on this host or
/// near it: CrowdSec's Local API. Blocking, so its callers run it off the cooperative pool.
public struct PlainHTTPClient: Sendable {
    public let host: String
    public let port: Int
    public let timeout: Duration

    public init(host: String, port: Int, timeout: Duration) {
        (self.host, self.port, self.timeout) = (host, port, timeout)
    }

    /// `host:port`, as errors name it.
    public var authority: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// One GET, one response, then the connection closes.
    public func get(_ target: String, headers: [(String, String)]) throws(ControlSocketClient.Failure) -> ControlSocketClient.Response {
        let fd = try connect()
        defer { close(fd) }
        var head = "GET \(target) HTTP/1.1\r\nHost: \(authority)\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: portcullis\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        head += "\r\n"
        return try ControlSocketClient.exchange(fd, head: head, body: nil, timeout: timeout, peer: authority)
    }

    private func connect() throws(ControlSocketClient.Failure) -> CInt {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_ADDRCONFIG
        var found: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &found)
        guard status == 0, let first = found else {
            throw .failed("cannot resolve \(host): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(first) }
        var lastError = ECONNREFUSED
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let candidate = entry {
            entry = candidate.pointee.ai_next
            let fd = socket(candidate.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { continue }
            ControlSocketClient.setTimeouts(fd, timeout)
            if Glibc.connect(fd, candidate.pointee.ai_addr, candidate.pointee.ai_addrlen) == 0 { return fd }
            lastError = errno
            close(fd)
        }
        if lastError == EINPROGRESS || lastError == EAGAIN { throw .timedOut(timeout) }
        throw .failed("cannot connect to \(authority): \(String(cString: strerror(lastError)))")
    }
}
