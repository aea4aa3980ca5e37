import CLibbpf
import Glibc
import PortcullisCore

/// Sharing an interface through libxdp's dispatcher (Debian's libxdp 1.3).
///
/// The dispatcher is one XDP program that calls up to ten others in order of priority,
/// each through a freplace (BPF_PROG_TYPE_EXT) link, and runs the next only for the
/// verdicts the previous one's run configuration names (ours: XDP_PASS). A freplace
/// program is loaded against its target, so the pinned XDP program cannot be reused:
/// each cooperative attachment loads its own copy of the embedded object as an
/// extension, with every map taken from the pins, so it enforces the same blocklist.
/// libxdp pins the dispatcher and its links under /sys/fs/bpf/xdp; Portcullis pins its
/// copy at `cooperative/<namespace dir>/<interface>` to find it again.
extension Datapath {
    func attachCooperatively(_ pin: LinkPin, mode: XDPMode, priority: UInt32) throws(DatapathError) {
        let object = try Datapath.openEmbeddedObject()
        defer { bpf_object__close(object) }
        try reusePinnedMaps(in: object)
        if let probe = bpf_object__find_program_by_name(object, PORTCULLIS_PROG_CLOCK) {
            _ = bpf_program__set_autoload(probe, false)
        }
        let created: OpaquePointer? = PORTCULLIS_PROG_XDP.withCString { name in
            var options = xdp_program_opts()
            options.sz = MemoryLayout<xdp_program_opts>.size
            options.obj = object
            options.prog_name = name
            return xdp_program__create(&options)
        }
        guard let program = created, libxdp_get_error(UnsafeRawPointer(program)) == 0 else {
            let code = created.map { -CInt(truncatingIfNeeded: libxdp_get_error(UnsafeRawPointer($0))) } ?? errno
            throw .syscall("cannot prepare the XDP program for libxdp's dispatcher\(LibbpfLog.detail)", errno: code)
        }
        defer { xdp_program__close(program) }
        let status = xdp_program__set_run_prio(program, priority)
        guard status == 0 else { throw .syscall("cannot set the dispatcher priority \(priority)", errno: -status) }

        try inNetworkNamespace(pin.namespace) { () throws(DatapathError) in
            let index = try interfaceIndex(pin.interface, namespace: pin.namespace)
            try refuseForeignProgram(on: index, pin: pin)
            let modes: [XDPMode] = mode == .auto ? [.native, .generic] : [mode]
            var lastError = DatapathError(.system, "cannot attach to \(pin.displayName)")
            for candidate in modes {
                LibbpfLog.clear()
                let status = xdp_program__attach(program, Int32(index), candidate.libxdpMode, 0)
                if status == 0 {
                    if Self.dispatcherSlot(running: xdp_program__id(program), on: index) != nil { return }
                    // libxdp falls back to attaching the program alone when the kernel cannot run
                    // its dispatcher: that is exclusive mode in disguise, and it would lock others out.
                    let why = LibbpfLog.detail(mentioning: "Compatibility check")
                    _ = xdp_program__detach(program, Int32(index), XDP_MODE_UNSPEC, 0)
                    throw DatapathError(
                        .unsupported,
                        "this kernel cannot run libxdp's dispatcher, which is made of freplace (BPF_PROG_TYPE_EXT) programs\(why), so nothing can share \(pin.displayName) through it; nothing was changed. Attach without --cooperative, or use a kernel that loads freplace programs")
                }
                lastError = cooperativeAttachError(-status, pin: pin, mode: candidate)
            }
            throw lastError
        }
        let path = pins.path(of: pin.relativePath)
        guard bpf_obj_pin(xdp_program__fd(program), path) == 0 else {
            let code = errno
            try? inNetworkNamespace(pin.namespace) { () throws(DatapathError) in
                if let index = try? interfaceIndex(pin.interface, namespace: pin.namespace) {
                    _ = xdp_program__detach(program, Int32(index), XDP_MODE_UNSPEC, 0)
                }
            }
            throw .syscall("cannot pin the dispatcher's copy of the XDP program at \(path); detached again", errno: code)
        }
    }

