import PortcullisConfig
import PortcullisCore

/// The daemon's YAML configuration, through `DaemonConfiguration.parse`: what `load` hands
/// it once the file has been read and found to be UTF-8.
public enum DaemonConfigurationCheck {
    public static let target = "yaml-config"

    public static func check(_ input: [UInt8]) throws(InvariantViolation) {
        guard let text = String(validating: input, as: UTF8.self) else { return }
        // YAML also breaks lines at a lone CR and at NEL, LS and PS; and libyaml ends a file
        // whose last line has no break on the line after it, where an unclosed [ or { is reported.
        let isBreak: (Unicode.Scalar) -> Bool = { ["\n", "\r", "\u{85}", "\u{2028}", "\u{2029}"].contains($0) }
        let breaks = text.unicodeScalars.count(where: isBreak)
        let unterminated = text.unicodeScalars.last.map { !isBreak($0) } ?? false
        let lines = 1...(1 + breaks + (unterminated ? 1 : 0))
        let configuration: DaemonConfiguration
        do {
            configuration = try DaemonConfiguration.parse(text, file: "fuzz.yaml")
        } catch {
            try invariant(error.file == "fuzz.yaml", "an error names \(error.file)")
            if let line = error.line { try invariant(lines.contains(line), "an error names line \(line) of \(lines.upperBound): \(error)") }
            return
        }
        try checkConfiguration(configuration)
    }

    static func checkConfiguration(_ configuration: DaemonConfiguration) throws(InvariantViolation) {
        for path in [configuration.pinDirectory, configuration.incidentLog, configuration.controlSocket]
            + [configuration.stateDirectory].compactMap({ $0 }) {
            try invariant(path.hasPrefix("/"), "the relative path '\(path)' was taken")
        }
        try invariant(configuration.controlSocket.utf8.count <= 107, "a control socket path of \(configuration.controlSocket.utf8.count) bytes")
        try invariant(!configuration.controlGroup.isEmpty, "an empty control group")
        try invariant(configuration.capacityExact > 0 && configuration.capacityPrefixes > 0,
                      "capacities of \(configuration.capacityExact) and \(configuration.capacityPrefixes)")
        let (seconds, attoseconds) = configuration.sweepInterval.components
        try invariant(attoseconds == 0 && (1...DurationText.maximumSeconds).contains(seconds), "a sweep interval of \(configuration.sweepInterval)")
        for target in configuration.allowlist {
            try invariant((try? BlockTarget.parse(target.description)) == ParsedTarget(target: target, notes: []),
                          "the allowlisted \(target) does not read back from its own text")
        }
        if let address = configuration.metricsAddress {
            try invariant((1...65535).contains(address.port) && (try? IPAddress(parsing: address.host)) != nil,
                          "the metrics address \(address)")
        }
        for (index, interface) in configuration.interfaces.enumerated() {
            let name = interface.name
            try invariant(!name.isEmpty && name.utf8.count < 16 && !name.contains("/") && !name.contains(where: \.isWhitespace),
                          "the interface name '\(name)'")
            try invariant(["native", "generic", "auto"].contains(interface.mode), "interface \(name) in mode '\(interface.mode)'")
            try invariant(interface.netns.map { !$0.isEmpty } ?? true, "interface \(name) in an unnamed namespace")
            try invariant(!configuration.interfaces[..<index].contains { $0.name == name && $0.netns == interface.netns },
                          "interface \(name) is listed twice")
        }
        if let detector = configuration.detector {
            try invariant(!detector.sources.isEmpty, "a detector that watches nothing")
            var paths = [detector.commandsDirectory] + detector.rules + detector.wazuhRuleset
            paths += [detector.activeResponse].compactMap { $0 }
            for source in detector.sources {
                switch source {
                case .file(let path, let program):
                    paths.append(path)
                    try invariant(program.map { !$0.isEmpty } ?? true, "a file source for an unnamed program")
                case .journal(let unit):
                    try invariant(unit.map { !$0.isEmpty } ?? true, "the journal of an unnamed unit")
                }
            }
            for path in paths { try invariant(path.hasPrefix("/"), "the relative detector path '\(path)' was taken") }
        }
    }
}
