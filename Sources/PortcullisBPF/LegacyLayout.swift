import CLibbpf
import Glibc
import PortcullisCore

/// A block as layout 3 kept it: the record lived in the map value.
public struct LegacyBlock: Sendable, Equatable {
    public let target: BlockTarget
    /// nil for a permanent block.
    public let expiresUnixMilliseconds: Int64?
    public let droppedPackets: UInt64
    public let droppedBytes: UInt64
    public let reason: String
    public let source: BlockSource
    public let createdUnixMilliseconds: Int64
    public let refreshedUnixMilliseconds: Int64
    public let requestedDuration: Duration?
}

/// What an upgrade carries over from layout 3 pins into the ledger.
public struct LegacyState: Sendable {
    public let blocks: [LegacyBlock]
    public let allowlist: [AllowlistEntry]
    public let capacity: Capacity
}

extension Datapath {
    /// The layout version of the state pinned in `pins`, or nil when there is none.
    public static func layoutVersion(in pins: PinDirectory) throws(DatapathError) -> UInt32? {
        try pins.requireBPFFilesystem()
        guard pins.contains(MapName.meta.rawValue) else { return nil }
        let meta = try BPFMap.openPinned(at: pins.path(of: MapName.meta.rawValue), name: MapName.meta.rawValue)
        defer { meta.close() }
        guard let value = try meta.lookup(UInt32(0), as: portcullis_meta.self), value.magic == PORTCULLIS_MAGIC else {
            throw DatapathError(.refused, "\(pins.path) holds pins that are not Portcullis state; choose another --pin-dir or remove them")
        }
        return value.layout_version
    }

    /// The capacity the state in `pins` was created with, read from its meta map whatever
    /// its layout (every layout keeps it at the same place).
    public static func storedCapacity(in pins: PinDirectory) throws(DatapathError) -> Capacity {
        let meta = try BPFMap.openPinned(at: pins.path(of: MapName.meta.rawValue), name: MapName.meta.rawValue)
        defer { meta.close() }
        guard let value = try meta.lookup(UInt32(0), as: portcullis_meta.self), value.magic == PORTCULLIS_MAGIC else {
            throw DatapathError(.refused, "\(pins.path) holds pins that are not Portcullis state; choose another --pin-dir or remove them")
        }
        return Capacity(exact: UInt32(value.capacity_exact), prefixes: UInt32(value.capacity_prefix))
    }

    /// Reads every block and allowlist entry of layout 3 pins, with expiries turned into wall
    /// time by the old state's own clock probe. Changes nothing.
    public static func readLegacyState(in pins: PinDirectory) throws(DatapathError) -> LegacyState {
        var opened: [BPFMap] = []
        defer { opened.forEach { $0.close() } }
        func map(_ name: MapName) throws(DatapathError) -> BPFMap {
            let map = try BPFMap.openPinned(at: pins.path(of: name.rawValue), name: name.rawValue)
            opened.append(map)
            return map
        }
        guard let meta = try map(.meta).lookup(UInt32(0), as: portcullis_meta.self), meta.layout_version == 3 else {
            throw DatapathError(.refused, "the state in \(pins.path) is not layout 3; nothing to import")
        }
        let probe = try BPFProgram.openPinned(at: pins.path(of: PORTCULLIS_PROG_CLOCK), name: PORTCULLIS_PROG_CLOCK)
        defer { probe.close() }
        let reading = try KernelClock(probe: probe).read(jiffiesPerSecond: meta.jiffies_per_second)

        var blocks: [LegacyBlock] = []
        func record(_ target: BlockTarget?, _ value: portcullis_v3_block) {
            guard let target else { return }
            let permanent = value.expires_jiffies == PORTCULLIS_PERMANENT
            blocks.append(LegacyBlock(
                target: target,
                expiresUnixMilliseconds: permanent ? nil : reading.unixMilliseconds(at: value.expires_jiffies),
                droppedPackets: value.dropped_packets, droppedBytes: value.dropped_bytes,
                reason: string(fromCString: value.reason),
                source: BlockSource(legacy: value.source),
                createdUnixMilliseconds: value.created_unix_ms, refreshedUnixMilliseconds: value.refreshed_unix_ms,
                requestedDuration: value.requested_seconds > 0 ? .seconds(Int64(value.requested_seconds)) : nil))
        }
        for (key, value) in try map(.blocksV4).entries(as: UInt32.self, portcullis_v3_block.self) {
            record(target(fromExactV4: key), value)
        }
        for (key, value) in try map(.blocksV6).entries(as: portcullis_addr_v6.self, portcullis_v3_block.self) {
            record(target(fromExactV6: key), value)
        }
        let prefixesV4 = try map(.prefixesV4)
        for key in try prefixesV4.keys(as: portcullis_lpm_v4.self) {
            if let value = try prefixesV4.lookup(key, as: portcullis_v3_block.self) { record(target(fromPrefixV4: key), value) }
        }
        let prefixesV6 = try map(.prefixesV6)
        for key in try prefixesV6.keys(as: portcullis_lpm_v6.self) {
            if let value = try prefixesV6.lookup(key, as: portcullis_v3_block.self) { record(target(fromPrefixV6: key), value) }
        }

        var allowlist: [AllowlistEntry] = []
        let allowV4 = try map(.allowV4)
        for key in try allowV4.keys(as: portcullis_lpm_v4.self) {
            guard let target = target(fromPrefixV4: key) else { continue }
            allowlist.append(AllowlistEntry(target: target, origin: AllowOrigin(raw: try allowV4.lookup(key, as: portcullis_allow.self)?.origin)))
        }
        let allowV6 = try map(.allowV6)
        for key in try allowV6.keys(as: portcullis_lpm_v6.self) {
            guard let target = target(fromPrefixV6: key) else { continue }
            allowlist.append(AllowlistEntry(target: target, origin: AllowOrigin(raw: try allowV6.lookup(key, as: portcullis_allow.self)?.origin)))
        }
        return LegacyState(
            blocks: blocks, allowlist: allowlist,
            capacity: Capacity(exact: UInt32(meta.capacity_exact), prefixes: UInt32(meta.capacity_prefix)))
    }

