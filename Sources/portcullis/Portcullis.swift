import ArgumentParser
import Glibc
import PortcullisSystem
import PortcullisBPF
import PortcullisControl
import PortcullisCore
import PortcullisActiveResponse
import PortcullisIncidents

/// Every command names itself (`commandName`): ArgumentParser would otherwise derive each
/// name from its type with String(describing:), whose dynamic casts scan every protocol
/// conformance in the binary, the largest part of a command's start-up.
struct Portcullis: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "portcullis",
        abstract: "Drop traffic from blocked IP addresses at line rate with XDP.",
        discussion: """
            Portcullis keeps a blocklist of IPv4 and IPv6 addresses and prefixes, each with an \
            optional expiry, in BPF maps pinned under a bpffs directory (default \
            \(PinDirectory.defaultPath), or --pin-dir, or $\(PinDirectory.environmentVariable)). An \
            XDP program attached to your interfaces drops packets from blocked sources before the \
            kernel allocates a socket buffer for them. Blocks and attachments outlive every \
            portcullis process: nothing is lost when a command exits or the daemon restarts.

            An expired block stops dropping at once, whether or not `portcullis sweep` has removed \
            it yet. Allowlisted addresses are never dropped, and loopback is never blocked.

            Exit status: 0 on success, 1 when the operation failed, 2 on a usage error (in which \
            case nothing was changed). A block, unblock or sweep that took effect but whose \
            incident record could not be written (a full or read-only disk) exits 0, since the \
            change is in force, with one line on stderr naming the log and the cause \
            ("portcullis: warning: ... its incident record was not written ..."); with --json, \
            incidentRecord.written is false.

            Examples:
              portcullis attach eth0
              portcullis block 203.0.113.9 --for 100s --reason "sshd: invalid user"
              portcullis block 198.51.100.0/24
              portcullis list
              portcullis unblock 203.0.113.9
            """,
        version: "0.1.0",
        subcommands: [
            Attach.self, Detach.self, Block.self, Unblock.self, Throttle.self, Unthrottle.self, Allow.self, Disallow.self,
            List.self, Top.self, Stats.self, Sweep.self, Status.self, Incidents.self, Report.self, Run.self, Purge.self, Wazuh.self,
            Fail2banCommand.self, Sshguard.self, Logtest.self,
        ]
    )
}

/// Options every command that touches the state takes.
struct StateOptions: ParsableArguments {
    @Option(
        name: .customLong("pin-dir"),
        help: ArgumentHelp(
            "The bpffs directory holding Portcullis's maps, program and links.",
            discussion: "Defaults to $\(PinDirectory.environmentVariable), then \(PinDirectory.defaultPath).",
            valueName: "path"))
    var pinDirectory: String?

    @Option(
        name: .customLong("incident-log"),
        help: ArgumentHelp(
            "The JSON-lines file every block, refresh, unblock and expiry is recorded in.",
            discussion: "Defaults to $\(IncidentLog.environmentVariable), then \(IncidentLog.defaultPath).",
            valueName: "path"))
    var incidentLog: String?

    var pins: PinDirectory { PinDirectory.resolve(option: pinDirectory) }

    @Option(
        name: .customLong("state-dir"),
        help: ArgumentHelp(
            "The directory holding the ledger (the durable record of every block) and the incident key.",
            discussion: "Defaults to $\(IncidentLog.stateDirectoryVariable), then \(IncidentLog.defaultStateDirectory).",
            valueName: "path"))
    var stateDirectory: String?

    var location: BlocklistLocation { BlocklistLocation.resolve(pinDirectory: pinDirectory, stateDirectory: stateDirectory) }

    @Option(
        name: .customLong("control-socket"),
        help: ArgumentHelp(
            "The daemon's control socket; changes go through the daemon when it runs there.",
            discussion: "Defaults to $\(ControlSocketClient.environmentVariable), then \(ControlSocketClient.defaultPath).",
            valueName: "path"))
    var controlSocket: String?

    var recorder: IncidentRecorder {
        IncidentRecorder(log: IncidentLog.resolve(option: incidentLog), warn: { printError("portcullis: warning: \($0)") })
    }

    /// The daemon when it runs, else the pinned maps, created on first use when `creation` is given.
    func blocklist(creating creation: CreationOptions? = nil) -> PreferredBlocklist {
        PreferredBlocklist(socket: ControlSocketClient.resolve(option: controlSocket)) { () throws(ServiceError) -> LocalBlocklist in
            try local(creating: creation)
        }
    }