    /// Points every map of a freshly opened object at the pinned one of the same name
    /// (`bpf_map__reuse_fd(3)`); libbpf's own (.kconfig) are left to it.
    private func reusePinnedMaps(in object: OpaquePointer) throws(DatapathError) {
        for name in MapName.allCases {
            guard let map = bpf_object__find_map_by_name(object, name.rawValue) else {
                throw DatapathError(.system, "the embedded XDP object has no map \(name.rawValue); rebuild portcullis")
            }
            let path = pins.path(of: name.rawValue)
            let fd = bpf_obj_get(path)
            guard fd >= 0 else { throw .syscall("cannot open the map pinned at \(path)", errno: errno) }
            defer { close(fd) }
            let status = bpf_map__reuse_fd(map, fd)
            guard status == 0 else { throw .syscall("cannot share map \(name.rawValue) with the dispatcher's copy", errno: -status) }
        }
    }

    /// libxdp would refuse a program it did not load with a bare EEXIST; say which.
    private func refuseForeignProgram(on index: UInt32, pin: LinkPin) throws(DatapathError) {
        var programID: UInt32 = 0
        guard bpf_xdp_query_id(Int32(index), 0, &programID) == 0, programID != 0 else { return }
        guard let name = Self.programName(id: programID), name != "xdp_dispatcher" else { return }
        throw DatapathError(
            .refused,
            "\(pin.displayName) already has an XDP program (\(name), id \(programID)) attached on its own rather than through libxdp's dispatcher, so it cannot be shared and Portcullis never replaces it; load it through libxdp's dispatcher (xdp-loader, on a kernel that runs it) to share the interface, or remove it (`ip link set dev \(pin.interface) xdp off`), then attach again")
    }

    private func cooperativeAttachError(_ code: CInt, pin: LinkPin, mode: XDPMode) -> DatapathError {
        switch code {
        case EOPNOTSUPP where mode == .native, EINVAL where mode == .native:
            return DatapathError(
                .unsupported,
                "the driver of \(pin.displayName) has no native XDP support; use --mode generic (or --mode auto to fall back)",
                errno: .init(rawValue: code))
        case EEXIST, EBUSY:
            return DatapathError(
                .refused,
                "libxdp's dispatcher on \(pin.displayName) runs in another mode than \(mode.rawValue), or is full (ten programs); see `xdp-loader status \(pin.interface)`",
                errno: .init(rawValue: code))
        default:
            var text = [CChar](repeating: 0, count: 128)
            _ = libxdp_strerror(-code, &text, text.count)
            let reason = string(fromCString: text)
            return DatapathError(
                .system,
                "cannot add the XDP program to libxdp's dispatcher on \(pin.displayName) in \(mode.rawValue) mode: \(reason.isEmpty ? "error \(code)" : reason)\(LibbpfLog.detail)",
                errno: .init(rawValue: code))
        }
    }

    func describeCooperative(_ pin: LinkPin) throws(DatapathError) -> Attachment {
        let info = try Self.pinnedProgramInfo(pin, in: pins)
        let found = try? inNetworkNamespace(pin.namespace) { () throws(DatapathError) -> DispatcherSlot? in
            guard let index = try? interfaceIndex(pin.interface, namespace: pin.namespace) else { return nil }
            return Self.dispatcherSlot(running: info.id, on: index)
        }
        var attachment = Attachment(
            interface: pin.interface, namespace: pin.namespace, interfaceIndex: found?.interfaceIndex ?? 0,
            mode: found?.mode, linkID: 0, programID: info.id, isActive: found?.interfaceIndex != nil)
        attachment.sharing = .cooperative
        attachment.priority = found?.priority
        attachment.dispatcherID = found?.dispatcherID
        return attachment
    }

