import CLibbpf
import FoundationEssentials
import Glibc
import PortcullisCore
import Synchronization

/// How many blocks the maps hold, fixed when the state is first created.
public struct Capacity: Sendable, Equatable, CustomStringConvertible {
    /// Exact addresses, per family.
    public var exact: UInt32
    /// Prefixes per family; the allowlist tries get as many.
    public var prefixes: UInt32

    public static let standard = Capacity(exact: 1_048_576, prefixes: 65_536)

    public init(exact: UInt32, prefixes: UInt32) {
        self.exact = exact
        self.prefixes = prefixes
    }

    public var description: String { "\(exact) exact addresses and \(prefixes) prefixes per family" }
}

/// The pinned data plane: the maps, the XDP program and the clock probe, opened
/// from the pin directory (and created there on first use).
///
/// All the BPF-touching code of the control plane goes through this class; the
/// rest of Portcullis sees targets, durations and counters.
public final class Datapath {
    public let pins: PinDirectory
    public let capacity: Capacity
    public let jiffiesPerSecond: UInt32
    public let createdUnixMilliseconds: Int64

    let blocksV4: BPFMap
    let blocksV6: BPFMap
    let prefixesV4: BPFMap
    let prefixesV6: BPFMap
    let allowV4: BPFMap
    let allowV6: BPFMap
    let throttlesV4: BPFMap
    let throttlesV6: BPFMap
    let throttlePrefixesV4: BPFMap
    let throttlePrefixesV6: BPFMap
    let prefixLengths: BPFMap
    let stats: BPFMap
    let trieSizes: BPFMap
    let dropTallies: BPFMap
    package let xdpProgram: BPFProgram
    let clock: KernelClock

    enum MapName: String, CaseIterable {
        case blocksV4 = "blocks_v4", blocksV6 = "blocks_v6"
        case prefixesV4 = "prefixes_v4", prefixesV6 = "prefixes_v6"
        case allowV4 = "allow_v4", allowV6 = "allow_v6"
        case throttlesV4 = "throttles_v4", throttlesV6 = "throttles_v6"
        case throttlePrefixesV4 = "throttle_prefixes_v4", throttlePrefixesV6 = "throttle_prefixes_v6"
        case prefixLengths = "prefix_lengths"
        case stats, trieSizes = "trie_sizes", dropTallies = "drop_tallies", meta
    }
    static let programNames = [PORTCULLIS_PROG_XDP, PORTCULLIS_PROG_CLOCK]

    /// The map that holds blocks of this family and kind, as error messages name it.
    public static func blockMapName(family: AddressFamily, kind: BlockKind) -> String {
        let name: MapName = switch (family, kind) {
        case (.ipv4, .address): .blocksV4
        case (.ipv6, .address): .blocksV6
        case (.ipv4, .prefix): .prefixesV4
        case (.ipv6, .prefix): .prefixesV6
        }
        return name.rawValue
    }
    static let linksDirectory = "links"
    static let cooperativeDirectory = "cooperative"

    /// Opens the state in `pins`. When there is none yet and `capacity` is
    /// given, creates it: loads the embedded XDP object with maps of that size
    /// and pins everything. An explicit capacity that differs from the existing
    /// state's is an error rather than silently ignored.
    public static func open(_ pins: PinDirectory, creatingWith capacity: Capacity? = nil,
                            capacityWasExplicit: Bool = false) throws(DatapathError) -> Datapath {
        try pins.requireBPFFilesystem()
        if !pins.contains(MapName.meta.rawValue) {
            guard let capacity else {
                throw DatapathError(
                    .notFound,
                    "no Portcullis state in \(pins.path): it is created by the first `portcullis attach`, `block` or `allow`")
            }
            try pins.create()
            let lock = try pins.lockForWriting()
            if !pins.contains(MapName.meta.rawValue) {
                try create(in: pins, capacity: capacity)
            }
            _ = lock
        }
        let datapath = try Datapath(openingPinsIn: pins)
        if capacityWasExplicit, let capacity, capacity != datapath.capacity {
            throw DatapathError(
                .refused,
                "the state in \(pins.path) was created with \(datapath.capacity); capacity is fixed at first load (use `portcullis purge` to start over with another)")
        }
        return datapath
    }

