import CLibbpf
import PortcullisCore

/// Drops a block's key holds in the CPUs' tallies (bpf/portcullis.h, struct portcullis_drop_tally)
/// that the data plane has not added to the block's own counters yet.
struct PendingDrops {
    private var byTarget: [BlockTarget: (packets: UInt64, bytes: UInt64)] = [:]

    init() {}

    init(_ slots: [[portcullis_drop_tally]]) {
        for tally in slots.joined() where tally.packets > 0 {
            guard let target = tally.key.blockTarget else { continue }
            let pending = byTarget[target] ?? (0, 0)
            byTarget[target] = (pending.packets &+ tally.packets, pending.bytes &+ tally.bytes)
        }
    }

    var isEmpty: Bool { byTarget.isEmpty }

    /// `block` with what its key's tallies hold added; a throttle's counters are its own.
    func adding(to block: DataplaneBlock) -> DataplaneBlock {
        guard block.throttle == nil, let pending = byTarget[block.target] else { return block }
        return DataplaneBlock(target: block.target, expiry: block.expiry,
                              droppedPackets: block.droppedPackets &+ pending.packets,
                              droppedBytes: block.droppedBytes &+ pending.bytes)
    }
}

extension portcullis_tally_key {
    /// The block this key names; nil for a free slot or a key no block map can hold.
    var blockTarget: BlockTarget? {
        switch map {
        case UInt32(PORTCULLIS_TALLY_EXACT_V4.rawValue):
            return withUnsafeBytes(of: addr) { target(fromExactV4: $0.loadUnaligned(as: UInt32.self)) }
        case UInt32(PORTCULLIS_TALLY_EXACT_V6.rawValue):
            var key = portcullis_addr_v6()
            key.addr = addr
            return target(fromExactV6: key)
        case UInt32(PORTCULLIS_TALLY_PREFIX_V4.rawValue):
            guard prefixlen < 32 else { return nil }
            var key = portcullis_lpm_v4()
            key.prefixlen = prefixlen
            withUnsafeBytes(of: addr) { source in
                withUnsafeMutableBytes(of: &key.addr) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[0..<4])) }
            }
            return target(fromPrefixV4: key)
        case UInt32(PORTCULLIS_TALLY_PREFIX_V6.rawValue):
            guard prefixlen < 128 else { return nil }
            var key = portcullis_lpm_v6()
            key.prefixlen = prefixlen
            key.addr = addr
            return target(fromPrefixV6: key)
        default:
            return nil
        }
    }
}

extension Datapath {
    /// Every CPU's tallies, read in one system call (PORTCULLIS_TALLY_SLOTS entries per CPU).
    /// A tally the data plane adds to its block between this read and the read of the block
    /// is counted twice or not at all, for that instant: at most PORTCULLIS_TALLY_FLUSH
    /// packets per CPU.
    func pendingDrops() throws(DatapathError) -> PendingDrops {
        PendingDrops(try dropTallies.perCPUArray(entries: Int(PORTCULLIS_TALLY_SLOTS), as: portcullis_drop_tally.self))
    }
}

extension portcullis_tally_key {
    /// The key the data plane tallies `target`'s drops under.
    init(_ target: BlockTarget) {
        self.init()
        switch BlockSlot(target) {
        case .exactV4(let key):
            (map, prefixlen) = (UInt32(PORTCULLIS_TALLY_EXACT_V4.rawValue), 32)
            withUnsafeMutableBytes(of: &addr) { $0.storeBytes(of: key, as: UInt32.self) }
        case .exactV6(let key):
            (map, prefixlen, addr) = (UInt32(PORTCULLIS_TALLY_EXACT_V6.rawValue), 128, key.addr)
        case .prefixV4(let key):
            (map, prefixlen) = (UInt32(PORTCULLIS_TALLY_PREFIX_V4.rawValue), key.prefixlen)
            withUnsafeMutableBytes(of: &addr) { target in
                withUnsafeBytes(of: key.addr) { target.copyMemory(from: $0) }
            }
        case .prefixV6(let key):
            (map, prefixlen, addr) = (UInt32(PORTCULLIS_TALLY_PREFIX_V6.rawValue), key.prefixlen, key.addr)
        }
    }
}

extension Datapath {
    /// Which of a CPU's tallies counts `target`'s drops (portcullis_tally_slot in bpf/portcullis.h):
    /// for tests that make two blocks meet in one slot.
    package static func dropTallySlot(for target: BlockTarget) -> UInt32 {
        var key = portcullis_tally_key(target)
        return portcullis_tally_slot(&key)
    }
}
