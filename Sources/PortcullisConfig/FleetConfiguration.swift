import Glibc
import PortcullisCore
import PortcullisSystem
import Yams

/// The `fleet:` section: bastions that share one blocklist through PostgreSQL. Each node keeps
/// enforcing its own ledger and maps; the database only carries changes between them.
public struct FleetConfiguration: Sendable, Equatable {
    /// Where the database is: a TCP host and port, or the directory of a Unix socket.
    public enum Endpoint: Sendable, Equatable, CustomStringConvertible {
        case tcp(host: String, port: Int)
        /// The socket's directory (libpq's `host=/run/postgresql`) and the port that names the socket.
        case socket(directory: String, port: Int)

        public var description: String {
            switch self {
            case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .socket(let directory, let port): "\(directory)/.s.PGSQL.\(port)"
            }
        }
    }

    public enum TLSMode: String, Sendable, Equatable, CaseIterable {
        /// No TLS: a Unix socket, or a network the operator trusts.
        case disable
        /// Encrypted, the server's certificate not checked.
        case require
        /// Encrypted, the certificate checked against `ca_file` (or the system's roots) and the host name.
        case verifyFull = "verify-full"
    }

    public struct TLS: Sendable, Equatable {
        public var mode: TLSMode
        public var caFile: String?
        /// A client certificate and its key, for `cert` authentication.
        public var certificateFile: String?
        public var keyFile: String?

        public init(mode: TLSMode, caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
            (self.mode, self.caFile, self.certificateFile, self.keyFile) = (mode, caFile, certificateFile, keyFile)
        }
    }

    public var endpoint: Endpoint
    public var user: String
    public var database: String
    /// A file of mode 0600 holding the password; nil when the server needs none (peer, cert).
    public var passwordFile: String?
    /// This host's name in the fleet: every change it publishes carries it.
    public var node: String
    /// The sources whose blocks go fleet-wide; the others stay on this host.
    public var share: Set<BlockSource>
    public var tls: TLS
    /// How often the change log is read again whether or not a notification came: the fallback
    /// for a notification lost with a connection.
    public var resyncInterval: Duration

    public static let defaultShare: Set<BlockSource> = [.detector, .wazuh, .api]
    public static let defaultResyncInterval: Duration = .seconds(10)

    public init(endpoint: Endpoint, user: String, database: String, passwordFile: String? = nil, node: String,
                share: Set<BlockSource> = defaultShare, tls: TLS, resyncInterval: Duration = defaultResyncInterval) {
        (self.endpoint, self.user, self.database, self.passwordFile, self.node) = (endpoint, user, database, passwordFile, node)
        (self.share, self.tls, self.resyncInterval) = (share, tls, resyncInterval)
    }

    /// The longest node name kept: it is written into every change and every incident record.
    public static let maximumNodeBytes = 64

    /// Whether `name` may name a node: letters, digits, `.`, `-` and `_`, as a host name.
    public static func isValidNode(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= maximumNodeBytes
            && name.utf8.allSatisfy { byte in
                (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                    || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                    || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
            }
    }

    /// This host's name, the default `node:`.
    public static func hostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "localhost" : name
    }

    /// Reads the password: the file must be a regular file that only its owner may read or
    /// write (mode 0600 or stricter), since it opens the fleet's blocklist to whoever has it.
    public func readPassword() throws(FleetPasswordError) -> String? {
        guard let passwordFile else { return nil }
        var info = stat()
        guard stat(passwordFile, &info) == 0 else {
            throw FleetPasswordError(message: "cannot read the password file \(passwordFile): \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw FleetPasswordError(message: "the password file \(passwordFile) is not a regular file")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw FleetPasswordError(message: "the password file \(passwordFile) has mode \(String(info.st_mode & 0o777, radix: 8)); it must be 0600 (chmod 600 \(passwordFile))")
        }
        let bytes: [UInt8]
        do {
            bytes = try readWholeFile(passwordFile, maximumBytes: 4096)
        } catch {
            throw FleetPasswordError(message: error.problem ?? "cannot read the password file \(passwordFile): \(String(cString: strerror(error.code)))")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw FleetPasswordError(message: "the password file \(passwordFile) is not UTF-8 text")
        }
        // One line; the newline an editor adds is not part of the password.
        let password = text.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard !password.isEmpty else { throw FleetPasswordError(message: "the password file \(passwordFile) is empty") }
        return password
    }
}

public struct FleetPasswordError: Error, Equatable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// A PostgreSQL connection URL: `postgres://USER@HOST[:PORT]/DATABASE`, with `?host=/DIR` for a
/// Unix socket. A password in it is refused: it belongs in `password_file:`.
struct PostgresURL: Equatable {
    var endpoint: FleetConfiguration.Endpoint
    var user: String
    var database: String