    /// What the kernel knows of the program a cooperative pin holds: `bpf_obj_get(3)` on the
    /// pin, then `bpf_obj_get_info_by_fd(3)`.
    static func pinnedProgramInfo(_ pin: LinkPin, in pins: PinDirectory) throws(DatapathError) -> bpf_prog_info {
        let path = pins.path(of: pin.relativePath)
        let fd = bpf_obj_get(path)
        guard fd >= 0 else { throw .syscall("cannot open the XDP program pinned at \(path)", errno: errno) }
        defer { close(fd) }
        var info = bpf_prog_info()
        var length = UInt32(MemoryLayout<bpf_prog_info>.size)
        guard bpf_obj_get_info_by_fd(fd, &info, &length) == 0 else {
            throw .syscall("cannot read the XDP program pinned at \(path)", errno: errno)
        }
        return info
    }

    func detachCooperatively(_ pin: LinkPin) throws(DatapathError) {
        try Datapath.removeFromDispatcher(pin, in: pins)
        let path = pins.path(of: pin.relativePath)
        guard unlink(path) == 0 else { throw .syscall("cannot remove \(path)", errno: errno) }
        rmdir(pins.path(of: pin.parent))
    }

    /// Takes Portcullis's copy off the interface's dispatcher, leaving the other programs
    /// running (libxdp builds a dispatcher without it, or removes it when it was the last).
    /// Nothing to do when it is no longer there.
    static func removeFromDispatcher(_ pin: LinkPin, in pins: PinDirectory) throws(DatapathError) {
        let info = try pinnedProgramInfo(pin, in: pins)
        LibbpfLog.install()
        try inNetworkNamespace(pin.namespace) { () throws(DatapathError) in
            guard let index = try? interfaceIndex(pin.interface, namespace: pin.namespace) else { return }
            let dispatcher = xdp_multiprog__get_from_ifindex(Int32(index))
            guard let dispatcher, libxdp_get_error(UnsafeRawPointer(dispatcher)) == 0 else { return }
            defer { xdp_multiprog__close(dispatcher) }
            guard !xdp_multiprog__is_legacy(dispatcher) else { return }
            var program = xdp_multiprog__next_prog(nil, dispatcher)
            while let current = program, xdp_program__id(current) != info.id {
                program = xdp_multiprog__next_prog(current, dispatcher)
            }
            guard let ours = program else { return }
            LibbpfLog.clear()
            let status = xdp_program__detach(ours, Int32(index), xdp_multiprog__attach_mode(dispatcher), 0)
            guard status == 0 else {
                throw .syscall("cannot take the XDP program off libxdp's dispatcher on \(pin.displayName)\(LibbpfLog.detail)", errno: -status)
            }
        }
    }

    struct DispatcherSlot {
        let interfaceIndex: UInt32
        let mode: XDPMode?
        let priority: UInt32
        let dispatcherID: UInt32
    }

    /// Where libxdp's dispatcher on `index` runs the program `programID`, if it does.
    static func dispatcherSlot(running programID: UInt32, on index: UInt32) -> DispatcherSlot? {
        LibbpfLog.install()
        let dispatcher = xdp_multiprog__get_from_ifindex(Int32(index))
        guard let dispatcher, libxdp_get_error(UnsafeRawPointer(dispatcher)) == 0 else { return nil }
        defer { xdp_multiprog__close(dispatcher) }
        guard !xdp_multiprog__is_legacy(dispatcher) else { return nil }
        var program = xdp_multiprog__next_prog(nil, dispatcher)
        while let current = program {
            if xdp_program__id(current) == programID {
                let mode: XDPMode? = switch xdp_multiprog__attach_mode(dispatcher) {
                case XDP_MODE_NATIVE: .native
                case XDP_MODE_SKB: .generic
                default: nil
                }
                return DispatcherSlot(
                    interfaceIndex: index, mode: mode, priority: xdp_program__run_prio(current),
                    dispatcherID: xdp_multiprog__main_prog(dispatcher).map(xdp_program__id) ?? 0)
            }
            program = xdp_multiprog__next_prog(current, dispatcher)
        }
        return nil
    }
}

extension XDPMode {
    var libxdpMode: xdp_attach_mode {
        switch self {
        case .native: XDP_MODE_NATIVE
        case .generic: XDP_MODE_SKB
        case .auto: XDP_MODE_UNSPEC
        }
    }
}
