import Glibc
import PortcullisCore
import PortcullisSystem
import Yams

/// The daemon's configuration, from /etc/portcullis/portcullis.yaml (see
/// dist/portcullis.yaml for every key, commented).
public struct DaemonConfiguration: Sendable, Equatable {
    public struct Interface: Sendable, Equatable {
        public var name: String
        /// native, generic or auto
        public var mode: String
        /// A named network namespace (`ip netns`), nil for the host's.
        public var netns: String?
        /// Shares the interface through libxdp's dispatcher instead of taking it alone.
        public var cooperative = false
        /// The place in libxdp's dispatcher when cooperative (lower runs first); nil for the default.
        public var priority: UInt32?

        public init(name: String, mode: String, netns: String?, cooperative: Bool = false, priority: UInt32? = nil) {
            (self.name, self.mode, self.netns, self.cooperative, self.priority) = (name, mode, netns, cooperative, priority)
        }
    }

    public struct Address: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            (self.host, self.port) = (host, port)
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    public static let defaultPath = "/etc/portcullis/portcullis.yaml"

    /// The standalone detector: log sources, rules, and the ossec.conf-style responses.
    public struct Detector: Sendable, Equatable {
        public enum Source: Sendable, Equatable, CustomStringConvertible {
            /// A log file, followed across rotation and truncation. Syslog lines, or, with
            /// `program`, lines one program wrote itself (`sshd -E FILE`).
            case file(String, program: String?)
            /// The journal, `journalctl -f -o json`, for one unit or (nil) every sshd message.
            case journal(unit: String?)

            public var description: String {
                switch self {
                case .file(let path, _): path
                case .journal(let unit): "journal" + (unit.map { ":\($0)" } ?? "")
                }
            }
        }

        /// The ossec.conf-style file with <command>, <active-response> and <global><white_list>.
        public var activeResponse: String?
        public var sources: [Source] = []
        /// Rule files (Portcullis YAML) added to the rules.
        public var rules: [String] = []
        /// Wazuh's XML rule and decoder files, or directories of them; when given, they
        /// replace the built-in sshd rules.
        public var wazuhRuleset: [String] = []
        /// Where executables of user-defined <command>s are (as Wazuh's active-response/bin).
        public var commandsDirectory = "/var/ossec/active-response/bin"

        public init() {}
    }

    /// The CrowdSec bouncer: the Local API's decision stream, pulled into the blocklist.
    public struct CrowdSec: Sendable, Equatable {
        /// The Local API, `http://HOST:PORT` (plain HTTP: a LAPI on this host or a near one).
        public var lapi: Address
        /// The bouncer's key (`cscli bouncers add NAME`), in a file only its owner may read (0600).
        public var apiKeyFile: String
        /// How often the stream is pulled.
        public var updateFrequency: Duration = .seconds(10)
        /// Only decisions from these origins (crowdsec, cscli, CAPI, lists, ...); empty: all.
        public var origins: [String] = []
        /// Only decisions whose scenario contains one of these; empty: all.
        public var scenarios: [String] = []

        public init(lapi: Address, apiKeyFile: String) { (self.lapi, self.apiKeyFile) = (lapi, apiKeyFile) }
    }

    public var pinDirectory = "/sys/fs/bpf/portcullis"
    /// Where the ledger and the incident key live; nil: $PORTCULLIS_STATE_DIR, then /var/lib/portcullis.
    public var stateDirectory: String?
    public var interfaces: [Interface] = []
    public var capacityExact: UInt32 = 1_048_576
    public var capacityPrefixes: UInt32 = 65_536
    public var sweepInterval: Duration = .seconds(10)
    public var allowlist: [BlockTarget] = []
    public var controlSocket = "/run/portcullis/control.sock"
    /// The group given read and write access to the control socket (mode 0660).
    public var controlGroup = "portcullis"
    /// nil turns the metrics endpoint off.
    public var metricsAddress: Address? = Address(host: "127.0.0.1", port: 9469)
    public var incidentLog = "/var/log/portcullis/incidents.jsonl"
    public var detachOnExit = false
    /// Whether a configured interface the program was taken off (by someone else) is attached
    /// again; off, the daemon only reports it in its log, health and metrics.
    public var reattach = true
    /// nil: no log watching.
    public var detector: Detector?
    /// nil: no CrowdSec bouncer.
    public var crowdsec: CrowdSec?
    /// nil: this host's blocklist is its own.
    public var fleet: FleetConfiguration?

    public init() {}

    /// A configuration is a page of YAML; anything this large is a mistake (or /dev/zero).
    public static let maximumFileBytes = 1 << 20

