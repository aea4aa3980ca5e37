import ArgumentParser
import Dispatch
import Glibc
import PortcullisSystem
import PortcullisConfig
import PortcullisDaemon

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the Portcullis daemon.",
        discussion: """
            Attaches to the interfaces in the configuration (reusing the pinned maps, so a restart \
            keeps every block), then, until SIGTERM or SIGINT:

              - serves the control API, HTTP with JSON on a Unix socket (default \
            /run/portcullis/control.sock, mode 0660, root and the portcullis group); `portcullis \
            block` and the Wazuh active response send their changes there while it runs, so the \
            daemon is the single writer;
              - serves Prometheus metrics (default http://127.0.0.1:9469/metrics);
              - sweeps expired blocks every sweep_interval and records each one's outcome in the \
            incident log.

            SIGHUP reloads the configuration; a bad file is reported and the running \
            configuration stays. On SIGTERM the XDP program and every block stay in force \
            unless --detach-on-exit (or detach_on_exit: true) asks otherwise.

            The configuration is YAML; dist/portcullis.yaml in the source tree documents every \
            key. Without a file at the default path the defaults apply.

            Examples:
              portcullis run
              portcullis run --config /etc/portcullis/portcullis.yaml
              portcullis run --check
              systemctl reload portcullis    # SIGHUP
            """)

    @Option(help: ArgumentHelp("The configuration file.", valueName: "path"))
    var config: String?

    @Flag(help: "Detach the XDP program from the configured interfaces on exit.")
    var detachOnExit = false

    @Flag(help: "Check the configuration and exit: 0 when it is valid.")
    var check = false

    func run() throws {
        let path = config ?? DaemonConfiguration.defaultPath
        let configured = access(path, F_OK) == 0
        if config != nil && !configured {
            throw RuntimeFailure("no configuration file at \(path)")
        }
        if configured {
            do {
                let warnings = try Daemon.check(configurationPath: path)
                if check { for warning in warnings { printError("portcullis: warning: \(warning)") } }
            } catch {
                throw RuntimeFailure("\(error)")
            }
        }
        if check {
            print(configured ? "\(path): valid" : "no file at \(path): the defaults apply")
            return
        }
        if !configured { printError("portcullis: warning: no configuration at \(path); running with the defaults") }
        let configurationPath = configured ? path : "/dev/null"
        let detach = detachOnExit
        Task {
            do {
                try await Daemon.run(configurationPath: configurationPath, detachOnExit: detach)
                Glibc.exit(0)
            } catch {
                printError("portcullis: \(error)")
                Glibc.exit(1)
            }
        }
        dispatchMain()
    }
}

struct RuntimeFailure: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// The commands that need the daemon's libraries (YAML, the detector, the HTTP stack):
/// `portcullis run` and `portcullis logtest` hand over to this executable with their arguments,
/// so its command name and help read as the user typed them.
struct DaemonCommands: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "portcullis",
        abstract: "The Portcullis daemon and the commands that share its libraries.",
        subcommands: [Run.self, Logtest.self],
        defaultSubcommand: Run.self)
}

@main
enum Entry {
    static func main() {
        let subcommand = CommandLine.arguments.dropFirst().first ?? "run"
        do {
            var command = try DaemonCommands.parseAsRoot()
            try command.run()
        } catch let error as RuntimeFailure {
            printError("portcullis: \(error.description)")
            exit(1)
        } catch {
            let code = DaemonCommands.exitCode(for: error)
            if code == .success {
                print(DaemonCommands.fullMessage(for: error))
                exit(0)
            }
            let message = DaemonCommands.message(for: error).replacing("\n", with: " ")
            printError(code.rawValue == 1 ? "portcullis: \(message)" : "portcullis: \(message) (see `portcullis \(subcommand) --help`)")
            exit(code.rawValue == 1 ? 1 : 2)
        }
    }
}
