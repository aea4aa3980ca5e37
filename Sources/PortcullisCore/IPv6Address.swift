public struct IPv6Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Bytes 0...7 as a big-endian integer.
    public let high: UInt64
    /// Bytes 8...15 as a big-endian integer.
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    public init?(octets: [UInt8]) {
        guard octets.count == 16 else { return nil }
        var h: UInt64 = 0
        var l: UInt64 = 0
        for i in 0..<8 {
            h = h << 8 | UInt64(octets[i])
            l = l << 8 | UInt64(octets[i + 8])
        }
        high = h
        low = l
    }

    public var octets: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 {
            let shift = UInt64(56 - 8 * i)
            bytes[i] = UInt8(truncatingIfNeeded: high >> shift)
            bytes[i + 8] = UInt8(truncatingIfNeeded: low >> shift)
        }
        return bytes
    }

    /// `::ffff:a.b.c.d` carries an IPv4 address; anything else returns nil.
    public var mappedIPv4: IPv4Address? {
        guard high == 0, low >> 32 == 0xFFFF else { return nil }
        return IPv4Address(UInt32(truncatingIfNeeded: low))
    }

    var isLoopback: Bool { high == 0 && low == 1 }
    var isUnspecified: Bool { high == 0 && low == 0 }

    @inline(__always)
    func group(_ index: Int) -> UInt16 {
        let word = index < 4 ? high : low
        return UInt16(truncatingIfNeeded: word >> UInt64(48 - 16 * (index & 3)))
    }

    /// RFC 5952 text. IPv4-mapped addresses use the mixed form `::ffff:192.0.2.1` that
    /// section 5 recommends; other embedded-IPv4 layouts stay in hex because their
    /// meaning depends on context we do not have.
    public var description: String {
        String(unsafeUninitializedCapacity: 45) { buffer in
            let mapped = mappedIPv4
            let groupCount = mapped == nil ? 8 : 6

            // Longest run of at least two zero groups; the strict '>' keeps the leftmost on ties.
            var bestStart = -1
            var bestLength = 1
            var runStart = -1
            for i in 0...groupCount {
                if i < groupCount && group(i) == 0 {
                    if runStart < 0 { runStart = i }
                } else if runStart >= 0 {
                    if i - runStart > bestLength {
                        bestStart = runStart
                        bestLength = i - runStart
                    }
                    runStart = -1
                }
            }

            var n = 0
            var i = 0
            while i < groupCount {
                if i == bestStart {
                    buffer[n] = ASCII.colon
                    buffer[n + 1] = ASCII.colon
                    n += 2
                    i += bestLength
                    continue
                }
                if i > 0 && i != bestStart + bestLength {
                    buffer[n] = ASCII.colon
                    n += 1
                }
                n = writeHex(group(i), into: buffer, at: n)
                i += 1
            }
            if let mapped {
                if bestStart + bestLength != groupCount {
                    buffer[n] = ASCII.colon
                    n += 1
                }
                let v = mapped.value
                for shift in stride(from: 24, through: 0, by: -8) {
                    if shift != 24 {
                        buffer[n] = ASCII.dot
                        n += 1
                    }
                    n = writeDecimal(UInt8(truncatingIfNeeded: v >> UInt32(shift)), into: buffer, at: n)
                }
            }
            return n
        }
    }

    public static func < (lhs: IPv6Address, rhs: IPv6Address) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }

    static func mask(length: Int) -> (high: UInt64, low: UInt64) {
        if length <= 0 { return (0, 0) }
        if length < 64 { return (UInt64.max << UInt64(64 - length), 0) }
        if length == 64 { return (.max, 0) }
        if length < 128 { return (.max, UInt64.max << UInt64(128 - length)) }
        return (.max, .max)
    }
}

private func writeHex(_ value: UInt16, into buffer: UnsafeMutableBufferPointer<UInt8>, at start: Int) -> Int {
    var n = start
    var started = false
    for shift in stride(from: 12, through: 0, by: -4) {
        let nibble = UInt8(truncatingIfNeeded: value >> UInt16(shift)) & 0xF
        if nibble == 0 && !started && shift != 0 { continue }
        started = true
        buffer[n] = nibble < 10 ? ASCII.zero + nibble : 0x61 + nibble - 10
        n += 1
    }
    return n
}