    /// Where the first byte that is not UTF-8 stands.
    static func utf8ErrorOffset(_ bytes: [UInt8]) -> Int? {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        var offset = 0
        var consumed = 0
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar):
                consumed += UTF8.width(scalar)
                offset = consumed
            case .emptyInput: return nil
            case .error: return offset
            }
        }
    }

    public static func load(path: String) throws(ConfigurationError) -> DaemonConfiguration {
        let bytes: [UInt8]
        do {
            bytes = try readWholeFile(path, maximumBytes: maximumFileBytes)
        } catch {
            throw ConfigurationError(file: path, line: nil, key: nil, message: error.problem ?? "cannot read the configuration: \(String(cString: strerror(error.code)))")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            let line = 1 + (utf8ErrorOffset(bytes).map { offset in bytes[..<offset].count { $0 == UInt8(ascii: "\n") } } ?? 0)
            throw ConfigurationError(file: path, line: line, key: nil, message: "the file is not valid UTF-8")
        }
        let configuration = try parse(text, file: path)
        // The password file is read at start; a wrong mode or a missing file is this file's error now.
        if let fleet = configuration.fleet {
            do {
                _ = try fleet.readPassword()
            } catch {
                throw ConfigurationError(file: path, line: nil, key: "fleet.password_file", message: error.message)
            }
        }
        return configuration
    }

    /// Parses the YAML text. Every error names the file, the line and the key;
    /// unknown keys are errors too, since a misspelt allowlist must not pass quietly.
    public static func parse(_ text: String, file: String) throws(ConfigurationError) -> DaemonConfiguration {
        var configuration = DaemonConfiguration()
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw ConfigurationError(file: file, yamlError: error)
        } catch {
            throw ConfigurationError(file: file, line: nil, key: nil, message: "\(error)")
        }
        guard let root else { return configuration }  // an empty file: every default
        guard let mapping = root.mapping else {
            throw ConfigurationError(file: file, line: root.mark?.line, key: nil, message: "expected a mapping of keys to values")
        }
        let reader = Reader(file: file)
        for (keyNode, value) in mapping {
            guard let key = keyNode.string else {
                throw ConfigurationError(file: file, line: keyNode.mark?.line, key: nil, message: "keys must be strings")
            }
            switch key {
            case "pin_dir": configuration.pinDirectory = try reader.absolutePath(value, key)
            case "state_dir": configuration.stateDirectory = try reader.absolutePath(value, key)
            case "interfaces": configuration.interfaces = try reader.interfaces(value, key)
            case "capacity":
                let (exact, prefixes) = try reader.capacity(value, key, defaults: (configuration.capacityExact, configuration.capacityPrefixes))
                configuration.capacityExact = exact
                configuration.capacityPrefixes = prefixes
            case "sweep_interval": configuration.sweepInterval = try reader.duration(value, key)
            case "allowlist": configuration.allowlist = try reader.targets(value, key)
            case "control_socket": configuration.controlSocket = try reader.socketPath(value, key)
            case "control_group": configuration.controlGroup = try reader.nonEmptyString(value, key)
            case "metrics_address": configuration.metricsAddress = try reader.address(value, key)
            case "incident_log": configuration.incidentLog = try reader.absolutePath(value, key)
            case "detach_on_exit": configuration.detachOnExit = try reader.bool(value, key)
            case "reattach": configuration.reattach = try reader.bool(value, key)
            case "detector": configuration.detector = try reader.detector(value, key)
            case "crowdsec": configuration.crowdsec = try reader.crowdsec(value, key)
            case "fleet": configuration.fleet = try reader.fleet(value, key)
            default:
                throw ConfigurationError(
                    file: file, line: keyNode.mark?.line, key: key,
                    message: "unknown key (known: pin_dir, state_dir, interfaces, capacity, sweep_interval, allowlist, control_socket, control_group, metrics_address, incident_log, detach_on_exit, reattach, detector, crowdsec, fleet)")
            }
        }
        return configuration
    }
}

/// A configuration problem, as one line: `FILE:LINE: KEY: MESSAGE`.
public struct ConfigurationError: Error, Equatable, CustomStringConvertible {
    public let file: String
    public let line: Int?
    public let key: String?
    public let message: String

    public init(file: String, line: Int?, key: String?, message: String) {
        (self.file, self.line, self.key, self.message) = (file, line, key, message)
    }

