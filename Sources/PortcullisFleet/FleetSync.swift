import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PortcullisConfig
import PortcullisControl
import PortcullisCore
import PortcullisLedger
import PortcullisSystem
import PostgresNIO
import Synchronization

/// What the fleet needs of this host's single writer: the cursor and the outbox in its ledger,
/// and the one way in for other nodes' changes. The daemon's keeper is it.
public protocol FleetWriter: Sendable {
    func fleetCursor() async throws -> Int64?
    func applyFleet(_ changes: [RemoteChange], cursor: Int64?) async throws -> FleetApplyReport
    func dropFleetBlocks(notIn inForce: Set<BlockTarget>) async throws -> Int
    func recordMalformedFleetChange(_ target: String, node: String, error: String) async
    func fleetOutbox(limit: Int) async throws -> [OutboxEntry]
    func removeFleetOutbox(through id: Int64) async throws
}

/// A failure talking to the fleet's database, in one line.
public struct FleetError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }

    /// PostgresNIO keeps the server's words out of its description; they are what the operator needs.
    static func describing(_ error: any Error) -> String {
        if let error = error as? FleetError { return error.description }
        if let error = error as? PSQLError {
            if let info = error.serverInfo, let message = info[.message] {
                return "\(message) (SQLSTATE \(info[.sqlState] ?? "?"))"
            }
            if let underlying = error.underlying { return "\(error.code): \(underlying)" }
            return "\(error.code)"
        }
        return TerminalText.excerpt("\(error)")
    }

    static func sqlState(_ error: any Error) -> String? {
        (error as? PSQLError)?.serverInfo?[.sqlState]
    }
}

/// A node of the fleet: publishes this host's changes from the ledger's outbox, in order, and
/// applies the others' changes through the single writer. Two connections, each its own loop: a
/// database that is down stops neither the other loop nor anything this host enforces.
public final class FleetSync: Sendable {
    let configuration: FleetConfiguration
    let writer: any FleetWriter
    let logger: Logger
    private let state: Mutex<FleetHealth>
    /// This host's clock less the database's, measured at each connection and resync.
    private let skew = Atomic<Int64>(0)
    private let publishWakes: AsyncStream<Void>
    private let publishWake: AsyncStream<Void>.Continuation

    /// Changes read, applied or published per round: a round is one ledger transaction here.
    static let pageSize = 8192
    /// How long a failed connection waits before the next attempt.
    static let retryInterval: Duration = .seconds(1)
    /// History kept beyond the longest block, so a node that was down a while catches up from
    /// the log rather than a snapshot.
    static let compactionMargin = "1 hour"
    static let compactionInterval: Duration = .seconds(600)

    public init(configuration: FleetConfiguration, writer: any FleetWriter, logger: Logger) {
        self.configuration = configuration
        self.writer = writer
        self.logger = logger
        let where_ = "\(configuration.user)@\(configuration.endpoint)/\(configuration.database)"
        state = Mutex(FleetHealth(node: configuration.node, database: where_))
        (publishWakes, publishWake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Tells the publisher that the outbox has something new.
    public func changed() { publishWake.yield() }

    public func health() -> FleetHealth { state.withLock { $0 } }

    func update(_ body: (inout FleetHealth) -> Void) { state.withLock { body(&$0) } }

    /// Runs both loops until cancelled.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.subscribeForever() }
            group.addTask { await self.publishForever() }
            group.addTask {
                // The publisher also retries on its own: an outage leaves the outbox full and no wake-up.
                while !Task.isCancelled {
                    try? await Task.sleep(for: Self.retryInterval)
                    self.publishWake.yield()
                }
            }
            await group.waitForAll()
        }
    }

    // MARK: - Connections

    func connect(label: String) async throws -> PostgresConnection {
        let password: String?
        do {
            password = try configuration.readPassword()
        } catch {
            throw FleetError(error.description)
        }
        var settings: PostgresConnection.Configuration
        switch configuration.endpoint {
        case .socket:
            settings = .init(unixSocketPath: configuration.endpoint.description, username: configuration.user,
                             password: password, database: configuration.database)
        case .tcp(let host, let port):
            settings = .init(host: host, port: port, username: configuration.user, password: password,
                             database: configuration.database, tls: try tls())
        }
        settings.options.connectTimeout = .seconds(5)
        settings.options.additionalStartupParameters = [("application_name", "portcullis \(configuration.node) \(label)")]
        var connectionLogger = logger
        connectionLogger.logLevel = .warning
        return try await PostgresConnection.connect(configuration: settings, id: label == "sync" ? 1 : 2, logger: connectionLogger)
    }