    /// The ledger and the maps on this host, restored from the ledger when the maps are gone;
    /// created on first use when `creation` is given. With `reconcile`, made to agree (a start).
    func local(creating creation: CreationOptions? = nil, reconcile: Bool = false) throws(ServiceError) -> LocalBlocklist {
        let (blocklist, report) = try LocalBlocklist.open(
            location, creatingWith: creation?.requested, capacityWasExplicit: creation?.isExplicit ?? false,
            reconcile: reconcile, ledgerSync: .atClose, recorder: recorder)
        for line in report.lines { printError("portcullis: \(line)") }
        return blocklist
    }

    /// For reading, the ledger and maps directly, which needs no single writer: those the daemon
    /// serves when one runs (it knows where they are), else this command's. Through the daemon
    /// only when this user may not open them.
    func reader() -> any BlocklistService {
        let preferred = blocklist()
        if let served = preferred.daemonLocation {
            let opened = try? LocalBlocklist.open(served, creatingWith: nil, recorder: recorder).0
            return opened ?? preferred
        }
        return (try? local()) ?? preferred
    }

}

/// Options of the commands that create the state on first use.
struct CreationOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Exact addresses the blocklist holds per family, fixed when the state is first created.",
        valueName: "count"))
    var capacity: UInt32?

    @Option(
        name: .customLong("prefix-capacity"),
        help: ArgumentHelp("Prefixes (and allowlist entries) per family, fixed at first creation.", valueName: "count"))
    var prefixCapacity: UInt32?

    func validate() throws {
        if capacity == 0 || prefixCapacity == 0 { throw ValidationError("capacities must be at least 1") }
    }

    /// The capacity to create the maps with.
    var requested: Capacity {
        Capacity(exact: capacity ?? Capacity.standard.exact, prefixes: prefixCapacity ?? Capacity.standard.prefixes)
    }

    var isExplicit: Bool { capacity != nil || prefixCapacity != nil }
}

/// A user-typed address or prefix, parsed strictly by PortcullisCore.
struct TargetArgument: ExpressibleByArgument, Sendable {
    let parsed: ParsedTarget
    var target: BlockTarget { parsed.target }

    init?(argument: String) {
        guard let parsed = try? BlockTarget.parse(argument) else { return nil }
        self.parsed = parsed
    }

    /// The parse error for `text`, so the usage error names what is wrong with it.
    static func transform(_ text: String) throws -> TargetArgument {
        do {
            let parsed = try BlockTarget.parse(text)
            return TargetArgument(parsed)
        } catch {
            throw ValidationError(error.description)
        }
    }

    private init(_ parsed: ParsedTarget) { self.parsed = parsed }

    func printNotes() {
        for note in parsed.notes { printError("note: \(note)") }
    }
}

@main
enum Entry {
    static func main() {
        if WazuhActiveResponse.isInvocation(CommandLine.arguments) {
            exit(WazuhActiveResponse.run(program: CommandLine.arguments[0]))
        }
        if DaemonHandoff.isRequested(CommandLine.arguments) {
            do {
                try DaemonHandoff.execute(Array(CommandLine.arguments.dropFirst()))
            } catch {
                printError("portcullis: \(error.message)")
                exit(1)
            }
        }
        do {
            var command = try Portcullis.parseAsRoot()
            try command.run()
        } catch let error as DatapathError {
            printError("portcullis: \(error.description)")
            exit(1)
        } catch let error as ServiceError {
            printError("portcullis: \(error.description)")
            exit(error.kind == .badRequest ? 2 : 1)
        } catch let error as RuntimeFailure {
            printError("portcullis: \(error.message)")
            exit(1)
        } catch {
            let code = Portcullis.exitCode(for: error)
            if code == .success {
                // --help and --version
                print(Portcullis.fullMessage(for: error))
                exit(0)
            }
            if code == .failure || code.rawValue == 1 {
                let message = Portcullis.message(for: error)
                if !message.isEmpty { printError("portcullis: \(message)") }
                exit(1)
            }
            let message = Portcullis.message(for: error).replacing("\n", with: " ")
            let names = Set(Portcullis.configuration.subcommands.map { $0._commandName })
            let command = CommandLine.arguments.dropFirst().first(where: names.contains).map { "portcullis \($0)" } ?? "portcullis"
            printError("portcullis: \(message) (see `\(command) --help`)")
            exit(2)
        }
    }
}

/// A failure found by the command itself after parsing (exit status 1).
struct RuntimeFailure: Error {
    let message: String
    init(_ message: String) { self.message = message }
}