    private init(openingPinsIn pins: PinDirectory) throws(DatapathError) {
        self.pins = pins
        var opened: [BPFMap] = []
        var programs: [BPFProgram] = []
        func map(_ name: MapName) throws(DatapathError) -> BPFMap {
            let map = try BPFMap.openPinned(at: pins.path(of: name.rawValue), name: name.rawValue)
            opened.append(map)
            return map
        }
        do throws(DatapathError) {
            let metaMap = try map(.meta)
            guard let meta = try metaMap.lookup(UInt32(0), as: portcullis_meta.self),
                  meta.magic == PORTCULLIS_MAGIC
            else {
                throw DatapathError(.refused, "\(pins.path) holds pins that are not Portcullis state; choose another --pin-dir or remove them")
            }
            guard meta.layout_version == PORTCULLIS_LAYOUT_VERSION else {
                throw DatapathError(
                    .refused,
                    "the state in \(pins.path) has layout version \(meta.layout_version) but this portcullis uses \(PORTCULLIS_LAYOUT_VERSION); `portcullis attach` or the daemon upgrades layout 3 (its blocks are kept); for another, run the portcullis that created it, or `portcullis purge` to start over")
            }
            capacity = Capacity(exact: UInt32(meta.capacity_exact), prefixes: UInt32(meta.capacity_prefix))
            jiffiesPerSecond = meta.jiffies_per_second
            createdUnixMilliseconds = meta.created_unix_ms
            blocksV4 = try map(.blocksV4)
            blocksV6 = try map(.blocksV6)
            prefixesV4 = try map(.prefixesV4)
            prefixesV6 = try map(.prefixesV6)
            allowV4 = try map(.allowV4)
            allowV6 = try map(.allowV6)
            throttlesV4 = try map(.throttlesV4)
            throttlesV6 = try map(.throttlesV6)
            throttlePrefixesV4 = try map(.throttlePrefixesV4)
            throttlePrefixesV6 = try map(.throttlePrefixesV6)
            prefixLengths = try map(.prefixLengths)
            stats = try map(.stats)
            trieSizes = try map(.trieSizes)
            dropTallies = try map(.dropTallies)
            metaMap.close()
            opened.removeFirst()
            let xdp = try BPFProgram.openPinned(at: pins.path(of: PORTCULLIS_PROG_XDP), name: PORTCULLIS_PROG_XDP)
            programs.append(xdp)
            xdpProgram = xdp
            let probe = try BPFProgram.openPinned(at: pins.path(of: PORTCULLIS_PROG_CLOCK), name: PORTCULLIS_PROG_CLOCK)
            programs.append(probe)
            clock = KernelClock(probe: probe)
        } catch {
            opened.forEach { $0.close() }
            programs.forEach { $0.close() }
            throw error
        }
    }

    deinit {
        for map in [blocksV4, blocksV6, prefixesV4, prefixesV6, allowV4, allowV6, throttlesV4, throttlesV6,
                    throttlePrefixesV4, throttlePrefixesV6, prefixLengths, stats, trieSizes, dropTallies] { map.close() }
        xdpProgram.close()
        clock.probe.close()
    }

    /// The current time in the terms the maps use.
    public func now() throws(DatapathError) -> ClockReading {
        try clock.read(jiffiesPerSecond: jiffiesPerSecond)
    }

    /// Removes every pin: the links first (which detaches the program from every
    /// interface), then maps and programs. Blocks are gone afterwards.
    public static func purge(_ pins: PinDirectory) throws(DatapathError) -> [String] {
        try pins.requireBPFFilesystem()
        guard pins.exists else { return [] }
        let lock = try pins.lockForWriting()
        var detached: [String] = []
        for pin in pins.linkPins() {
            let path = pins.path(of: pin.relativePath)
            let fd = bpf_obj_get(path)
            if fd >= 0 {
                _ = bpf_link_detach(fd)
                close(fd)
            }
            if unlink(path) != 0 {
                let code = errno
                throw .syscall("cannot remove \(path)", errno: code)
            }
            detached.append(pin.displayName)
        }
        for pin in pins.cooperativePins() {
            // Off the dispatcher first, so the programs sharing it keep running.
            try? Datapath.removeFromDispatcher(pin, in: pins)
            let path = pins.path(of: pin.relativePath)
            if unlink(path) != 0 && errno != ENOENT {
                let code = errno
                throw .syscall("cannot remove \(path)", errno: code)
            }
            detached.append(pin.displayName)
        }
        for root in [linksDirectory, cooperativeDirectory] {
            for namespace in pins.entries(of: root) { rmdir(pins.path(of: "\(root)/\(namespace)")) }
            rmdir(pins.path(of: root))
        }
        for name in MapName.allCases.map(\.rawValue) + programNames where pins.contains(name) {
            if unlink(pins.path(of: name)) != 0 { throw .syscall("cannot remove \(pins.path(of: name))", errno: errno) }
        }
        _ = lock
        if rmdir(pins.path) != 0 && errno != ENOENT {
            throw .syscall("removed Portcullis's pins but cannot remove \(pins.path) (something else is pinned there?)", errno: errno)
        }
        return detached
    }

