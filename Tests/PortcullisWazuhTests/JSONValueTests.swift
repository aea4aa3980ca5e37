import FoundationEssentials
import PortcullisWazuh
import Testing

/// The byte parser behind `JSONValue.parse` reads exactly what JSONDecoder reads.
struct JSONValueTests {
    /// What Foundation's JSONDecoder makes of `text`, through the Codable conformance.
    static func decoded(_ text: String) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }

    static let accepted = [
        MessageTests.stock,
        #"{}"#, #"[]"#, #" { "a" : [ 1 , 2.5 , -3e2 , 0 , -0.0 , 1E+2 , 4e-1 ] } "#,
        #"{"s":"tab\there \"quoted\" back\\slash \/ \b\f\n\r"}"#,
        #"{"u":"\u00e9\u4e2d\ud83d\ude00 ok"}"#, #""plain""#, "\"caf\u{E9} \u{1F600}\"",
        #"true"#, #"false"#, #"null"#, #"123456789012345"#, #"[null,true,false,{"":""}]"#,
        #"{"dup":1,"dup":2}"#, "\n\t\r [1]\n",
    ]

    static let rejected = [
        "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "[01]", "[1.]", "[.5]", "[1e]", "[+1]",
        "[-]", "\"open", "\"bad \\x escape\"", "\"\\u12\"", "\"\\ud800\"", "\"\\ud800\\u0041\"", "\"\\udc00\"",
        "\"raw\u{01}control\"", "tru", "nul", "[1] [2]", "{\"a\":1} x", "[1e999]", "'single'",
    ]

    @Test(arguments: accepted)
    func acceptsWhatJSONDecoderAccepts(_ text: String) throws {
        let parsed = try #require(JSONValue.parse(Array(text.utf8)))
        #expect(parsed == Self.decoded(text))
    }

    @Test(arguments: rejected)
    func rejectsWhatIsNotJSON(_ text: String) {
        #expect(JSONValue.parse(Array(text.utf8)) == nil)
    }

    @Test func rejectsBytesThatAreNotUTF8() {
        #expect(JSONValue.parse([UInt8(ascii: "\""), 0xC3, 0x28, UInt8(ascii: "\"")]) == nil)
        #expect(JSONValue.parse([UInt8(ascii: "\""), 0xFF, UInt8(ascii: "\"")]) == nil)
    }

    @Test func boundsTheNesting() {
        let limit = JSONValue.maximumDepth
        let deepest = String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        #expect(JSONValue.parse(Array(deepest.utf8)) != nil)
        let deeper = String(repeating: "[", count: limit + 1) + String(repeating: "]", count: limit + 1)
        #expect(JSONValue.parse(Array(deeper.utf8)) == nil)
        // A hostile line of 60,000 brackets is refused, not a stack overflow.
        #expect(JSONValue.parse(Array(String(repeating: "[", count: 60_000).utf8)) == nil)
    }

    @Test func readsFromAnySliceOfBytes() {
        let line = Array("xx[1,2]yy".utf8)
        #expect(JSONValue.parse(line[2..<7]) == .array([.number(1), .number(2)]))
        #expect(JSONValue.parse(Array("[1,2]".utf8).lazy.map { $0 }) == .array([.number(1), .number(2)]))
    }
}