    /// Replaces the maps and programs in `pins` with new, empty ones of this layout, leaving
    /// the pinned links (and so the old program, still dropping with its old maps) in place
    /// until ``moveAttachments()`` points them at the new program. When another process
    /// upgraded the pins since the caller found layout 3, opens its state instead.
    public static func recreate(_ pins: PinDirectory, capacity: Capacity) throws(DatapathError) -> Datapath {
        let lock = try pins.lockForWriting()
        defer { withExtendedLifetime(lock) {} }
        // The caller read layout 3 without the lock. Replacing a state already upgraded would
        // orphan the maps the other process writes, or the program its links were moved to.
        if try layoutVersion(in: pins) == UInt32(PORTCULLIS_LAYOUT_VERSION) { return try open(pins) }
        return try replaceWithCurrentLayout(pins, capacity: capacity)
    }

    /// Upgrades layout 3 pins, all under the writer lock: reads their state, hands it to
    /// `record` (the ledger keeps it), then replaces the maps and programs as ``recreate(_:capacity:)``
    /// does. When another process upgraded them after the caller found layout 3, `record` is
    /// not called, so a state read before that upgrade never overwrites changes made since, and
    /// the upgraded state is opened; `legacy` is then nil.
    public static func upgradeLegacy<Failure: Error>(
        _ pins: PinDirectory, mapping: (DatapathError) -> Failure, recording record: (LegacyState) throws(Failure) -> Void
    ) throws(Failure) -> (datapath: Datapath, legacy: LegacyState?) {
        func attempt<T>(_ body: () throws(DatapathError) -> T) throws(Failure) -> T {
            do { return try body() } catch { throw mapping(error) }
        }
        let lock = try attempt { () throws(DatapathError) in try pins.lockForWriting() }
        defer { withExtendedLifetime(lock) {} }
        if try attempt({ () throws(DatapathError) in try layoutVersion(in: pins) }) == UInt32(PORTCULLIS_LAYOUT_VERSION) {
            return (try attempt { () throws(DatapathError) in try open(pins) }, nil)
        }
        let legacy = try attempt { () throws(DatapathError) in try readLegacyState(in: pins) }
        try record(legacy)
        return (try attempt { () throws(DatapathError) in try replaceWithCurrentLayout(pins, capacity: legacy.capacity) }, legacy)
    }

    /// The replacement itself; the caller holds the writer lock.
    private static func replaceWithCurrentLayout(_ pins: PinDirectory, capacity: Capacity) throws(DatapathError) -> Datapath {
        // Unpinned first: its absence is what marks the state incomplete should this die half-way.
        if pins.contains(MapName.meta.rawValue), unlink(pins.path(of: MapName.meta.rawValue)) != 0 {
            throw .syscall("cannot remove \(pins.path(of: MapName.meta.rawValue))", errno: errno)
        }
        try create(in: pins, capacity: capacity)
        return try open(pins)
    }

    /// Points every pinned XDP link that runs another program (layout 3's, or the one an
    /// upgrade cut short left behind) at this state's program, atomically per interface: the
    /// interface never goes without a program. Returns the interfaces moved.
    public func moveAttachments() throws(DatapathError) -> [String] {
        let lock = try pins.lockForWriting()
        defer { withExtendedLifetime(lock) {} }
        var ownInfo = bpf_prog_info()
        var ownLength = UInt32(MemoryLayout<bpf_prog_info>.size)
        guard bpf_obj_get_info_by_fd(xdpProgram.fileDescriptor, &ownInfo, &ownLength) == 0 else {
            let code = errno
            throw .syscall("cannot read the description of program \(xdpProgram.name)", errno: code)
        }
        var moved: [String] = []
        for pin in pins.linkPins() {
            let fd = try openLink(pin)
            defer { close(fd) }
            var info = bpf_link_info()
            var length = UInt32(MemoryLayout<bpf_link_info>.size)
            if bpf_obj_get_info_by_fd(fd, &info, &length) == 0 && info.prog_id == ownInfo.id { continue }
            let status = bpf_link_update(fd, xdpProgram.fileDescriptor, nil)
            let code = status == 0 ? 0 : (status < 0 ? -status : errno)
            // A link whose interface is gone is defunct; attach replaces it later.
            if status != 0 && code != ENOLINK {
                throw .syscall("cannot move the XDP link on \(pin.displayName) to the new program", errno: code)
            }
            if status == 0 { moved.append(pin.displayName) }
        }
        return moved
    }
}

extension BlockSource {
    init(legacy raw: UInt32) {
        self = switch raw {
        case UInt32(PORTCULLIS_V3_SOURCE_FILE.rawValue): .file
        case UInt32(PORTCULLIS_V3_SOURCE_WAZUH.rawValue): .wazuh
        case UInt32(PORTCULLIS_V3_SOURCE_DETECTOR.rawValue): .detector
        case UInt32(PORTCULLIS_V3_SOURCE_API.rawValue): .api
        default: .cli
        }
    }
}

extension AllowOrigin {
    init(raw: UInt32?) {
        self = raw == UInt32(PORTCULLIS_ALLOW_CONFIG.rawValue) ? .configuration : .command
    }
}
