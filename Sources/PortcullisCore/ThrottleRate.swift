/// A throttle's terms: packets from the target above `packetsPerSecond` are dropped, after a
/// burst of `burst` packets at once; the rest pass. XDP can only pass or drop, so this polices
/// and never shapes: nothing is queued or delayed.
public struct ThrottleRate: Sendable, Equatable, Hashable, Codable, CustomStringConvertible {
    public let packetsPerSecond: UInt32
    public let burst: UInt32
    /// Polices only packets that may open a connection (a TCP SYN, and anything that is not a
    /// TCP segment), so an established TCP session from the target is never cut.
    public let newConnectionsOnly: Bool

    /// Rates are counted in ticks of 1/rate jiffy; this keeps that arithmetic within 64 bits.
    public static let maximumPacketsPerSecond: UInt32 = 10_000_000

    public init(packetsPerSecond: UInt32, burst: UInt32, newConnectionsOnly: Bool = false) {
        (self.packetsPerSecond, self.burst, self.newConnectionsOnly) = (packetsPerSecond, burst, newConnectionsOnly)
    }

    /// "100/s" (or a bare "100"), with a burst given or, when nil, a tenth of a second's
    /// packets, which is at least one clock tick's at any kernel's rate (100 to 1000 a second).
    public static func parse(rate text: String, burst: UInt32?, newConnectionsOnly: Bool) throws(ThrottleRateError) -> ThrottleRate {
        let digits = text.hasSuffix("/s") ? String(text.dropLast(2)) : text
        guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let rate = UInt32(digits), rate > 0 else {
            throw .invalidRate(text)
        }
        guard rate <= maximumPacketsPerSecond else { throw .rateTooHigh(text) }
        if burst == 0 { throw .burstTooSmall(0, minimum: 1, rate: rate, ticksPerSecond: nil) }
        return ThrottleRate(packetsPerSecond: rate, burst: burst ?? max(1, (rate + 9) / 10), newConnectionsOnly: newConnectionsOnly)
    }

    /// Refuses what the data plane cannot honour. `ticksPerSecond` is the kernel's clock rate:
    /// the bucket refills once a tick, so a burst smaller than one tick's packets would cut
    /// the rate down to the tick rate.
    public func check(ticksPerSecond: UInt32) throws(ThrottleRateError) {
        guard packetsPerSecond > 0, packetsPerSecond <= Self.maximumPacketsPerSecond else { throw .rateTooHigh("\(packetsPerSecond)/s") }
        let tick = max(1, Self.minimumBurst(packetsPerSecond: packetsPerSecond, ticksPerSecond: ticksPerSecond))
        guard burst >= tick else { throw .burstTooSmall(burst, minimum: tick, rate: packetsPerSecond, ticksPerSecond: ticksPerSecond) }
    }

    /// The packets one clock tick lets through at this rate, rounded up.
    public static func minimumBurst(packetsPerSecond rate: UInt32, ticksPerSecond: UInt32) -> UInt32 {
        let hz = UInt64(max(ticksPerSecond, 1))
        return UInt32((UInt64(rate) + hz - 1) / hz)
    }

    public var description: String {
        "\(packetsPerSecond)/s burst \(burst)" + (newConnectionsOnly ? " new connections" : "")
    }
}

public enum ThrottleRateError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidRate(String)
    case rateTooHigh(String)
    case burstTooSmall(UInt32, minimum: UInt32, rate: UInt32, ticksPerSecond: UInt32?)

    public var description: String {
        switch self {
        case .invalidRate(let text):
            "invalid rate '\(TerminalText.excerpt(text))': expected packets per second, like 100/s"
        case .rateTooHigh(let text):
            "invalid rate '\(TerminalText.excerpt(text))': at most \(ThrottleRate.maximumPacketsPerSecond)/s"
        case let .burstTooSmall(burst, minimum, rate, hz?):
            "a burst of \(burst) is less than one clock tick's packets at \(rate)/s (\(minimum) at \(hz) ticks a second); use --burst \(minimum) or more"
        case let .burstTooSmall(burst, minimum, _, nil):
            "a burst of \(burst) lets nothing through; use --burst \(minimum) or more"
        }
    }
}
