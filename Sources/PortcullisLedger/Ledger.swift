import CSQLite
import Glibc
import PortcullisCore
import PortcullisSystem

/// A block as the ledger records it: everything but the drop counters, which the data plane
/// keeps. Times are wall-clock Unix milliseconds.
public struct LedgerBlock: Sendable, Equatable {
    public var target: BlockTarget
    public var expiry: Expiry<Int64>
    public var source: BlockSource
    /// Where it came from within its source: a file's path, a Wazuh agent, a log file.
    public var origin: String
    public var reason: String
    public var createdUnixMilliseconds: Int64
    public var refreshedUnixMilliseconds: Int64
    /// What was asked for the last time it was set; nil when permanent.
    public var requestedDuration: Duration?
    /// The Wazuh alert or detector match behind it, as JSON.
    public var context: String?
    /// A throttle's rate; nil for a block.
    public var throttle: ThrottleRate?
    /// The fleet node it came from; nil when this host made it.
    public var node: String?

    public init(target: BlockTarget, expiry: Expiry<Int64>, source: BlockSource, origin: String = "", reason: String,
                createdUnixMilliseconds: Int64, refreshedUnixMilliseconds: Int64, requestedDuration: Duration?,
                context: String? = nil, throttle: ThrottleRate? = nil, node: String? = nil) {
        (self.target, self.expiry, self.source, self.origin, self.reason) = (target, expiry, source, origin, reason)
        (self.createdUnixMilliseconds, self.refreshedUnixMilliseconds) = (createdUnixMilliseconds, refreshedUnixMilliseconds)
        (self.requestedDuration, self.context, self.throttle, self.node) = (requestedDuration, context, throttle, node)
    }

    public func isExpired(atUnixMilliseconds now: Int64) -> Bool {
        if case .at(let end) = expiry { return end <= now }
        return false
    }

    /// The terms the refresh and owner rules decide on.
    public var terms: BlockTerms<Int64> {
        BlockTerms(expiry: expiry, source: source, reason: reason, requestedDuration: requestedDuration)
    }
}

/// How many blocks the ledger holds, by family, kind and source: kept up to date by every
/// change, so reading it never counts rows.
public struct LedgerCounts: Sendable, Equatable {
    public struct Key: Hashable, Sendable {
        public let family: AddressFamily
        public let kind: BlockKind
        public let source: BlockSource

        public init(family: AddressFamily, kind: BlockKind, source: BlockSource) {
            (self.family, self.kind, self.source) = (family, kind, source)
        }
    }

    public var byKey: [Key: Int] = [:]

    public init() {}

    public func count(family: AddressFamily? = nil, kind: BlockKind? = nil, source: BlockSource? = nil) -> Int {
        byKey.reduce(0) { total, item in
            let key = item.key
            guard family.map({ $0 == key.family }) ?? true, kind.map({ $0 == key.kind }) ?? true,
                  source.map({ $0 == key.source }) ?? true else { return total }
            return total + item.value
        }
    }

    public var total: Int { byKey.values.reduce(0, +) }
}

/// Which blocks a listing wants. Every filter is answered from an index or by key.
public struct BlockQuery: Sendable, Equatable {
    public var source: BlockSource?
    public var family: AddressFamily?
    public var kind: BlockKind?
    /// Only blocks holding this address: the address itself and the prefixes around it.
    public var containing: IPAddress?
    /// true: only blocks expired but not yet swept; false: only blocks in force.
    public var expired: Bool?
    /// Only blocks after this one, in target order: a cursor for paging through everything.
    public var after: BlockTarget?
    /// nil for no limit.
    public var limit: Int?
    public var offset: Int

    public init(source: BlockSource? = nil, family: AddressFamily? = nil, kind: BlockKind? = nil, containing: IPAddress? = nil,
                expired: Bool? = nil, after: BlockTarget? = nil, limit: Int? = nil, offset: Int = 0) {
        (self.source, self.family, self.kind, self.containing) = (source, family, kind, containing)
        (self.expired, self.after, self.limit, self.offset) = (expired, after, limit, offset)
    }
}

/// When a ledger's changes reach the disk.
public enum LedgerSync: Sendable {
    /// Each commit syncs the write-ahead log before it returns: for a process that keeps the
    /// ledger open (the daemon), whose callers are told of a change as soon as it commits.
    case everyCommit
    /// Commits only write the log; closing the ledger checkpoints it, which syncs the log and
    /// then the database. For a process that makes a change or a batch and exits (the CLI, the
    /// Wazuh response): three syncs at close instead of a synced log header and a synced commit
    /// per transaction and then the same checkpoint. A change survives a crash of the process
    /// either way (the log is in the page cache); across a power cut it is safe once the ledger
    /// is closed, or, if another process holds the ledger open then (no checkpoint at close),
    /// once the kernel writes the log back, and the ledger stays consistent.
    case atClose
}

/// The control plane's source of truth: every block with its record, and the allowlist, in a
/// SQLite database in WAL mode. One writer at a time (SQLite's lock, and the pin directory's
/// writer lock around ledger and maps together); readers never wait for it.
///
/// Not thread-safe: one thread or actor uses a `Ledger` at a time. Open one per reader.
public final class Ledger {
    public static let fileName = "ledger.sqlite"
    /// Schema version, kept in `PRAGMA user_version`.
    static let schemaVersion: Int64 = 4

    public let path: String
    let sync: LedgerSync
    let connection: SQLiteConnection

