import CLibbpf
import PortcullisCore

/// The LPM tries and throttle maps, whose sizes the data plane checks before looking in them.
enum Trie { case allowV4, allowV6, prefixesV4, prefixesV6, throttlesV4, throttlesV6, throttlePrefixesV4, throttlePrefixesV6 }

/// Where a target lives in the data plane and the key it has there.
enum BlockSlot {
    case exactV4(UInt32)
    case exactV6(portcullis_addr_v6)
    case prefixV4(portcullis_lpm_v4)
    case prefixV6(portcullis_lpm_v6)

    var trie: Trie? {
        switch self {
        case .prefixV4: .prefixesV4
        case .prefixV6: .prefixesV6
        case .exactV4, .exactV6: nil
        }
    }

    init(_ target: BlockTarget) {
        switch target {
        case .address(.v4(let address)):
            self = .exactV4(address.value.bigEndian)
        case .address(.v6(let address)):
            var key = portcullis_addr_v6()
            copy(address.octets, into: &key.addr)
            self = .exactV6(key)
        case .prefix(let prefix):
            switch prefix.address {
            case .v4(let address):
                var key = portcullis_lpm_v4()
                key.prefixlen = UInt32(prefix.length)
                copy(address.octets, into: &key.addr)
                self = .prefixV4(key)
            case .v6(let address):
                var key = portcullis_lpm_v6()
                key.prefixlen = UInt32(prefix.length)
                copy(address.octets, into: &key.addr)
                self = .prefixV6(key)
            }
        }
    }
}

func target(fromExactV4 key: UInt32) -> BlockTarget {
    .address(.v4(IPv4Address(UInt32(bigEndian: key))))
}

func target(fromExactV6 key: portcullis_addr_v6) -> BlockTarget? {
    IPv6Address(octets: bytes(of: key.addr)).map { .address(.v6($0)) }
}

func target(fromPrefixV4 key: portcullis_lpm_v4) -> BlockTarget? {
    let octets = bytes(of: key.addr)
    let address = IPv4Address(octets[0], octets[1], octets[2], octets[3])
    return prefixTarget(.v4(address), length: Int(key.prefixlen))
}

func target(fromPrefixV6 key: portcullis_lpm_v6) -> BlockTarget? {
    guard let address = IPv6Address(octets: bytes(of: key.addr)) else { return nil }
    return prefixTarget(.v6(address), length: Int(key.prefixlen))
}

/// A full-length prefix is the single address (the allowlist stores addresses that way).
private func prefixTarget(_ address: IPAddress, length: Int) -> BlockTarget? {
    if length == address.family.bitWidth { return .address(address) }
    return (try? IPPrefix(address: address, length: length)).map { .prefix($0) }
}

/// Copies `octets` into a fixed-size C array imported as a tuple.
func copy<Tuple>(_ octets: [UInt8], into tuple: inout Tuple) {
    withUnsafeMutableBytes(of: &tuple) { destination in
        destination.copyBytes(from: octets.prefix(destination.count))
    }
}

func bytes<Tuple>(of tuple: Tuple) -> [UInt8] {
    withUnsafeBytes(of: tuple) { Array($0) }
}

/// A C `char[N]` field read as a string, up to its first NUL.
func string<Tuple>(fromCString tuple: Tuple) -> String {
    withUnsafeBytes(of: tuple) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

/// Writes `text` into a C `char[N]` field, NUL-terminated, cut at a character
/// boundary so it stays valid UTF-8.
func setCString<Tuple>(_ text: String, into tuple: inout Tuple) {
    withUnsafeMutableBytes(of: &tuple) { destination in
        destination.initializeMemory(as: UInt8.self, repeating: 0)
        let bytes = text.utf8Prefix(destination.count - 1).utf8
        destination.copyBytes(from: bytes)
    }
}