    init(file: String, yamlError: YamlError) {
        var line: Int?
        var message = "invalid YAML"
        switch yamlError {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            line = mark.line
            message = "invalid YAML: \(problem)"
        case .reader(let problem, _, _, _):
            message = "invalid YAML: \(problem)"
        case .duplicatedKeysInMapping(let duplicates, let context):
            line = context.mark.line
            message = "duplicated keys: \(duplicates.joined(separator: ", "))"
        default:
            message = "invalid YAML: \(yamlError)".split(whereSeparator: \.isNewline).first.map(String.init) ?? message
        }
        self.init(file: file, line: line, key: nil, message: message)
    }

    public var description: String {
        var text = file
        if let line { text += ":\(line)" }
        if let key { text += ": \(key)" }
        return text + ": " + message
    }
}

/// Typed reading of YAML nodes, with the position of the node in every error.
struct Reader {
    let file: String

    func fail(_ node: Node, _ key: String, _ message: String) -> ConfigurationError {
        ConfigurationError(file: file, line: node.mark?.line, key: key, message: message)
    }

    func scalar(_ node: Node, _ key: String) throws(ConfigurationError) -> String {
        guard case .scalar(let scalar) = node else { throw fail(node, key, "expected a single value") }
        return scalar.string
    }

    func nonEmptyString(_ node: Node, _ key: String) throws(ConfigurationError) -> String {
        let text = try scalar(node, key)
        guard !text.isEmpty else { throw fail(node, key, "must not be empty") }
        return text
    }

    func absolutePath(_ node: Node, _ key: String) throws(ConfigurationError) -> String {
        let text = try nonEmptyString(node, key)
        guard text.hasPrefix("/") else { throw fail(node, key, "'\(TerminalText.excerpt(text))' must be an absolute path") }
        return text
    }

    /// A Unix socket's path: sun_path holds 107 bytes and a NUL.
    func socketPath(_ node: Node, _ key: String) throws(ConfigurationError) -> String {
        let text = try absolutePath(node, key)
        guard text.utf8.count <= 107 else {
            throw fail(node, key, "the path is \(text.utf8.count) bytes long; a Unix socket's path holds at most 107")
        }
        return text
    }

