import Testing
@testable import PortcullisCore

/// Parses and returns the error, failing the test if parsing succeeded.
func addressError(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> AddressError? {
    do {
        let address = try IPAddress(parsing: text)
        Issue.record("expected '\(text)' to be rejected, got \(address)", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

@Suite struct IPv4ParsingTests {
    @Test(arguments: [
        ("0.0.0.0", UInt32(0)),
        ("192.0.2.1", 0xC000_0201),
        ("255.255.255.255", 0xFFFF_FFFF),
        ("10.0.0.1", 0x0A00_0001),
        ("100.64.0.0", 0x6440_0000),
        ("1.20.200.0", 0x0114_C800),
    ])
    func accepts(text: String, value: UInt32) throws {
        let address = try IPAddress(parsing: text)
        #expect(address == .v4(IPv4Address(value)))
        #expect(address.family == .ipv4)
        #expect(address.description == text)
    }

    @Test(arguments: [
        "127.1", "1", "1.2.3", "010.0.0.1", "0x7f.0.0.1", "1.2.3.4.", " 1.2.3.4", "1.2.3.4 ",
        "256.0.0.1", "1.2.3.256", "", ".1.2.3", "1..2.3", "1.2.3.4.5", "00.0.0.0", "1.2.3.04",
        "1.2.3.-4", "+1.2.3.4", "1.2.3.4/", "1.2.3.a", "1234.1.1.1", "99999999999999999999.1.1.1",
        "1.2.3.4\n", "\u{FF11}.2.3.4", "localhost", "1.2.3.4%eth0", "[1.2.3.4]", "1.2.3.4:80",
    ])
    func rejects(text: String) {
        _ = addressError(text)
    }

    @Test func shortFormMessageNamesInputAndExpectation() {
        #expect(addressError("127.1")?.description
            == "invalid IPv4 address '127.1': expected four decimal octets, found 2")
        #expect(addressError("1.2.3")?.description
            == "invalid IPv4 address '1.2.3': expected four decimal octets, found 3")
        #expect(addressError("1.2.3.4.5")?.description
            == "invalid IPv4 address '1.2.3.4.5': expected four decimal octets, found 5")
    }

    @Test func outOfRangeOctetIsNamed() {
        #expect(addressError("300.1.1.1")?.description
            == "invalid IPv4 address '300.1.1.1': octet 300 is out of range 0-255")
        #expect(addressError("1.1.1.1234")?.description.contains("octet 1234 is out of range") == true)
    }

    @Test func specificReasons() {
        #expect(addressError("010.0.0.1")?.description.contains("octet '010' has a leading zero") == true)
        #expect(addressError("0x7f.0.0.1")?.description.contains("'0x7f' is hexadecimal") == true)
        #expect(addressError("1.2.3.4.")?.description.contains("ends with a dot") == true)
        #expect(addressError(" 1.2.3.4")?.description == "invalid address ' 1.2.3.4': whitespace is not allowed")
        #expect(addressError("")?.description == "invalid address '': the address is empty")
        #expect(addressError("localhost")?.description.contains("not an IPv4 or IPv6 address") == true)
        #expect(addressError("1.2.3.4:80")?.description.contains("ports are not allowed") == true)
        #expect(addressError("[1.2.3.4]")?.description.contains("brackets") == true)
    }

    @Test func messagesStayOnOneLine() throws {
        let error = try #require(addressError("1.2.3.4\nrm -rf"))
        #expect(!error.description.contains("\n"))
        #expect(error.description.contains("1.2.3.4\\x0arm -rf"), "the line break is shown escaped")
        let long = try #require(addressError(String(repeating: "9", count: 10_000)))
        #expect(long.description.count < 300)
    }

    @Test func octetsAndComponents() {
        let address = IPv4Address(192, 0, 2, 1)
        #expect(address.value == 0xC000_0201)
        #expect(address.octets == [192, 0, 2, 1])
        #expect(address.description == "192.0.2.1")
        #expect(IPv4Address(0xC000_0201) == address)
    }

    @Test func loopbackAndUnspecified() throws {
        #expect(try IPAddress(parsing: "127.0.0.1").isLoopback)
        #expect(try IPAddress(parsing: "127.255.3.4").isLoopback)
        #expect(try !IPAddress(parsing: "128.0.0.1").isLoopback)
        #expect(try !IPAddress(parsing: "126.255.255.255").isLoopback)
        #expect(try IPAddress(parsing: "0.0.0.0").isUnspecified)
        #expect(try !IPAddress(parsing: "0.0.0.1").isUnspecified)
    }

    @Test func orderingPutsIPv4BeforeIPv6() throws {
        let sorted = try ["::1", "10.0.0.2", "2001:db8::", "10.0.0.1", "9.255.255.255"]
            .map { try IPAddress(parsing: $0) }
            .sorted()
            .map(\.description)
        #expect(sorted == ["9.255.255.255", "10.0.0.1", "10.0.0.2", "::1", "2001:db8::"])
    }

    @Test func familyBitWidth() {
        #expect(AddressFamily.ipv4.bitWidth == 32)
        #expect(AddressFamily.ipv6.bitWidth == 128)
        #expect(AddressFamily.ipv6.rawValue == "ipv6")
    }
}
