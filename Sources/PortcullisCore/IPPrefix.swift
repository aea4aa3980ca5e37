/// A network prefix with no host bits set.
public struct IPPrefix: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The network address; every bit after `length` is zero.
    public let address: IPAddress
    public let length: Int

    /// Rejects rather than silently masks host bits: code constructing prefixes directly
    /// should already hold a network address, and masking would hide a bug. User input goes
    /// through `BlockTarget.parse`, which normalizes and explains instead.
    public init(address: IPAddress, length: Int) throws(AddressError) {
        let width = address.family.bitWidth
        guard (0...width).contains(length) else {
            throw .invalidPrefix(
                input: "\(address)/\(length)",
                reason: "length \(length) is out of range 0-\(width) for \(address.family.displayName)")
        }
        let network = address.masked(to: length)
        guard network == address else {
            throw .invalidPrefix(
                input: "\(address)/\(length)",
                reason: "host bits are set; the network is \(network)/\(length)")
        }
        self.address = address
        self.length = length
    }

    /// For callers that have already masked and range-checked.
    init(uncheckedNetwork address: IPAddress, length: Int) {
        self.address = address
        self.length = length
    }

    /// The single-address prefix (/32 or /128) for `host`.
    public init(host: IPAddress) {
        self.init(uncheckedNetwork: host, length: host.family.bitWidth)
    }

    public var family: AddressFamily { address.family }

    public func contains(_ other: IPAddress) -> Bool {
        other.family == address.family && other.masked(to: length) == address
    }

    public func contains(_ other: IPPrefix) -> Bool {
        other.family == family && other.length >= length && contains(other.address)
    }

    public var description: String {
        "\(address)/\(length)"
    }

    /// Orders by network address, then shorter (wider) prefixes first.
    public static func < (lhs: IPPrefix, rhs: IPPrefix) -> Bool {
        if lhs.address != rhs.address { return lhs.address < rhs.address }
        return lhs.length < rhs.length
    }
}

extension AddressFamily {
    var displayName: String {
        switch self {
        case .ipv4: return "IPv4"
        case .ipv6: return "IPv6"
        }
    }
}
