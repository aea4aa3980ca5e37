import PortcullisControl
import PortcullisCore
import Testing

@testable import portcullis

/// `list --json` streams a million blocks with a hand-written encoder; it must write exactly
/// what JSONEncoder writes for the same array.
struct ListJSONTests {
    @Test func streamedElementsMatchJSONEncoder() throws {
        let reasons = ["", "plain", "quote \" backslash \\ slash / tab\t newline\n", "bell \u{07} escape \u{1B} del \u{7F}", "ünïcødé 🚪", "\u{0C}\u{08}\r"]
        var records: [BlockRecord] = []
        for (index, reason) in reasons.enumerated() {
            let target = try BlockTarget.parse(index % 2 == 0 ? "203.0.113.\(index)" : "2001:db8::/\(48 + index)").target
            let permanent = index % 3 == 0
            let entry = BlockEntry(
                target: target, remaining: permanent ? nil : .milliseconds(3_599_849 + Int64(index) * 1000 + (index == 4 ? 151 : 0)),
                expiresUnixMilliseconds: permanent ? nil : 1_796_185_746_649, isExpired: index == 5,
                droppedPackets: UInt64(index) * 1_000_003, droppedBytes: UInt64(index) << 40, reason: reason,
                source: index == 1 ? nil : .wazuh, createdUnixMilliseconds: index == 2 ? nil : 1_796_182_146_649,
                refreshedUnixMilliseconds: 1_796_182_146_700, requestedDuration: permanent ? nil : .seconds(3600),
                throttle: index % 2 == 1 ? ThrottleRate(packetsPerSecond: 100 * UInt32(index), burst: 10, newConnectionsOnly: index == 3) : nil,
                passedPackets: UInt64(index) * 7)
            records.append(BlockRecord(entry))
        }
        let streamed = "[\n" + records.map(\.jsonArrayElement).joined(separator: ",\n") + "\n]"
        #expect(streamed == Output.json(records))
        for record in records {
            #expect("[\n" + record.jsonArrayElement + "\n]" == Output.json([record]))
        }
    }

    @Test func wholeAndFractionalSecondsAreWrittenAsJSONEncoderWritesThem() {
        for value in [0.0, 1.0, 3600.0, 0.001, 2.5, 3599.849, -1.25, 1e-7, 123456.789012] {
            #expect("[\n  " + JSONText.number(value) + "\n]" == Output.json([value]), "\(value)")
        }
    }
}
