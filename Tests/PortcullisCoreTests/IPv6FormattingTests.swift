import Testing
@testable import PortcullisCore

/// RFC 5952 canonical text.
@Suite struct IPv6FormattingTests {
    @Test(arguments: [
        ("::", "::"),
        ("::1", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("1::", "1::"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        // A single zero group is not shortened (RFC 5952 4.2.2).
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        // The longest run wins (4.2.3).
        ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
        // Ties go to the leftmost run (4.2.3).
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
        // Leading zeros dropped, lowercase (4.1, 4.3).
        ("2001:0DB8:00AB:000C:0000:0D00:ABCD:0001", "2001:db8:ab:c:0:d00:abcd:1"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
        ("fe80::", "fe80::"),
        ("0:0:1::", "0:0:1::"),
        ("1:0:0:0:1:0:0:0", "1::1:0:0:0"),
        ("2001:db8::192.0.2.1", "2001:db8::c000:201"),
        ("64:ff9b::192.0.2.1", "64:ff9b::c000:201"),
        ("::1.2.3.4", "::102:304"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ])
    func canonicalText(input: String, expected: String) throws {
        let address = try IPAddress(parsing: input)
        #expect(address.description == expected)
        // Canonical text must parse back to the same value.
        #expect(try IPAddress(parsing: expected) == address)
    }

    @Test func mappedAddressesUseMixedNotation() {
        let mapped = IPv6Address(high: 0, low: 0xFFFF_C000_0201)
        #expect(mapped.description == "::ffff:192.0.2.1")
        #expect(IPv6Address(high: 0, low: 0xFFFF_0000_0000).description == "::ffff:0.0.0.0")
    }

    @Test func roundTripsGeneratedAddresses() throws {
        // Deterministic patterns with zero groups in every position exercise the run selection.
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<2_000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            var high = state
            var low = state.byteSwapped ^ 0xDEAD_BEEF
            // Clear a pseudo-random set of groups.
            for g in 0..<4 where (state >> UInt64(g * 2 + 7)) & 1 == 1 {
                high &= ~(UInt64(0xFFFF) << UInt64(g * 16))
            }
            for g in 0..<4 where (state >> UInt64(g * 3 + 17)) & 1 == 1 {
                low &= ~(UInt64(0xFFFF) << UInt64(g * 16))
            }
            let address = IPv6Address(high: high, low: low)
            let text = address.description
            #expect(!text.contains(":::"))
            #expect(text == text.lowercased())
            let parsed = try IPAddress(parsing: text)
            if let mapped = address.mappedIPv4 {
                #expect(parsed == .v4(mapped))
            } else {
                #expect(parsed == .v6(address), "\(text)")
            }
        }
    }
}
