import ArgumentParser
import Glibc

/// `portcullis run` is the daemon, which lives in its own executable beside this one: the
/// daemon's HTTP stack, YAML parser and detector would otherwise be loaded by every command
/// and by every Wazuh active response, and their start-up is most of what a command costs.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the Portcullis daemon.",
        discussion: """
            Hands over to portcullis-daemon, installed beside portcullis, with the same \
            arguments. `portcullis run --help` prints the daemon's own options.
            """)

    @Argument(parsing: .captureForPassthrough, help: "The daemon's options (see `portcullis run --help`).")
    var arguments: [String] = []

    func run() throws {
        try DaemonHandoff.execute(["run"] + arguments)
    }
}

/// `portcullis logtest` needs the detector and the YAML configuration, which live in
/// portcullis-daemon; like `run`, it hands over to it.
struct Logtest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logtest",
        abstract: "Try log lines against the detector's rules, as wazuh-logtest does; changes nothing.",
        discussion: """
            Hands over to portcullis-daemon, installed beside portcullis, with the same \
            arguments. `portcullis logtest --help` prints its options.
            """)

    @Argument(parsing: .captureForPassthrough, help: "logtest's options (see `portcullis logtest --help`).")
    var arguments: [String] = []

    func run() throws {
        try DaemonHandoff.execute(["logtest"] + arguments)
    }
}

enum DaemonHandoff {
    static let executableName = "portcullis-daemon"

    /// The commands the daemon's executable carries out.
    static let commands: Set<String> = ["run", "logtest"]

    /// Whether `arguments` (the whole command line) asks for the daemon's executable; checked
    /// before parsing so that `portcullis run --help` reaches the daemon's own help.
    static func isRequested(_ arguments: [String]) -> Bool {
        arguments.count >= 2 && commands.contains(arguments[1])
    }

    /// Replaces this process with the daemon (execv(2)): same pid, so a supervisor that started
    /// `portcullis run` supervises the daemon itself.
    static func execute(_ arguments: [String]) throws(RuntimeFailure) -> Never {
        let path = daemonPath()
        let argv = ([executableName] + arguments).map { strdup($0) } + [nil]
        execv(path, argv)
        let code = errno
        if code == ENOENT {
            throw RuntimeFailure("the daemon executable \(path) is missing; install \(executableName) beside portcullis (see the README's Installing section)")
        }
        throw RuntimeFailure("cannot start the daemon \(path): \(String(cString: strerror(code)))")
    }

    static func daemonPath() -> String { sibling(named: executableName) }

    /// An executable installed beside the real path of this one, so a symlinked portcullis still finds it.
    static func sibling(named name: String) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard realpath("/proc/self/exe", &buffer) != nil else { return "/usr/local/bin/\(name)" }
        let path = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = path.lastIndex(of: "/") else { return name }
        return String(path[...slash]) + name
    }
}
