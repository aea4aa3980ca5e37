public struct IPv4Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Host byte order, so that numeric order is address order and masks are plain shifts.
    public let value: UInt32

    public init(_ value: UInt32) {
        self.value = value
    }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Network order, ready to copy into a BPF map key.
    public var octets: [UInt8] {
        [UInt8(truncatingIfNeeded: value >> 24), UInt8(truncatingIfNeeded: value >> 16),
         UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)]
    }

    public var description: String {
        // At most 15 bytes, which Swift stores inline without a heap allocation.
        String(unsafeUninitializedCapacity: 15) { buffer in
            var n = 0
            for shift in stride(from: 24, through: 0, by: -8) {
                if shift != 24 {
                    buffer[n] = ASCII.dot
                    n += 1
                }
                n = writeDecimal(UInt8(truncatingIfNeeded: value >> UInt32(shift)), into: buffer, at: n)
            }
            return n
        }
    }

    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool {
        lhs.value < rhs.value
    }

    static func mask(length: Int) -> UInt32 {
        // Explicit bounds because a shift by 32 is not what we want to rely on reading.
        if length <= 0 { return 0 }
        if length >= 32 { return .max }
        return UInt32.max << UInt32(32 - length)
    }
}

func writeDecimal(_ byte: UInt8, into buffer: UnsafeMutableBufferPointer<UInt8>, at start: Int) -> Int {
    var n = start
    if byte >= 100 {
        buffer[n] = ASCII.zero + byte / 100
        n += 1
    }
    if byte >= 10 {
        buffer[n] = ASCII.zero + (byte / 10) % 10
        n += 1
    }
    buffer[n] = ASCII.zero + byte % 10
    return n + 1
}
