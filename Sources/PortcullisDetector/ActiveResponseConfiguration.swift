import FoundationEssentials
import PortcullisCore

/// The active-response part of an ossec.conf-style file, as Wazuh users write it:
/// `<command>`, `<active-response>` and `<global><white_list>`.
public struct ActiveResponseConfiguration: Sendable {
    public struct Command: Sendable, Equatable {
        public var name: String
        /// `firewall-drop` (and `firewall-drop-xdp`) block through Portcullis; anything else is run.
        public var executable: String
        public var timeoutAllowed: Bool
        public var extraArguments: [String]
        public var line: Int

        public var isPortcullisBlock: Bool { ActiveResponseConfiguration.builtInExecutables.contains(executable) }
    }

    public struct Response: Sendable, Equatable {
        public var command: String
        public var location: String
        public var rulesIDs: [String]
        public var rulesGroups: [String]
        public var level: Int?
        public var timeout: Int?
        /// Minutes, for the second, third, ... response to the same address.
        public var repeatedOffenders: [Int]
        public var disabled: Bool
        /// Portcullis's own `<ipv6_prefix>`: block the source's IPv6 prefix of this length
        /// (64: its /64) instead of the address, since an IPv6 attacker picks a new address
        /// in its /64 at will. IPv4 sources are blocked by address.
        public var ipv6PrefixLength: Int? = nil
        public var line: Int
    }

    /// Executables that are Portcullis's own XDP block rather than a program to run.
    public static let builtInExecutables: Set<String> = ["firewall-drop", "firewall-drop-xdp", "firewall-drop.sh"]

    public var commands: [String: Command]
    public var responses: [Response]
    public var whiteList: [BlockTarget]
    public var warnings: [String]

    public init() {
        // Wazuh's default ossec.conf defines firewall-drop; a file need not repeat it.
        commands = ["firewall-drop": Command(name: "firewall-drop", executable: "firewall-drop", timeoutAllowed: true, extraArguments: [], line: 0)]
        responses = []
        whiteList = []
        warnings = []
    }