    static func parse(_ text: String) throws(URLProblem) -> PostgresURL {
        let rest: Substring
        if text.hasPrefix("postgres://") {
            rest = text.dropFirst("postgres://".count)
        } else if text.hasPrefix("postgresql://") {
            rest = text.dropFirst("postgresql://".count)
        } else {
            throw URLProblem("'\(TerminalText.excerpt(text))' must start with postgres:// (postgres://USER@HOST:PORT/DATABASE)")
        }
        var authority = rest.prefix { $0 != "/" && $0 != "?" }
        var path = rest.dropFirst(authority.count)
        var query: Substring = ""
        if let mark = path.firstIndex(of: "?") {
            query = path[path.index(after: mark)...]
            path = path[..<mark]
        }
        guard let at = authority.lastIndex(of: "@") else {
            throw URLProblem("'\(TerminalText.excerpt(text))' names no user (postgres://USER@HOST/DATABASE)")
        }
        let userInfo = authority[..<at]
        authority = authority[authority.index(after: at)...]
        guard !userInfo.contains(":") else {
            throw URLProblem("the URL holds a password; put it in a file of mode 0600 named by password_file:")
        }
        let user = try decode(userInfo)
        guard !user.isEmpty else { throw URLProblem("the URL names no user (postgres://USER@HOST/DATABASE)") }
        let database = try decode(path.drop { $0 == "/" })
        guard !database.isEmpty, !database.contains("/") else {
            throw URLProblem("'\(TerminalText.excerpt(text))' names no database (postgres://USER@HOST/DATABASE)")
        }
        var host: Substring = authority
        var port = 5432
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw URLProblem("'\(TerminalText.excerpt(authority))' is not HOST:PORT") }
                port = try number(after.dropFirst())
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            port = try number(authority[authority.index(after: colon)...])
        }
        var socketDirectory: String?
        for parameter in query.split(separator: "&") {
            let parts = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = parts[0], value = try decode(parts.count > 1 ? parts[1] : "")
            switch name {
            case "host":
                guard value.hasPrefix("/") else { throw URLProblem("host=\(TerminalText.excerpt(value)) must be the absolute path of a socket directory") }
                socketDirectory = value
            case "port": port = try number(Substring(value))
            default: throw URLProblem("unknown URL parameter '\(TerminalText.excerpt(name))' (known: host, port; TLS is set under tls:)")
            }
        }
        if let socketDirectory {
            guard host.isEmpty else { throw URLProblem("give either a host or ?host=/socket/dir, not both") }
            return PostgresURL(endpoint: .socket(directory: socketDirectory, port: port), user: user, database: database)
        }
        guard !host.isEmpty else { throw URLProblem("'\(TerminalText.excerpt(text))' names no host (or ?host=/socket/dir)") }
        let hostName = try decode(host)
        guard hostName.utf8.count <= 253, hostName.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":" || $0 == "_" }) else {
            throw URLProblem("'\(TerminalText.excerpt(hostName))' is not a host name or address")
        }
        return PostgresURL(endpoint: .tcp(host: hostName, port: port), user: user, database: database)
    }

    private static func number(_ text: Substring) throws(URLProblem) -> Int {
        guard let port = Int(text), (1...65535).contains(port) else {
            throw URLProblem("'\(TerminalText.excerpt(text))' is not a port from 1 to 65535")
        }
        return port
    }

    /// Percent-decoding, strictly: a stray `%` or bytes that are not UTF-8 are errors.
    private static func decode(_ text: Substring) throws(URLProblem) -> String {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next(), let low = iterator.next(),
                  let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) else {
                throw URLProblem("'\(TerminalText.excerpt(text))' has a % not followed by two hex digits")
            }
            bytes.append(value)
        }
        guard let decoded = String(validating: bytes, as: UTF8.self), !decoded.contains("\0") else {
            throw URLProblem("'\(TerminalText.excerpt(text))' does not decode to text")
        }
        return decoded
    }
}