    /// Opens the ledger in `stateDirectory`, creating the directory and the database when
    /// missing.
    /// With `readingIfReadOnly`, a ledger that cannot be written (a read-only file system) is
    /// opened for reading instead, and any change to it fails with a clear error.
    public static func open(stateDirectory: String, readingIfReadOnly: Bool = false, sync: LedgerSync = .everyCommit) throws(LedgerError) -> Ledger {
        if case .failure(let error) = SystemCall.makeDirectories(stateDirectory, mode: 0o750) {
            let path = stateDirectory + "/" + fileName
            let kind: LedgerError.Kind = error.code == EROFS ? .readOnly : (error.code == EACCES ? .permission : .failed)
            let advice = kind == .permission ? "run as root, or choose" : "choose"
            throw LedgerError(kind, path: path, "\(error.description), where the ledger \(path) lives; \(advice) a writable state directory with --state-dir or PORTCULLIS_STATE_DIR")
        }
        let path = stateDirectory + "/" + fileName
        do {
            return try Ledger(path: path, sync: sync)
        } catch {
            guard readingIfReadOnly, error.kind == .readOnly, access(path, R_OK) == 0 else { throw error }
            return try Ledger(readingOnly: path)
        }
    }

    /// Whether a ledger exists in `stateDirectory`, without creating one.
    public static func exists(stateDirectory: String) -> Bool {
        access(stateDirectory + "/" + fileName, F_OK) == 0
    }

    /// Deletes the ledger in `stateDirectory` with its write-ahead log; false when there was none.
    public static func remove(stateDirectory: String) throws(LedgerError) -> Bool {
        let path = stateDirectory + "/" + fileName
        guard access(path, F_OK) == 0 else { return false }
        for suffix in ["-wal", "-shm", ""] {
            guard unlink(path + suffix) != 0 else { continue }
            let code = errno
            if code == ENOENT { continue }
            throw LedgerError(.permission, path: path, "cannot remove the ledger \(path)\(suffix): \(String(cString: strerror(code)))")
        }
        return true
    }

    public init(path: String, sync: LedgerSync = .everyCommit) throws(LedgerError) {
        self.path = path
        self.sync = sync
        connection = try SQLiteConnection(path: path)
        try prepareSchema()
    }

    private init(readingOnly path: String) throws(LedgerError) {
        self.path = path
        self.sync = .everyCommit
        // A write-ahead log with frames in it (a writer that crashed, or one still running)
        // holds changes the file does not have yet; an immutable open would not see them.
        var log = stat()
        let hasLog = stat(path + "-wal", &log) == 0 && log.st_size > 0
        connection = try SQLiteConnection(path: path, access: hasLog ? .readOnly : .immutable)
        let version = try connection.statement("PRAGMA user_version")
        defer { version.reset() }
        guard try version.step(), version.int64(0) == Self.schemaVersion else {
            throw LedgerError(.corrupt, path: path, "the ledger \(path) cannot be written and is not a ledger this portcullis can read")
        }
    }