    public static func load(path: String) throws(ActiveResponseConfigurationError) -> ActiveResponseConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ActiveResponseConfigurationError(file: path, line: nil, message: "cannot read the file")
        }
        return try parse(data, file: path)
    }

    public static func parse(_ data: Data, file: String) throws(ActiveResponseConfigurationError) -> ActiveResponseConfiguration {
        let root: Element
        do {
            root = try ConfigurationXML.parse([UInt8](data))
        } catch {
            throw ActiveResponseConfigurationError(file: file, line: error.line, message: "not well-formed XML: \(error.message)")
        }
        var configuration = ActiveResponseConfiguration()
        func fail(_ element: Element, _ message: String) -> ActiveResponseConfigurationError {
            ActiveResponseConfigurationError(file: file, line: element.line, message: "<\(element.name)>: \(message)")
        }
        let sections = root.children.flatMap { $0.name == "ossec_config" ? $0.children : [$0] }
        for section in sections {
            switch section.name {
            case "global":
                for child in section.children {
                    switch child.name {
                    case "white_list":
                        do {
                            configuration.whiteList.append(try BlockTarget.parse(child.text).target)
                        } catch {
                            throw fail(child, error.description)
                        }
                    default:
                        configuration.warnings.append("\(file):\(child.line): ignoring <global><\(child.name)>, not used by Portcullis")
                    }
                }
            case "command":
                var name: String?, executable: String?, timeoutAllowed = false, extra: [String] = []
                for child in section.children {
                    switch child.name {
                    case "name": name = child.text
                    case "executable": executable = child.text
                    case "timeout_allowed": timeoutAllowed = try yesNo(child, fail)
                    case "extra_args": extra = child.text.split(separator: " ").map(String.init)
                    case "expect": configuration.warnings.append("\(file):\(child.line): <expect> is deprecated since Wazuh 4.2 and ignored")
                    default: configuration.warnings.append("\(file):\(child.line): ignoring unknown element <command><\(child.name)>")
                    }
                }
                guard let name, !name.isEmpty, !name.hasPrefix("!") else { throw fail(section, "a command needs a <name> (not starting with !)") }
                guard let executable, !executable.isEmpty else { throw fail(section, "command \(name) needs an <executable>") }
                guard !executable.contains("../") else { throw fail(section, "command \(name): the executable may not contain ../") }
                configuration.commands[name] = Command(
                    name: name, executable: executable, timeoutAllowed: timeoutAllowed, extraArguments: extra, line: section.line)
            case "active-response":
                var response = Response(command: "", location: "", rulesIDs: [], rulesGroups: [], level: nil, timeout: nil,
                                        repeatedOffenders: [], disabled: false, line: section.line)
                for child in section.children {
                    switch child.name {
                    case "command": response.command = child.text
                    case "location": response.location = child.text
                    case "rules_id":
                        response.rulesIDs = child.text.split(separator: ",").map(\.trimmedSpace)
                        guard !response.rulesIDs.isEmpty, response.rulesIDs.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }) else {
                            throw fail(child, "'\(TerminalText.excerpt(child.text))' is not a comma-separated list of rule ids")
                        }
                    case "rules_group":
                        response.rulesGroups = child.text.split(whereSeparator: { $0 == "," || $0 == "|" })
                            .map(\.trimmedSpace).filter { !$0.isEmpty }
                    case "level":
                        guard let level = Int(child.text), (0...16).contains(level) else { throw fail(child, "'\(TerminalText.excerpt(child.text))' is not a level from 0 to 16") }
                        response.level = level
                    case "timeout":
                        guard let timeout = Int(child.text), timeout > 0, Int64(timeout) <= DurationText.maximumSeconds else {
                            throw fail(child, "'\(TerminalText.excerpt(child.text))' is not a positive number of seconds (at most \(DurationText.maximumSeconds))")
                        }
                        response.timeout = timeout
                    case "repeated_offenders":
                        let minutes = child.text.split(separator: ",").map { Int($0.trimmedSpace) }
                        let longest = Int(DurationText.maximumSeconds / 60)
                        guard !minutes.isEmpty, minutes.allSatisfy({ (1...longest).contains($0 ?? 0) }) else {
                            throw fail(child, "'\(TerminalText.excerpt(child.text))' is not a comma-separated list of minutes, each from 1 to \(longest)")
                        }
                        response.repeatedOffenders = minutes.compactMap { $0 }
                    case "disabled": response.disabled = try yesNo(child, fail)
                    case "ipv6_prefix":
                        guard let length = Int(child.text), (16...128).contains(length) else {
                            throw fail(child, "'\(TerminalText.excerpt(child.text))' is not an IPv6 prefix length from 16 to 128 (64 blocks the source's /64)")
                        }
                        response.ipv6PrefixLength = length
                    case "agent_id", "ca_store":
                        configuration.warnings.append("\(file):\(child.line): ignoring <active-response><\(child.name)>: Portcullis responds on this host only")
                    default: configuration.warnings.append("\(file):\(child.line): ignoring unknown element <active-response><\(child.name)>")
                    }
                }
                guard !response.command.isEmpty else { throw fail(section, "an active response needs a <command>") }
                guard !response.location.isEmpty else { throw fail(section, "an active response needs a <location>") }
                guard response.location == "local" else {
                    throw fail(section, "location '\(TerminalText.excerpt(response.location))' is not supported: a standalone Portcullis responds on this host, use local")
                }
                if response.rulesIDs.isEmpty && response.rulesGroups.isEmpty && response.level == nil {
                    throw fail(section, "give <rules_id>, <rules_group> or <level>, or every alert would trigger \(response.command)")
                }
                configuration.responses.append(response)
            default:
                configuration.warnings.append("\(file):\(section.line): ignoring <\(section.name)>, not used by Portcullis")
            }
        }
        for response in configuration.responses {
            guard let command = configuration.commands[response.command] else {
                throw ActiveResponseConfigurationError(file: file, line: response.line, message: "<active-response>: no <command> named \(response.command)")
            }
            if response.timeout != nil && !command.timeoutAllowed {
                configuration.warnings.append("\(file):\(response.line): command \(command.name) lacks <timeout_allowed>yes</timeout_allowed>; the timeout applies anyway")
            }
        }
        return configuration
    }

    private static func yesNo(_ element: Element, _ fail: (Element, String) -> ActiveResponseConfigurationError) throws(ActiveResponseConfigurationError) -> Bool {
        switch element.text.lowercased() {
        case "yes": return true
        case "no": return false
        default: throw fail(element, "'\(TerminalText.excerpt(element.text))' is not yes or no")
        }
    }
}

