import ArgumentParser
import Glibc
import PortcullisControl
import PortcullisCore
import PortcullisSystem

struct Fail2banCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fail2ban",
        abstract: "Use Portcullis as fail2ban's blocking backend.",
        discussion: """
            `portcullis fail2ban install` writes two fail2ban actions to action.d/: portcullis.py, \
            which runs inside fail2ban-server and speaks to the Portcullis daemon over its control \
            socket (no process per ban: fail2ban restores thousands of bans at its start), and \
            portcullis.conf, a shell action that runs `portcullis fail2ban ban|unban|flush` and \
            works with or without the daemon. A jail uses one of them as its action.

            Each ban becomes a block of source fail2ban and origin fail2ban/JAIL, ending at the \
            ban's <time> plus its <bantime> (-1: permanent), so a ban fail2ban restores after a \
            restart ends when it would have. An unban, and the flush fail2ban runs when it stops, \
            lift only that jail's own blocks: a block another source made (an operator, Wazuh, \
            CrowdSec) stays.

            Examples:
              portcullis fail2ban install
              portcullis fail2ban install --dir /etc/fail2ban
              portcullis fail2ban ban sshd 203.0.113.9 --time 1767225600 --bantime 600
              portcullis fail2ban flush sshd
            """,
        subcommands: [Fail2banInstall.self, Fail2banBan.self, Fail2banUnban.self, Fail2banFlush.self])
}

struct Fail2banInstall: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install",
        abstract: "Write the Portcullis actions to fail2ban's action.d/ and print a jail.d example.",
        discussion: """
            Writes DIR/action.d/portcullis.py and DIR/action.d/portcullis.conf (mode 0644, \
            replacing earlier copies) and prints a jail.d/portcullis.local that makes Portcullis the \
            default ban action. Reload fail2ban afterwards: `fail2ban-client reload`.

            Examples:
              portcullis fail2ban install
              portcullis fail2ban install --dir /etc/fail2ban --control-socket /run/portcullis/control.sock
            """)

    @Option(help: ArgumentHelp("fail2ban's configuration directory.", valueName: "path"))
    var dir = "/etc/fail2ban"

    @Option(name: .customLong("control-socket"), help: ArgumentHelp(
        "The daemon's control socket, which the Python action speaks to.", valueName: "path"))
    var controlSocket = ControlSocketClient.defaultPath

    func run() throws {
        let actions = dir + "/action.d"
        var info = stat()
        guard stat(actions, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw RuntimeFailure("no fail2ban configuration at \(dir) (\(actions) is missing); give the right one with --dir")
        }
        for (name, text) in [("portcullis.py", Fail2banActions.python(socket: controlSocket)), ("portcullis.conf", Fail2banActions.shell)] {
            let path = actions + "/" + name
            try writeFileAtomically(text, to: path, mode: 0o644, what: "the fail2ban action")
            print("installed \(path)")
        }
        print("")
        print("Add to \(dir)/jail.d/portcullis.local, then run `fail2ban-client reload`:")
        print("")
        print(Fail2banActions.jailExample)
    }
}