    // MARK: - First load

    static func create(in pins: PinDirectory, capacity: Capacity) throws(DatapathError) {
        // A creation that died half-way leaves pins without the meta map (pinned last); clear them.
        for name in MapName.allCases.map(\.rawValue) + programNames where pins.contains(name) {
            unlink(pins.path(of: name))
        }
        guard capacity.exact > 0, capacity.prefixes > 0 else {
            throw DatapathError(.refused, "capacity must be at least 1 (asked for \(capacity))")
        }
        var pinned: [String] = []
        do throws(DatapathError) {
            let object = try openEmbeddedObject()
            defer { bpf_object__close(object) }

            let sizes: [MapName: UInt32] = [
                .blocksV4: capacity.exact, .blocksV6: capacity.exact,
                .prefixesV4: capacity.prefixes, .prefixesV6: capacity.prefixes,
                .allowV4: capacity.prefixes, .allowV6: capacity.prefixes,
                // Throttles share the ledger's counts with blocks, so maps of the same size always have room.
                .throttlesV4: capacity.exact, .throttlesV6: capacity.exact,
                .throttlePrefixesV4: capacity.prefixes, .throttlePrefixesV6: capacity.prefixes,
            ]
            for (name, size) in sizes {
                guard let map = bpf_object__find_map_by_name(object, name.rawValue) else {
                    throw DatapathError(.system, "the embedded XDP object has no map \(name.rawValue); rebuild portcullis")
                }
                let status = bpf_map__set_max_entries(map, size)
                guard status == 0 else { throw .syscall("cannot size map \(name.rawValue)", errno: -status) }
            }
            let loaded = bpf_object__load(object)
            guard loaded == 0 else {
                throw loadFailure(errno: -loaded)
            }
            for name in MapName.allCases where name != .meta {
                guard let map = bpf_object__find_map_by_name(object, name.rawValue) else { continue }
                let status = bpf_map__pin(map, pins.path(of: name.rawValue))
                guard status == 0 else { throw .syscall("cannot pin map \(name.rawValue) in \(pins.path)", errno: -status) }
                pinned.append(name.rawValue)
            }
            var probeFD: CInt = -1
            for name in programNames {
                guard let program = bpf_object__find_program_by_name(object, name) else {
                    throw DatapathError(.system, "the embedded XDP object has no program \(name); rebuild portcullis")
                }
                let status = bpf_program__pin(program, pins.path(of: name))
                guard status == 0 else { throw .syscall("cannot pin program \(name) in \(pins.path)", errno: -status) }
                pinned.append(name)
                if name == PORTCULLIS_PROG_CLOCK { probeFD = bpf_program__fd(program) }
            }
            let hz = try KernelClock(probe: BPFProgram(fileDescriptor: probeFD, name: PORTCULLIS_PROG_CLOCK)).jiffiesPerSecond()
            guard let metaMap = bpf_object__find_map_by_name(object, MapName.meta.rawValue) else {
                throw DatapathError(.system, "the embedded XDP object has no meta map; rebuild portcullis")
            }
            var meta = portcullis_meta()
            meta.magic = PORTCULLIS_MAGIC
            meta.layout_version = UInt32(PORTCULLIS_LAYOUT_VERSION)
            meta.jiffies_per_second = hz
            meta.capacity_exact = UInt64(capacity.exact)
            meta.capacity_prefix = UInt64(capacity.prefixes)
            var now = timespec()
            clock_gettime(CLOCK_REALTIME, &now)
            meta.created_unix_ms = Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
            try BPFMap(fileDescriptor: bpf_map__fd(metaMap), name: "meta").update(UInt32(0), meta)
            // Pinned last: its presence is what marks the state complete.
            let status = bpf_map__pin(metaMap, pins.path(of: MapName.meta.rawValue))
            guard status == 0 else { throw .syscall("cannot pin map meta in \(pins.path)", errno: -status) }
        } catch {
            for name in pinned { unlink(pins.path(of: name)) }
            throw error
        }
    }