    private func prepareSchema() throws(LedgerError) {
        // Reading the header first tells a damaged or foreign file from an empty one.
        let version = try connection.statement("PRAGMA user_version")
        guard try version.step() else { throw LedgerError(.corrupt, path: path, "the ledger \(path) has no schema version") }
        let found = version.int64(0)
        version.reset()
        if found > Self.schemaVersion {
            throw LedgerError(.newerSchema, path: path, "the ledger \(path) has schema version \(found), newer than this portcullis understands (\(Self.schemaVersion)); run the newer portcullis")
        }
        if found == 0 {
            // Before the first table: larger pages halve the B-tree splits of a large load.
            try connection.execute("PRAGMA page_size = 16384")
        }
        let mode = try connection.statement("PRAGMA journal_mode = WAL")
        _ = try mode.step()
        let journal = mode.string(0)
        mode.reset()
        if journal != "wal" {
            throw LedgerError(.failed, path: path, "the ledger \(path) cannot use write-ahead logging (journal mode \(journal)); put the state directory on a local file system")
        }
        try connection.keepWriteAheadLogOnClose()
        // A log that a large load grew is cut back once checkpointed; at close, to nothing
        // (and an empty log tells a read-only reader there is nothing in it to read).
        try connection.execute("PRAGMA journal_size_limit = 67108864")
        // FULL: a change the caller was told about survives a power cut, not only a crash.
        // NORMAL: the checkpoint at close syncs it (see LedgerSync.atClose).
        try connection.execute(sync == .everyCommit ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL")
        // 16 MiB of pages: a load of a million touches the same few index pages over and over.
        try connection.execute("PRAGMA cache_size = -16384")
        guard found < Self.schemaVersion else { return }
        try connection.execute("BEGIN IMMEDIATE")
        do {
            try createSchema(from: found)
            try connection.execute("PRAGMA user_version = \(Self.schemaVersion)")
            try connection.execute("COMMIT")
        } catch {
            try? connection.execute("ROLLBACK")
            throw error
        }
    }

    /// Creates the tables of version `found` and up, in one transaction the caller holds.
    private func createSchema(from found: Int64) throws(LedgerError) {
        if found == 2 {
            // Throttles are blocks with a rate: three columns, NULL in every block of before.
            try connection.execute("""
                ALTER TABLE blocks ADD COLUMN rate INTEGER;
                ALTER TABLE blocks ADD COLUMN burst INTEGER;
                ALTER TABLE blocks ADD COLUMN throttle_flags INTEGER;
                """)
        }
        if found < 2 {
            try connection.execute("""
            CREATE TABLE IF NOT EXISTS blocks (
                key BLOB PRIMARY KEY,          -- family, address, length, kind: sorts as targets do
                family INTEGER NOT NULL,       -- 4 or 6
                kind INTEGER NOT NULL,         -- 0 address, 1 prefix
                expires_ms INTEGER,            -- NULL: permanent
                source TEXT NOT NULL,
                origin TEXT NOT NULL,
                reason TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                refreshed_ms INTEGER NOT NULL,
                requested_seconds INTEGER,     -- NULL: permanent
                context TEXT,                  -- the Wazuh alert or detector match, JSON
                rate INTEGER,                  -- a throttle's packets per second; NULL: a block
                burst INTEGER,                 -- a throttle's burst, packets
                throttle_flags INTEGER         -- 1: new connections only
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS blocks_by_expiry ON blocks (expires_ms) WHERE expires_ms IS NOT NULL;
            -- Blocks loaded from files are the bulk (a feed of a million) and skip this index: a
            -- listing of them finds them in key order; a listing of any other source uses it.
            CREATE INDEX IF NOT EXISTS blocks_by_source ON blocks (source, key) WHERE source != 'file';
            CREATE INDEX IF NOT EXISTS prefix_blocks ON blocks (key) WHERE kind = 1;
            CREATE TABLE IF NOT EXISTS block_counts (
                family INTEGER NOT NULL, kind INTEGER NOT NULL, source TEXT NOT NULL, count INTEGER NOT NULL,
                PRIMARY KEY (family, kind, source)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS allowlist (
                key BLOB PRIMARY KEY, origin TEXT NOT NULL, added_ms INTEGER NOT NULL
            ) WITHOUT ROWID;
            -- Lifted in the ledger, not yet in the maps: a crash in between must not bring them back.
            CREATE TABLE IF NOT EXISTS pending_removals (key BLOB PRIMARY KEY) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID;
            -- An index of the incident record (the HMAC-chained log stays the record): each
            -- record by its sequence, findable by time and by target. Rebuilt from the log
            -- when it falls behind.
            CREATE TABLE IF NOT EXISTS incidents (
                sequence INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, target_key BLOB, record TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS incidents_by_time ON incidents (time_ms);
            CREATE INDEX IF NOT EXISTS incidents_by_target ON incidents (target_key) WHERE target_key IS NOT NULL;
            """)
        }
        if found < 4 {
            // The fleet: which node a block came from (NULL: this host), and this host's own
            // changes waiting to be published, in the order they were made. A change and its
            // outbox row commit together, so an outage of the database loses none.
            try connection.execute("""
            ALTER TABLE blocks ADD COLUMN node TEXT;
            CREATE TABLE IF NOT EXISTS fleet_outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                kind TEXT NOT NULL,            -- block, refresh, unblock, allow, disallow
                key BLOB NOT NULL,
                expires_ms INTEGER,            -- this host's clock; NULL: permanent
                source TEXT NOT NULL,
                reason TEXT NOT NULL,
                time_ms INTEGER NOT NULL       -- this host's clock
            );
            """)
        }
    }

    // MARK: - Writing

    /// Runs `body` in one write transaction (`BEGIN IMMEDIATE`): all of it is recorded, or,
    /// when it throws, none.
    public func write<T>(_ body: (inout LedgerWriter) throws(LedgerError) -> T) throws(LedgerError) -> T {
        try write(body, mapping: { $0 })
    }

    /// ``write(_:)`` for a body that throws its caller's error type; the ledger's own failures
    /// (begin, commit) become that type through `mapping`.
    public func write<T, Failure: Error>(
        _ body: (inout LedgerWriter) throws(Failure) -> T, mapping: (LedgerError) -> Failure
    ) throws(Failure) -> T {
        do {
            try connection.execute("BEGIN IMMEDIATE")
        } catch {
            throw mapping(error)
        }
        var writer: LedgerWriter
        do {
            writer = try LedgerWriter(connection: connection)
        } catch {
            try? connection.execute("ROLLBACK")
            throw mapping(error)
        }
        do throws(Failure) {
            let result = try body(&writer)
            do {
                try writer.flushCounts()
                try connection.execute("COMMIT")
            } catch {
                throw mapping(error)
            }
            return result
        } catch {
            if connection.inTransaction { try? connection.execute("ROLLBACK") }
            throw error
        }
    }

    // MARK: - Reading

    static let columns = "key, expires_ms, source, origin, reason, created_ms, refreshed_ms, requested_seconds, context, rate, burst, throttle_flags, node"

    public func block(for target: BlockTarget) throws(LedgerError) -> LedgerBlock? {
        try LedgerWriter.block(for: target, in: connection)
    }

    /// The blocks `query` selects, in target order; `now` decides what has expired.
    public func blocks(_ query: BlockQuery, at now: Int64 = WallClock.nowUnixMilliseconds()) throws(LedgerError) -> [LedgerBlock] {
        var result: [LedgerBlock] = []
        try forEachBlock(query, at: now) { result.append($0) }
        return result
    }

    /// Calls `body` with each block `query` selects, in target order, without holding them all.
    public func forEachBlock(_ query: BlockQuery, at now: Int64 = WallClock.nowUnixMilliseconds(),
                             _ body: (LedgerBlock) throws(LedgerError) -> Void) throws(LedgerError) {
        var (sql, bindings) = Self.selection(query, at: now, columns: Self.columns)
        sql += " ORDER BY key LIMIT ? OFFSET ?"
        bindings.append(.integer(query.limit.map(Int64.init) ?? -1))
        bindings.append(.integer(Int64(query.offset)))
        let statement = try connection.statement(sql)
        for (index, binding) in bindings.enumerated() { binding.bind(to: statement, at: Int32(index + 1)) }
        defer { statement.reset() }
        while try statement.step() {
            if let block = LedgerWriter.decodeBlock(statement) { try body(block) }
        }
    }

    /// How many blocks `query`'s filters select in all: its cursor, limit and offset page
    /// through them and do not change the total. Family, kind and source alone are answered
    /// from the counts; other filters count rows in an index.
    public func count(_ query: BlockQuery, at now: Int64 = WallClock.nowUnixMilliseconds()) throws(LedgerError) -> Int {
        if query.containing == nil, query.expired == nil {
            return try counts().count(family: query.family, kind: query.kind, source: query.source)
        }
        var filters = query
        filters.after = nil
        let (sql, bindings) = Self.selection(filters, at: now, columns: "count(*)")
        let statement = try connection.statement(sql)
        for (index, binding) in bindings.enumerated() { binding.bind(to: statement, at: Int32(index + 1)) }
        defer { statement.reset() }
        guard try statement.step() else { return 0 }
        return Int(statement.int64(0))
    }

    /// The SELECT and its parameters for `query`'s filters and cursor.
    private static func selection(_ query: BlockQuery, at now: Int64, columns: String) -> (String, [Binding]) {
        var conditions: [String] = []
        var bindings: [Binding] = []
        if let containing = query.containing {
            // The address itself and each prefix that could hold it: a handful of keys.
            let keys = keysHolding(containing)
            conditions.append("key IN (\(Array(repeating: "?", count: keys.count).joined(separator: ",")))")
            bindings += keys.map(Binding.blob)
        }
        if let family = query.family {
            conditions.append("key >= ? AND key < ?")
            let first = UInt8(family == .ipv4 ? 4 : 6)
            bindings += [.blob([first]), .blob([first + 1])]
        }
        if let kind = query.kind {
            conditions.append("kind = \(kind == .prefix ? 1 : 0)")
        }
        if let source = query.source {
            conditions.append("source = ?")
            bindings.append(.text(source.rawValue))
            // Stated as the partial index states it, so the planner may use the index.
            if source != .file { conditions.append("source != 'file'") }
        }
        if let expired = query.expired {
            conditions.append(expired ? "expires_ms IS NOT NULL AND expires_ms <= ?" : "(expires_ms IS NULL OR expires_ms > ?)")
            bindings.append(.integer(now))
        }
        if let after = query.after {
            conditions.append("key > ?")
            bindings.append(.blob(LedgerKey.encode(after)))
        }
        var sql = "SELECT \(columns) FROM blocks"
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        return (sql, bindings)
    }

    public func counts() throws(LedgerError) -> LedgerCounts {
        let statement = try connection.statement("SELECT family, kind, source, count FROM block_counts WHERE count > 0")
        defer { statement.reset() }
        var counts = LedgerCounts()
        while try statement.step() {
            guard let source = BlockSource(rawValue: statement.string(2)) else { continue }
            let key = LedgerCounts.Key(
                family: statement.int64(0) == 6 ? .ipv6 : .ipv4, kind: statement.int64(1) == 1 ? .prefix : .address, source: source)
            counts.byKey[key, default: 0] += Int(statement.int64(3))
        }
        return counts
    }

    /// Blocks expired at `now`, found through the expiry index: a sweep's cost follows what
    /// expired, not what is held.
    public func expired(atUnixMilliseconds now: Int64, limit: Int) throws(LedgerError) -> [LedgerBlock] {
        try byExpiry(where: "expires_ms <= ?", now, limit: limit)
    }

    /// The `limit` blocks in force at `now` that expire soonest, soonest first, through the
    /// expiry index: the cost follows `limit`, not what is held.
    public func expiringSoonest(after now: Int64, limit: Int) throws(LedgerError) -> [LedgerBlock] {
        try byExpiry(where: "expires_ms > ?", now, limit: limit)
    }

    /// Up to `limit` blocks with an expiry meeting `condition` on `now`, soonest first, read
    /// through the expiry index.
    private func byExpiry(where condition: String, _ now: Int64, limit: Int) throws(LedgerError) -> [LedgerBlock] {
        let statement = try connection.statement(
            "SELECT \(Self.columns) FROM blocks WHERE expires_ms IS NOT NULL AND \(condition) ORDER BY expires_ms LIMIT ?")
        statement.bind(1, now).bind(2, Int64(limit))
        defer { statement.reset() }
        var result: [LedgerBlock] = []
        while try statement.step() {
            if let block = LedgerWriter.decodeBlock(statement) { result.append(block) }
        }
        return result
    }

    public func allowlist() throws(LedgerError) -> [AllowlistEntry] {
        let statement = try connection.statement("SELECT key, origin FROM allowlist ORDER BY key")
        defer { statement.reset() }
        var entries: [AllowlistEntry] = []
        while try statement.step() {
            guard let target = LedgerKey.decode(statement.blob(0)) else { continue }
            entries.append(AllowlistEntry(target: target, origin: AllowOrigin(rawValue: statement.string(1)) ?? .command))
        }
        return entries
    }

    /// Targets lifted in the ledger whose removal from the maps may not have happened.
    public func pendingRemovals() throws(LedgerError) -> [BlockTarget] {
        let statement = try connection.statement("SELECT key FROM pending_removals")
        defer { statement.reset() }
        var targets: [BlockTarget] = []
        while try statement.step() {
            if let target = LedgerKey.decode(statement.blob(0)) { targets.append(target) }
        }
        return targets
    }

    /// The wall-clock time of the latest change, which a later start compares with its clock.
    public func lastWriteUnixMilliseconds() throws(LedgerError) -> Int64? {
        try setting("last_write_ms")
    }

    /// The range of targets of a batch whose map writes began before its ledger commit and
    /// which has not committed: what a crash left in the maps in this range, the ledger did not
    /// take. nil when no batch is in flight.
    public func uncommittedBatch() throws(LedgerError) -> ClosedRange<BlockTarget>? {
        let statement = try connection.statement("SELECT value FROM settings WHERE name = ?")
        func target(_ name: String) throws(LedgerError) -> BlockTarget? {
            statement.bind(1, name)
            defer { statement.reset() }
            guard try statement.step() else { return nil }
            return LedgerKey.decode(statement.blob(0))
        }
        guard let low = try target("uncommitted_batch_low"), let high = try target("uncommitted_batch_high"), low <= high else { return nil }
        return low...high
    }

    public func setting(_ name: String) throws(LedgerError) -> Int64? {
        let statement = try connection.statement("SELECT value FROM settings WHERE name = ?")
        statement.bind(1, name)
        defer { statement.reset() }
        guard try statement.step() else { return nil }
        return statement.optionalInt64(0)
    }

    // MARK: - The incident index

    /// One record of the incident log, as the index keeps it.
    public struct IndexedIncident: Sendable {
        public let sequence: Int64
        public let timeUnixMilliseconds: Int64
        /// nil for a record about no single target (a batch's summary).
        public let target: BlockTarget?
        /// The record as JSON.
        public let record: String

        public init(sequence: Int64, timeUnixMilliseconds: Int64, target: BlockTarget?, record: String) {
            (self.sequence, self.timeUnixMilliseconds, self.target, self.record) = (sequence, timeUnixMilliseconds, target, record)
        }
    }

    /// Adds records of the log at `logPath` to the index. It is derived from that log and rebuilt
    /// when it falls behind, so its commit does not wait for the disk. Records of another log
    /// than the one indexed so far replace the index.
    public func index(_ incidents: [IndexedIncident], of logPath: String) throws(LedgerError) {
        let marker = Self.fingerprint(logPath)
        let indexedLog = try setting("incident_index_log")
        guard !incidents.isEmpty || indexedLog != marker else { return }
        try connection.execute("PRAGMA synchronous = NORMAL")
        defer { if sync == .everyCommit { try? connection.execute("PRAGMA synchronous = FULL") } }
        try write { (writer: inout LedgerWriter) throws(LedgerError) in
            if indexedLog != marker {
                try writer.connection.execute("DELETE FROM incidents")
                try writer.setSetting("incident_index_log", marker)
            }
            let statement = try writer.connection.statement(
                "INSERT OR REPLACE INTO incidents (sequence, time_ms, target_key, record) VALUES (?, ?, ?, ?)")
            for incident in incidents {
                statement.reset()
                statement.bind(1, incident.sequence).bind(2, incident.timeUnixMilliseconds).bind(4, incident.record)
                if let target = incident.target { statement.bind(3, LedgerKey.encode(target)) } else { statement.bind(3, Optional<Int64>.none) }
                try statement.run()
            }
        }
    }

    /// The highest sequence the index holds of the log at `logPath`; nil when it holds none of it.
    public func lastIndexedIncident(of logPath: String) throws(LedgerError) -> Int64? {
        guard try setting("incident_index_log") == Self.fingerprint(logPath) else { return nil }
        let statement = try connection.statement("SELECT max(sequence) FROM incidents")
        defer { statement.reset() }
        guard try statement.step() else { return nil }
        return statement.optionalInt64(0)
    }

    /// The records since a time and before another, about an address (the address itself or a
    /// prefix holding it), the last `limit` of them, oldest first: from the indexes, never a walk
    /// of the log.
    public func incidents(sinceUnixMilliseconds since: Int64?, untilUnixMilliseconds until: Int64? = nil,
                          containing address: IPAddress?, limit: Int?) throws(LedgerError) -> [String] {
        var conditions: [String] = []
        var bindings: [Binding] = []
        if let since {
            conditions.append("time_ms >= ?")
            bindings.append(.integer(since))
        }
        // Bounded on both sides even without `until`: with `since` alone SQLite prefers walking
        // the whole table in sequence order to sorting the few rows the time index finds.
        if since != nil || until != nil {
            conditions.append("time_ms < ?")
            bindings.append(.integer(until ?? Int64.max))
        }
        if let address {
            let keys = Self.keysHolding(address)
            conditions.append("target_key IN (\(Array(repeating: "?", count: keys.count).joined(separator: ",")))")
            bindings += keys.map(Binding.blob)
        }
        var sql = "SELECT record FROM incidents"
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        sql += " ORDER BY sequence DESC LIMIT ?"
        bindings.append(.integer(limit.map(Int64.init) ?? -1))
        let statement = try connection.statement(sql)
        for (index, binding) in bindings.enumerated() { binding.bind(to: statement, at: Int32(index + 1)) }
        defer { statement.reset() }
        var records: [String] = []
        while try statement.step() { records.append(statement.string(0)) }
        return records.reversed()
    }

    /// FNV-1a of a path: the same in every process, unlike Hasher.
    static func fingerprint(_ path: String) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in path.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return Int64(bitPattern: hash)
    }

