import Foundation
import PortcullisControl
import PortcullisCore
import Testing

@testable import portcullis

/// A load through the daemon goes in as few requests as its body limit allows, and no request
/// it makes is larger than that limit, whatever the targets, durations, reason and origin.
struct DaemonChunkTests {
    static func body(_ items: ArraySlice<BlockBatch.Item>, reason: String, origin: String) throws -> Int {
        let batch = BlockBatch(items: Array(items), reason: reason, source: .file, origin: origin)
        return try JSONEncoder().encode(BatchBody(batch)).count
    }

    @Test func aMillionIPv4LinesWithADurationGoInOneRequest() throws {
        let items = (0..<1_000_000).map { n in
            BlockBatch.Item(target: .address(.v4(IPv4Address(0xF000_0000 + UInt32(n)))), duration: .seconds(3600))
        }
        #expect(Block.daemonChunks(of: items, reason: "feed", origin: "/var/lib/feeds/bulk.txt") == [0..<1_000_000])
    }

    @Test func everyChunkFitsTheBodyLimitAtItsLongest() throws {
        // The longest lines there are: full-width IPv6 prefixes with the longest duration.
        let prefix = try #require(try? BlockTarget.parse("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127").target)
        let longest = BlockBatch.Item(target: prefix, duration: .seconds(DurationText.maximumSeconds))
        let items = Array(repeating: longest, count: 700_000)
        let reason = String(repeating: "\u{1}", count: 4096)
        let chunks = Block.daemonChunks(of: items, reason: reason, origin: "bulk")
        #expect(chunks.count > 1)
        #expect(chunks.first?.lowerBound == 0 && chunks.last?.upperBound == items.count)
        for (earlier, later) in zip(chunks, chunks.dropFirst()) { #expect(earlier.upperBound == later.lowerBound) }
        for chunk in chunks {
            let size = try Self.body(items[chunk], reason: reason, origin: "bulk")
            #expect(size <= ControlSocketClient.maximumBodyBytes, "a request of \(size) bytes")
        }
    }
}