    /// Opens (does not load) the XDP object compiled into this binary: `bpf_object__open_mem(3)`.
    /// The caller closes it with `bpf_object__close`.
    static func openEmbeddedObject() throws(DatapathError) -> OpaquePointer {
        guard let bytes = embeddedObject else {
            throw DatapathError(.system, "the embedded XDP object is corrupt; rebuild portcullis")
        }
        return try openObject(bytes, describedAs: "the embedded XDP object")
    }

    /// Opens (does not load) an XDP object held in memory under the name "portcullis":
    /// `bpf_object__open_mem(3)`. The caller closes it with `bpf_object__close`.
    package static func openObject(_ bytes: [UInt8], describedAs what: String) throws(DatapathError) -> OpaquePointer {
        LibbpfLog.install()
        LibbpfLog.clear()
        let opened: OpaquePointer? = bytes.withUnsafeBytes { buffer in
            "portcullis".withCString { name in
                var options = bpf_object_open_opts()
                options.sz = MemoryLayout<bpf_object_open_opts>.size
                options.object_name = name
                return bpf_object__open_mem(buffer.baseAddress, buffer.count, &options)
            }
        }
        guard let object = opened, libbpf_get_error(UnsafeRawPointer(object)) == 0 else {
            throw .syscall("cannot open \(what)\(LibbpfLog.detail)", errno: errno)
        }
        return object
    }

    /// The XDP object compiled into this binary at build time.
    package static var embeddedObject: [UInt8]? {
        Data(base64Encoded: EmbeddedBPFObject.base64).map { [UInt8]($0) }
    }

    private static func loadFailure(errno code: CInt) -> DatapathError {
        if access("/sys/kernel/btf/vmlinux", F_OK) != 0 {
            return DatapathError(.unsupported, "cannot load the XDP program: this kernel has no BTF (/sys/kernel/btf/vmlinux); Portcullis needs a kernel built with CONFIG_DEBUG_INFO_BTF")
        }
        return .syscall("cannot load the XDP program into the kernel\(LibbpfLog.detail)", errno: code)
    }
}

/// libbpf's diagnostics, kept so a failed load can say why (the verifier's
/// last words) instead of printing libbpf's chatter on every run.
enum LibbpfLog {
    private static let lines = Mutex<[String]>([])
    private static let installed = Mutex(false)

    static func install() {
        let first = installed.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        libbpf_set_print { level, format, arguments in
            if level != LIBBPF_DEBUG { LibbpfLog.record("libbpf", format, arguments) }
            return 0
        }
        libxdp_set_print { level, format, arguments in
            if level != LIBXDP_DEBUG { LibbpfLog.record("libxdp", format, arguments) }
            return 0
        }
    }

    private static func record(_ library: String, _ format: UnsafePointer<CChar>?, _ arguments: CVaListPointer?) {
        guard let format, let arguments else { return }
        var buffer = [CChar](repeating: 0, count: 1024)
        _ = vsnprintf(&buffer, buffer.count, format, arguments)
        var line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).trimmedSpace
        if line.hasPrefix("\(library): ") { line.removeFirst(library.count + 2) }
        if !line.isEmpty { lines.withLock { $0.append("\(library): \(line)") } }
    }

    static func clear() { lines.withLock { $0.removeAll() } }

    /// The last diagnostic that mentions `text`, as a suffix for an error message; else `detail`.
    static func detail(mentioning text: String) -> String {
        let line = lines.withLock { $0.last { $0.contains(text) } }
        return line.map { " (\($0))" } ?? detail
    }

    /// The last warning libbpf or libxdp gave, as a suffix for an error message.
    static var detail: String {
        lines.withLock { lines in
            guard let last = lines.last else { return "" }
            return " (\(last))"
        }
    }
}