struct URLProblem: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

extension Reader {
    func fleet(_ node: Node, _ key: String) throws(ConfigurationError) -> FleetConfiguration {
        guard let mapping = node.mapping else { throw fail(node, key, "expected postgres, password_file, node, share, tls, resync_interval") }
        var url: PostgresURL?
        var passwordFile: String?
        var name = FleetConfiguration.hostname()
        var share = FleetConfiguration.defaultShare
        var tls: FleetConfiguration.TLS?
        var resync = FleetConfiguration.defaultResyncInterval
        for (field, value) in mapping {
            let path = "\(key).\(field.string ?? "?")"
            switch field.string {
            case "postgres":
                do {
                    url = try PostgresURL.parse(try nonEmptyString(value, path))
                } catch let problem as URLProblem {
                    throw fail(value, path, problem.message)
                } catch let error as ConfigurationError {
                    throw error
                } catch {
                    throw fail(value, path, "\(error)")
                }
            case "password_file": passwordFile = try absolutePath(value, path)
            case "node":
                name = try nonEmptyString(value, path)
                guard FleetConfiguration.isValidNode(name) else {
                    throw fail(value, path, "'\(TerminalText.excerpt(name))' is not a node name (letters, digits, '.', '-', '_'; at most \(FleetConfiguration.maximumNodeBytes) bytes)")
                }
            case "share":
                guard let list = value.sequence else { throw fail(value, path, "expected a list of sources (detector, wazuh, api, cli, file)") }
                share = []
                for item in list {
                    let text = try scalar(item, path)
                    do {
                        share.insert(try BlockSource.named(text))
                    } catch {
                        throw fail(item, path, error.description)
                    }
                }
            case "tls": tls = try fleetTLS(value, path)
            case "resync_interval":
                resync = try duration(value, path)
                guard resync >= .seconds(1), resync <= .seconds(3600) else {
                    throw fail(value, path, "must be from 1s to 1h")
                }
            default: throw fail(field, path, "unknown key (known: postgres, password_file, node, share, tls, resync_interval)")
            }
        }
        guard let url else { throw fail(node, key, "give `postgres:` the database's URL (postgres://USER@HOST:PORT/DATABASE)") }
        // A Unix socket stays on the host: TLS adds nothing there. Over the network the server is checked.
        let defaultTLS: FleetConfiguration.TLSMode = if case .socket = url.endpoint { .disable } else { .verifyFull }
        return FleetConfiguration(endpoint: url.endpoint, user: url.user, database: url.database, passwordFile: passwordFile,
                                  node: name, share: share, tls: tls ?? .init(mode: defaultTLS), resyncInterval: resync)
    }

    func fleetTLS(_ node: Node, _ key: String) throws(ConfigurationError) -> FleetConfiguration.TLS {
        guard let mapping = node.mapping else { throw fail(node, key, "expected mode, ca_file, cert_file, key_file") }
        var tls = FleetConfiguration.TLS(mode: .verifyFull)
        for (field, value) in mapping {
            let path = "\(key).\(field.string ?? "?")"
            switch field.string {
            case "mode":
                let text = try scalar(value, path)
                guard let mode = FleetConfiguration.TLSMode(rawValue: text) else {
                    throw fail(value, path, "'\(TerminalText.excerpt(text))' is not disable, require or verify-full")
                }
                tls.mode = mode
            case "ca_file": tls.caFile = try absolutePath(value, path)
            case "cert_file": tls.certificateFile = try absolutePath(value, path)
            case "key_file": tls.keyFile = try absolutePath(value, path)
            default: throw fail(field, path, "unknown key (known: mode, ca_file, cert_file, key_file)")
            }
        }
        guard (tls.certificateFile == nil) == (tls.keyFile == nil) else {
            throw fail(node, key, "give cert_file and key_file together")
        }
        if tls.mode == .disable, tls.caFile != nil || tls.certificateFile != nil {
            throw fail(node, key, "ca_file, cert_file and key_file need mode require or verify-full")
        }
        return tls
    }
}
