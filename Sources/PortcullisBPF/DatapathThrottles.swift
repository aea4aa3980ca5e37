import CLibbpf
import PortcullisCore

/// Throttles in the maps: a bucket per target (see `struct portcullis_throttle` in
/// bpf/portcullis.h), which the data plane consults only for a source no live block matched.
extension Datapath {
    /// Writes throttles. A new one, or one whose rate or burst changed, starts with a full
    /// bucket; a refresh of the same rate keeps its bucket and counters. The caller holds the
    /// writer lock and has checked that the maps have room.
    func setThrottles(_ writes: [ExpiryWrite]) throws(DatapathError) {
        let now = try self.now()
        for write in writes {
            guard let rate = write.throttle else { continue }
            switch BlockSlot(write.target) {
            case .exactV4(let key):
                try storeThrottle(write, rate, now: now, in: throttlesV4, counted: .throttlesV4, key: key)
            case .exactV6(let key):
                try storeThrottle(write, rate, now: now, in: throttlesV6, counted: .throttlesV6, key: key)
            case .prefixV4(let key):
                try storePrefixThrottle(write, rate, now: now, in: throttlePrefixesV4, counted: .throttlePrefixesV4, key: key, length: key.prefixlen)
            case .prefixV6(let key):
                try storePrefixThrottle(write, rate, now: now, in: throttlePrefixesV6, counted: .throttlePrefixesV6, key: key, length: key.prefixlen)
            }
        }
    }

    private func storeThrottle<Key: BitwiseCopyable>(
        _ write: ExpiryWrite, _ rate: ThrottleRate, now: ClockReading, in map: BPFMap, counted kind: Trie, key: Key
    ) throws(DatapathError) {
        let previous = try map.lookup(key, as: portcullis_throttle.self)
        let value = throttleValue(write, rate, previous: previous, now: now)
        if previous == nil { try adjustSize(of: kind, by: 1) }
        do {
            try map.update(key, value)
        } catch {
            if previous == nil { try adjustSize(of: kind, by: -1) }
            throw error
        }
    }

    private func storePrefixThrottle<Key: BitwiseCopyable>(
        _ write: ExpiryWrite, _ rate: ThrottleRate, now: ClockReading, in trie: BPFMap, counted kind: Trie, key: Key, length: UInt32
    ) throws(DatapathError) {
        let found = try trie.lookup(key, as: portcullis_prefix_throttle.self)
        let previous = found?.prefixlen == length ? found : nil
        var value = portcullis_prefix_throttle()
        value.throttle = throttleValue(write, rate, previous: previous?.throttle, now: now)
        value.prefixlen = length
        if previous == nil { try adjustSize(of: kind, by: 1) }
        do {
            try trie.update(key, value)
        } catch {
            if previous == nil { try adjustSize(of: kind, by: -1) }
            throw error
        }
    }

    private func throttleValue(_ write: ExpiryWrite, _ rate: ThrottleRate, previous: portcullis_throttle?, now: ClockReading) -> portcullis_throttle {
        let hz = UInt64(jiffiesPerSecond)
        var value = write.keepsCounters ? previous ?? portcullis_throttle() : portcullis_throttle()
        let sameBucket = write.keepsCounters && previous.map {
            $0.rate == UInt64(rate.packetsPerSecond) && $0.burst_ticks == UInt64(rate.burst) * hz && $0.packet_ticks == hz
        } == true
        if !sameBucket {
            value.epoch_jiffies = now.jiffies
            value.tat = 0
            value.rate = UInt64(rate.packetsPerSecond)
            value.packet_ticks = hz
            value.burst_ticks = UInt64(rate.burst) * hz
        }
        value.expires_jiffies = write.expiry.jiffies
        value.flags = rate.newConnectionsOnly ? PORTCULLIS_THROTTLE_NEW_CONNECTIONS : 0
        return value
    }

