import ArgumentParser
import Glibc
import PortcullisControl
import PortcullisCore
import PortcullisSystem

struct Sshguard: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sshguard",
        abstract: "Use Portcullis as sshguard's blocking backend.",
        discussion: """
            sshguard's blocker writes its decisions to a backend's standard input: `block ADDR 4|6 \
            PREFIXLEN`, `release ADDR 4|6 PREFIXLEN`, `flush` and `flushonexit`. `portcullis \
            sshguard backend` is such a backend, and `portcullis sshguard install` puts a \
            sshg-fw-portcullis beside sshguard's own that runs it; set BACKEND in sshguard.conf to it.

            Each block is of source sshguard, the address masked to the prefix sshguard names (it \
            sends the attacker's own address with IPV4_SUBNET or IPV6_SUBNET). sshguard sends no \
            duration: it releases a block itself when its time is up. So each block also gets a \
            safety expiry, 24 hours unless --safety-expiry says otherwise, refreshed by every \
            block of the same address, so that a block outlives a sshguard that died without \
            releasing it by at most that long. 24 hours is longer than sshguard keeps any but a \
            many times repeated offender (its block time starts at 120 s and grows by half each \
            time), and an address on sshguard's blacklist is blocked again at its every start. \
            `release`, `flush` and the flush at exit that `flushonexit` asks for lift only \
            sshguard's own blocks.

            Examples:
              portcullis sshguard install
              portcullis sshguard install --dir /usr/libexec/sshguard --safety-expiry 12h
              printf 'block 203.0.113.9 4 32\\n' | portcullis sshguard backend
            """,
        subcommands: [SshguardBackend.self, SshguardInstall.self])

    /// The default safety expiry: see the discussion above.
    static let defaultSafetyExpiry: Duration = .seconds(86_400)
}

struct SshguardBackend: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backend",
        abstract: "Read sshguard's backend commands on standard input and carry them out.",
        discussion: """
            Runs until standard input ends. A line that is not a backend command, or a block that \
            is refused (loopback, an allowlisted address), is reported on standard error and \
            changes nothing; the backend goes on with the next line. Each command goes to the \
            daemon when it runs, else to the pinned maps.

            Example:
              printf 'flushonexit\\nblock 2001:db8::77 6 64\\n' | portcullis sshguard backend --safety-expiry 1h
            """)

    @OptionGroup var state: StateOptions

    @Option(name: .customLong("safety-expiry"), help: ArgumentHelp(
        "How long a block lasts if sshguard never releases it.", valueName: "duration"), transform: parseDuration)
    var safetyExpiry: Duration = Sshguard.defaultSafetyExpiry

    static let origin = "sshguard"

    func run() throws {
        var flushOnExit = false
        var line = ""
        while let read = readLine(strippingNewline: true) {
            line = read
            guard !line.allSatisfy({ $0 == " " || $0 == "\t" }) else { continue }
            let command: SshguardCommand
            do {
                command = try SshguardCommand.parse(line)
            } catch {
                printError("sshg-fw-portcullis: \(error.description); ignored")
                continue
            }
            if command == .flushOnExit {
                flushOnExit = true
                continue
            }
            carryOut(command)
        }
        if flushOnExit { carryOut(.flush) }
    }

    /// One command, through a blocklist of its own: a daemon that was down for the last one
    /// and is up again gets this one.
    private func carryOut(_ command: SshguardCommand) {
        let blocklist = state.blocklist()
        do throws(ServiceError) {
            switch command {
            case .block(let target):
                let outcome = try blocklist.block(
                    BlockRequest(target: target, duration: safetyExpiry, reason: "sshguard", source: .sshguard, origin: Self.origin),
                    context: .none)
                warnOfMissingRecord(outcome.recordWarning)
            case .release(let target):
                let result = try whenStateExists(or: UnblockResult(outcome: .absent)) { () throws(ServiceError) in
                    try blocklist.unblock(target, requestedBy: .sshguard, onlyOwn: true, context: .none)
                }
                warnOfMissingRecord(result.recordWarning)
            case .flush, .flushOnExit:
                let result = try whenStateExists(or: FlushResult(removed: [])) { () throws(ServiceError) in
                    try blocklist.flush(BlockOwner(source: .sshguard))
                }
                warnOfMissingRecord(result.record.warning(after: "sshguard's blocks are lifted"))
            }
        } catch {
            printError("sshg-fw-portcullis: \(error.description)")
        }
    }
}

struct SshguardInstall: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install",
        abstract: "Install sshg-fw-portcullis beside sshguard's own backends.",
        discussion: """
            Writes DIR/sshg-fw-portcullis (mode 0755), a script that runs this portcullis's \
            `sshguard backend` with the options given here, and prints the line to set in \
            /etc/sshguard/sshguard.conf. Restart sshguard afterwards.

            Examples:
              portcullis sshguard install
              portcullis sshguard install --safety-expiry 12h --control-socket /run/portcullis/control.sock
            """)

    @Option(help: ArgumentHelp("sshguard's directory of backends.", valueName: "path"))
    var dir = "/usr/libexec/sshguard"

    @Option(name: .customLong("safety-expiry"), help: ArgumentHelp(
        "How long a block lasts if sshguard never releases it.", valueName: "duration"), transform: parseDuration)
    var safetyExpiry: Duration = Sshguard.defaultSafetyExpiry

    @Option(name: .customLong("control-socket"), help: ArgumentHelp("The daemon's control socket.", valueName: "path"))
    var controlSocket = ControlSocketClient.defaultPath

    func run() throws {
        var info = stat()
        guard stat(dir, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw RuntimeFailure("no sshguard installation at \(dir) (the directory is missing); give the right one with --dir")
        }
        let path = dir + "/sshg-fw-portcullis"
        let script = """
            #!/bin/sh
            # sshguard's backend: Portcullis (written by `portcullis sshguard install`).
            exec \(Self.shellQuoted(DaemonHandoff.sibling(named: "portcullis"))) sshguard backend \
            --safety-expiry \(DurationText.format(safetyExpiry)) --control-socket \(Self.shellQuoted(controlSocket))

            """
        try writeFileAtomically(script, to: path, mode: 0o755, what: "the sshguard backend")
        print("installed \(path)")
        print("")
        print("Set in /etc/sshguard/sshguard.conf, then restart sshguard:")
        print("")
        print("BACKEND=\"\(path)\"")
    }

    static func shellQuoted(_ text: String) -> String {
        "'" + text.replacing("'", with: "'\\''") + "'"
    }
}