    /// The keys of the address itself and of each prefix that could hold it.
    static func keysHolding(_ address: IPAddress) -> [[UInt8]] {
        var keys = [LedgerKey.encode(.address(address))]
        for length in 0..<address.family.bitWidth {
            if let prefix = try? IPPrefix(address: address.masked(to: length), length: length) { keys.append(LedgerKey.encode(.prefix(prefix))) }
        }
        return keys
    }

    /// Whether the ledger holds anything at all.
    public func isEmpty() throws(LedgerError) -> Bool {
        let blocks = try connection.statement("SELECT 1 FROM blocks LIMIT 1")
        defer { blocks.reset() }
        if try blocks.step() { return false }
        let allowed = try connection.statement("SELECT 1 FROM allowlist LIMIT 1")
        defer { allowed.reset() }
        return try !allowed.step()
    }
}

/// The changes of one write transaction. Counts are kept in memory and written once at the
/// end, so a batch of a million touches the counts table a handful of times.
public struct LedgerWriter {
    let connection: SQLiteConnection
    private var countDeltas: [LedgerCounts.Key: Int] = [:]
    /// Whether any removal awaits the maps; when none does (nearly always), a new block need not
    /// look for one to cancel.
    private var pendingRemovalsMayExist: Bool
    private var insertIfAbsentStatement: SQLiteStatement?
    private var insertManyIfAbsentStatement: SQLiteStatement?
    /// What each row of the many-row insert was bound to last: a parameter is bound again only
    /// when its value changed, and in a load nearly every row shares all but its key.
    private var boundRows: [LedgerBlock?] = Array(repeating: nil, count: LedgerWriter.rowsPerInsert)

