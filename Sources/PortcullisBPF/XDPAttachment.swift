import CLibbpf
import PortcullisCore
import Glibc

public enum XDPMode: String, Sendable, CaseIterable, Codable {
    /// In the driver, before any socket buffer: the fast path. veth supports it.
    case native
    /// After the kernel built a socket buffer: works on every interface, slower.
    case generic
    /// Native where the driver supports it, otherwise generic.
    case auto
}

/// Whether Portcullis has an interface's XDP hook to itself or shares it.
public enum XDPSharing: String, Sendable, CaseIterable, Codable {
    /// Portcullis's program alone on the interface, through a BPF link of its own: the
    /// fastest path, and an interface that runs another XDP program is refused.
    case exclusive
    /// Through libxdp's dispatcher, beside other programs that attach through libxdp
    /// (xdp-filter, xdp-loader, Suricata): Portcullis runs at its priority and hands on
    /// what it passes to the next program.
    case cooperative

    /// Where a cooperative attachment runs in the dispatcher unless told otherwise
    /// (bpf/portcullis.h says why).
    public static let defaultPriority = UInt32(PORTCULLIS_XDP_RUN_PRIORITY)
}

/// One interface the XDP program is attached to: through a pinned BPF link
/// (exclusive), or as one of the programs of libxdp's dispatcher (cooperative).
public struct Attachment: Sendable {
    public let interface: String
    /// The named network namespace (`ip netns`), nil for the host's.
    public let namespace: String?
    public let interfaceIndex: UInt32
    /// native or generic, as the kernel reports it; nil when the link is defunct.
    public let mode: XDPMode?
    /// Exclusive attachments' link; 0 for cooperative ones, whose links libxdp pins.
    public let linkID: UInt32
    public let programID: UInt32
    /// False once the interface is gone (the kernel detaches the link then), or, for a
    /// cooperative attachment, once the dispatcher no longer runs Portcullis's program.
    public let isActive: Bool
    public var sharing: XDPSharing = .exclusive
    /// Cooperative attachments: Portcullis's place in the dispatcher (lower runs first),
    /// and the dispatcher program attached to the interface.
    public var priority: UInt32?
    public var dispatcherID: UInt32?

    public var displayName: String { namespace.map { "\(interface) in netns \($0)" } ?? interface }
}

/// Where an attachment is pinned: an exclusive one's link at
/// `links/<namespace dir>/<interface>`, a cooperative one's program (the copy loaded
/// into libxdp's dispatcher) at `cooperative/<namespace dir>/<interface>`. bpffs
/// forbids '.' in names, which interface names may hold, so names are escaped.
struct LinkPin {
    let directory: String
    let file: String
    let sharing: XDPSharing

    init(interface: String, namespace: String?, sharing: XDPSharing = .exclusive) {
        directory = namespace.map { "netns-" + Self.escape($0) } ?? "host"
        file = Self.escape(interface)
        self.sharing = sharing
    }

    init(directory: String, file: String, sharing: XDPSharing = .exclusive) {
        self.directory = directory
        self.file = file
        self.sharing = sharing
    }

    static func root(_ sharing: XDPSharing) -> String {
        sharing == .exclusive ? Datapath.linksDirectory : Datapath.cooperativeDirectory
    }

    var parent: String { "\(Self.root(sharing))/\(directory)" }
    var relativePath: String { "\(parent)/\(file)" }
    var interface: String { Self.unescape(file) }
    var namespace: String? { directory.hasPrefix("netns-") ? Self.unescape(String(directory.dropFirst(6))) : nil }
    var displayName: String { namespace.map { "\(interface) in netns \($0)" } ?? interface }

    private static func escape(_ name: String) -> String {
        name.replacing("%", with: "%25").replacing(".", with: "%2E")
    }

    private static func unescape(_ name: String) -> String {
        name.replacing("%2E", with: ".").replacing("%25", with: "%")
    }
}

/// Runs `body` inside the network namespace `/run/netns/NAME` on this thread,
/// then returns to the original one. Mount namespaces stay as they are, so the
/// host's bpffs (and its pins) remain in reach, unlike under `ip netns exec`.
func inNetworkNamespace<T>(_ name: String?, _ body: () throws(DatapathError) -> T) throws(DatapathError) -> T {
    guard let name else { return try body() }
    guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
        throw DatapathError(.refused, "invalid network namespace name '\(TerminalText.excerpt(name))'")
    }
    let original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
    guard original >= 0 else { throw .syscall("cannot open this thread's network namespace", errno: errno) }
    defer { close(original) }
    let target = open("/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
    guard target >= 0 else {
        let code = errno
        if code == ENOENT {
            throw DatapathError(.notFound, "no network namespace named '\(TerminalText.excerpt(name))' (see `ip netns list`)")
        }
        throw .syscall("cannot open network namespace \(name)", errno: code)
    }
    defer { close(target) }
    guard portcullis_enter_network_namespace(target) == 0 else {
        throw .syscall("cannot enter network namespace \(name)", errno: errno)
    }
    defer {
        if portcullis_enter_network_namespace(original) != 0 {
            // Carrying on in the wrong namespace would act on the wrong interfaces.
            fatalError("cannot return to the original network namespace: \(String(cString: strerror(errno)))")
        }
    }
    return try body()
}

