import Testing
@testable import PortcullisCore

@Suite struct IPv6ParsingTests {
    func v6(_ text: String) throws -> IPv6Address {
        let address = try IPAddress(parsing: text)
        guard case .v6(let a) = address else {
            Issue.record("expected '\(text)' to parse as IPv6, got \(address)")
            return IPv6Address(high: .max, low: .max)
        }
        return a
    }

    @Test func unspecifiedAndLoopback() throws {
        #expect(try v6("::") == IPv6Address(high: 0, low: 0))
        #expect(try v6("::1") == IPv6Address(high: 0, low: 1))
        #expect(try IPAddress(parsing: "::").isUnspecified)
        #expect(try IPAddress(parsing: "::1").isLoopback)
        #expect(try !IPAddress(parsing: "::2").isLoopback)
        #expect(try IPAddress(parsing: "::1").family == .ipv6)
    }

    @Test func commonForms() throws {
        let doc = IPv6Address(high: 0x2001_0db8_0000_0000, low: 1)
        #expect(try v6("2001:db8::1") == doc)
        #expect(try v6("2001:DB8:0:0:0:0:0:1") == doc)
        #expect(try v6("2001:0db8:0000:0000:0000:0000:0000:0001") == doc)
        #expect(try v6("2001:Db8::0:1") == doc)
        #expect(try v6("1:2:3:4:5:6:7:8") == IPv6Address(high: 0x0001_0002_0003_0004, low: 0x0005_0006_0007_0008))
        #expect(try v6("1::") == IPv6Address(high: 0x0001_0000_0000_0000, low: 0))
        #expect(try v6("1:2:3:4:5:6:7::") == IPv6Address(high: 0x0001_0002_0003_0004, low: 0x0005_0006_0007_0000))
        #expect(try v6("::2:3:4:5:6:7:8") == IPv6Address(high: 0x0000_0002_0003_0004, low: 0x0005_0006_0007_0008))
        #expect(try v6("fe80::1") == IPv6Address(high: 0xfe80_0000_0000_0000, low: 1))
        #expect(try v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") == IPv6Address(high: .max, low: .max))
    }

    @Test func embeddedDottedQuad() throws {
        #expect(try v6("2001:db8::192.0.2.1") == IPv6Address(high: 0x2001_0db8_0000_0000, low: 0xC000_0201))
        #expect(try v6("64:ff9b::192.0.2.1") == IPv6Address(high: 0x0064_ff9b_0000_0000, low: 0xC000_0201))
        #expect(try v6("1:2:3:4:5:6:1.2.3.4") == IPv6Address(high: 0x0001_0002_0003_0004, low: 0x0005_0006_0102_0304))
        // IPv4-compatible (deprecated) form is not mapped, so it stays IPv6.
        #expect(try v6("::1.2.3.4") == IPv6Address(high: 0, low: 0x0102_0304))
    }

    @Test(arguments: ["::ffff:192.0.2.1", "::ffff:c000:0201", "::FFFF:C000:201", "0:0:0:0:0:ffff:192.0.2.1"])
    func ipv4MappedBecomesIPv4(text: String) throws {
        #expect(try IPAddress(parsing: text) == .v4(IPv4Address(192, 0, 2, 1)))
    }

    @Test func mappedLoopbackIsLoopback() throws {
        #expect(try IPAddress(parsing: "::ffff:127.0.0.1").isLoopback)
    }

    @Test(arguments: [
        "1::2::3", "12345::", ":::", "1:2:3:4:5:6:7:8:9", "[::1]", "fe80::1%eth0", "1:2:3:4:5:6:7",
        ":1::", "1::2:", "1:", ":", "::1:", "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", "1::2:3:4:5:6:7:8",
        "g::", "::ffff:1.2.3", "::ffff:256.1.1.1", "::ffff:01.2.3.4", "1.2.3.4::", "1:2:3:4:5:6:7:1.2.3.4",
        "::1.2.3.4:5", "2001:db8:: 1", " ::1", "::1 ", "1:::2", "::-1", "2001:db8::/32", "::%",
    ])
    func rejects(text: String) {
        _ = addressError(text)
    }

    @Test func zoneIdsAreRejectedWithAClearMessage() throws {
        let error = try #require(addressError("fe80::1%eth0"))
        #expect(error == .invalidIPv6(input: "fe80::1%eth0", reason: "zone ids ('%eth0') are not allowed; remove the zone"))
        #expect(error.description.contains("zone ids"))
        #expect(error.description.contains("'fe80::1%eth0'"))
    }

    @Test func specificReasons() {
        #expect(addressError("1::2::3")?.description == "invalid IPv6 address '1::2::3': '::' may appear only once")
        #expect(addressError("12345::")?.description.contains("group '12345' has more than 4 hex digits") == true)
        #expect(addressError("[::1]")?.description.contains("brackets are not allowed") == true)
        #expect(addressError(":::")?.description.contains("unexpected ':'") == true)
        #expect(addressError("1:2:3:4:5:6:7:8:9")?.description.contains("too many groups") == true)
        #expect(addressError("1:2:3:4:5:6:7")?.description.contains("expected 8 groups, found 7") == true)
        #expect(addressError("1:2:3:4:5:6:7:8::")?.description.contains("at least one zero group") == true)
        #expect(addressError("::ffff:256.1.1.1")?.description.contains("octet 256 is out of range") == true)
        #expect(addressError("1:")?.description.contains("ends with a single ':'") == true)
        #expect(addressError(":1::")?.description.contains("starts with a single ':'") == true)
        #expect(addressError("g::")?.description.hasPrefix("invalid IPv6 address 'g::'") == true)
    }

    @Test func octetsRoundTrip() throws {
        let address = try v6("2001:db8:1:2:3:4:5:6")
        let bytes: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6]
        #expect(address.octets == bytes)
        #expect(IPv6Address(octets: bytes) == address)
        #expect(IPv6Address(octets: Array(bytes.dropLast())) == nil)
        #expect(IPv6Address(octets: bytes + [0]) == nil)
    }

    @Test func mappedIPv4Accessor() {
        #expect(IPv6Address(high: 0, low: 0xFFFF_C000_0201).mappedIPv4 == IPv4Address(192, 0, 2, 1))
        #expect(IPv6Address(high: 0, low: 0xC000_0201).mappedIPv4 == nil)
        #expect(IPv6Address(high: 1, low: 0xFFFF_C000_0201).mappedIPv4 == nil)
        #expect(IPv6Address(high: 0, low: 0x1_FFFF_C000_0201).mappedIPv4 == nil)
    }

    @Test func ordering() {
        let a = IPv6Address(high: 1, low: .max)
        let b = IPv6Address(high: 2, low: 0)
        let c = IPv6Address(high: 2, low: 1)
        #expect(a < b && b < c && !(c < a))
    }
}