    init(connection: SQLiteConnection) throws(LedgerError) {
        self.connection = connection
        let probe = try connection.statement("SELECT 1 FROM pending_removals LIMIT 1")
        defer { probe.reset() }
        pendingRemovalsMayExist = try probe.step()
    }

    public func block(for target: BlockTarget) throws(LedgerError) -> LedgerBlock? {
        try Self.block(for: target, in: connection)
    }

    static func block(for target: BlockTarget, in connection: SQLiteConnection) throws(LedgerError) -> LedgerBlock? {
        let statement = try connection.statement("SELECT \(Ledger.columns) FROM blocks WHERE key = ?")
        statement.bind(1, LedgerKey.encode(target))
        defer { statement.reset() }
        guard try statement.step() else { return nil }
        return decodeBlock(statement)
    }

    /// Writes `block`, replacing `previous` (what ``block(for:)`` returned for its target).
    public mutating func put(_ block: LedgerBlock, replacing previous: LedgerBlock?) throws(LedgerError) {
        guard let previous else {
            let insert = try connection.statement("""
                INSERT OR REPLACE INTO blocks (key, family, kind, expires_ms, source, origin, reason, created_ms, refreshed_ms, requested_seconds, context, node, rate, burst, throttle_flags)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """)
            Self.bindThrottle(block.throttle, to: insert, from: 13)
            try write(block, with: insert)
            countDeltas[Self.countKey(block), default: 0] += 1
            try clearPendingRemoval(block.target)
            return
        }
        // An update in place: the key, family and kind stay, so only the expiry index (and the
        // source index when the owner changes) is touched.
        let statement = try connection.statement("""
            UPDATE blocks SET expires_ms = ?, source = ?, origin = ?, reason = ?, created_ms = ?, refreshed_ms = ?,
                requested_seconds = ?, context = ?, node = ?, rate = ?, burst = ?, throttle_flags = ? WHERE key = ?
            """)
        statement.bind(1, Self.expires(block)).bind(2, block.source.rawValue).bind(3, block.origin).bind(4, block.reason)
            .bind(5, block.createdUnixMilliseconds).bind(6, block.refreshedUnixMilliseconds)
            .bind(7, block.requestedDuration.map { $0.components.seconds }).bind(8, block.context)
            .bind(9, block.node).bind(13, LedgerKey.encode(block.target))
        Self.bindThrottle(block.throttle, to: statement, from: 10)
        try statement.run()
        if previous.source != block.source {
            countDeltas[Self.countKey(previous), default: 0] -= 1
            countDeltas[Self.countKey(block), default: 0] += 1
        }
    }