func interfaceIndex(_ interface: String, namespace: String?) throws(DatapathError) -> UInt32 {
    let index = if_nametoindex(interface)
    guard index != 0 else {
        let place = namespace.map { "network namespace \($0)" } ?? "the host's network namespace"
        throw DatapathError(.notFound, "no interface named '\(TerminalText.excerpt(interface))' in \(place) (see `ip link`)")
    }
    return index
}

extension Datapath {
    /// Attaches the XDP program to an interface and pins what keeps it there, so the
    /// attachment outlives this process. Exclusive: through a BPF link of Portcullis's
    /// own. Cooperative: through libxdp's dispatcher at `priority` (lower runs first).
    /// Attaching where Portcullis already is attached the same way reports the existing
    /// attachment; attached the other way is an error that says how to change it.
    public func attach(interface: String, namespace: String?, mode: XDPMode, sharing: XDPSharing = .exclusive,
                       priority: UInt32 = XDPSharing.defaultPriority) throws(DatapathError) -> (Attachment, alreadyAttached: Bool) {
        let lock = try pins.lockForWriting()
        defer { withExtendedLifetime(lock) {} }
        let pin = LinkPin(interface: interface, namespace: namespace, sharing: sharing)
        let other = LinkPin(interface: interface, namespace: namespace, sharing: sharing == .exclusive ? .cooperative : .exclusive)
        if pins.contains(other.relativePath), (try? describe(other))?.isActive == true {
            let netns = namespace.map { " --netns \($0)" } ?? ""
            let flag = sharing == .cooperative ? " --cooperative" : ""
            throw DatapathError(
                .refused,
                "Portcullis is attached to \(pin.displayName) \(other.sharing.rawValue)ly already; to change that, `portcullis detach \(interface)\(netns)` (the blocks stay), then `portcullis attach \(interface)\(netns)\(flag)`")
        }
        if pins.contains(pin.relativePath) {
            let existing = try describe(pin)
            if existing.isActive { return (existing, true) }
            // The interface vanished or was recreated, or someone took Portcullis off the dispatcher.
            unlink(pins.path(of: pin.relativePath))
        }
        try pins.create(pin.parent)
        if sharing == .cooperative {
            try attachCooperatively(pin, mode: mode, priority: priority)
            return (try describe(pin), false)
        }
        let linkFD: CInt = try inNetworkNamespace(namespace) { () throws(DatapathError) -> CInt in
            let index = try interfaceIndex(interface, namespace: namespace)
            let modes: [XDPMode] = mode == .auto ? [.native, .generic] : [mode]
            var lastError = DatapathError(.system, "cannot attach to \(pin.displayName)")
            for candidate in modes {
                var options = bpf_link_create_opts()
                options.sz = MemoryLayout<bpf_link_create_opts>.size
                options.flags = UInt32(candidate == .native ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE)
                let fd = bpf_link_create(xdpProgram.fileDescriptor, Int32(index), BPF_XDP, &options)
                if fd >= 0 { return fd }
                lastError = attachError(errno: -fd == 0 ? errno : -fd, interface: pin.displayName, index: index, mode: candidate)
            }
            throw lastError
        }
        defer { close(linkFD) }
        guard bpf_obj_pin(linkFD, pins.path(of: pin.relativePath)) == 0 else {
            let code = errno
            _ = bpf_link_detach(linkFD)
            throw .syscall("cannot pin the XDP link at \(pins.path(of: pin.relativePath)); detached again", errno: code)
        }
        return (try describe(pin), false)
    }