public struct ActiveResponseConfigurationError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let line: Int?
    public let message: String
    public var description: String { "\(file)\(line.map { ":\($0)" } ?? ""): \(message)" }
}

/// Decides which responses an alert triggers, with the timeouts repeated
/// offenders earn, as Wazuh's execd would.
public struct ResponsePlanner {
    public let configuration: ActiveResponseConfiguration
    private var offenses: [String: Int] = [:]
    /// When each response to each address ends: an alert before then refreshes it
    /// and is not another offense (one attempt often logs several matching lines).
    private var activeUntil: [String: Duration] = [:]

    public init(configuration: ActiveResponseConfiguration) { self.configuration = configuration }

    public struct Plan: Sendable, Equatable {
        public let command: ActiveResponseConfiguration.Command
        /// nil: until unblocked.
        public let timeout: Duration?
        /// 1 for the first response to this address by this rule, 2 for the next, ...
        public let offense: Int
        /// What to block: the source, or its IPv6 prefix with `<ipv6_prefix>`.
        public let target: BlockTarget?
    }

    /// The source's prefix when the response asks for one and no white-listed address is
    /// inside it; else the address itself.
    public func target(for address: IPAddress, response: ActiveResponseConfiguration.Response) -> BlockTarget {
        guard address.family == .ipv6, let length = response.ipv6PrefixLength, length < 128,
              let prefix = try? BlockTarget.parse("\(address)/\(length)").target
        else { return .address(address) }
        let coversWhiteListed = configuration.whiteList.contains { listed in prefix.contains(listed) || listed.contains(prefix) }
        return coversWhiteListed ? .address(address) : prefix
    }

    public func isWhiteListed(_ address: IPAddress) -> Bool {
        configuration.whiteList.contains { entry in
            switch entry {
            case .address(let listed): listed == address
            case .prefix(let prefix): prefix.contains(address)
            }
        }
    }

    /// `time` is a monotonic clock reading, as given to ``Detector/process(_:at:)``.
    public mutating func plan(_ alert: Alert, at time: Duration) -> [Plan] {
        var plans: [Plan] = []
        for (index, response) in configuration.responses.enumerated() where !response.disabled {
            let matches = response.rulesIDs.contains(alert.ruleID)
                || !Set(response.rulesGroups).isDisjoint(with: alert.groups)
                || response.level.map { alert.level >= $0 } == true
            guard matches, let command = configuration.commands[response.command] else { continue }
            let blocked = alert.source.map { self.target(for: $0, response: response) }
            // Keyed by what is blocked: addresses rotating inside a blocked /64 are one offender.
            let key = "\(index)|\(blocked?.description ?? alert.sourceText ?? "")"
            let stillActive = activeUntil[key].map { time < $0 } ?? false
            let offense = stillActive ? offenses[key, default: 1] : offenses[key, default: 0] + 1
            offenses[key] = offense
            var timeout = response.timeout.map { Duration.seconds($0) }
            if offense > 1, !response.repeatedOffenders.isEmpty {
                timeout = .seconds(60 * response.repeatedOffenders[min(offense - 2, response.repeatedOffenders.count - 1)])
            }
            // A response without a timeout lasts until unblocked: every later alert only refreshes it.
            activeUntil[key] = timeout.map { time + $0 } ?? .seconds(Int64.max / 2)
            plans.append(Plan(command: command, timeout: timeout, offense: offense, target: blocked))
        }
        return plans
    }
}
