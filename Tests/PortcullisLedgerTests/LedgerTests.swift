import Glibc
import PortcullisCore
import Testing

@testable import PortcullisLedger

/// A ledger in a fresh temporary directory, removed afterwards.
final class ScratchLedger {
    let directory: String
    let ledger: Ledger

    init() throws {
        var template = Array("/tmp/portcullis-ledger-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw LedgerError(.failed, path: "/tmp", "mkdtemp failed") }
        directory = String(cString: made)
        ledger = try Ledger.open(stateDirectory: directory)
    }

    deinit {
        for suffix in ["", "-wal", "-shm"] { unlink(directory + "/" + Ledger.fileName + suffix) }
        rmdir(directory)
    }
}

func target(_ text: String) throws -> BlockTarget { try BlockTarget.parse(text).target }

func block(_ text: String, expires: Int64? = nil, source: BlockSource = .cli, reason: String = "", at now: Int64 = 1_000) throws -> LedgerBlock {
    LedgerBlock(target: try target(text), expiry: expires.map { .at($0) } ?? .never, source: source, reason: reason,
                createdUnixMilliseconds: now, refreshedUnixMilliseconds: now,
                requestedDuration: expires.map { .milliseconds($0 - now) })
}

@Suite struct LedgerTests {
    @Test func keysSortAsTargetsDo() throws {
        let texts = ["2001:db8::1", "192.0.2.0/24", "192.0.2.1", "198.51.100.7", "2001:db8::/32", "192.0.2.0", "0.0.0.0/0", "::/0"]
        let targets = try texts.map(target)
        let byKey = targets.sorted { LedgerKey.encode($0).lexicographicallyPrecedes(LedgerKey.encode($1)) }
        #expect(byKey == targets.sorted())
        for item in targets { #expect(LedgerKey.decode(LedgerKey.encode(item)) == item) }
        #expect(LedgerKey.decode([4, 1, 2]) == nil)
        #expect(LedgerKey.decode([9, 1, 2, 3, 4, 32, 0]) == nil)
        #expect(LedgerKey.decode([4, 192, 0, 2, 1, 24, 1]) == nil, "host bits set: not a prefix")
    }

    @Test func blocksRoundTripWithEveryField() throws {
        let scratch = try ScratchLedger()
        var original = try block("203.0.113.7", expires: 61_000, source: .wazuh, reason: "rule 5710")
        original.origin = "agent 001"
        original.context = #"{"rule":"5710"}"#
        try scratch.ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in try writer.put(original, replacing: nil) }
        #expect(try scratch.ledger.block(for: try target("203.0.113.7")) == original)
        #expect(try scratch.ledger.block(for: try target("203.0.113.8")) == nil)
        let reopened = try Ledger(path: scratch.ledger.path)
        #expect(try reopened.block(for: original.target) == original, "it is on disk, not in the connection")
    }

