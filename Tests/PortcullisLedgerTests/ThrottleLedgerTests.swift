import Glibc
import PortcullisCore
import Testing

@testable import PortcullisLedger

/// Throttles are blocks with a rate: they round-trip through the ledger, and a ledger of
/// schema 2 (before throttles) gains the columns and keeps its blocks.
@Suite struct ThrottleLedgerTests {
    @Test func aThrottleRoundTripsAndABlockReplacesIt() throws {
        let scratch = try ScratchLedger()
        var throttle = try block("203.0.113.9")
        throttle.throttle = ThrottleRate(packetsPerSecond: 100, burst: 20, newConnectionsOnly: true)
        try scratch.ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in try writer.put(throttle, replacing: nil) }
        #expect(try scratch.ledger.block(for: try target("203.0.113.9")) == throttle)
        let replaced = try block("203.0.113.9", reason: "now blocked")
        try scratch.ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in try writer.put(replaced, replacing: throttle) }
        #expect(try scratch.ledger.block(for: try target("203.0.113.9"))?.throttle == nil)
        #expect(try scratch.ledger.counts().count() == 1)
    }

    @Test func aSchema2LedgerIsMigratedKeepingItsBlocks() throws {
        let scratch = try ScratchLedger()
        let kept = try block("198.51.100.7", reason: "from before")
        try scratch.ledger.write { (writer: inout LedgerWriter) throws(LedgerError) in try writer.put(kept, replacing: nil) }
        // Back to schema 2, as an older portcullis left it.
        let path = scratch.directory + "/" + Ledger.fileName
        let old = try SQLiteConnection(path: path)
        let v2Columns = "key, family, kind, expires_ms, source, origin, reason, created_ms, refreshed_ms, requested_seconds, context"
        try old.execute("""
            CREATE TABLE blocks_v2 AS SELECT \(v2Columns) FROM blocks;
            DROP TABLE blocks;
            CREATE TABLE blocks (key BLOB PRIMARY KEY, family INTEGER NOT NULL, kind INTEGER NOT NULL, expires_ms INTEGER,
                source TEXT NOT NULL, origin TEXT NOT NULL, reason TEXT NOT NULL, created_ms INTEGER NOT NULL,
                refreshed_ms INTEGER NOT NULL, requested_seconds INTEGER, context TEXT) WITHOUT ROWID;
            INSERT INTO blocks SELECT \(v2Columns) FROM blocks_v2;
            DROP TABLE blocks_v2;
            PRAGMA user_version = 2;
            """)
        let migrated = try Ledger.open(stateDirectory: scratch.directory)
        #expect(try migrated.block(for: try target("198.51.100.7")) == kept)
        var throttle = try block("198.51.100.8")
        throttle.throttle = ThrottleRate(packetsPerSecond: 5, burst: 1)
        try migrated.write { (writer: inout LedgerWriter) throws(LedgerError) in try writer.put(throttle, replacing: nil) }
        #expect(try migrated.block(for: try target("198.51.100.8"))?.throttle == throttle.throttle)
    }
}
