import Foundation
import PortcullisCore
import Testing

/// The hand-written JSON and calendar arithmetic against the C library and JSONEncoder.
struct JSONBytesTests {
    /// gmtime_r's fields for the same instant, formatted the same way.
    private func libcRFC3339(_ milliseconds: Int64) -> String {
        var seconds = time_t(milliseconds.quotientAndRemainder(dividingBy: 1000).quotient - (milliseconds % 1000 < 0 ? 1 : 0))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let fraction = milliseconds - Int64(seconds) * 1000
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                      Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(fraction))
    }

    @Test func calendarFieldsAgreeWithGmtimeAcrossCenturiesLeapDaysAndBefore1970() {
        var instants: [Int64] = [0, -1, 1, 999, -999, -1000, -1001, 86_399_999, 86_400_000, -86_400_000,
                                 951_782_400_000, 951_868_799_999, 4_107_542_399_999, 4_107_542_400_000,  // 2000-02-29, 2100-03-01
                                 -2_208_988_800_000, -62_135_596_800_000, 253_402_300_799_999]  // 1900, year 1, 9999-12-31
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 { instants.append(Int64.random(in: -62_135_596_800_000...253_402_300_799_999, using: &generator)) }
        for instant in instants {
            #expect(UTCTime(unixMilliseconds: instant).rfc3339 == libcRFC3339(instant), "\(instant)")
        }
    }

    @Test func integersAreWrittenAsDescriptionWritesThem() {
        for value: Int64 in [0, 1, -1, 9, 10, 99, 100, 1_796_232_407_316, .max, .min] {
            var json = JSONBytes()
            json.appendInteger(value)
            #expect(String(decoding: json.bytes, as: UTF8.self) == String(value))
        }
        var json = JSONBytes()
        json.appendInteger(UInt64.max)
        #expect(String(decoding: json.bytes, as: UTF8.self) == String(UInt64.max))
    }

    @Test func stringsAreEscapedAsJSONEncoderEscapesThem() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        var everyControl = ""
        for value in 0..<0x20 { everyControl.unicodeScalars.append(Unicode.Scalar(UInt8(value))) }
        for text in ["", "plain", "\"quoted\" \\ back / slash", everyControl, "del \u{7F} ünïcødé 🚪 \u{2028}", String(repeating: "\n", count: 3)] {
            let expected = String(decoding: try encoder.encode([text]), as: UTF8.self)
            #expect("[" + JSONStringLiteral.quoted(text) + "]" == expected, "\(Array(text.utf8))")
        }
    }
}
