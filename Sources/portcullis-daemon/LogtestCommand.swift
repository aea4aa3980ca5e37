import ArgumentParser
import FoundationEssentials
import Glibc
import PortcullisConfig
import PortcullisCore
import PortcullisDetector
import PortcullisSystem

struct Logtest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logtest",
        abstract: "Try log lines against the detector's decoders, rules and responses.",
        discussion: """
            Reads log lines from standard input (or --file) and prints, for each, the \
            pre-decoding (timestamp, hostname, program), the decoder and its fields, the rule \
            that fires (id, level, description, groups, firedtimes) and the responses the \
            configuration would carry out, or that nothing fires and why. Like wazuh-logtest \
            and fail2ban-regex, it changes nothing: no block, no command, no record. Frequency \
            rules and repeated offenders count across the lines of one run, as in the daemon.

            With --config, the detector section of the daemon's configuration is used: its \
            wazuh_ruleset, rules and active_response files and the daemon's allowlist. Without \
            it, the built-in sshd rules run and no response is configured.

            Exit status: 0 when every line was tested, 1 when the configuration or the rules \
            cannot be loaded.

            Examples:
              echo 'Nov 28 07:00:00 bastion sshd[1]: Invalid user admin from 198.51.100.7 port 22' | portcullis logtest
              portcullis logtest --config /etc/portcullis/portcullis.yaml --file /var/log/auth.log --json
            """)

    @Option(help: ArgumentHelp("The daemon's configuration file, for its detector section.", valueName: "path"))
    var config: String?

    @Option(help: ArgumentHelp("Read the lines from this file instead of standard input.", valueName: "path"))
    var file: String?

    @Option(help: ArgumentHelp("The lines are one program's own log (sshd -E), with no syslog header.", valueName: "name"))
    var program: String?

    @Flag(help: "One JSON object a line.")
    var json = false

    func run() throws {
        var wazuhRuleset: [String] = [], ruleFiles: [String] = [], activeResponse: String?
        var allowlist: [BlockTarget] = []
        if let config {
            let configuration: DaemonConfiguration
            do { configuration = try DaemonConfiguration.load(path: config) } catch { throw RuntimeFailure(error.description) }
            guard let detector = configuration.detector else { throw RuntimeFailure("\(config): no detector section") }
            (wazuhRuleset, ruleFiles, activeResponse) = (detector.wazuhRuleset, detector.rules, detector.activeResponse)
            allowlist = configuration.allowlist
        }
        var session: LogtestSession
        do {
            let setup = try DetectorSetup.load(wazuhRuleset: wazuhRuleset, ruleFiles: ruleFiles, activeResponse: activeResponse)
            for warning in setup.warnings { printError("warning: \(warning)") }
            session = try LogtestSession(setup: setup, allowlist: allowlist, program: program, responsesFile: activeResponse)
        } catch {
            throw RuntimeFailure(error.description)
        }
        let descriptor: CInt
        if let file {
            switch SystemCall.retryingInterrupts({ open(file, O_RDONLY | O_CLOEXEC) }) {
            case .success(let opened): descriptor = opened
            case .failure(let code): throw RuntimeFailure("\(file): cannot open: \(code.description)")
            }
        } else {
            descriptor = 0
        }
        defer { if descriptor != 0 { close(descriptor) } }
        let start = ContinuousClock.now
        var assembler = LineAssembler()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var first = true
        func show(_ line: String) {
            let report = session.test(line, at: ContinuousClock.now - start)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                print((try? encoder.encode(report)).map { String(decoding: $0, as: UTF8.self) } ?? "null")
            } else {
                if !first { print("") }
                print(report.text)
            }
            first = false
        }
        reading: while true {
            switch SystemCall.retryingInterrupts({ read(descriptor, &buffer, buffer.count) }) {
            case .success(let count) where count > 0:
                for line in assembler.lines(in: buffer[0..<count]) where !line.isEmpty { show(line) }
            // A read error ends the input as the end of the file does: what was read is still shown.
            case .success, .failure: break reading
            }
        }
        if let last = assembler.finish(), !last.isEmpty { show(last) }
        if assembler.discardedLines > 0 {
            printError("warning: \(assembler.discardedLines) line(s) longer than \(assembler.maximumLineBytes) bytes were skipped, as the daemon skips them")
        }
    }
}