    /// A throttle's rate, burst and flags, or NULLs for a block, to three parameters from `index`.
    private static func bindThrottle(_ throttle: ThrottleRate?, to statement: SQLiteStatement, from index: Int32) {
        statement.bind(index, throttle.map { Int64($0.packetsPerSecond) })
            .bind(index + 1, throttle.map { Int64($0.burst) })
            .bind(index + 2, throttle.map { $0.newConnectionsOnly ? Int64(1) : 0 })
    }

    static func expires(_ block: LedgerBlock) -> Int64? {
        switch block.expiry {
        case .never: nil
        case .at(let end): end
        }
    }

    /// Writes `block` when its target holds none yet, and says whether it did: a load of new
    /// targets costs one statement each instead of a lookup and a write.
    public mutating func insertIfAbsent(_ block: LedgerBlock) throws(LedgerError) -> Bool {
        // Kept by the writer: a batch runs this once per row, and finding it in the
        // connection's cache would hash its text every time.
        if insertIfAbsentStatement == nil {
            insertIfAbsentStatement = try connection.statement("""
                INSERT OR IGNORE INTO blocks (key, family, kind, expires_ms, source, origin, reason, created_ms, refreshed_ms, requested_seconds, context, node)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """)
        }
        guard let statement = insertIfAbsentStatement else { return false }
        statement.resetKeepingBindings()
        try write(block, with: statement)
        guard connection.changes > 0 else { return false }
        countDeltas[Self.countKey(block), default: 0] += 1
        try clearPendingRemoval(block.target)
        return true
    }

    /// Rows per statement of ``insertIfAbsent(many:)``: starting and ending a statement (its
    /// cursors, its halt) costs about what a row does, so a load pays for it once per 64 rows.
    public static let rowsPerInsert = 64
    private static let columnsPerRow = 12

    /// ``insertIfAbsent(_:)`` for blocks of distinct targets: whether each was written. A run of
    /// 64 whose keys span a range the ledger holds nothing in goes in one statement; any other
    /// run, row by row, so each answer is exact.
    public mutating func insertIfAbsent(many blocks: ArraySlice<LedgerBlock>) throws(LedgerError) -> [Bool] {
        var written: [Bool] = []
        written.reserveCapacity(blocks.count)
        var start = blocks.startIndex
        while start < blocks.endIndex {
            let end = blocks.index(start, offsetBy: Self.rowsPerInsert, limitedBy: blocks.endIndex) ?? blocks.endIndex
            let run = blocks[start..<end]
            start = end
            if run.count == Self.rowsPerInsert, try insertAllIfRangeIsEmpty(run) {
                written.append(contentsOf: repeatElement(true, count: run.count))
                continue
            }
            for block in run { written.append(try insertIfAbsent(block)) }
        }
        return written
    }

