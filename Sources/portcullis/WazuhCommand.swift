import ArgumentParser
import PortcullisCore
import Glibc
import PortcullisWazuh
import PortcullisSystem

struct Wazuh: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wazuh",
        abstract: "Use Portcullis as a Wazuh active response.",
        discussion: """
            The portcullis binary is also a Wazuh active-response executable: installed under \
            <home>/active-response/bin/ and run by wazuh-execd, it speaks execd's JSON protocol \
            (check_keys included) and blocks through XDP instead of iptables. It logs to \
            <home>/logs/active-responses.log as Wazuh's own responses do, and records every add \
            and delete, with the rule, agent and alert, in the incident log.

            Example:
              portcullis wazuh install --home /var/ossec --timeout 100 --rules 5710,5712
            """,
        subcommands: [WazuhInstall.self])
}

struct WazuhInstall: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install",
        abstract: "Install Portcullis as a Wazuh active-response executable.",
        discussion: """
            Copies this portcullis binary to <home>/active-response/bin/NAME (a name of its own, \
            because Wazuh package upgrades overwrite firewall-drop), owned by root and the wazuh \
            group, mode 0750, and prints the <command> and <active-response> blocks to add to \
            ossec.conf. Restart the Wazuh agent (or manager, for location `server`) afterwards.

            The printed <command> passes `--for` the same timeout in <extra_args>, so each block \
            carries its own expiry and lifts even if execd dies and never sends delete.

            With --rate the response throttles instead of blocking: it is installed as \
            firewall-throttle (unless --name says otherwise), and <extra_args> carries \
            `--rate N/s` (and --burst, --new-connections), which is what makes the same \
            executable throttle on add and unthrottle on delete.

            Examples:
              portcullis wazuh install
              portcullis wazuh install --home /var/ossec --name firewall-drop-xdp --timeout 600 --rules 5710,5712,5720
              portcullis wazuh install --rate 20/s --new-connections --timeout 600 --rules 5712
            """)

    @Option(help: ArgumentHelp("The Wazuh installation directory.", valueName: "path"))
    var home = "/var/ossec"

    @Option(help: ArgumentHelp("The executable's name under active-response/bin (default firewall-drop-xdp, or firewall-throttle with --rate).", valueName: "name"))
    var name: String?

    @Option(help: ArgumentHelp("Throttle to this many packets a second instead of blocking, like 20/s.", valueName: "N/s"))
    var rate: String?

    @Option(help: ArgumentHelp("With --rate: packets that may pass at once.", valueName: "packets"))
    var burst: UInt32?

    @Flag(help: "With --rate: police only packets that may open a connection.")
    var newConnections = false

    static let blockName = "firewall-drop-xdp"
    static let throttleName = "firewall-throttle"
    var executableName: String { name ?? (rate == nil ? Self.blockName : Self.throttleName) }

    /// The throttle's words in <extra_args>, checked as the response will check them.
    func throttleArguments() throws -> String? {
        guard let rate else {
            if burst != nil || newConnections { throw ValidationError("--burst and --new-connections throttle: give --rate N/s too") }
            return nil
        }
        let terms: ThrottleRate
        do { terms = try ThrottleRate.parse(rate: rate, burst: burst, newConnectionsOnly: newConnections) } catch {
            throw ValidationError(error.description)
        }
        return "--rate \(terms.packetsPerSecond)/s" + (burst.map { " --burst \($0)" } ?? "") + (newConnections ? " --new-connections" : "")
    }

    @Option(help: ArgumentHelp("Seconds until execd lifts a block (the <timeout> printed).", valueName: "seconds"))
    var timeout = 100

    @Option(help: ArgumentHelp("Rule ids that trigger the response, comma-separated.", valueName: "ids"))
    var rules = "5710"

    func validate() throws {
        let name = executableName
        _ = try throttleArguments()
        guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
            throw ValidationError("--name must be a plain file name, not '\(TerminalText.excerpt(name))'")
        }
        guard timeout > 0 else { throw ValidationError("--timeout must be a positive number of seconds") }
        let ids = rules.split(separator: ",")
        guard !ids.isEmpty, ids.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }) else {
            throw ValidationError("--rules must be comma-separated rule ids, like 5710,5712")
        }
    }

    func run() throws {
        let directory = "\(home)/active-response/bin"
        var info = stat()
        guard stat(directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw RuntimeFailure("no Wazuh installation at \(home) (\(directory) is missing); give the right one with --home")
        }
        let destination = "\(directory)/\(executableName)"
        try copyActiveResponse(to: destination)
        print("installed \(destination)")
        print("")
        print("Add to \(home)/etc/ossec.conf (on the agent for location local, or on the manager):")
        print("")
        print(Self.configuration(name: executableName, timeout: timeout, rules: rules, throttle: try throttleArguments()))
    }

    static func configuration(name: String, timeout: Int, rules: String, throttle: String? = nil) -> String {
        """
        <command>
          <name>\(name)</name>
          <executable>\(name)</executable>
          <timeout_allowed>yes</timeout_allowed>
          <extra_args>--for \(timeout)s\(throttle.map { " " + $0 } ?? "")</extra_args>
        </command>

        <active-response>
          <command>\(name)</command>
          <location>local</location>
          <rules_id>\(rules)</rules_id>
          <timeout>\(timeout)</timeout>
        </active-response>
        """
    }

    /// Copies portcullis-active-response, the small executable beside this one, or this
    /// executable where it is missing (this one answers execd too, but starts slower). A copy,
    /// not a symlink: Wazuh derives its home from the real path of the executable. Written
    /// through a temporary file and a rename, so a running execd never sees half a binary.
    private func copyActiveResponse(to destination: String) throws {
        let small = DaemonHandoff.sibling(named: "portcullis-active-response")
        var opened = SystemCall.retryingInterrupts { open(small, O_RDONLY | O_CLOEXEC) }
        if case .failure = opened {
            printError("portcullis: note: \(small) is missing; installing this executable instead, which starts slower")
            opened = SystemCall.retryingInterrupts { open("/proc/self/exe", O_RDONLY | O_CLOEXEC) }
        }
        let source: CInt
        switch opened {
        case .success(let fd): source = fd
        case .failure(let code): throw RuntimeFailure("cannot read this executable: \(code.description)")
        }
        defer { close(source) }
        let temporary = "\(destination).portcullis-new"
        let target: CInt
        switch SystemCall.retryingInterrupts({ open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o750) }) {
        case .success(let fd): target = fd
        case .failure(let code): throw RuntimeFailure("cannot write \(temporary): \(code.description)")
        }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        // The errno of the read, write or sync that failed, kept from before close and unlink can change it.
        var failed: CInt?
        copying: while true {
            switch SystemCall.retryingInterrupts({ read(source, &buffer, buffer.count) }) {
            case .success(0): break copying
            case .success(let count):
                if case .failure(let code) = SystemCall.writeAll(target, buffer[0..<count]) {
                    failed = code.rawValue
                    break copying
                }
            case .failure(let code):
                failed = code.rawValue
                break copying
            }
        }
        if failed == nil, case .failure(let code) = SystemCall.retryingInterrupts({ fsync(target) }) { failed = code.rawValue }
        close(target)
        if let failed {
            unlink(temporary)
            throw RuntimeFailure("cannot write \(temporary): \(String(cString: strerror(failed)))")
        }
        // Wazuh's own executables are root:wazuh 0750; without a wazuh group, root only.
        let group = LocalGroups.id(of: "wazuh") ?? 0
        chown(temporary, 0, group)
        chmod(temporary, 0o750)
        if case .failure(let code) = SystemCall.retryingInterrupts({ rename(temporary, destination) }) {
            unlink(temporary)
            throw RuntimeFailure("cannot install \(destination): \(code.description)")
        }
    }
}
