import PortcullisCore
import Testing

@Suite struct DropRatesTests {
    static func target(_ text: String) -> BlockTarget {
        (try? BlockTarget.parse(text).target) ?? .address(.v4(IPv4Address(0)))
    }

    @Test func aRateIsTheCountersIncreaseOverTheInterval() throws {
        let rate = try #require(DropRate(from: DropCounters(packets: 1_000, bytes: 64_000),
                                         to: DropCounters(packets: 5_000, bytes: 320_000), over: 2))
        #expect(rate == DropRate(packetsPerSecond: 2_000, bytesPerSecond: 128_000))
    }

    @Test func noTimeGivesNoRateAndARestartedCounterCountsFromZero() throws {
        #expect(DropRate(from: .zero, to: DropCounters(packets: 10, bytes: 10), over: 0) == nil)
        #expect(DropRate(from: .zero, to: DropCounters(packets: 10, bytes: 10), over: -1) == nil)
        // The block was lifted and blocked again between the readings: all 30 are new.
        let rate = try #require(DropRate(from: DropCounters(packets: 900, bytes: 9_000), to: DropCounters(packets: 30, bytes: 300), over: 1))
        #expect(rate == DropRate(packetsPerSecond: 30, bytesPerSecond: 300))
    }

    @Test func eachOrderRanksAsItSaysWithTiesInTargetOrder() {
        func block(_ text: String, pps: Double, bps: Double, total: UInt64, expires: Int64?) -> WatchedBlock {
            WatchedBlock(target: Self.target(text), counters: DropCounters(packets: total, bytes: 0),
                         rate: DropRate(packetsPerSecond: pps, bytesPerSecond: bps), expiresUnixMilliseconds: expires)
        }
        let blocks = [
            block("198.51.100.3", pps: 10, bps: 9_000, total: 5, expires: nil),
            block("198.51.100.1", pps: 500, bps: 100, total: 50, expires: 2_000),
            block("198.51.100.2", pps: 10, bps: 200, total: 500, expires: 1_000),
        ]
        func order(_ order: TopOrder) -> [String] { order.ranked(blocks).map(\.target.description) }
        #expect(order(.pps) == ["198.51.100.1", "198.51.100.2", "198.51.100.3"])
        #expect(order(.bps) == ["198.51.100.3", "198.51.100.2", "198.51.100.1"])
        #expect(order(.total) == ["198.51.100.2", "198.51.100.1", "198.51.100.3"])
        #expect(order(.expiry) == ["198.51.100.2", "198.51.100.1", "198.51.100.3"])
    }

    @Test func aBlockSeenDroppingInASliceIsWatchedWithItsRateOneRoundLater() {
        var tracker = TopTracker(watchCapacity: 4, probeCapacity: 4)
        let flood = Self.target("198.51.100.10"), quiet = Self.target("198.51.100.11")
        tracker.advance(byKey: [:], scanned: [(flood, DropCounters(packets: 100, bytes: 6_400)), (quiet, .zero)], at: 10)
        #expect(tracker.keysToRead == [flood])
        #expect(tracker.watchedBlocks.isEmpty)
        tracker.advance(byKey: [flood: DropCounters(packets: 2_100, bytes: 134_400)], scanned: [], at: 12)
        #expect(tracker.watchedBlocks == [WatchedBlock(target: flood, counters: DropCounters(packets: 2_100, bytes: 134_400),
                                                       rate: DropRate(packetsPerSecond: 1_000, bytesPerSecond: 64_000))])
        // Read by key from now on, with its rate over each round.
        tracker.advance(byKey: [flood: DropCounters(packets: 2_600, bytes: 166_400)], scanned: [], at: 13)
        #expect(tracker.watchedBlocks.first?.rate.packetsPerSecond == 500)
        // Lifted: its key is gone and so is it.
        tracker.advance(byKey: [:], scanned: [], at: 14)
        #expect(tracker.watchedBlocks.isEmpty && tracker.keysToRead.isEmpty)
    }

    @Test func theSlowestAreLetGoAndEveryRoundReadsABoundedNumberOfKeys() {
        var tracker = TopTracker(watchCapacity: 2, probeCapacity: 3)
        let targets = (1...50).map { Self.target("198.51.100.\($0)") }
        // Fifty blocks dropping in one slice: only the three that dropped most are candidates.
        tracker.advance(byKey: [:], scanned: targets.enumerated().map { ($1, DropCounters(packets: UInt64($0 + 1) * 10, bytes: 0)) }, at: 0)
        #expect(tracker.keysToRead == [targets[47], targets[48], targets[49]].sorted())
        // A second later the one that looked biggest has gone quiet: the other two are kept.
        tracker.advance(byKey: [targets[49]: DropCounters(packets: 500, bytes: 0), targets[48]: DropCounters(packets: 490 + 300, bytes: 0),
                                targets[47]: DropCounters(packets: 480 + 100, bytes: 0)], scanned: [], at: 1)
        #expect(Set(tracker.watchedBlocks.map(\.target)) == [targets[48], targets[47]])
        #expect(tracker.keysToRead.count <= 2 + 3)
    }

    @Test func aSliceEntryThatDroppedNothingSinceItWasLastSeenIsNoCandidate() {
        var tracker = TopTracker(watchCapacity: 2, probeCapacity: 2)
        let old = Self.target("203.0.113.7")
        tracker.advance(byKey: [:], scanned: [(old, DropCounters(packets: 1_000_000, bytes: 0))], at: 0)
        tracker.advance(byKey: [old: DropCounters(packets: 1_000_000, bytes: 0)], scanned: [], at: 1)
        // Watched at 0 pps, then pushed out by two faster blocks.
        let a = Self.target("198.51.100.1"), b = Self.target("198.51.100.2")
        tracker.advance(byKey: [old: DropCounters(packets: 1_000_000, bytes: 0)], scanned: [(a, DropCounters(packets: 5, bytes: 0)), (b, DropCounters(packets: 5, bytes: 0))], at: 2)
        tracker.advance(byKey: [old: DropCounters(packets: 1_000_000, bytes: 0), a: DropCounters(packets: 10, bytes: 0), b: DropCounters(packets: 10, bytes: 0)], scanned: [], at: 3)
        #expect(Set(tracker.watchedBlocks.map(\.target)) == [a, b])
        // The next trip of the slices finds its counters unchanged: it is not read again.
        tracker.advance(byKey: [a: DropCounters(packets: 15, bytes: 0), b: DropCounters(packets: 15, bytes: 0)],
                        scanned: [(old, DropCounters(packets: 1_000_000, bytes: 0))], at: 4)
        #expect(!tracker.keysToRead.contains(old))
    }
}
