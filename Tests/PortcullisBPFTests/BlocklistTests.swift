import CLibbpf
import Foundation
import Synchronization
import PortcullisBPF
import PortcullisControl
import PortcullisCore
import Testing

/// The control plane's rules over real pinned maps.
@Suite(.enabled(if: Privileges.canUseBPF, Privileges.reason))
struct BlocklistTests {
    @Test func refreshKeepsCountersAndNeverShortensABlock() throws {
        let state = try ScratchState()
        #expect(try state.block("198.51.100.9", for: .seconds(3600), reason: "first").change == .added)
        _ = try state.verdict(Frame.ipv4(source: "198.51.100.9"))
        let shorter = try state.block("198.51.100.9", for: .seconds(10), reason: "second")
        #expect(shorter.change == .keptLonger)
        #expect(shorter.entry.reason == "first", "the longer block's owner and reason stay")
        let remaining = try #require(shorter.entry.remaining)
        #expect(remaining > .seconds(3590))
        #expect(shorter.entry.droppedPackets == 1)

        let longer = try state.block("198.51.100.9", for: .seconds(7200))
        #expect(longer.change == .refreshed)
        #expect(longer.entry.droppedPackets == 1)
        #expect(longer.entry.reason == "first", "a refresh without a reason keeps the block's")
        #expect(try #require(longer.entry.remaining) > .seconds(7190))

        let permanent = try state.block("198.51.100.9")
        #expect(permanent.change == .refreshed)
        #expect(permanent.entry.isPermanent)
        #expect(try state.block("198.51.100.9", for: .seconds(5)).change == .keptLonger)
        #expect(try #require(try state.entry("198.51.100.9")).isPermanent)
    }

    @Test func expiryIsAccurateToAFewJiffies() throws {
        let state = try ScratchState()
        let outcome = try state.block("2001:db8::42", for: .seconds(100))
        let remaining = try #require(outcome.entry.remaining)
        #expect(remaining > .milliseconds(99_900) && remaining <= .milliseconds(100_100))
        let expires = try #require(outcome.entry.expiresUnixMilliseconds)
        let expected = Int64(Date().timeIntervalSince1970 * 1000) + 100_000
        #expect(abs(expires - expected) < 500)
    }

    @Test func clockRateMatchesTheKernelConfiguration() throws {
        let state = try ScratchState()
        let config = try String(decoding: Data(contentsOf: URL(fileURLWithPath: "/proc/config.gz")), as: UTF8.self)
        _ = config  // compressed; the rate is cross-checked against the jiffies the kernel reports instead
        let first = try state.datapath.now()
        Thread.sleep(forTimeInterval: 0.5)
        let second = try state.datapath.now()
        let measured = Double(second.jiffies - first.jiffies)
            / (Double(second.unixNanoseconds - first.unixNanoseconds) / 1e9)
        #expect(abs(measured - Double(state.datapath.jiffiesPerSecond)) / measured < 0.05)
    }

    @Test func prefixBlocksAreKeptApartFromTheirNeighbours() throws {
        let state = try ScratchState()
        _ = try state.block("203.0.113.0/24", reason: "wide")
        #expect(try state.entry("203.0.113.0/25") == nil, "a lookup of a narrower prefix must not find the wider block")
        #expect(try state.blocks.unblock(try BlockTarget.parse("203.0.113.0/25").target) == nil)
        #expect(try state.block("203.0.113.0/25", for: .seconds(60)).change == .added)
        #expect(try state.entry("203.0.113.0/24")?.reason == "wide")
        #expect(try state.blocks.list().count == 2)
        #expect(try state.blocks.unblock(try BlockTarget.parse("203.0.113.0/24").target) != nil)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.5")) == .drop)
        #expect(try state.verdict(Frame.ipv4(source: "203.0.113.200")) == .pass)
    }

