import Testing
@testable import PortcullisCore

@Suite struct BlockTargetParsingTests {
    func targetError(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> AddressError? {
        do {
            let parsed = try BlockTarget.parse(text)
            Issue.record("expected '\(text)' to be rejected, got \(parsed.target)", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }

    @Test func plainAddressesHaveNoNotes() throws {
        let parsed = try BlockTarget.parse("192.0.2.1")
        #expect(parsed.target == .address(.v4(IPv4Address(192, 0, 2, 1))))
        #expect(parsed.notes.isEmpty)
        #expect(parsed.target.family == .ipv4)
        #expect(parsed.target.description == "192.0.2.1")

        let v6 = try BlockTarget.parse("2001:DB8::1")
        #expect(v6.target.description == "2001:db8::1")
        #expect(v6.target.family == .ipv6)
        #expect(v6.notes.isEmpty)
    }

    @Test func prefixesAreKeptAsPrefixes() throws {
        let parsed = try BlockTarget.parse("203.0.113.0/24")
        guard case .prefix(let p) = parsed.target else {
            Issue.record("expected a prefix, got \(parsed.target)")
            return
        }
        #expect(p.description == "203.0.113.0/24")
        #expect(parsed.notes.isEmpty)
        #expect(try BlockTarget.parse("2001:db8::/32").target.description == "2001:db8::/32")
        #expect(try BlockTarget.parse("0.0.0.0/0").target.description == "0.0.0.0/0")
        #expect(try BlockTarget.parse("10.0.0.0/31").target.description == "10.0.0.0/31")
        #expect(try BlockTarget.parse("2001:db8::/127").target.description == "2001:db8::/127")
    }

    @Test func mappedAddressIsNoted() throws {
        let parsed = try BlockTarget.parse("::ffff:192.0.2.1")
        #expect(parsed.target == .address(.v4(IPv4Address(192, 0, 2, 1))))
        #expect(parsed.notes == ["::ffff:192.0.2.1 is an IPv4-mapped address; using 192.0.2.1"])
    }

    @Test func hostBitsAreNormalizedWithANote() throws {
        let parsed = try BlockTarget.parse("203.0.113.7/24")
        #expect(parsed.target.description == "203.0.113.0/24")
        #expect(parsed.notes == ["203.0.113.7/24 has host bits set; using 203.0.113.0/24"])

        let v6 = try BlockTarget.parse("2001:db8::1/32")
        #expect(v6.target.description == "2001:db8::/32")
        #expect(v6.notes == ["2001:db8::1/32 has host bits set; using 2001:db8::/32"])

        let zero = try BlockTarget.parse("1.2.3.4/0")
        #expect(zero.target.description == "0.0.0.0/0")
        #expect(zero.notes.count == 1)
    }

    @Test func fullLengthPrefixesBecomeAddresses() throws {
        let v4 = try BlockTarget.parse("192.0.2.1/32")
        #expect(v4.target == .address(.v4(IPv4Address(192, 0, 2, 1))))
        #expect(v4.notes == ["192.0.2.1/32 is a single address; using 192.0.2.1"])

        let v6 = try BlockTarget.parse("2001:db8::1/128")
        #expect(v6.target == .address(.v6(IPv6Address(high: 0x2001_0db8_0000_0000, low: 1))))
        #expect(v6.notes == ["2001:db8::1/128 is a single address; using 2001:db8::1"])
    }

    @Test func mappedPrefixesMapToIPv4() throws {
        let parsed = try BlockTarget.parse("::ffff:192.0.2.0/120")
        #expect(parsed.target.description == "192.0.2.0/24")
        #expect(parsed.notes == ["::ffff:192.0.2.0/120 is an IPv4-mapped prefix; using 192.0.2.0/24"])

        let hostBits = try BlockTarget.parse("::ffff:192.0.2.7/120")
        #expect(hostBits.target.description == "192.0.2.0/24")
        #expect(hostBits.notes == [
            "::ffff:192.0.2.7/120 is an IPv4-mapped prefix; using 192.0.2.7/24",
            "192.0.2.7/24 has host bits set; using 192.0.2.0/24",
        ])

        let single = try BlockTarget.parse("::ffff:c000:201/128")
        #expect(single.target == .address(.v4(IPv4Address(192, 0, 2, 1))))
        #expect(single.notes.count == 2)
        #expect(single.notes.last == "192.0.2.1/32 is a single address; using 192.0.2.1")

        #expect(try BlockTarget.parse("::ffff:0.0.0.0/96").target.description == "0.0.0.0/0")

        let short = try #require(targetError("::ffff:192.0.2.0/64"))
        #expect(short.description.contains("at least 96"))
        #expect(targetError("::ffff:192.0.2.0/129")?.description.contains("out of range 0-128") == true)
    }

    @Test(arguments: [
        ("10.0.0.0/33", "prefix length 33 is out of range 0-32 for IPv4"),
        ("::/129", "prefix length 129 is out of range 0-128 for IPv6"),
        ("10.0.0.0/-1", "prefix length '-1' must be plain decimal digits"),
        ("10.0.0.0/+8", "prefix length '+8' must be plain decimal digits"),
        ("10.0.0.0/01", "prefix length '01' has a leading zero"),
        ("10.0.0.0/00", "prefix length '00' has a leading zero"),
        ("10.0.0.0/", "missing prefix length after '/'"),
        ("10.0.0.0/ 8", "prefix length ' 8' must be plain decimal digits"),
        ("10.0.0.0/8 ", "prefix length '8 ' must be plain decimal digits"),
        ("10.0.0.0/8/8", "prefix length '8/8' must be plain decimal digits"),
        ("10.0.0.0/0x8", "prefix length '0x8' must be plain decimal digits"),
        ("10.0.0.0/99999999999999999999999", "prefix length 99999999999999999999999 is out of range 0-32 for IPv4"),
        ("/8", "the address before '/' is missing"),
    ])
    func invalidLengths(text: String, reason: String) {
        #expect(targetError(text) == .invalidPrefix(input: text, reason: reason))
    }

    @Test(arguments: ["", " ", "\t", "garbage", "1.2.3.4 ", " 1.2.3.4", "127.1/8", "300.0.0.0/8", "fe80::1%eth0/64", "[::1]/128"])
    func garbageIsRejected(text: String) {
        _ = targetError(text)
    }

    @Test func addressPartErrorsComeFromTheAddressParser() {
        #expect(targetError("300.1.1.1/8")?.description
            == "invalid IPv4 address '300.1.1.1': octet 300 is out of range 0-255")
        #expect(targetError("fe80::1%eth0")?.description.contains("zone ids") == true)
        #expect(targetError("")?.description == "invalid address '': the address is empty")
    }