    @Test func countsFollowEveryChange() throws {
        let scratch = try ScratchLedger()
        let a = try block("192.0.2.1"), b = try block("2001:db8::/48", source: .file), c = try block("192.0.2.0/24", source: .api)
        try scratch.ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
            try writer.put(a, replacing: nil)
            try writer.put(b, replacing: nil)
            try writer.put(c, replacing: nil)
        }
        var counts = try scratch.ledger.counts()
        #expect(counts.total == 3)
        #expect(counts.count(family: .ipv4) == 2)
        #expect(counts.count(kind: .prefix) == 2)
        #expect(counts.count(source: .file) == 1)
        var moved = a
        moved.source = .wazuh
        try scratch.ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
            try writer.put(moved, replacing: a)
            try writer.remove(c)
        }
        counts = try scratch.ledger.counts()
        #expect(counts.total == 2)
        #expect(counts.count(source: .cli) == 0)
        #expect(counts.count(source: .wazuh) == 1)
        #expect(try scratch.ledger.pendingRemovals() == [c.target])
        try scratch.ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in try writer.clearPendingRemovals([c.target]) }
        #expect(try scratch.ledger.pendingRemovals().isEmpty)
    }

    @Test func manyRowInsertsAnswerForEachRowAndKeepEveryField() throws {
        let scratch = try ScratchLedger()
        // Two runs of 64 and a tail of 22; one target of the second run and one of the tail are held already.
        let rows = LedgerWriter.rowsPerInsert * 2 + 22
        var blocks: [LedgerBlock] = []
        for n in 0..<rows {
            let expires: Int64? = n == 7 ? nil : 9_000 + 1_000 * Int64(n % 3)
            let source: BlockSource = n % 5 == 0 ? .api : .file
            blocks.append(try block("198.51.100.\(n)", expires: expires, source: source, reason: "row \(n % 4)"))
        }
        let heldBefore = [LedgerWriter.rowsPerInsert + 5, rows - 3]
        let held = heldBefore.map { n in
            LedgerBlock(target: blocks[n].target, expiry: .never, source: .wazuh, reason: "earlier",
                        createdUnixMilliseconds: 10, refreshedUnixMilliseconds: 10, requestedDuration: nil)
        }
        try scratch.ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
            for block in held { try writer.put(block, replacing: nil) }
        }
        let written = try scratch.ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
            try writer.insertIfAbsent(many: blocks[...])
        }
        #expect(written.count == rows)
        #expect(written.indices.filter { !written[$0] } == heldBefore)
        for (n, expected) in blocks.enumerated() {
            let found = try scratch.ledger.block(for: expected.target)
            #expect(found == (heldBefore.contains(n) ? held[heldBefore.firstIndex(of: n) ?? 0] : expected), "row \(n)")
        }
        let counts = try scratch.ledger.counts()
        #expect(counts.total == rows)
        #expect(counts.count(source: .wazuh) == 2)
        #expect(counts.count(source: .api) == blocks.indices.filter { $0 % 5 == 0 && !heldBefore.contains($0) }.count)
    }

    @Test func aFailedTransactionChangesNothing() throws {
        let scratch = try ScratchLedger()
        struct Stop: Error {}
        #expect(throws: LedgerError.self) {
            try scratch.ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
                try writer.put(try! block("192.0.2.1"), replacing: nil)
                throw LedgerError(.failed, path: "", "stop")
            }
        }
        #expect(try scratch.ledger.isEmpty())
        #expect(try scratch.ledger.counts().total == 0)
    }

    @Test func queriesFilterPageAndFindContainingBlocks() throws {
        let scratch = try ScratchLedger()
        let blocks = [
            try block("192.0.2.1", expires: 500), try block("192.0.2.2", source: .file), try block("192.0.2.0/24", source: .file),
            try block("198.51.100.0/24", expires: 5_000), try block("2001:db8::1", source: .wazuh), try block("2001:db8::/32"),
        ]
        try scratch.ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in
            for item in blocks { try writer.put(item, replacing: nil) }
        }
        func texts(_ query: BlockQuery) throws -> [String] { try scratch.ledger.blocks(query).map(\.target.description) }
        #expect(try texts(BlockQuery()) == blocks.map(\.target).sorted().map(\.description))
        #expect(try texts(BlockQuery(family: .ipv6)) == ["2001:db8::/32", "2001:db8::1"])
        #expect(try texts(BlockQuery(kind: .prefix, limit: 2)) == ["192.0.2.0/24", "198.51.100.0/24"])
        #expect(try texts(BlockQuery(source: .file)) == ["192.0.2.0/24", "192.0.2.2"])
        #expect(try texts(BlockQuery(containing: try IPAddress(parsing: "192.0.2.2"))) == ["192.0.2.0/24", "192.0.2.2"])
        #expect(try texts(BlockQuery(containing: try IPAddress(parsing: "2001:db8::1"))) == ["2001:db8::/32", "2001:db8::1"])
        #expect(try scratch.ledger.blocks(BlockQuery(expired: true), at: 1_000).map(\.target.description) == ["192.0.2.1"])
        #expect(try scratch.ledger.blocks(BlockQuery(family: .ipv4, expired: false), at: 1_000).count == 3)
        #expect(try texts(BlockQuery(limit: 2, offset: 2)) == ["192.0.2.2", "198.51.100.0/24"])
        #expect(try texts(BlockQuery(after: try target("198.51.100.0/24"), limit: 10)) == ["2001:db8::/32", "2001:db8::1"])
        #expect(try scratch.ledger.count(BlockQuery(source: .file)) == 2)
        #expect(try scratch.ledger.count(BlockQuery(family: .ipv4, expired: false, after: try target("192.0.2.2"), limit: 1), at: 1_000) == 3, "a cursor pages; it does not change the total")
        #expect(try scratch.ledger.count(BlockQuery(expired: true), at: 10_000) == 2)
        #expect(try scratch.ledger.expired(atUnixMilliseconds: 1_000, limit: 10).map(\.target.description) == ["192.0.2.1"])
    }

    @Test func allowlistAndLastWrite() throws {
        let scratch = try ScratchLedger()
        let entry = AllowlistEntry(target: try target("192.0.2.0/24"), origin: .configuration)
        let added = try scratch.ledger.write { (writer: inout LedgerWriter) throws(LedgerError) -> Bool in
            try writer.recordWrite(atUnixMilliseconds: 2_000)
            try writer.recordWrite(atUnixMilliseconds: 1_000)
            return try writer.allow(entry, atUnixMilliseconds: 2_000)
        }
        #expect(added)
        #expect(try scratch.ledger.lastWriteUnixMilliseconds() == 2_000, "never moves backwards")
        #expect(try scratch.ledger.allowlist() == [entry])
        let again = try scratch.ledger.write { (writer: inout LedgerWriter) throws(LedgerError) -> Bool in
            try writer.allow(entry, atUnixMilliseconds: 3_000)
        }
        #expect(!again)
        let removed = try scratch.ledger.write { (writer: inout LedgerWriter) throws(LedgerError) -> Bool in try writer.disallow(entry.target) }
        #expect(removed)
        #expect(try scratch.ledger.allowlist().isEmpty)
    }

    @Test func aFileThatIsNotALedgerIsAClearError() throws {
        var template = Array("/tmp/portcullis-ledger-XXXXXX".utf8CString)
        let directory = String(cString: try #require(mkdtemp(&template)))
        defer {
            unlink(directory + "/" + Ledger.fileName)
            rmdir(directory)
        }
        let fd = open(directory + "/" + Ledger.fileName, O_CREAT | O_WRONLY, 0o600)
        let garbage = [UInt8](repeating: 0x5A, count: 8192)
        _ = garbage.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        let error = try #require(throws: LedgerError.self) { try Ledger.open(stateDirectory: directory) }
        #expect(error.kind == .corrupt)
        #expect(error.description.contains(directory + "/" + Ledger.fileName))
        #expect(!error.description.contains("\n"))
    }

    @Test func theIncidentIndexFindsRecordsByTimeAndAddressAndFollowsOneLog() throws {
        let scratch = try ScratchLedger()
        let records = [
            Ledger.IndexedIncident(sequence: 1, timeUnixMilliseconds: 1_000, target: try target("203.0.113.9"), record: "one"),
            Ledger.IndexedIncident(sequence: 2, timeUnixMilliseconds: 2_000, target: try target("203.0.113.0/24"), record: "two"),
            Ledger.IndexedIncident(sequence: 3, timeUnixMilliseconds: 3_000, target: nil, record: "three"),
            Ledger.IndexedIncident(sequence: 4, timeUnixMilliseconds: 4_000, target: try target("2001:db8::1"), record: "four"),
        ]
        try scratch.ledger.index(records, of: "/var/log/portcullis/incidents.jsonl")
        #expect(try scratch.ledger.lastIndexedIncident(of: "/var/log/portcullis/incidents.jsonl") == 4)
        #expect(try scratch.ledger.lastIndexedIncident(of: "/elsewhere.jsonl") == nil)
        let ledger = scratch.ledger
        func find(_ since: Int64?, _ address: String?, _ limit: Int?) throws -> [String] {
            try ledger.incidents(sinceUnixMilliseconds: since, containing: try address.map { try IPAddress(parsing: $0) }, limit: limit)
        }
        #expect(try find(nil, nil, nil) == ["one", "two", "three", "four"])
        #expect(try find(2_000, nil, nil) == ["two", "three", "four"])
        #expect(try find(nil, "203.0.113.9", nil) == ["one", "two"], "the address and the prefix holding it")
        #expect(try find(nil, "203.0.113.10", nil) == ["two"])
        #expect(try find(nil, nil, 2) == ["three", "four"], "the last ones, oldest first")
        // A period: its start included, its end not.
        #expect(try ledger.incidents(sinceUnixMilliseconds: 2_000, untilUnixMilliseconds: 4_000, containing: nil, limit: nil) == ["two", "three"])
        #expect(try ledger.incidents(sinceUnixMilliseconds: nil, untilUnixMilliseconds: 2_001, containing: nil, limit: nil) == ["one", "two"])
        try scratch.ledger.index([Ledger.IndexedIncident(sequence: 1, timeUnixMilliseconds: 9_000, target: nil, record: "other")], of: "/elsewhere.jsonl")
        #expect(try find(nil, nil, nil) == ["other"], "another log replaces the index")
    }

    /// A process that makes one change and exits leaves its commits to the checkpoint at close:
    /// not synced one by one, yet all in the database file once the ledger is closed.
    @Test func aLedgerSyncedAtCloseHasItsChangesInTheDatabaseOnceClosed() throws {
        let scratch = try ScratchLedger()
        let path = scratch.ledger.path
        func synchronous(_ ledger: Ledger) throws -> Int64 {
            let pragma = try ledger.connection.statement("PRAGMA synchronous")
            defer { pragma.reset() }
            _ = try pragma.step()
            return pragma.int64(0)
        }
        #expect(try synchronous(scratch.ledger) == 2, "FULL: every commit synced")
        let original = try block("198.51.100.40", expires: 61_000, source: .wazuh)
        do {
            let oneShot = try Ledger(path: path, sync: .atClose)
            #expect(try synchronous(oneShot) == 1, "NORMAL: the log is synced by the checkpoint")
            try oneShot.write { (writer: inout LedgerWriter) throws(LedgerError) in try writer.put(original, replacing: nil) }
            var log = stat()
            #expect(stat(path + "-wal", &log) == 0 && log.st_size > 0, "the commit is in the log until the close")
        }
        #expect(try scratch.ledger.block(for: original.target) == original, "a connection open meanwhile sees the commit")
        #expect(try synchronous(scratch.ledger) == 2, "the other connection keeps its own setting")
    }

    @Test func theLastConnectionToCloseCheckpointsIntoTheDatabase() throws {
        var template = Array("/tmp/portcullis-ledger-XXXXXX".utf8CString)
        let directory = String(cString: try #require(mkdtemp(&template)))
        defer {
            for suffix in ["", "-wal", "-shm"] { unlink(directory + "/" + Ledger.fileName + suffix) }
            rmdir(directory)
        }
        let original = try block("198.51.100.41")
        do {
            let oneShot = try Ledger.open(stateDirectory: directory, sync: .atClose)
            try oneShot.write { (writer: inout LedgerWriter) throws(LedgerError) in try writer.put(original, replacing: nil) }
        }
        var log = stat()
        #expect(stat(directory + "/" + Ledger.fileName + "-wal", &log) == 0 && log.st_size == 0, "checkpointed and cut back at close")
        // An immutable connection reads the database file alone, no log: the change is there.
        let file = try SQLiteConnection(path: directory + "/" + Ledger.fileName, access: .immutable)
        let rows = try file.statement("SELECT count(*) FROM blocks")
        defer { rows.reset() }
        #expect(try rows.step() && rows.int64(0) == 1)
    }
}