struct Fail2banBan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ban",
        abstract: "Block an address for a fail2ban jail (what portcullis.conf's actionban runs).",
        discussion: """
            The block ends at TIME plus BANTIME seconds; a BANTIME of -1 (or any negative number) \
            is permanent. A ban that is already in force for longer is kept as it is, so a \
            restored ban never lengthens it.

            Example:
              portcullis fail2ban ban sshd 2001:db8::5 --time 1767225600.25 --bantime 600 --bancount 2 --restored 1
            """)

    @OptionGroup var state: StateOptions

    @Argument(help: ArgumentHelp("The jail (fail2ban's <name>).", valueName: "jail"), transform: parseJail)
    var jail: String

    @Argument(help: ArgumentHelp("The address (fail2ban's <ip>).", valueName: "address"), transform: TargetArgument.transform)
    var target: TargetArgument

    @Option(help: ArgumentHelp("When the ban began, seconds since 1970 (fail2ban's <time>).", valueName: "seconds"))
    var time: Double

    @Option(help: ArgumentHelp("How long the ban lasts, in seconds, -1 for ever (fail2ban's <bantime>).", valueName: "seconds"))
    var bantime: Int64

    @Option(help: ArgumentHelp("How many times fail2ban has banned the address (<bancount>).", valueName: "count"))
    var bancount = 0

    @Option(help: ArgumentHelp("1 when fail2ban restores the ban at its start (<restored>).", valueName: "0|1"))
    var restored = 0

    @Flag(help: "Print the result as JSON.")
    var json = false

    func validate() throws {
        try validateBlockable(target.target)
        guard restored == 0 || restored == 1 else { throw ValidationError("--restored must be 0 or 1") }
    }

    func run() throws {
        let request: BlockRequest
        do {
            request = try Fail2ban.ban(target.target, jail: jail, time: time, bantime: bantime, bancount: bancount, restored: restored == 1)
        } catch {
            throw ValidationError(error.description)
        }
        let outcome = try state.blocklist(creating: nil).block(request, context: .none)
        warnOfMissingRecord(outcome.recordWarning)
        if json {
            print(Output.json(BlockResponse(outcome, notes: target.parsed.notes)))
            return
        }
        let until = outcome.entry.expiresUnixMilliseconds.map { "until \(Output.localTime(unixMilliseconds: $0))" } ?? "permanently"
        print("\(outcome.change.rawValue) \(outcome.entry.target) for fail2ban jail \(jail): blocked \(until)")
    }
}

struct Fail2banUnban: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unban",
        abstract: "Lift a fail2ban jail's block on an address (what portcullis.conf's actionunban runs).",
        discussion: """
            Lifts the block only when this jail made it; a block of another source or jail stays, \
            and the command says so and succeeds.

            Example:
              portcullis fail2ban unban sshd 203.0.113.9
            """)

    @OptionGroup var state: StateOptions

    @Argument(help: ArgumentHelp("The jail (fail2ban's <name>).", valueName: "jail"), transform: parseJail)
    var jail: String

    @Argument(help: ArgumentHelp("The address (fail2ban's <ip>).", valueName: "address"), transform: TargetArgument.transform)
    var target: TargetArgument

    @Flag(help: "Print the result as JSON.")
    var json = false

    func run() throws {
        let result = try whenStateExists(or: UnblockResult(outcome: .absent)) { () throws(ServiceError) in
            try state.blocklist().unblock(target.target, requestedBy: .fail2ban, onlyOwn: true,
                                          origin: Fail2ban.origin(jail: jail), context: .none)
        }
        warnOfMissingRecord(result.recordWarning)
        if json {
            print(Output.json(UnblockResponse(target: target.target, result)))
            return
        }
        switch result.outcome {
        case .removed(let entry): print("unblocked \(entry.target) for fail2ban jail \(jail)")
        case .absent: print("\(target.target) was not blocked")
        case .keptForOwner(let entry):
            print("\(entry.target) stays blocked: \(entry.origin.isEmpty ? entry.source?.rawValue ?? "the operator" : entry.origin) owns the block")
        }
    }
}

struct Fail2banFlush: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flush",
        abstract: "Lift every block a fail2ban jail made (what portcullis.conf's actionflush runs).",
        discussion: """
            Every other block stays: another jail's, and every other source's.

            Example:
              portcullis fail2ban flush sshd
            """)

    @OptionGroup var state: StateOptions

    @Argument(help: ArgumentHelp("The jail (fail2ban's <name>).", valueName: "jail"), transform: parseJail)
    var jail: String

    @Flag(help: "Print the result as JSON.")
    var json = false

    func run() throws {
        let owner = BlockOwner(source: .fail2ban, origin: Fail2ban.origin(jail: jail))
        let result = try whenStateExists(or: FlushResult(removed: [])) { () throws(ServiceError) in try state.blocklist().flush(owner) }
        warnOfMissingRecord(result.record.warning(after: "the blocks of fail2ban jail \(jail) are lifted"))
        if json {
            print(Output.json(FlushResponse(result)))
            return
        }
        print("lifted \(result.removedCount) blocks of fail2ban jail \(jail)")
    }
}

/// A jail's name, with the rule's own message as the usage error.
func parseJail(_ text: String) throws -> String {
    do { try Fail2ban.validateJail(text) } catch { throw ValidationError(error.description) }
    return text
}