    /// Writes all of `run` (exactly ``rowsPerInsert`` blocks) in one statement when the ledger
    /// holds no key between the run's least and greatest; otherwise writes none and returns false.
    /// Asking first, rather than inserting under a savepoint and rolling back, spares the
    /// statement journal: SQLite copies each page a savepoint's statement touches first, which
    /// for a million rows was 200,000 writes to a temporary file.
    private mutating func insertAllIfRangeIsEmpty(_ run: ArraySlice<LedgerBlock>) throws(LedgerError) -> Bool {
        let keys = run.map { LedgerKey.encode($0.target) }
        guard let least = keys.min(by: { $0.lexicographicallyPrecedes($1) }),
              let greatest = keys.max(by: { $0.lexicographicallyPrecedes($1) }) else { return false }
        let probe = try connection.statement("SELECT 1 FROM blocks WHERE key >= ? AND key <= ? LIMIT 1")
        probe.bind(1, least).bind(2, greatest)
        let held = try probe.step()
        probe.reset()
        if held { return false }
        if insertManyIfAbsentStatement == nil {
            let row = "(" + Array(repeating: "?", count: Self.columnsPerRow).joined(separator: ", ") + ")"
            insertManyIfAbsentStatement = try connection.statement("""
                INSERT OR IGNORE INTO blocks (key, family, kind, expires_ms, source, origin, reason, created_ms, refreshed_ms, requested_seconds, context, node)
                VALUES \(Array(repeating: row, count: Self.rowsPerInsert).joined(separator: ", "))
                """)
        }
        guard let statement = insertManyIfAbsentStatement else { return false }
        statement.resetKeepingBindings()
        for (position, block) in run.enumerated() {
            Self.bind(block, key: keys[position], to: statement, from: Int32(position * Self.columnsPerRow), unless: boundRows[position])
            boundRows[position] = block
        }
        try statement.run()
        // The range was empty and this is the ledger's one writer: a row left out means targets
        // that repeat within the run, which the caller promises never happens.
        guard connection.changes == run.count else {
            throw LedgerError(.failed, path: connection.path, "a batch listed a target twice in one run of inserts (\(connection.changes) of \(run.count) written)")
        }
        var counted: (key: LedgerCounts.Key, count: Int)?
        for block in run {
            let key = Self.countKey(block)
            if let current = counted, current.key == key {
                counted = (key, current.count + 1)
            } else {
                if let current = counted { countDeltas[current.key, default: 0] += current.count }
                counted = (key, 1)
            }
            try clearPendingRemoval(block.target)
        }
        if let current = counted { countDeltas[current.key, default: 0] += current.count }
        return true
    }

    /// Binds the columns of `block` to parameters `base + 1` to `base + 12`, skipping those that
    /// hold the same value as `previous` (what that row was bound to last).
    private static func bind(_ block: LedgerBlock, key: [UInt8], to statement: SQLiteStatement, from base: Int32, unless previous: LedgerBlock?) {
        // Compared field by field, not through key paths: a key path is looked up in the runtime
        // each time it is formed, and this runs for each of a million rows.
        statement.bind(base + 1, key)
        if previous?.target.family != block.target.family { statement.bind(base + 2, block.target.family == .ipv6 ? 6 : 4) }
        if previous?.target.kind != block.target.kind { statement.bind(base + 3, block.target.kind == .prefix ? 1 : 0) }
        if previous?.expiry != block.expiry { statement.bind(base + 4, expires(block)) }
        if previous?.source != block.source { statement.bind(base + 5, block.source.rawValue) }
        if previous?.origin != block.origin { statement.bind(base + 6, block.origin) }
        if previous?.reason != block.reason { statement.bind(base + 7, block.reason) }
        if previous?.createdUnixMilliseconds != block.createdUnixMilliseconds { statement.bind(base + 8, block.createdUnixMilliseconds) }
        if previous?.refreshedUnixMilliseconds != block.refreshedUnixMilliseconds { statement.bind(base + 9, block.refreshedUnixMilliseconds) }
        if previous.map({ $0.requestedDuration != block.requestedDuration }) ?? true {
            statement.bind(base + 10, block.requestedDuration.map { $0.components.seconds })
        }
        if previous.map({ $0.context != block.context }) ?? true { statement.bind(base + 11, block.context) }
        if previous.map({ $0.node != block.node }) ?? true { statement.bind(base + 12, block.node) }
    }

    private func write(_ block: LedgerBlock, sql: String) throws(LedgerError) {
        try write(block, with: try connection.statement(sql))
    }

    private func write(_ block: LedgerBlock, with statement: SQLiteStatement) throws(LedgerError) {
        let expires: Int64? = switch block.expiry {
        case .never: nil
        case .at(let end): end
        }
        statement.bind(1, LedgerKey.encode(block.target))
            .bind(2, block.target.family == .ipv6 ? 6 : 4)
            .bind(3, block.target.kind == .prefix ? 1 : 0)
            .bind(4, expires)
            .bind(5, block.source.rawValue)
            .bind(6, block.origin)
            .bind(7, block.reason)
            .bind(8, block.createdUnixMilliseconds)
            .bind(9, block.refreshedUnixMilliseconds)
            .bind(10, block.requestedDuration.map { $0.components.seconds })
            .bind(11, block.context)
            .bind(12, block.node)
        try statement.run()
    }

    /// Lifts `block` in the ledger and marks it for removal from the maps, which
    /// ``clearPendingRemovals(_:)`` confirms once done. An expired block needs no mark
    /// (`markingPending: false`): a crash that leaves it in the maps leaves nothing that drops,
    /// and the next start removes it.
    public mutating func remove(_ block: LedgerBlock, markingPending: Bool = true) throws(LedgerError) {
        let key = LedgerKey.encode(block.target)
        let delete = try connection.statement("DELETE FROM blocks WHERE key = ?")
        delete.bind(1, key)
        try delete.run()
        guard connection.changes > 0 else { return }
        countDeltas[Self.countKey(block), default: 0] -= 1
        guard markingPending else { return }
        let pending = try connection.statement("INSERT OR IGNORE INTO pending_removals (key) VALUES (?)")
        pending.bind(1, key)
        try pending.run()
        pendingRemovalsMayExist = true
    }

    private func clearPendingRemoval(_ target: BlockTarget) throws(LedgerError) {
        guard pendingRemovalsMayExist else { return }
        let statement = try connection.statement("DELETE FROM pending_removals WHERE key = ?")
        statement.bind(1, LedgerKey.encode(target))
        try statement.run()
    }

    /// Confirms that the maps no longer hold `targets`.
    public func clearPendingRemovals(_ targets: [BlockTarget]) throws(LedgerError) {
        for target in targets { try clearPendingRemoval(target) }
    }

