import Testing
@testable import PortcullisCore

@Suite struct IPPrefixTests {
    func prefix(_ text: String) throws -> IPPrefix {
        let slash = try #require(text.firstIndex(of: "/"))
        let length = try #require(Int(text[text.index(after: slash)...]))
        return try IPPrefix(address: IPAddress(parsing: String(text[..<slash])), length: length)
    }

    func address(_ text: String) throws -> IPAddress {
        try IPAddress(parsing: text)
    }

    @Test func constructsNetworks() throws {
        let p = try prefix("203.0.113.0/24")
        #expect(p.length == 24)
        #expect(p.address == .v4(IPv4Address(203, 0, 113, 0)))
        #expect(p.description == "203.0.113.0/24")
        #expect(try prefix("2001:db8::/32").description == "2001:db8::/32")
        #expect(try prefix("0.0.0.0/0").description == "0.0.0.0/0")
        #expect(try prefix("::/0").description == "::/0")
        #expect(try prefix("10.1.2.3/32").length == 32)
        #expect(try prefix("::1/128").length == 128)
    }

    @Test func rejectsHostBits() throws {
        #expect(throws: AddressError.invalidPrefix(
            input: "203.0.113.7/24", reason: "host bits are set; the network is 203.0.113.0/24")) {
            try IPPrefix(address: IPAddress(parsing: "203.0.113.7"), length: 24)
        }
        #expect(throws: AddressError.self) {
            try IPPrefix(address: IPAddress(parsing: "2001:db8::1"), length: 64)
        }
        #expect(throws: AddressError.self) {
            try IPPrefix(address: IPAddress(parsing: "0.0.0.1"), length: 0)
        }
    }

    @Test func rejectsLengthsOutOfRange() throws {
        for (text, length) in [("10.0.0.0", 33), ("10.0.0.0", -1), ("::", 129), ("::", -1), ("::", Int.max)] {
            let error = try #require(throws: AddressError.self) {
                try IPPrefix(address: IPAddress(parsing: text), length: length)
            }
            #expect(error.description.contains("out of range"))
        }
    }

    @Test func containsAddresses() throws {
        let p = try prefix("203.0.113.0/24")
        #expect(p.contains(try address("203.0.113.0")))
        #expect(p.contains(try address("203.0.113.255")))
        #expect(!p.contains(try address("203.0.114.0")))
        #expect(!p.contains(try address("203.0.112.255")))
        #expect(!p.contains(try address("2001:db8::")))

        let all4 = try prefix("0.0.0.0/0")
        #expect(all4.contains(try address("255.255.255.255")))
        #expect(!all4.contains(try address("::")))

        let doc6 = try prefix("2001:db8::/32")
        #expect(doc6.contains(try address("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")))
        #expect(!doc6.contains(try address("2001:db9::")))

        let odd = try prefix("2001:db8::/65")
        #expect(odd.contains(try address("2001:db8::7fff:ffff:ffff:ffff")))
        #expect(!odd.contains(try address("2001:db8::8000:0:0:0")))

        let host = try prefix("192.0.2.1/32")
        #expect(host.contains(try address("192.0.2.1")))
        #expect(!host.contains(try address("192.0.2.0")))
    }

    @Test func containsPrefixes() throws {
        let wide = try prefix("10.0.0.0/8")
        #expect(wide.contains(wide))
        #expect(wide.contains(try prefix("10.1.0.0/16")))
        #expect(wide.contains(try prefix("10.255.255.255/32")))
        #expect(!wide.contains(try prefix("0.0.0.0/0")))
        #expect(!wide.contains(try prefix("11.0.0.0/16")))
        #expect(!(try prefix("10.1.0.0/16")).contains(wide))
        #expect(try prefix("::/0").contains(try prefix("2001:db8::/32")))
        #expect(!(try prefix("::/0")).contains(try prefix("0.0.0.0/0")))
        #expect(try prefix("::/127").contains(try prefix("::1/128")))
    }

    @Test func ordering() throws {
        let sorted = try ["10.0.0.0/16", "10.0.0.0/8", "9.0.0.0/8", "::/0", "0.0.0.0/0"]
            .map { try prefix($0) }
            .sorted()
            .map(\.description)
        #expect(sorted == ["0.0.0.0/0", "9.0.0.0/8", "10.0.0.0/8", "10.0.0.0/16", "::/0"])
    }

    @Test func hostPrefix() throws {
        #expect(IPPrefix(host: try address("192.0.2.1")).description == "192.0.2.1/32")
        #expect(IPPrefix(host: try address("::1")).description == "::1/128")
    }
}
