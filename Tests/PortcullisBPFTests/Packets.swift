import PortcullisCore

/// Frames built byte by byte, as a NIC would hand them to XDP.
enum Frame {
    static let etherIPv4: UInt16 = 0x0800
    static let etherIPv6: UInt16 = 0x86DD
    static let etherARP: UInt16 = 0x0806
    static let vlan8021Q: UInt16 = 0x8100
    static let vlan8021AD: UInt16 = 0x88A8

    static func ethernet(type: UInt16, vlans: [UInt16] = []) -> [UInt8] {
        var bytes: [UInt8] = [0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02]
        var tags = vlans
        // The outer tag of a double-tagged (QinQ) frame is 802.1ad, the inner one 802.1Q.
        let tagTypes = vlans.count == 2 ? [vlan8021AD, vlan8021Q] : [vlan8021Q]
        var index = 0
        while !tags.isEmpty {
            bytes += be16(tagTypes[index])
            bytes += be16(tags.removeFirst())
            index += 1
        }
        bytes += be16(type)
        return bytes
    }

    static func ipv4(source: String, destination: String = "198.51.100.1", payload: Int = 26, vlans: [UInt16] = []) -> [UInt8] {
        var header: [UInt8] = [0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]
        header.replaceSubrange(2..<4, with: be16(UInt16(20 + payload)))
        header += octets4(source) + octets4(destination)
        return ethernet(type: etherIPv4, vlans: vlans) + header + [UInt8](repeating: 0xAB, count: payload)
    }

    static func ipv6(source: String, destination: String = "2001:db8::1", payload: Int = 26, vlans: [UInt16] = []) -> [UInt8] {
        var header: [UInt8] = [0x60, 0, 0, 0]
        header += be16(UInt16(payload)) + [17, 64]
        header += octets6(source) + octets6(destination)
        return ethernet(type: etherIPv6, vlans: vlans) + header + [UInt8](repeating: 0xAB, count: payload)
    }

    /// A TCP segment with `flags` (SYN 0x02, ACK 0x10), over IPv4 or IPv6 as `source` is.
    static func tcp(source: String, flags: UInt8) -> [UInt8] {
        let segment: [UInt8] = [0xC3, 0x50, 0x00, 0x16, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0]
        if source.contains(":") {
            var frame = ipv6(source: source, payload: 0)
            frame[14 + 4...14 + 5] = [0, UInt8(segment.count)]
            frame[14 + 6] = 6
            return frame + segment
        }
        var frame = ipv4(source: source, payload: 0)
        frame[14 + 2...14 + 3] = [0, UInt8(20 + segment.count)]
        frame[14 + 9] = 6
        return frame + segment
    }

    static func arp() -> [UInt8] {
        ethernet(type: etherARP) + [UInt8](repeating: 0, count: 28)
    }

    private static func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }

    private static func octets4(_ text: String) -> [UInt8] {
        guard case .v4(let address)? = try? IPAddress(parsing: text) else { fatalError("test address \(text)") }
        return address.octets
    }

    private static func octets6(_ text: String) -> [UInt8] {
        guard case .v6(let address)? = try? IPAddress(parsing: text) else { fatalError("test address \(text)") }
        return address.octets
    }
}
