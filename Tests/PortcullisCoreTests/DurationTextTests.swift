import Testing
@testable import PortcullisCore

@Suite struct DurationParsingTests {
    func durationError(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> DurationError? {
        do {
            let d = try DurationText.parse(text)
            Issue.record("expected '\(text)' to be rejected, got \(d)", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }

    static let valid: [(String, Int64)] = [
        ("100s", 100),
        ("10m", 600),
        ("1h30m", 5_400),
        ("2d", 172_800),
        ("1d12h", 129_600),
        ("90", 90),
        ("1", 1),
        ("1w", 604_800),
        ("1w2d3h4m5s", 788_645),
        ("0h30m", 1_800),
        ("1h05m", 3_900),
        ("90m", 5_400),
        ("1000000s", 1_000_000),
        ("3155760000", 3_155_760_000),
        ("36525d", 3_155_760_000),
        ("5217w", 3_155_241_600),
        ("00000000000000000000000000001s", 1),
    ]

    @Test(arguments: valid)
    func accepts(text: String, seconds: Int64) throws {
        #expect(try DurationText.parse(text) == .seconds(seconds))
    }

    @Test(arguments: [
        "", "0", "0s", "0h0m", "10x", "1m1h", "1h1h", "-5s", "+5s", "1.5h", "1,5h", "99999999999999999999s",
        "99999999999999999999", "3155760001", "36526d", "5218w", "1h30", "h", "1 h", " 1h", "1h ", "10M", "1H",
        "101y", "1y", "1s1m", "1d1w", "1hm", "s1", "5s5", "1h\n", "1mo",
    ])
    func rejects(text: String) {
        _ = durationError(text)
    }

    @Test func messagesNameInputAndReason() {
        #expect(durationError("") == .empty)
        #expect(durationError("0") == .notPositive(input: "0"))
        #expect(durationError("0s")?.description == "invalid duration '0s': must be longer than zero")
        #expect(durationError("10x")?.description == "invalid duration '10x': unknown unit 'x'; use s, m, h, d or w")
        #expect(durationError("1m1h")?.description.contains("'h' comes after 'm'") == true)
        #expect(durationError("1h1h")?.description == "invalid duration '1h1h': unit 'h' appears more than once")
        #expect(durationError("-5s")?.description == "invalid duration '-5s': signs are not allowed")
        #expect(durationError("1.5h")?.description.contains("fractions are not allowed") == true)
        #expect(durationError("1 h")?.description.contains("spaces are not allowed") == true)
        #expect(durationError("1h30")?.description.contains("'30' has no unit") == true)
        #expect(durationError("99999999999999999999s") == .tooLarge(input: "99999999999999999999s"))
        #expect(durationError("5218w")?.description.contains("maximum of 100 years") == true)
        #expect(durationError("")?.description.hasPrefix("invalid duration ''") == true)
    }
}

@Suite struct DurationFormattingTests {
    @Test(arguments: [
        (Duration.seconds(100), "1m40s"),
        (.seconds(5_400), "1h30m"),
        (.zero, "0s"),
        (.seconds(90_061), "1d1h1m1s"),
        (.seconds(1), "1s"),
        (.seconds(60), "1m"),
        (.seconds(3_600), "1h"),
        (.seconds(86_400), "1d"),
        (.seconds(604_800), "7d"),
        (.seconds(8_640_000), "100d"),
        (.seconds(86_401), "1d1s"),
        (.milliseconds(1_999), "1s"),
        (.milliseconds(59_999), "59s"),
        (.milliseconds(1), "<1s"),
        (.nanoseconds(1), "<1s"),
        (.seconds(-90), "-1m30s"),
    ])
    func formats(duration: Duration, expected: String) {
        #expect(DurationText.format(duration) == expected)
    }

    @Test func formattedDurationsParseBack() throws {
        for seconds: Int64 in [1, 59, 60, 61, 3_599, 3_600, 3_601, 86_399, 86_400, 90_061, 1_234_567, 3_155_760_000] {
            let text = DurationText.format(.seconds(seconds))
            #expect(try DurationText.parse(text) == .seconds(seconds), "\(text)")
        }
    }

    @Test func extremeValuesDoNotTrap() {
        #expect(DurationText.format(.seconds(Int64.max)).hasSuffix("s"))
        #expect(DurationText.format(.seconds(Int64.min)).hasPrefix("-"))
    }
}