    @Test func ordering() throws {
        let sorted = try ["10.0.0.1", "10.0.0.0/8", "::1", "9.0.0.0/8", "10.0.0.0"]
            .map { try BlockTarget.parse($0).target }
            .sorted()
            .map(\.description)
        #expect(sorted == ["9.0.0.0/8", "10.0.0.0/8", "10.0.0.0", "10.0.0.1", "::1"])
        // An address sorts before the equivalent full-length prefix so the order is total.
        let a = BlockTarget.address(.v4(IPv4Address(1, 2, 3, 4)))
        let p = BlockTarget.prefix(IPPrefix(host: .v4(IPv4Address(1, 2, 3, 4))))
        #expect(a < p && !(p < a))
    }

    @Test func asPrefix() throws {
        #expect(try BlockTarget.parse("192.0.2.1").target.asPrefix.description == "192.0.2.1/32")
        #expect(try BlockTarget.parse("192.0.2.0/24").target.asPrefix.description == "192.0.2.0/24")
    }
}

@Suite struct BlockableTests {
    func refusal(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> AddressError? {
        let target = try BlockTarget.parse(text).target
        do {
            try target.validateBlockable()
            Issue.record("expected \(text) to be refused", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }

    @Test func loopbackAddressesAreRefused() throws {
        #expect(try refusal("127.0.0.1")?.description == "refusing to block 127.0.0.1: loopback addresses are never blocked")
        #expect(try refusal("127.255.255.254") != nil)
        #expect(try refusal("::1")?.description == "refusing to block ::1: loopback addresses are never blocked")
        #expect(try refusal("::ffff:127.0.0.1") != nil)
    }

    @Test func unspecifiedAddressesAreRefused() throws {
        #expect(try refusal("0.0.0.0")?.description.hasPrefix("refusing to block 0.0.0.0: the unspecified address") == true)
        #expect(try refusal("::")?.description.hasPrefix("refusing to block '::': the unspecified address") == true)
        #expect(try refusal("::/128") != nil)
        #expect(try refusal("0.0.0.0/32") != nil)
    }

    @Test(arguments: [
        "0.0.0.0/0", "96.0.0.0/3", "64.0.0.0/2", "127.0.0.0/8", "126.0.0.0/7", "127.0.0.0/16", "127.1.0.0/16",
        "127.0.0.0/31", "::/0", "::/1", "::/64", "::/96", "::/127", "::ffff:127.0.0.0/104", "::ffff:0.0.0.0/96",
    ])
    func prefixesTouchingLoopbackAreRefused(text: String) throws {
        let error = try refusal(text)
        #expect(error?.description.hasPrefix("refusing to block") == true)
    }

    @Test func messagesExplainWhy() throws {
        #expect(try refusal("0.0.0.0/0")?.description
            == "refusing to block 0.0.0.0/0: it contains the loopback range 127.0.0.0/8, which is never blocked")
        #expect(try refusal("::/0")?.description
            == "refusing to block ::/0: it contains the loopback address ::1, which is never blocked")
        #expect(try refusal("127.1.0.0/16")?.description
            == "refusing to block 127.1.0.0/16: loopback addresses are never blocked")
    }

    @Test(arguments: [
        "203.0.113.0/24", "2001:db8::/32", "192.0.2.1", "2001:db8::1", "128.0.0.0/1", "0.0.0.0/2", "0.0.0.0/8",
        "126.0.0.0/8", "128.0.0.0/8", "::2", "::2/127", "8000::/1", "2000::/3", "10.0.0.0/8",
    ])
    func ordinaryTargetsAreBlockable(text: String) throws {
        try BlockTarget.parse(text).target.validateBlockable()
    }

    @Test func directlyConstructedMappedLoopbackIsRefused() {
        let target = BlockTarget.address(.v6(IPv6Address(high: 0, low: 0xFFFF_7F00_0001)))
        #expect(throws: AddressError.self) { try target.validateBlockable() }
    }
}
