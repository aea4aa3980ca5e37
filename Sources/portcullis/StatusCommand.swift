import ArgumentParser
import FoundationEssentials
import PortcullisBPF
import PortcullisControl
import PortcullisCore
import PortcullisIncidents
import PortcullisLedger

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show where Portcullis is attached and how full its maps are.",
        discussion: """
            Lists every pinned attachment with its interface, network namespace, XDP mode and \
            program id (an attachment whose interface disappeared shows as defunct), then each \
            map's entries against its capacity and the kernel memory it holds. When the daemon \
            runs in a fleet, also the fleet's health: whether it follows the change log, its \
            cursor, how far behind it is in changes and seconds, when it last applied another \
            node's change, and how many of its own wait to be published.

            Examples:
              portcullis status
              portcullis status --netns bastion
              portcullis status --json
            """)

    @OptionGroup var state: StateOptions

    @Option(help: ArgumentHelp("Only attachments in this named network namespace.", valueName: "name"))
    var netns: String?

    @Flag(help: "Print the status as JSON.")
    var json = false

    func run() throws {
        let blocklist = try state.local()
        let datapath = blocklist.datapath
        var attachments = try datapath.attachments()
        if let netns { attachments = attachments.filter { $0.namespace == netns } }
        let maps = try blocklist.mapUsage()
        let fleet = fleetHealth()
        if json {
            print(Output.json(StatusJSON(
                pinDirectory: datapath.pins.path, createdAt: Incident.rfc3339(unixMilliseconds: datapath.createdUnixMilliseconds),
                jiffiesPerSecond: datapath.jiffiesPerSecond, capacityExact: datapath.capacity.exact,
                capacityPrefixes: datapath.capacity.prefixes, attachments: attachments.map { AttachmentRecord($0) }, maps: maps,
                fleet: fleet)))
            return
        }
        print("state:     \(datapath.pins.path) (created \(Output.localTime(unixMilliseconds: datapath.createdUnixMilliseconds)))")
        print("ledger:    \(blocklist.ledger.path)")
        print("capacity:  \(datapath.capacity)")
        print("clock:     kernel jiffies at \(datapath.jiffiesPerSecond) Hz")
        print("")
        if attachments.isEmpty {
            print("not attached to any interface\(netns.map { " in netns \($0)" } ?? "") (see `portcullis attach --help`)")
        } else {
            print(Output.table(
                ["INTERFACE", "NETNS", "MODE", "SHARING", "PROGRAM", "LINK", "STATE"],
                attachments.map {
                    let sharing = $0.sharing == .exclusive ? "exclusive"
                        : "cooperative" + ($0.priority.map { ", priority \($0)" } ?? "")
                    let defunct = $0.sharing == .exclusive
                        ? "defunct (interface gone; `portcullis detach` removes it)"
                        : "defunct (not in the interface's dispatcher; `portcullis detach` removes it)"
                    return [$0.interface, $0.namespace ?? "-", $0.mode?.rawValue ?? "-", sharing, String($0.programID),
                            $0.linkID == 0 ? "-" : String($0.linkID), $0.isActive ? "active" : defunct]
                }))
        }
        print("")
        print(Output.table(
            ["MAP", "ENTRIES", "CAPACITY", "USED", "MEMORY"],
            maps.map {
                let used = $0.capacity == 0 ? 0 : Double($0.entries) / Double($0.capacity) * 100
                return [$0.name, String($0.entries), String($0.capacity), Output.fixed(used, digits: 1) + "%",
                        $0.memoryBytes.map(Output.bytes) ?? "?"]
            }))
        if let fleet {
            print("")
            print("fleet:     node \(TerminalText.escaped(fleet.node)) through \(TerminalText.escaped(fleet.database))")
            let state = fleet.connected ? "connected" : "not connected (enforcing what this host holds)"
            print("           \(state)\(fleet.lastError.map { "; last error: \(TerminalText.escaped($0))" } ?? "")")
            print("           cursor \(fleet.cursor.map(String.init) ?? "none"), \(fleet.lagEvents) changes behind"
                  + (fleet.lagSeconds.map { ", last change in force \(Output.fixed($0 * 1000, digits: 0)) ms after its commit" } ?? ""))
            print("           last apply \(fleet.lastApplyUnixMs.map { Output.localTime(unixMilliseconds: $0) } ?? "never"), "
                  + "\(fleet.outbox) of this host's changes waiting, clock skew \(fleet.skewMilliseconds.map { "\($0) ms" } ?? "unknown")")
        }
    }

    /// The fleet's health from the daemon, when one runs in a fleet.
    private func fleetHealth() -> FleetHealth? {
        guard let response = try? ControlSocketClient.resolve(option: state.controlSocket).send("GET", "/v1/fleet"),
              response.status == 200 else { return nil }
        return try? JSONDecoder().decode(FleetHealth.self, from: Data(response.body))
    }
}

struct StatusJSON: Encodable {
    let pinDirectory: String
    let createdAt: String
    let jiffiesPerSecond: UInt32
    let capacityExact: UInt32
    let capacityPrefixes: UInt32
    let attachments: [AttachmentRecord]
    let maps: [MapUsage]
    /// Absent unless the daemon runs in a fleet.
    let fleet: FleetHealth?
}

struct Purge: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "purge",
        abstract: "Detach everywhere and delete all Portcullis state.",
        discussion: """
            Detaches the XDP program from every interface it is attached to, removes the pin \
            directory, and deletes the ledger (every block and the allowlist, which would \
            otherwise be restored). The incident record and its key are kept. Use it to \
            uninstall, or to start over with another capacity.

            Example:
              portcullis purge --yes
            """)

    @OptionGroup var state: StateOptions

    @Flag(help: "Confirm: without it nothing is removed.")
    var yes = false

    func validate() throws {
        if !yes { throw ValidationError("purge drops every block and detaches everywhere; add --yes to confirm") }
    }

    func run() throws {
        let detached = try Datapath.purge(state.pins)
        for interface in detached { print("detached from \(interface)") }
        print("removed \(state.pins.path)")
        let location = state.location
        if try Ledger.remove(stateDirectory: location.stateDirectory) {
            print("removed the ledger in \(location.stateDirectory)")
        }
    }
}