    @Test func aFullBlocklistIsAnErrorNotAnEviction() throws {
        let state = try ScratchState(capacity: Capacity(exact: 8, prefixes: 4))
        for host in 1...8 { _ = try state.block("192.0.2.\(host)", for: .seconds(600)) }
        #expect {
            try state.block("192.0.2.100", for: .seconds(600))
        } throws: { error in
            (error as? ServiceError)?.kind == .full
        }
        #expect(try state.blocks.list().count == 8)
        for host in 1...8 { #expect(try state.verdict(Frame.ipv4(source: "192.0.2.\(host)")) == .drop) }
        // A refresh of an existing block still works when full.
        #expect(try state.block("192.0.2.1", for: .seconds(6000)).change == .refreshed)
    }

    @Test func aBatchTooLargeForAMapChangesNothingAndNamesTheMap() throws {
        let state = try ScratchState(capacity: Capacity(exact: 10, prefixes: 4))
        for host in 1...4 { _ = try state.block("192.0.2.\(host)", for: .seconds(600)) }
        func requests(_ texts: [String]) throws -> [BlockRequest] {
            try texts.map { BlockRequest(target: try BlockTarget.parse($0).target, duration: .seconds(60), source: .file) }
        }
        // 4 refreshes and 7 new addresses: 11 in a map of 10.
        let tooMany = try requests((1...11).map { "192.0.2.\($0)" } + ["2001:db8::1", "198.51.100.0/24"])
        do {
            _ = try state.blocks.block(batch: tooMany)
            Issue.record("a batch larger than the map's room was applied")
        } catch {
            #expect(error.kind == .full)
            #expect(error.description.hasPrefix("map blocks_v4 has room for 6 more entries (capacity 10) but the batch adds 7; nothing was blocked"))
        }
        #expect(try state.blocks.list().count == 4, "nothing of the batch, of any family or kind, was applied")
        #expect(try state.verdict(Frame.ipv4(source: "192.0.2.5")) == .pass)

        let prefixes = try requests(["198.51.100.0/24", "198.51.101.0/24", "198.51.102.0/24", "198.51.103.0/24", "198.51.104.0/24", "192.0.2.5"])
        do {
            _ = try state.blocks.block(batch: prefixes)
            Issue.record("a batch larger than the prefix trie's room was applied")
        } catch {
            #expect(error.kind == .full)
            #expect(error.description.hasPrefix("map prefixes_v4 has room for 4 more prefixes (capacity 4) but the batch adds 5"))
        }
        #expect(try state.blocks.list().count == 4)
        // What fits goes in whole.
        #expect(try state.blocks.block(batch: try requests((1...10).map { "192.0.2.\($0)" })).total == 10)
    }

    @Test func aFullPrefixTrieIsNamed() throws {
        let state = try ScratchState(capacity: Capacity(exact: 8, prefixes: 2))
        _ = try state.block("198.51.100.0/24", for: .seconds(600))
        _ = try state.block("198.51.101.0/24", for: .seconds(600))
        do {
            _ = try state.block("198.51.102.0/24", for: .seconds(600))
            Issue.record("a third prefix went into a trie of two")
        } catch let error as ServiceError {
            #expect(error.kind == .full)
            #expect(error.description.contains("map prefixes_v4 is full (capacity 2)"), "\(error)")
        }
    }

    @Test func batchBlockingAddsRefreshesAndCountsEachTarget() throws {
        let state = try ScratchState(capacity: Capacity(exact: 50_000, prefixes: 64))
        _ = try state.block("198.51.100.1", for: .seconds(10), reason: "earlier")
        _ = try state.verdict(Frame.ipv4(source: "198.51.100.1"))
        var requests: [BlockRequest] = []
        for index in 0..<40_000 {
            let address = IPv4Address(0xC633_6400 &+ UInt32(index))  // 198.51.100.0 upwards
            requests.append(BlockRequest(target: .address(.v4(address)), duration: .seconds(300), source: .file))
        }
        requests.append(BlockRequest(target: try BlockTarget.parse("2001:db8::7").target, duration: nil, source: .file))
        requests.append(BlockRequest(target: try BlockTarget.parse("203.0.113.0/24").target, duration: nil, source: .file))
        let outcome = try state.blocks.block(batch: requests)
        #expect(outcome.total == 40_002)
        #expect(outcome.refreshed == 1)
        #expect(outcome.added == 40_001)
        #expect(try state.blocks.list().count == 40_002)
        let refreshed = try #require(try state.entry("198.51.100.1"))
        #expect(refreshed.droppedPackets == 1)
        #expect(refreshed.reason == "earlier")
        #expect(try state.verdict(Frame.ipv4(source: "198.51.255.255")) == .drop)  // the last of 40,000
    }

