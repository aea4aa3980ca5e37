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

/// One interface the XDP program is attached to, through a pinned BPF link.
public struct Attachment: Sendable {
    public let interface: String
    /// The named network namespace (`ip netns`), nil for the host's.
    public let namespace: String?
    public let interfaceIndex: UInt32
    /// native or generic, as the kernel reports it; nil when the link is defunct.
    public let mode: XDPMode?
    public let linkID: UInt32
    public let programID: UInt32
    /// False once the interface is gone: the kernel detaches the link then.
    public let isActive: Bool

    public var displayName: String { namespace.map { "\(interface) in netns \($0)" } ?? interface }
}

/// Where a link is pinned: `links/<namespace dir>/<interface>`. bpffs forbids
/// '.' in names, which interface names may hold, so names are escaped.
struct LinkPin {
    let directory: String
    let file: String

    init(interface: String, namespace: String?) {
        directory = namespace.map { "netns-" + Self.escape($0) } ?? "host"
        file = Self.escape(interface)
    }

    init(directory: String, file: String) {
        self.directory = directory
        self.file = file
    }

    var relativePath: String { "\(Datapath.linksDirectory)/\(directory)/\(file)" }
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
    /// Attaches the pinned XDP program to an interface through a BPF link and
    /// pins the link, so the attachment outlives this process. Attaching where
    /// Portcullis already is attached reports the existing attachment.
    public func attach(interface: String, namespace: String?, mode: XDPMode) throws(DatapathError) -> (Attachment, alreadyAttached: Bool) {
        let lock = try pins.lockForWriting()
        defer { withExtendedLifetime(lock) {} }
        let pin = LinkPin(interface: interface, namespace: namespace)
        if pins.contains(pin.relativePath) {
            let existing = try describe(pin)
            if existing.isActive { return (existing, true) }
            // The interface vanished (or was recreated); the old link is defunct.
            unlink(pins.path(of: pin.relativePath))
        }
        try pins.create("\(Datapath.linksDirectory)/\(pin.directory)")
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
            return DatapathError(
                .refused,
                "\(interface) already has an XDP program (\(name)) that Portcullis does not manage, and Portcullis never replaces one; remove it first (`ip link set dev \(device) xdp off`, or the tool that loaded it), then attach again",
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

    /// Detaches the program from an interface and removes the link's pin.
    /// Returns false when Portcullis was not attached there.
    public func detach(interface: String, namespace: String?) throws(DatapathError) -> Bool {
        let lock = try pins.lockForWriting()
        defer { withExtendedLifetime(lock) {} }
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
        rmdir(pins.path(of: "\(Datapath.linksDirectory)/\(pin.directory)"))
        return true
    }

    /// Every pinned attachment, active or not.
    public func attachments() throws(DatapathError) -> [Attachment] {
        var result: [Attachment] = []
        for pin in pins.linkPins() { result.append(try describe(pin)) }
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

    private func describe(_ pin: LinkPin) throws(DatapathError) -> Attachment {
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