    private func tls() throws -> PostgresConnection.Configuration.TLS {
        let settings = configuration.tls
        guard settings.mode != .disable else { return .disable }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = settings.mode == .verifyFull ? .fullVerification : .none
        if let ca = settings.caFile { tls.trustRoots = .file(ca) }
        if let certificate = settings.certificateFile, let key = settings.keyFile {
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            } catch {
                throw FleetError("cannot read the client certificate \(certificate): \(error)")
            }
        }
        do {
            return .require(try NIOSSLContext(configuration: tls))
        } catch {
            throw FleetError("cannot set up TLS: \(error)")
        }
    }

    /// The database's clock against this host's, from the middle of a round trip.
    func measureSkew(_ connection: PostgresConnection) async throws {
        let before = WallClock.nowUnixMilliseconds()
        let rows = try await connection.query("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8", logger: logger)
        var database: Int64?
        for try await (milliseconds) in rows.decode(Int64.self) { database = milliseconds }
        let after = WallClock.nowUnixMilliseconds()
        guard let database else { return }
        let offset = (before + after) / 2 - database
        skew.store(offset, ordering: .relaxed)
        update { $0.skewMilliseconds = offset }
    }

    /// A database time as this host's clock reads it.
    func local(_ databaseMilliseconds: Int64) -> Int64 { databaseMilliseconds + skew.load(ordering: .relaxed) }
    /// A time of this host's as the database's clock reads it.
    func remote(_ localMilliseconds: Int64) -> Int64 { localMilliseconds - skew.load(ordering: .relaxed) }

    // MARK: - The schema

    /// Creates or migrates the schema when this role may, under a lock so that nodes starting
    /// together do it once; otherwise checks that it is there, at a version this node reads.
    func prepareSchema(_ connection: PostgresConnection) async throws {
        if let version = try await schemaVersion(connection) {
            guard version <= FleetSchema.version else {
                throw FleetError("the fleet schema is at version \(version), newer than this portcullis reads (\(FleetSchema.version)); upgrade portcullis")
            }
            if version == FleetSchema.version { return }
        }
        try await connection.query("BEGIN", logger: logger)
        do {
            try await connection.query("SELECT pg_advisory_xact_lock(7235401)", logger: logger)
            if try await schemaVersion(connection) == nil {
                for statement in FleetSchema.version1 {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                let rows = try await connection.query("SELECT count(*) FROM pg_roles WHERE rolname = 'portcullis_node'", logger: logger)
                var exists = false
                for try await count in rows.decode(Int64.self) { exists = count > 0 }
                if exists {
                    for statement in FleetSchema.grants {
                        try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                    }
                } else {
                    logger.warning("no role portcullis_node: only \(configuration.user) may use the fleet schema (see the README's roles)")
                }
                logger.notice("created the fleet schema (version \(FleetSchema.version))")
            }
            try await connection.query("COMMIT", logger: logger)
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            if FleetError.sqlState(error) == "42501" {
                throw FleetError("the fleet schema does not exist and role \(configuration.user) may not create it: start one node with the schema owner's role first (see the README); \(FleetError.describing(error))")
            }
            throw error
        }
    }

    /// The schema's version; nil when there is none yet.
    private func schemaVersion(_ connection: PostgresConnection) async throws -> Int? {
        let rows = try await connection.query(
            "SELECT to_regclass('portcullis.meta') IS NOT NULL", logger: logger)
        var exists = false
        for try await found in rows.decode(Bool.self) { exists = found }
        guard exists else { return nil }
        let version = try await connection.query("SELECT version FROM portcullis.meta", logger: logger)
        for try await number in version.decode(Int32.self) { return Int(number) }
        return nil
    }
}

// MARK: - Reading the log