    @Test func batchWithABadTargetChangesNothing() throws {
        let state = try ScratchState()
        let requests = [
            BlockRequest(target: try BlockTarget.parse("198.51.100.1").target, duration: nil),
            BlockRequest(target: .address(.v4(IPv4Address(127, 0, 0, 1))), duration: nil),
        ]
        #expect(throws: ServiceError.self) { try state.blocks.block(batch: requests) }
        #expect(try state.blocks.list().isEmpty)
    }

    @Test func stateIsSharedThroughThePins() throws {
        let state = try ScratchState()
        _ = try state.block("198.51.100.20", for: .seconds(60), reason: "persisted")
        let reopened = try state.reopen()
        let entries = try reopened.list()
        #expect(entries.map(\.target.description) == ["198.51.100.20"])
        #expect(entries.first?.reason == "persisted")
        #expect(reopened.blocklist.datapath.capacity == state.datapath.capacity)
        #expect(throws: DatapathError.self) {
            try Datapath.open(state.pins, creatingWith: Capacity(exact: 99, prefixes: 99), capacityWasExplicit: true)
        }
    }

    @Test func missingStateIsReportedNotCreated() throws {
        let pins = PinDirectory(path: "/sys/fs/bpf/portcullis-test-absent-\(UUID().uuidString.prefix(8).lowercased())")
        #expect {
            try Datapath.open(pins)
        } throws: { error in
            (error as? DatapathError)?.kind == .notFound
        }
        #expect(!FileManager.default.fileExists(atPath: pins.path))
    }

    @Test func pinDirectoryOutsideBPFFSIsRefused() throws {
        let pins = PinDirectory(path: "/tmp/portcullis-not-bpffs")
        #expect {
            try Datapath.open(pins, creatingWith: .standard)
        } throws: { error in
            (error as? DatapathError)?.kind == .unsupported
        }
    }
}

/// Two writers on one pin directory, as a CLI beside the daemon would be: a
/// sweep that decided an entry had expired must not delete it after a refresh.
@Suite(.enabled(if: Privileges.canUseBPF, Privileges.reason))
struct WriterLockTests {
    @Test func refreshesRacingSweepsInOtherHandlesAreNeverLost() throws {
        let state = try ScratchState()
        let targets = (1...200).map { "198.51.100.\($0)" }
        for target in targets { _ = try state.block(target, for: .seconds(1)) }
        let pins = state.pins
        let done = DispatchSemaphore(value: 0)
        let stop = Mutex(false)
        // The sweeper has its own handle, so the two only meet at the pin directory's lock.
        let sweeper = try state.reopen()
        let sweeperBox = UncheckedBox(sweeper)
        DispatchQueue.global().async {
            while !stop.withLock({ $0 }) { _ = try? sweeperBox.value.sweep() }
            done.signal()
        }
        Thread.sleep(forTimeInterval: 0.95)
        for target in targets { _ = try state.block(target, for: .seconds(3600)) }
        Thread.sleep(forTimeInterval: 0.3)
        stop.withLock { $0 = true }
        done.wait()
        let entries = try state.blocks.list()
        #expect(Set(entries.map(\.target.description)) == Set(targets))
        #expect(entries.allSatisfy { ($0.remaining ?? .zero) > .seconds(3500) })
    }
}

/// Hands a handle to another thread in a test; the pin directory's lock, not
/// Swift, is what serializes the two writers here.
final class UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
