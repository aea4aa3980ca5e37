import CLibbpf
import PortcullisCore

/// Where a walk of the block maps in slices stands: the exact maps (IPv4, then IPv6) through the
/// kernel's batch cursor, the prefix tries (IPv4, then IPv6) from the last key read. Two walks,
/// because a trie entry costs two system calls and a hash entry a share of one.
public struct BlockScanCursor: Sendable {
    enum ExactPlace: Sendable { case v4([UInt8]?), v6([UInt8]?) }
    enum PrefixPlace: Sendable { case v4(portcullis_lpm_v4?), v6(portcullis_lpm_v6?) }

    var exact: ExactPlace = .v4(nil)
    var prefix: PrefixPlace = .v4(nil)

    public init() {}
}

/// One slice of the block maps.
public struct BlockScanSlice: Sendable {
    public var blocks: [DataplaneBlock] = []
    /// The exact maps were read to their end in this slice; the next starts them again.
    public var finishedExactPass = false
    /// Likewise the prefix tries.
    public var finishedPrefixPass = false
}

extension Datapath {
    /// Reads the next slice of the block maps from `cursor`, at most `exactLimit` exact entries
    /// and `prefixLimit` prefix entries, and moves the cursor on. The cost follows the limits,
    /// never what the maps hold; nothing is locked, and the data plane is not slowed (its
    /// lookups do not wait for a reader).
    public func scanBlockCounters(_ cursor: inout BlockScanCursor, exactLimit: Int, prefixLimit: Int) throws(DatapathError) -> BlockScanSlice {
        var slice = try scanMaps(&cursor, exactLimit: exactLimit, prefixLimit: prefixLimit)
        let pending = try pendingDrops()
        if !pending.isEmpty { slice.blocks = slice.blocks.map(pending.adding(to:)) }
        return slice
    }

    private func scanMaps(_ cursor: inout BlockScanCursor, exactLimit: Int, prefixLimit: Int) throws(DatapathError) -> BlockScanSlice {
        var slice = BlockScanSlice()
        var budget = exactLimit
        // Each exact map is visited at most once per slice, so an empty one ends the loop too.
        for _ in 0..<2 where budget > 0 {
            switch cursor.exact {
            case .v4(let token):
                let (entries, next) = try blocksV4.entries(resumingAt: token, limit: budget, as: UInt32.self, portcullis_block.self)
                for (key, value) in entries { slice.blocks.append(DataplaneBlock(target(fromExactV4: key), value)) }
                budget -= entries.count
                cursor.exact = next.map { .v4($0) } ?? .v6(nil)
                // The kernel stops at a bucket that does not fit: the slice ends there too.
                if next != nil { return try scanPrefixes(&cursor, limit: prefixLimit, into: slice) }
            case .v6(let token):
                let (entries, next) = try blocksV6.entries(resumingAt: token, limit: budget, as: portcullis_addr_v6.self, portcullis_block.self)
                for (key, value) in entries {
                    if let target = target(fromExactV6: key) { slice.blocks.append(DataplaneBlock(target, value)) }
                }
                budget -= entries.count
                if let next {
                    cursor.exact = .v6(next)
                    return try scanPrefixes(&cursor, limit: prefixLimit, into: slice)
                } else {
                    cursor.exact = .v4(nil)
                    slice.finishedExactPass = true
                }
            }
            if slice.finishedExactPass { break }
        }
        return try scanPrefixes(&cursor, limit: prefixLimit, into: slice)
    }

    private func scanPrefixes(_ cursor: inout BlockScanCursor, limit: Int, into exact: BlockScanSlice) throws(DatapathError) -> BlockScanSlice {
        var slice = exact
        var budget = limit
        for _ in 0..<2 where budget > 0 {
            switch cursor.prefix {
            case .v4(let last):
                let (keys, finished) = try prefixesV4.keys(after: last, limit: budget, as: portcullis_lpm_v4.self)
                for key in keys {
                    if let target = target(fromPrefixV4: key), let value = try prefixesV4.lookup(key, as: portcullis_prefix_block.self),
                       value.prefixlen == key.prefixlen {
                        slice.blocks.append(DataplaneBlock(target, value.block))
                    }
                }
                budget -= keys.count
                cursor.prefix = finished ? .v6(nil) : .v4(keys.last ?? last)
            case .v6(let last):
                let (keys, finished) = try prefixesV6.keys(after: last, limit: budget, as: portcullis_lpm_v6.self)
                for key in keys {
                    if let target = target(fromPrefixV6: key), let value = try prefixesV6.lookup(key, as: portcullis_prefix_block.self),
                       value.prefixlen == key.prefixlen {
                        slice.blocks.append(DataplaneBlock(target, value.block))
                    }
                }
                budget -= keys.count
                if finished {
                    cursor.prefix = .v4(nil)
                    slice.finishedPrefixPass = true
                } else {
                    cursor.prefix = .v6(keys.last ?? last)
                }
            }
            if slice.finishedPrefixPass { break }
        }
        return slice
    }
}
