import ArgumentParser
import PortcullisBPF
import PortcullisControl

extension XDPMode: ExpressibleByArgument {}

struct Attach: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attach",
        abstract: "Attach the XDP program to a network interface.",
        discussion: """
            Loads the blocklist maps and the XDP program on first use, filled from the ledger when \
            it holds blocks (after a reboot, or an upgrade from older pins), and reconciles maps \
            and ledger; then attaches the program to \
            IFACE through a BPF link pinned in the pin directory, so it stays attached after this \
            command exits and across daemon restarts. Attaching more interfaces reuses the same \
            pinned maps: there is one blocklist, however many interfaces enforce it. Attaching \
            where Portcullis already is attached changes nothing.

            Modes: native runs in the driver before any socket buffer exists (fastest; veth, most \
            server NICs); generic works on any interface after the kernel built a socket buffer; \
            auto (the default) tries native, then generic.

            Sharing: by default Portcullis has the interface's XDP hook to itself, and an \
            interface that already runs another XDP program is refused, never replaced. With \
            --cooperative it joins libxdp's dispatcher instead, beside other programs attached \
            through libxdp (xdp-filter, xdp-loader, Suricata's XDP mode): programs run in order \
            of priority, lowest first; Portcullis's default priority is 10, ahead of libxdp's \
            default of 50, so a blocked source's packets are dropped before the others spend \
            work on them, and every packet it passes goes on to the next program. `detach` \
            takes only Portcullis off the dispatcher. Sharing costs the dispatcher's indirect \
            call per packet; exclusive is the fast path.

            Examples:
              portcullis attach eth0
              portcullis attach eth0 --mode native
              portcullis attach veth-bastion --netns bastion
              portcullis attach eth0 --cooperative
              portcullis attach eth0 --cooperative --priority 60
            """)

    @OptionGroup var state: StateOptions
    @OptionGroup var creation: CreationOptions

    @Argument(help: "The interface to protect.")
    var interface: String

    @Option(help: "native, generic or auto.")
    var mode: XDPMode = .auto

    @Option(help: ArgumentHelp(
        "The named network namespace (as in `ip netns`) that holds IFACE; pins stay in the host's bpffs.",
        valueName: "name"))
    var netns: String?

    @Flag(help: "Share IFACE with other XDP programs through libxdp's dispatcher instead of taking it alone.")
    var cooperative = false

    @Option(help: ArgumentHelp(
        "With --cooperative: the place in the dispatcher, lower runs first (default \(XDPSharing.defaultPriority)).",
        valueName: "n"))
    var priority: UInt32?

    @Flag(help: "Print the result as JSON.")
    var json = false

    func validate() throws {
        if priority != nil && !cooperative {
            throw ValidationError("--priority places Portcullis in libxdp's dispatcher; it needs --cooperative")
        }
    }

    func run() throws {
        let datapath = try state.local(creating: creation, reconcile: true).datapath
        let (attachment, existing) = try datapath.attach(
            interface: interface, namespace: netns, mode: mode, sharing: cooperative ? .cooperative : .exclusive,
            priority: priority ?? XDPSharing.defaultPriority)
        if json {
            print(Output.json(AttachmentRecord(attachment, alreadyAttached: existing)))
            return
        }
        let mode = attachment.mode?.rawValue ?? "unknown"
        let how = attachment.sharing == .cooperative
            ? "program \(attachment.programID) at priority \(attachment.priority.map(String.init) ?? "?") in libxdp's dispatcher \(attachment.dispatcherID.map(String.init) ?? "?")"
            : "program \(attachment.programID), link \(attachment.linkID)"
        if existing {
            print("\(attachment.displayName): already attached (\(mode) mode, \(how))")
        } else {
            print("attached to \(attachment.displayName) in \(mode) mode (\(how))")
        }
    }
}

struct Detach: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detach",
        abstract: "Detach the XDP program from a network interface.",
        discussion: """
            Removes Portcullis's pinned XDP link from IFACE, or, when it shares IFACE through \
            libxdp's dispatcher, takes only its own program off the dispatcher (the others keep \
            running). Blocks stay in the maps and apply again when the interface is attached \
            again; other interfaces are not affected.

            Examples:
              portcullis detach eth0
              portcullis detach veth-bastion --netns bastion
            """)

    @OptionGroup var state: StateOptions

    @Argument(help: "The interface to stop protecting.")
    var interface: String

    @Option(help: ArgumentHelp("The named network namespace that holds IFACE.", valueName: "name"))
    var netns: String?

    func run() throws {
        let datapath = try Datapath.open(state.pins)
        let place = netns.map { "\(interface) in netns \($0)" } ?? interface
        guard try datapath.detach(interface: interface, namespace: netns) else {
            throw RuntimeFailure("Portcullis is not attached to \(place) (see `portcullis status`)")
        }
        print("detached from \(place)")
    }
}
