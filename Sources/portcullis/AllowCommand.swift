import ArgumentParser
import PortcullisBPF
import PortcullisControl
import PortcullisCore

struct Allow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allow",
        abstract: "Never drop traffic from an address or prefix.",
        discussion: """
            The allowlist is checked before any block: an allowlisted source passes even when a \
            block covers it, and `block` refuses targets inside the allowlist. Put your \
            management networks and monitoring hosts here.

            Examples:
              portcullis allow 192.0.2.10
              portcullis allow 2001:db8:1::/48
              portcullis allow --list
            """)

    @OptionGroup var state: StateOptions
    @OptionGroup var creation: CreationOptions

    @Argument(help: ArgumentHelp("Address or prefix to allow.", valueName: "address|prefix"),
              transform: TargetArgument.transform)
    var target: TargetArgument?

    @Flag(help: "Show the allowlist instead of changing it.")
    var list = false

    @Flag(help: "Print the result as JSON.")
    var json = false

    func validate() throws {
        if list == (target != nil) { throw ValidationError("give an address or prefix to allow, or --list") }
    }

    func run() throws {
        guard let target else {
            let allowed = try whenStateExists(or: []) { () throws(ServiceError) in try state.blocklist().allowlist() }
            if json {
                print(Output.json(allowed.map(\.description)))
            } else if allowed.isEmpty {
                print("the allowlist is empty")
            } else {
                allowed.forEach { print($0) }
            }
            return
        }
        target.printNotes()
        let change = try state.blocklist(creating: creation).allow(target.target)
        if json {
            print(Output.json(AllowResponse(target: target.target, change: change)))
        } else {
            print(change == .added ? "allowed \(target.target)" : "\(target.target) was already allowed")
        }
    }
}

struct Disallow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disallow",
        abstract: "Remove an address or prefix from the allowlist.",
        discussion: """
            Give the entry exactly as `portcullis allow --list` shows it. Blocks that cover it \
            apply again at once.

            Example:
              portcullis disallow 192.0.2.10
            """)

    @OptionGroup var state: StateOptions

    @Argument(help: ArgumentHelp("Allowlist entry to remove.", valueName: "address|prefix"),
              transform: TargetArgument.transform)
    var target: TargetArgument

    func run() throws {
        target.printNotes()
        let change = try state.blocklist().disallow(target.target)
        print(change == .removed ? "removed \(target.target) from the allowlist" : "\(target.target) was not in the allowlist")
    }
}
