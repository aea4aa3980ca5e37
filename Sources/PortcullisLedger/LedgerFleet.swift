import PortcullisCore

/// One change as the fleet carries it: what a node did to its blocklist, with every time an
/// absolute wall-clock time (this host's clock in the outbox; the database's on the wire).
public struct FleetChange: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case block, refresh
        /// A tombstone: the target is no longer blocked anywhere.
        case unblock
        case allow, disallow
    }

    public var kind: Kind
    public var target: BlockTarget
    /// For a block or a refresh: when it ends. Ignored for the others.
    public var expiry: Expiry<Int64>
    public var source: BlockSource
    public var reason: String
    /// When the change was made.
    public var timeUnixMilliseconds: Int64

    public init(kind: Kind, target: BlockTarget, expiry: Expiry<Int64> = .never, source: BlockSource, reason: String,
                timeUnixMilliseconds: Int64) {
        (self.kind, self.target, self.expiry, self.source, self.reason) = (kind, target, expiry, source, reason)
        self.timeUnixMilliseconds = timeUnixMilliseconds
    }
}

/// A change of this host's waiting in the outbox, with its place in the order they were made.
public struct OutboxEntry: Sendable, Equatable {
    /// Increasing, never reused: the database keeps (node, id) unique, so a publish repeated
    /// after a lost answer is taken once.
    public let id: Int64
    public let change: FleetChange
}

extension Ledger {
    /// The fleet change log's sequence this host has applied up to; nil before its first snapshot.
    public func fleetCursor() throws(LedgerError) -> Int64? { try setting(LedgerWriter.fleetCursorSetting) }

    /// The oldest `limit` changes waiting to be published after `id`, oldest first.
    public func outbox(after id: Int64 = 0, limit: Int) throws(LedgerError) -> [OutboxEntry] {
        let statement = try connection.statement(
            "SELECT id, kind, key, expires_ms, source, reason, time_ms FROM fleet_outbox WHERE id > ? ORDER BY id LIMIT ?")
        statement.bind(1, id).bind(2, Int64(limit))
        defer { statement.reset() }
        var entries: [OutboxEntry] = []
        while try statement.step() {
            // A row this portcullis did not write is left for the operator, never published.
            guard let kind = FleetChange.Kind(rawValue: statement.string(1)),
                  let target = LedgerKey.decode(statement.blob(2)),
                  let source = BlockSource(rawValue: statement.string(4)) else { continue }
            entries.append(OutboxEntry(id: statement.int64(0), change: FleetChange(
                kind: kind, target: target, expiry: statement.optionalInt64(3).map { .at($0) } ?? .never, source: source,
                reason: statement.string(5), timeUnixMilliseconds: statement.int64(6))))
        }
        return entries
    }

    /// How many changes wait to be published.
    public func outboxCount() throws(LedgerError) -> Int {
        let statement = try connection.statement("SELECT count(*) FROM fleet_outbox")
        defer { statement.reset() }
        guard try statement.step() else { return 0 }
        return Int(statement.int64(0))
    }

    /// The blocks that came from other nodes, for a snapshot that replaces what this host knew.
    public func forEachFleetBlock(_ body: (LedgerBlock) throws(LedgerError) -> Void) throws(LedgerError) {
        let statement = try connection.statement("SELECT \(Self.columns) FROM blocks WHERE node IS NOT NULL")
        defer { statement.reset() }
        while try statement.step() {
            if let block = LedgerWriter.decodeBlock(statement) { try body(block) }
        }
    }
}

extension LedgerWriter {
    static let fleetCursorSetting = "fleet_cursor"

    /// Queues one of this host's changes for the fleet, in the transaction that makes it.
    public func enqueue(_ change: FleetChange) throws(LedgerError) {
        let statement = try connection.statement(
            "INSERT INTO fleet_outbox (kind, key, expires_ms, source, reason, time_ms) VALUES (?, ?, ?, ?, ?, ?)")
        let expires: Int64? = switch change.expiry {
        case .never: nil
        case .at(let end): end
        }
        statement.bind(1, change.kind.rawValue).bind(2, LedgerKey.encode(change.target)).bind(3, expires)
            .bind(4, change.source.rawValue).bind(5, change.reason).bind(6, change.timeUnixMilliseconds)
        try statement.run()
    }

    /// Drops what the database has taken: every outbox entry up to `id`.
    public func removeOutbox(through id: Int64) throws(LedgerError) {
        let statement = try connection.statement("DELETE FROM fleet_outbox WHERE id <= ?")
        statement.bind(1, id)
        try statement.run()
    }

    /// Moves the cursor, in the transaction that applies the changes up to it.
    public func setFleetCursor(_ sequence: Int64) throws(LedgerError) {
        try setSetting(Self.fleetCursorSetting, sequence)
    }
}