    func bool(_ node: Node, _ key: String) throws(ConfigurationError) -> Bool {
        switch try scalar(node, key).lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        case let other: throw fail(node, key, "'\(TerminalText.excerpt(other))' is not true or false")
        }
    }

    func count(_ node: Node, _ key: String) throws(ConfigurationError) -> UInt32 {
        let text = try scalar(node, key).replacing("_", with: "")
        guard let value = UInt32(text), value > 0 else {
            throw fail(node, key, "'\(TerminalText.excerpt(text))' is not a whole number from 1 to \(UInt32.max)")
        }
        return value
    }

    func duration(_ node: Node, _ key: String) throws(ConfigurationError) -> Duration {
        let text = try scalar(node, key)
        do {
            return try DurationText.parse(text)
        } catch {
            throw fail(node, key, error.description)
        }
    }

    func capacity(_ node: Node, _ key: String, defaults: (UInt32, UInt32)) throws(ConfigurationError) -> (UInt32, UInt32) {
        guard let mapping = node.mapping else { throw fail(node, key, "expected `exact:` and/or `prefixes:`") }
        var (exact, prefixes) = defaults
        for (name, value) in mapping {
            switch name.string {
            case "exact": exact = try count(value, "\(key).exact")
            case "prefixes": prefixes = try count(value, "\(key).prefixes")
            default: throw fail(name, "\(key).\(name.string ?? "?")", "unknown key (known: exact, prefixes)")
            }
        }
        return (exact, prefixes)
    }

    func targets(_ node: Node, _ key: String) throws(ConfigurationError) -> [BlockTarget] {
        guard let sequence = node.sequence else { throw fail(node, key, "expected a list of addresses and prefixes") }
        var targets: [BlockTarget] = []
        for item in sequence {
            let text = try scalar(item, key)
            do {
                targets.append(try BlockTarget.parse(text).target)
            } catch {
                throw fail(item, key, error.description)
            }
        }
        return targets
    }

    func address(_ node: Node, _ key: String) throws(ConfigurationError) -> DaemonConfiguration.Address? {
        let text = try nonEmptyString(node, key)
        if text == "off" || text == "none" { return nil }
        // host:port, or [v6]:port
        let host: Substring, port: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw fail(node, key, "'\(TerminalText.excerpt(text))' must be HOST:PORT or [IPv6]:PORT") }
            port = rest.dropFirst()
        } else if let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") {
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        } else {
            throw fail(node, key, "'\(TerminalText.excerpt(text))' must be HOST:PORT or [IPv6]:PORT (or off)")
        }
        guard (try? IPAddress(parsing: String(host))) != nil else {
            throw fail(node, key, "'\(TerminalText.excerpt(host))' is not an IP address")
        }
        guard let number = Int(port), (1...65535).contains(number) else {
            throw fail(node, key, "'\(TerminalText.excerpt(port))' is not a port from 1 to 65535")
        }
        return .init(host: String(host), port: number)
    }

    func interfaces(_ node: Node, _ key: String) throws(ConfigurationError) -> [DaemonConfiguration.Interface] {
        guard let sequence = node.sequence else { throw fail(node, key, "expected a list of interfaces") }
        var result: [DaemonConfiguration.Interface] = []
        for item in sequence {
            if case .scalar = item {
                let name = try interfaceName(item, key)
                if result.contains(where: { $0.name == name && $0.netns == nil }) { throw fail(item, key, "\(name) is listed twice") }
                result.append(.init(name: name, mode: "auto", netns: nil))
                continue
            }
            guard let mapping = item.mapping else { throw fail(item, key, "expected a name or `name:`, `mode:`, `netns:`, `sharing:`, `priority:`") }
            var name: String?
            var mode = "auto"
            var netns: String?
            var cooperative = false
            var priority: UInt32?
            for (field, value) in mapping {
                switch field.string {
                case "name": name = try interfaceName(value, "\(key).name")
                case "mode":
                    mode = try scalar(value, "\(key).mode")
                    guard ["native", "generic", "auto"].contains(mode) else {
                        throw fail(value, "\(key).mode", "'\(TerminalText.excerpt(mode))' is not native, generic or auto")
                    }
                case "netns": netns = try nonEmptyString(value, "\(key).netns")
                case "sharing":
                    let sharing = try scalar(value, "\(key).sharing")
                    guard ["exclusive", "cooperative"].contains(sharing) else {
                        throw fail(value, "\(key).sharing", "'\(TerminalText.excerpt(sharing))' is not exclusive or cooperative")
                    }
                    cooperative = sharing == "cooperative"
                case "priority":
                    let text = try scalar(value, "\(key).priority")
                    guard let number = UInt32(text), number <= 1000 else {
                        throw fail(value, "\(key).priority", "'\(TerminalText.excerpt(text))' is not a priority from 0 to 1000 (lower runs first)")
                    }
                    priority = number
                default: throw fail(field, "\(key).\(field.string ?? "?")", "unknown key (known: name, mode, netns, sharing, priority)")
                }
            }
            guard let name else { throw fail(item, key, "an interface needs a `name:`") }
            if priority != nil && !cooperative {
                throw fail(item, "\(key).priority", "a priority places the program in libxdp's dispatcher; it needs `sharing: cooperative`")
            }
            if result.contains(where: { $0.name == name && $0.netns == netns }) {
                throw fail(item, key, "\(name) is listed twice")
            }
            result.append(.init(name: name, mode: mode, netns: netns, cooperative: cooperative, priority: priority))
        }
        return result
    }

    func detector(_ node: Node, _ key: String) throws(ConfigurationError) -> DaemonConfiguration.Detector {
        guard let mapping = node.mapping else { throw fail(node, key, "expected active_response, sources, rules, wazuh_ruleset, commands_dir") }
        var detector = DaemonConfiguration.Detector()
        for (name, value) in mapping {
            let field = "\(key).\(name.string ?? "?")"
            switch name.string {
            case "active_response": detector.activeResponse = try absolutePath(value, field)
            case "commands_dir": detector.commandsDirectory = try absolutePath(value, field)
            case "rules":
                guard let list = value.sequence else { throw fail(value, field, "expected a list of rule files") }
                detector.rules = try list.map { item throws(ConfigurationError) in try absolutePath(item, field) }
            case "wazuh_ruleset":
                guard let list = value.sequence, !list.isEmpty else { throw fail(value, field, "expected a list of Wazuh rule and decoder files or directories") }
                detector.wazuhRuleset = try list.map { item throws(ConfigurationError) in try absolutePath(item, field) }
            case "sources":
                guard let list = value.sequence else { throw fail(value, field, "expected a list of `file: PATH` or `journal: UNIT`") }
                for item in list {
                    guard let source = item.mapping,
                          let (kind, target) = source.first(where: { $0.key.string == "file" || $0.key.string == "journal" }) else {
                        throw fail(item, field, "each source is `file: PATH` or `journal: UNIT` (or `journal: all`)")
                    }
                    let program = try source["program"].map { node throws(ConfigurationError) in try nonEmptyString(node, "\(field).program") }
                    guard source.count == (program == nil ? 1 : 2), kind.string == "file" || program == nil else {
                        throw fail(item, field, "a source is `file: PATH` (with `program: NAME` for a file one program writes itself) or `journal: UNIT`")
                    }
                    switch kind.string {
                    case "file": detector.sources.append(.file(try absolutePath(target, "\(field).file"), program: program))
                    case "journal":
                        let unit = try nonEmptyString(target, "\(field).journal")
                        detector.sources.append(.journal(unit: unit == "all" ? nil : unit))
                    default: throw fail(kind, field, "unknown source \(kind.string ?? "?") (file or journal)")
                    }
                }
            default: throw fail(name, field, "unknown key (known: active_response, sources, rules, wazuh_ruleset, commands_dir)")
            }
        }
        guard !detector.sources.isEmpty else { throw fail(node, key, "give at least one source to watch") }
        return detector
    }

    func crowdsec(_ node: Node, _ key: String) throws(ConfigurationError) -> DaemonConfiguration.CrowdSec {
        let known = "lapi_url, api_key_file, update_frequency, origins, scenarios"
        guard let mapping = node.mapping else { throw fail(node, key, "expected \(known)") }
        var lapi: DaemonConfiguration.Address?
        var keyFile: String?
        var frequency: Duration = .seconds(10)
        var origins: [String] = []
        var scenarios: [String] = []
        for (name, value) in mapping {
            let field = "\(key).\(name.string ?? "?")"
            switch name.string {
            case "lapi_url": lapi = try lapiURL(value, field)
            case "api_key_file": keyFile = try absolutePath(value, field)
            case "update_frequency":
                frequency = try duration(value, field)
                guard frequency >= .seconds(1) else { throw fail(value, field, "must be at least 1s") }
            case "origins": origins = try strings(value, field)
            case "scenarios": scenarios = try strings(value, field)
            default: throw fail(name, field, "unknown key (known: \(known))")
            }
        }
        guard let lapi else { throw fail(node, key, "give the Local API's address as `lapi_url: http://127.0.0.1:8080`") }
        guard let keyFile else { throw fail(node, key, "give the bouncer's key file as `api_key_file: PATH` (from `cscli bouncers add`)") }
        var crowdsec = DaemonConfiguration.CrowdSec(lapi: lapi, apiKeyFile: keyFile)
        (crowdsec.updateFrequency, crowdsec.origins, crowdsec.scenarios) = (frequency, origins, scenarios)
        return crowdsec
    }

    /// `http://HOST:PORT`, with an optional `/` after it; https would need TLS, which this
    /// bouncer does not speak.
    func lapiURL(_ node: Node, _ key: String) throws(ConfigurationError) -> DaemonConfiguration.Address {
        let text = try nonEmptyString(node, key)
        guard text.hasPrefix("http://") else {
            throw fail(node, key, "'\(TerminalText.excerpt(text))' must be http://HOST:PORT (https is not supported: point it at a LAPI on this host, or a TLS proxy in front of one)")
        }
        var rest = text.dropFirst("http://".count)
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        let host: Substring, port: Substring
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]"), rest[rest.index(after: close)...].hasPrefix(":") {
            host = rest[rest.index(after: rest.startIndex)..<close]
            port = rest[rest.index(close, offsetBy: 2)...]
        } else if let colon = rest.lastIndex(of: ":"), !rest[..<colon].contains(":") {
            host = rest[..<colon]
            port = rest[rest.index(after: colon)...]
        } else {
            throw fail(node, key, "'\(TerminalText.excerpt(text))' must be http://HOST:PORT")
        }
        guard !host.isEmpty, !host.contains("/"), !host.contains(where: \.isWhitespace) else {
            throw fail(node, key, "'\(TerminalText.excerpt(text))' must be http://HOST:PORT")
        }
        guard let number = Int(port), (1...65535).contains(number) else {
            throw fail(node, key, "'\(TerminalText.excerpt(port))' is not a port from 1 to 65535")
        }
        return .init(host: String(host), port: number)
    }

    func strings(_ node: Node, _ key: String) throws(ConfigurationError) -> [String] {
        guard let list = node.sequence else { throw fail(node, key, "expected a list") }
        return try list.map { item throws(ConfigurationError) in try nonEmptyString(item, key) }
    }

    func interfaceName(_ node: Node, _ key: String) throws(ConfigurationError) -> String {
        let name = try nonEmptyString(node, key)
        guard name.utf8.count < 16, !name.contains("/"), !name.contains(where: \.isWhitespace) else {
            throw fail(node, key, "'\(TerminalText.excerpt(name))' is not a valid interface name")
        }
        return name
    }
}