    private func attachError(errno code: CInt, interface: String, index: UInt32, mode: XDPMode) -> DatapathError {
        switch code {
        case EBUSY, EEXIST:
            var programID: UInt32 = 0
            _ = bpf_xdp_query_id(Int32(index), 0, &programID)
            let name = Self.programName(id: programID).map { "\($0), id \(programID)" } ?? "id \(programID)"
            let device = interface.split(separator: " ").first ?? ""
            let share = Self.programName(id: programID) == "xdp_dispatcher"
                ? "; it is libxdp's dispatcher, so `--cooperative` runs Portcullis beside its programs" : ""
            return DatapathError(
                .refused,
                "\(interface) already has an XDP program (\(name)) that Portcullis does not manage, and Portcullis never replaces one; remove it first (`ip link set dev \(device) xdp off`, or the tool that loaded it), then attach again\(share)",
                errno: .init(rawValue: code))
        case EOPNOTSUPP where mode == .native, EINVAL where mode == .native:
            return DatapathError(
                .unsupported,
                "the driver of \(interface) has no native XDP support; use --mode generic (or --mode auto to fall back)",
                errno: .init(rawValue: code))
        default:
            return .syscall("cannot attach the XDP program to \(interface) in \(mode.rawValue) mode", errno: code)
        }
    }

    /// The name the kernel knows a program by, for naming another tool's program in an error.
    static func programName(id: UInt32) -> String? {
        guard id != 0 else { return nil }
        let fd = bpf_prog_get_fd_by_id(id)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var info = bpf_prog_info()
        var length = UInt32(MemoryLayout<bpf_prog_info>.size)
        guard bpf_obj_get_info_by_fd(fd, &info, &length) == 0 else { return nil }
        let name = string(fromCString: info.name)
        return name.isEmpty ? nil : name
    }

    /// Detaches the program from an interface and removes its pin: only Portcullis's
    /// program, also from a dispatcher it shares. Returns false when Portcullis was not
    /// attached there.
    public func detach(interface: String, namespace: String?) throws(DatapathError) -> Bool {
        let lock = try pins.lockForWriting()
        defer { withExtendedLifetime(lock) {} }
        let shared = LinkPin(interface: interface, namespace: namespace, sharing: .cooperative)
        if pins.contains(shared.relativePath) {
            try detachCooperatively(shared)
            return true
        }
        let pin = LinkPin(interface: interface, namespace: namespace)
        let path = pins.path(of: pin.relativePath)
        guard pins.contains(pin.relativePath) else { return false }
        let fd = bpf_obj_get(path)
        guard fd >= 0 else { throw .syscall("cannot open the XDP link pinned at \(path)", errno: errno) }
        defer { close(fd) }
        let detached = bpf_link_detach(fd)
        // A link whose interface is gone is already detached; removing its pin finishes the job.
        if detached != 0 && errno != ENOLINK && errno != EINVAL {
            throw .syscall("cannot detach the XDP program from \(pin.displayName)", errno: errno)
        }
        guard unlink(path) == 0 else { throw .syscall("cannot remove \(path)", errno: errno) }
        rmdir(pins.path(of: pin.parent))
        return true
    }

    /// Every pinned attachment, active or not, exclusive ones first.
    public func attachments() throws(DatapathError) -> [Attachment] {
        var result: [Attachment] = []
        for pin in pins.linkPins() + pins.cooperativePins() { result.append(try describe(pin)) }
        return result
    }

    /// The pinned link's descriptor: `bpf_obj_get(3)`. The caller closes it.
    func openLink(_ pin: LinkPin) throws(DatapathError) -> CInt {
        let path = pins.path(of: pin.relativePath)
        let fd = bpf_obj_get(path)
        guard fd >= 0 else {
            let code = errno
            throw .syscall("cannot open the XDP link pinned at \(path)", errno: code)
        }
        return fd
    }

    func describe(_ pin: LinkPin) throws(DatapathError) -> Attachment {
        if pin.sharing == .cooperative { return try describeCooperative(pin) }
        let path = pins.path(of: pin.relativePath)
        let fd = try openLink(pin)
        defer { close(fd) }
        var info = bpf_link_info()
        var length = UInt32(MemoryLayout<bpf_link_info>.size)
        guard bpf_obj_get_info_by_fd(fd, &info, &length) == 0 else {
            throw .syscall("cannot read the XDP link pinned at \(path)", errno: errno)
        }
        let index = info.xdp.ifindex
        var mode: XDPMode?
        if index != 0 {
            mode = try? inNetworkNamespace(pin.namespace) { () throws(DatapathError) -> XDPMode? in
                var query = bpf_xdp_query_opts()
                query.sz = MemoryLayout<bpf_xdp_query_opts>.size
                guard bpf_xdp_query(Int32(index), 0, &query) == 0 else { return nil }
                switch Int32(query.attach_mode) {
                case Int32(XDP_ATTACHED_DRV): return .native
                case Int32(XDP_ATTACHED_SKB): return .generic
                default: return query.drv_prog_id == info.prog_id ? .native : (query.skb_prog_id == info.prog_id ? .generic : nil)
                }
            }
        }
        return Attachment(
            interface: pin.interface, namespace: pin.namespace, interfaceIndex: index, mode: mode,
            linkID: info.id, programID: info.prog_id, isActive: index != 0)
    }
}