extension FleetSync {
    /// Connects, prepares the schema, and applies the log from the cursor whenever a
    /// notification or the resync timer says so; on any failure, connects again.
    func subscribeForever() async {
        var failing = false
        while !Task.isCancelled {
            do {
                let connection = try await connect(label: "sync")
                do {
                    try await subscribe(connection)
                } catch {
                    try? await connection.close()
                    throw error
                }
                try? await connection.close()
            } catch is CancellationError {
                break
            } catch {
                let message = FleetError.describing(error)
                update {
                    $0.connected = false
                    $0.lastError = message
                }
                if !failing {
                    logger.error("fleet: cannot read the change log (\(message)); enforcing what this host holds, and retrying")
                }
                failing = true
            }
            try? await Task.sleep(for: Self.retryInterval)
        }
        update { $0.connected = false }
    }

    private func subscribe(_ connection: PostgresConnection) async throws {
        try await prepareSchema(connection)
        try await measureSkew(connection)
        let (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await connection.listen(on: FleetSchema.channel) { notifications in
                    // Listening from here on: a catch-up now misses nothing committed before.
                    wake.yield()
                    for try await notification in notifications {
                        if let sequence = Int64(notification.payload) {
                            self.update { $0.head = max($0.head ?? 0, sequence) }
                        }
                        wake.yield()
                    }
                }
                throw FleetError("the database stopped the notifications")
            }
            group.addTask {
                while true {
                    try await Task.sleep(for: self.configuration.resyncInterval)
                    wake.yield()
                }
            }
            group.addTask {
                var lastCompaction = ContinuousClock.now - Self.compactionInterval
                var connected = false
                for await _ in wakes {
                    try await self.catchUp(connection)
                    if !connected {
                        connected = true
                        self.update {
                            $0.connected = true
                            $0.lastError = nil
                        }
                        self.logger.notice("fleet: node \(self.configuration.node) follows the change log at \(self.health().database) (cursor \(self.health().cursor.map(String.init) ?? "none"))")
                    }
                    if ContinuousClock.now - lastCompaction >= Self.compactionInterval {
                        lastCompaction = ContinuousClock.now
                        try await self.checkIn(connection)
                    }
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Re-measures the skew, says where this node is, and compacts the log (any node may; the
    /// lock in `compact` makes them take turns).
    private func checkIn(_ connection: PostgresConnection) async throws {
        try await measureSkew(connection)
        let cursor = health().cursor ?? 0
        let node = configuration.node
        try await connection.query("SELECT portcullis.check_in(\(node), \(cursor))", logger: logger)
        try await connection.query(PostgresQuery(unsafeSQL: "SELECT portcullis.compact('\(Self.compactionMargin)')"), logger: logger)
    }

    /// Applies everything after the cursor, a page at a time; a cursor the compaction has passed
    /// (or none) takes a snapshot instead.
    func catchUp(_ connection: PostgresConnection) async throws {
        var cursor = try await writer.fleetCursor()
        let meta = try await connection.query("SELECT last_sequence, compacted_below FROM portcullis.meta", logger: logger)
        var head: Int64 = 0
        var compactedBelow: Int64 = 0
        for try await (last, below) in meta.decode((Int64, Int64).self) { (head, compactedBelow) = (last, below) }
        update {
            $0.head = max($0.head ?? 0, head)
            $0.cursor = cursor
        }
        if cursor == nil || cursor! < compactedBelow - 1 {
            cursor = try await snapshot(connection)
        }
        guard var position = cursor else { return }
        while true {
            let rows = try await connection.query("""
                SELECT sequence, node, kind, target::text, (extract(epoch FROM expires_at) * 1000)::int8, source, reason,
                       (extract(epoch FROM made_at) * 1000)::int8, (extract(epoch FROM committed_at) * 1000)::int8
                FROM portcullis.changes WHERE sequence > \(position) ORDER BY sequence LIMIT \(Self.pageSize)
                """, logger: logger)
            var page: [RemoteChange] = []
            var count = 0
            var newestCommit: Int64?
            for try await (sequence, node, kind, target, expires, source, reason, made, committed)
                in rows.decode((Int64, String, String, String, Int64?, String, String, Int64, Int64).self) {
                count += 1
                position = sequence
                // This host's own changes are in force here already.
                guard node != configuration.node else { continue }
                newestCommit = committed
                switch parse(sequence: sequence, node: node, kind: kind, target: target, expires: expires, source: source,
                             reason: reason, made: made) {
                case .success(let change): page.append(change)
                case .failure(let problem):
                    await refuse(target: target, node: node, sequence: sequence, problem: problem.description)
                }
            }
            guard count > 0 else { break }
            try await apply(page, cursor: position, newestCommit: newestCommit)
            if count < Self.pageSize { break }
        }
    }

    private func refuse(target: String, node: String, sequence: Int64, problem: String) async {
        logger.warning("fleet: refused change \(sequence) from \(TerminalText.excerpt(node)): \(problem)")
        await writer.recordMalformedFleetChange(target, node: FleetConfiguration.isValidNode(node) ? node : "(invalid)", error: problem)
        update { $0.refused += 1 }
    }

    /// `cursor`: where the log stands once `page` is applied; nil for a snapshot's pages before its last.
    private func apply(_ page: [RemoteChange], cursor: Int64?, newestCommit: Int64?) async throws {
        let report = try await writer.applyFleet(page, cursor: cursor)
        let now = WallClock.nowUnixMilliseconds()
        update {
            if let cursor {
                $0.cursor = cursor
                $0.head = max($0.head ?? cursor, cursor)
                $0.lagEvents = max(0, ($0.head ?? cursor) - cursor)
            }
            $0.applied += report.applied
            $0.refused += report.refused
            if !page.isEmpty {
                $0.lastApplyUnixMs = now
                if let newestCommit { $0.lagSeconds = Double(max(0, now - local(newestCommit))) / 1000 }
            }
        }
        if report.refused > 0 { logger.warning("fleet: refused \(report.refused) changes (loopback or allowlisted here); see portcullis incidents") }
    }

    /// Takes what is in force from the in-force table, all as of one moment, and the sequence
    /// of that moment as the cursor; lifts the fleet's blocks held here that are no longer in force.
    private func snapshot(_ connection: PostgresConnection) async throws -> Int64 {
        try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
        do {
            var high: Int64 = 0
            for try await last in try await connection.query("SELECT last_sequence FROM portcullis.meta", logger: logger).decode(Int64.self) {
                high = last
            }
            let rows = try await connection.query("""
                SELECT sequence, node, 'block', target::text, (extract(epoch FROM expires_at) * 1000)::int8, source, reason,
                       (extract(epoch FROM made_at) * 1000)::int8
                FROM portcullis.in_force WHERE expires_at IS NULL OR expires_at > clock_timestamp()
                UNION ALL
                SELECT sequence, node, 'allow', target::text, NULL, 'api', '', (extract(epoch FROM made_at) * 1000)::int8
                FROM portcullis.allowlist
                """, logger: logger)
            var changes: [RemoteChange] = []
            var inForce = Set<BlockTarget>()
            for try await (sequence, node, kind, target, expires, source, reason, made)
                in rows.decode((Int64, String, String, String, Int64?, String, String, Int64).self) {
                guard node != configuration.node else { continue }
                switch parse(sequence: sequence, node: node, kind: kind, target: target, expires: expires, source: source,
                             reason: reason, made: made) {
                case .success(let change):
                    changes.append(change)
                    if change.change.kind == .block { inForce.insert(change.change.target) }
                case .failure(let problem):
                    await refuse(target: target, node: node, sequence: sequence, problem: problem.description)
                }
            }
            try await connection.query("COMMIT", logger: logger)
            // Allowlist entries first: a block they cover is refused, as it would be locally.
            changes.sort { ($0.change.kind == .allow ? 0 : 1) < ($1.change.kind == .allow ? 0 : 1) }
            var start = 0
            repeat {
                let end = min(start + Self.pageSize, changes.count)
                try await apply(Array(changes[start..<end]), cursor: end == changes.count ? high : nil, newestCommit: nil)
                start = end
            } while start < changes.count
            let dropped = try await writer.dropFleetBlocks(notIn: inForce)
            update {
                $0.snapshots += 1
                $0.cursor = high
            }
            logger.notice("fleet: took a snapshot at sequence \(high): \(changes.count) entries in force\(dropped > 0 ? ", \(dropped) no longer in force lifted" : "")")
            return high
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }

    /// A row as a change, strictly: every field as a node writes it, or a one-line reason why not.
    func parse(sequence: Int64, node: String, kind: String, target: String, expires: Int64?, source: String,
               reason: String, made: Int64) -> Result<RemoteChange, FleetRowProblem> {
        FleetRow.parse(sequence: sequence, node: node, kind: kind, target: target, expires: expires, source: source,
                       reason: reason, made: made, toLocal: local)
    }
}

public struct FleetRowProblem: Error, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// The strict reading of a change log row, apart from any connection, for the unit tests.
public enum FleetRow {
    public static func parse(sequence: Int64, node: String, kind: String, target: String, expires: Int64?, source: String,
                             reason: String, made: Int64, toLocal: (Int64) -> Int64) -> Result<RemoteChange, FleetRowProblem> {
        guard FleetConfiguration.isValidNode(node) else {
            return .failure(.init("'\(TerminalText.excerpt(node))' is not a node name"))
        }
        guard let kind = FleetChange.Kind(rawValue: kind) else {
            return .failure(.init("'\(TerminalText.excerpt(kind))' is not a change (block, refresh, unblock, allow, disallow)"))
        }
        let parsed: BlockTarget
        do {
            parsed = try BlockTarget.parse(target).target
        } catch {
            return .failure(.init(error.description))
        }
        guard let source = BlockSource(rawValue: source) else {
            return .failure(.init(UnknownBlockSource(name: source).description))
        }
        guard reason.utf8.count <= BlockRequest.maximumReasonBytes else {
            return .failure(.init("the reason is \(reason.utf8.count) bytes long; at most \(BlockRequest.maximumReasonBytes) are kept"))
        }
        guard !reason.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
            return .failure(.init("the reason holds control characters"))
        }
        let made = toLocal(made)
        var expiry: Expiry<Int64> = .never
        if let expires, kind == .block || kind == .refresh {
            guard expires > 0 else { return .failure(.init("the expiry \(expires) is before 1970")) }
            expiry = .at(toLocal(expires))
        }
        return .success(RemoteChange(sequence: sequence, node: node, change: FleetChange(
            kind: kind, target: parsed, expiry: expiry, source: source, reason: reason, timeUnixMilliseconds: made)))
    }
}

// MARK: - Publishing

extension FleetSync {
    /// Publishes the outbox, in order, whenever the keeper says it changed or the retry timer
    /// fires; a failure keeps it queued in the ledger and drops the connection.
    func publishForever() async {
        var connection: PostgresConnection?
        var failing = false
        for await _ in publishWakes {
            if Task.isCancelled { break }
            do {
                if connection == nil || connection?.isClosed == true {
                    // The subscriber creates the schema; until it has, publishing waits for it.
                    guard health().connected else { continue }
                    connection = try await connect(label: "publish")
                }
                guard let open = connection else { continue }
                try await drain(open)
                if failing { logger.notice("fleet: publishing again") }
                failing = false
                update { $0.publishing = true }
            } catch is CancellationError {
                break
            } catch {
                let message = FleetError.describing(error)
                if !failing { logger.error("fleet: cannot publish (\(message)); this host's changes wait in its ledger") }
                failing = true
                update {
                    $0.publishing = false
                    $0.lastError = message
                }
                try? await connection?.close()
                connection = nil
            }
        }
        try? await connection?.close()
    }

    private func drain(_ connection: PostgresConnection) async throws {
        while true {
            let entries = try await writer.fleetOutbox(limit: Self.pageSize)
            update { $0.outbox = entries.count }
            guard let last = entries.last else { return }
            var kinds: [String] = [], targets: [String] = [], expires: [Int64] = [], sources: [String] = []
            var reasons: [String] = [], made: [Int64] = [], ids: [Int64] = []
            for entry in entries {
                let change = entry.change
                ids.append(entry.id)
                kinds.append(change.kind.rawValue)
                targets.append(change.target.asPrefix.description)
                switch change.expiry {
                case .never: expires.append(0)
                case .at(let end): expires.append(max(1, remote(end)))
                }
                sources.append(change.source.rawValue)
                reasons.append(change.reason)
                made.append(remote(change.timeUnixMilliseconds))
            }
            let node = configuration.node
            try await connection.query("""
                SELECT portcullis.publish(\(node), \(ids), \(kinds), \(targets)::cidr[], \(expires), \(sources), \(reasons), \(made))
                """, logger: logger)
            try await writer.removeFleetOutbox(through: last.id)
            update { $0.published += entries.count }
            if entries.count < Self.pageSize {
                update { $0.outbox = 0 }
                return
            }
        }
    }
}