    /// Removes throttles; returns those that were there, with their final counters.
    func removeThrottles(_ targets: [BlockTarget]) throws(DatapathError) -> [DataplaneBlock] {
        var removed: [DataplaneBlock] = []
        for target in targets {
            guard let throttle = try dataplaneThrottle(for: target) else { continue }
            removed.append(throttle)
            let (deleted, kind): (Bool, Trie) = switch BlockSlot(target) {
            case .exactV4(let key): (try throttlesV4.delete(key), .throttlesV4)
            case .exactV6(let key): (try throttlesV6.delete(key), .throttlesV6)
            case .prefixV4(let key): (try throttlePrefixesV4.delete(key), .throttlePrefixesV4)
            case .prefixV6(let key): (try throttlePrefixesV6.delete(key), .throttlePrefixesV6)
            }
            if deleted { try adjustSize(of: kind, by: -1) }
        }
        return removed
    }

    /// The throttle on exactly `target`, read by its key.
    func dataplaneThrottle(for target: BlockTarget) throws(DatapathError) -> DataplaneBlock? {
        let value: portcullis_throttle? = switch BlockSlot(target) {
        case .exactV4(let key): try throttlesV4.lookup(key)
        case .exactV6(let key): try throttlesV6.lookup(key)
        case .prefixV4(let key): try exactThrottlePrefix(key.prefixlen, try throttlePrefixesV4.lookup(key))
        case .prefixV6(let key): try exactThrottlePrefix(key.prefixlen, try throttlePrefixesV6.lookup(key))
        }
        return value.map { DataplaneBlock(target, throttle: $0) }
    }

    private func exactThrottlePrefix(_ length: UInt32, _ value: portcullis_prefix_throttle?) throws(DatapathError) -> portcullis_throttle? {
        guard let value, value.prefixlen == length else { return nil }
        return value.throttle
    }

    /// Every throttle in the maps, for reconciling with the ledger at start-up.
    func dataplaneThrottles() throws(DatapathError) -> [DataplaneBlock] {
        var throttles: [DataplaneBlock] = []
        for (key, value) in try throttlesV4.entries(as: UInt32.self, portcullis_throttle.self) {
            throttles.append(DataplaneBlock(target(fromExactV4: key), throttle: value))
        }
        for (key, value) in try throttlesV6.entries(as: portcullis_addr_v6.self, portcullis_throttle.self) {
            guard let target = target(fromExactV6: key) else { continue }
            throttles.append(DataplaneBlock(target, throttle: value))
        }
        for key in try throttlePrefixesV4.keys(as: portcullis_lpm_v4.self) {
            if let target = target(fromPrefixV4: key), let value = try throttlePrefixesV4.lookup(key, as: portcullis_prefix_throttle.self) {
                throttles.append(DataplaneBlock(target, throttle: value.throttle))
            }
        }
        for key in try throttlePrefixesV6.keys(as: portcullis_lpm_v6.self) {
            if let target = target(fromPrefixV6: key), let value = try throttlePrefixesV6.lookup(key, as: portcullis_prefix_throttle.self) {
                throttles.append(DataplaneBlock(target, throttle: value.throttle))
            }
        }
        return throttles
    }
}

extension DataplaneBlock {
    init(_ target: BlockTarget, throttle value: portcullis_throttle) {
        let burst = value.packet_ticks > 0 ? value.burst_ticks / value.packet_ticks : 0
        let rate = ThrottleRate(packetsPerSecond: UInt32(clamping: value.rate), burst: UInt32(clamping: burst),
                                newConnectionsOnly: value.flags & PORTCULLIS_THROTTLE_NEW_CONNECTIONS != 0)
        self.init(target: target, expiry: Expiry(jiffies: value.expires_jiffies), droppedPackets: value.dropped_packets,
                  droppedBytes: value.dropped_bytes, throttle: rate, passedPackets: value.passed_packets)
    }
}