    /// Adds to the allowlist; false when the target was there already.
    public func allow(_ entry: AllowlistEntry, atUnixMilliseconds now: Int64) throws(LedgerError) -> Bool {
        let statement = try connection.statement("INSERT OR IGNORE INTO allowlist (key, origin, added_ms) VALUES (?, ?, ?)")
        statement.bind(1, LedgerKey.encode(entry.target)).bind(2, entry.origin.rawValue).bind(3, now)
        try statement.run()
        return connection.changes > 0
    }

    /// Removes from the allowlist; false when the target was not there.
    public func disallow(_ target: BlockTarget) throws(LedgerError) -> Bool {
        let statement = try connection.statement("DELETE FROM allowlist WHERE key = ?")
        statement.bind(1, LedgerKey.encode(target))
        try statement.run()
        return connection.changes > 0
    }

    public func setSetting(_ name: String, _ value: Int64) throws(LedgerError) {
        let statement = try connection.statement("INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)")
        statement.bind(1, name).bind(2, value)
        try statement.run()
    }

    /// Marks a batch over `targets` as in flight: committed before its map writes begin, and
    /// cleared in the transaction that commits the batch (see ``Ledger/uncommittedBatch()``).
    public func markUncommittedBatch(_ targets: ClosedRange<BlockTarget>) throws(LedgerError) {
        let statement = try connection.statement("INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)")
        statement.bind(1, "uncommitted_batch_low").bind(2, LedgerKey.encode(targets.lowerBound))
        try statement.run()
        statement.reset()
        statement.bind(1, "uncommitted_batch_high").bind(2, LedgerKey.encode(targets.upperBound))
        try statement.run()
    }

    public func clearUncommittedBatch() throws(LedgerError) {
        let statement = try connection.statement("DELETE FROM settings WHERE name IN ('uncommitted_batch_low', 'uncommitted_batch_high')")
        try statement.run()
    }

    /// Records the wall-clock time of this change, never moving it backwards.
    public func recordWrite(atUnixMilliseconds now: Int64) throws(LedgerError) {
        let statement = try connection.statement("""
            INSERT INTO settings (name, value) VALUES ('last_write_ms', ?)
            ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)
            """)
        statement.bind(1, now)
        try statement.run()
    }

    mutating func flushCounts() throws(LedgerError) {
        let statement = try connection.statement("""
            INSERT INTO block_counts (family, kind, source, count) VALUES (?, ?, ?, ?)
            ON CONFLICT (family, kind, source) DO UPDATE SET count = count + excluded.count
            """)
        for (key, delta) in countDeltas where delta != 0 {
            statement.reset()
            statement.bind(1, key.family == .ipv6 ? 6 : 4).bind(2, key.kind == .prefix ? 1 : 0)
                .bind(3, key.source.rawValue).bind(4, Int64(delta))
            try statement.run()
        }
        countDeltas.removeAll()
    }

    static func countKey(_ block: LedgerBlock) -> LedgerCounts.Key {
        LedgerCounts.Key(family: block.target.family, kind: block.target.kind, source: block.source)
    }

    /// A row as a block, or nil for a row no Portcullis could have written (skipped, never
    /// guessed at).
    static func decodeBlock(_ statement: SQLiteStatement) -> LedgerBlock? {
        guard let target = LedgerKey.decode(statement.blob(0)),
              let source = BlockSource(rawValue: statement.string(2)) else { return nil }
        return LedgerBlock(
            target: target,
            expiry: statement.optionalInt64(1).map { .at($0) } ?? .never,
            source: source, origin: statement.string(3), reason: statement.string(4),
            createdUnixMilliseconds: statement.int64(5), refreshedUnixMilliseconds: statement.int64(6),
            requestedDuration: statement.optionalInt64(7).map { .seconds($0) },
            context: statement.optionalString(8),
            throttle: statement.optionalInt64(9).map { rate in
                ThrottleRate(packetsPerSecond: UInt32(clamping: rate), burst: UInt32(clamping: statement.optionalInt64(10) ?? 1),
                             newConnectionsOnly: (statement.optionalInt64(11) ?? 0) & 1 != 0)
            },
            node: statement.optionalString(12))
    }
}

enum Binding {
    case integer(Int64), text(String), blob([UInt8])

    func bind(to statement: SQLiteStatement, at index: Int32) {
        switch self {
        case .integer(let value): statement.bind(index, value)
        case .text(let value): statement.bind(index, value)
        case .blob(let value): statement.bind(index, value)
        }
    }
}

/// A target as the ledger's primary key: family, address bytes, prefix length, kind. Byte
/// order is target order, so keys page and range like the targets they stand for.
enum LedgerKey {
    static func encode(_ target: BlockTarget) -> [UInt8] {
        let prefix = target.asPrefix
        var key: [UInt8] = []
        key.reserveCapacity(19)
        switch prefix.address {
        case .v4(let address):
            key.append(4)
            key += address.octets
        case .v6(let address):
            key.append(6)
            key += address.octets
        }
        key.append(UInt8(prefix.length))
        key.append(target.kind == .prefix ? 1 : 0)
        return key
    }

    static func decode(_ key: [UInt8]) -> BlockTarget? {
        guard let family = key.first else { return nil }
        let width = family == 4 ? 4 : (family == 6 ? 16 : 0)
        guard width > 0, key.count == width + 3 else { return nil }
        let octets = Array(key[1...width])
        let length = Int(key[width + 1])
        let address: IPAddress
        if width == 4 {
            address = .v4(IPv4Address(octets[0], octets[1], octets[2], octets[3]))
        } else {
            guard let v6 = IPv6Address(octets: octets) else { return nil }
            address = .v6(v6)
        }
        if key[width + 2] == 0 {
            return length == address.family.bitWidth ? .address(address) : nil
        }
        return (try? IPPrefix(address: address, length: length)).map { .prefix($0) }
    }
}
