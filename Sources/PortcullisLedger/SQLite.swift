import CSQLite
import Glibc
import PortcullisSystem

/// A failure of the ledger, phrased for the person who has to act on it: the path, what
/// SQLite said, and what to do.
public struct LedgerError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// The file is not a ledger, or is damaged.
        case corrupt
        /// The disk or the file system is full.
        case full
        /// The state directory or the file cannot be written.
        case readOnly
        /// No permission to open or create it.
        case permission
        /// Another process held the database longer than the busy timeout.
        case busy
        /// The file was written by a newer Portcullis.
        case newerSchema
        case failed
    }

    public let kind: Kind
    public let path: String
    /// SQLite's extended result code, when SQLite gave one.
    public let code: CInt?
    public let message: String

    public init(_ kind: Kind, path: String, code: CInt? = nil, _ message: String) {
        (self.kind, self.path, self.code, self.message) = (kind, path, code, message)
    }

    public var description: String { message }

    /// The error for a failed SQLite call, with the advice its result code calls for.
    static func sqlite(_ code: CInt, _ operation: String, path: String, detail: String?, systemErrno: CInt = 0) -> LedgerError {
        let said = detail.map { ": \($0)" } ?? ""
        let what = "the ledger \(path): \(operation) failed\(said)"
        // SQLite reports a full disk met while growing its shared-memory file as an I/O error,
        // and a read-only directory as a file it cannot open; the errno says which it was.
        var primary = code & 0xFF
        if primary == SQLITE_IOERR && (systemErrno == ENOSPC || systemErrno == EDQUOT) { primary = SQLITE_FULL }
        if (primary == SQLITE_CANTOPEN || primary == SQLITE_IOERR) && systemErrno == EROFS { primary = SQLITE_READONLY }
        let directory = SystemCall.parent(of: path) ?? "/"
        if primary == SQLITE_CANTOPEN && access(directory, W_OK) != 0 && errno == EROFS { primary = SQLITE_READONLY }
        switch primary {
        case SQLITE_CORRUPT, SQLITE_NOTADB:
            return LedgerError(.corrupt, path: path, code: code, "\(what); the file is damaged or not a Portcullis ledger. Move it aside (the pinned maps keep enforcing what they hold) and start again: the next start rebuilds the ledger from the maps")
        case SQLITE_FULL:
            return LedgerError(.full, path: path, code: code, "\(what); the disk holding it is full. Free space there; nothing was changed")
        case SQLITE_READONLY:
            return LedgerError(.readOnly, path: path, code: code, "\(what); it cannot be written (read-only file system or file). Make the state directory writable, or choose another with --state-dir or PORTCULLIS_STATE_DIR; nothing was changed")
        case SQLITE_PERM, SQLITE_AUTH:
            return LedgerError(.permission, path: path, code: code, "\(what); permission denied: run as root, or choose a state directory you may write with --state-dir or PORTCULLIS_STATE_DIR")
        case SQLITE_CANTOPEN:
            let reason = access(directory, W_OK) != 0 && errno == EACCES ? "permission denied" : "cannot open or create it"
            return LedgerError(.permission, path: path, code: code, "\(what) (\(reason)); run as root, or choose a state directory you may write with --state-dir or PORTCULLIS_STATE_DIR")
        case SQLITE_BUSY, SQLITE_LOCKED:
            return LedgerError(.busy, path: path, code: code, "\(what); another process held it too long. Try again")
        case SQLITE_IOERR:
            return LedgerError(.failed, path: path, code: code, "\(what); the disk reported an I/O error. Check the disk and its free space; nothing was changed")
        default:
            return LedgerError(.failed, path: path, code: code, what)
        }
    }

}

/// One connection to a SQLite database: `sqlite3_open_v2(3)`. Used by one thread at a time
/// (the connection is opened without SQLite's own mutex); statements are prepared once and
/// kept.
final class SQLiteConnection {
    let path: String
    private let handle: OpaquePointer
    private var statements: [String: SQLiteStatement] = [:]

    enum Access {
        case readWrite
        /// Read-only, the write-ahead log and its index included: on a read-only file system
        /// SQLite reads both without writing either.
        case readOnly
        /// Read-only as a snapshot that nothing changes (`?immutable=1`): no lock, no
        /// shared-memory file, and no write-ahead log, so only for a file that has none.
        case immutable
    }

    /// Process-wide settings, applied once before the first connection.
    private static let configured: Void = { _ = csqlite_disable_memory_statistics() }()

    init(path: String, access: Access = .readWrite) throws(LedgerError) {
        _ = Self.configured
        self.path = path
        var opened: OpaquePointer?
        let modes: CInt = switch access {
        case .readWrite: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
        case .readOnly: SQLITE_OPEN_READONLY
        case .immutable: SQLITE_OPEN_READONLY | SQLITE_OPEN_URI
        }
        let flags = modes | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE
        let name = access == .immutable ? "file:" + Self.uriPath(path) + "?immutable=1" : path
        let status = sqlite3_open_v2(name, &opened, flags, nil)
        guard status == SQLITE_OK, let opened else {
            let detail = opened.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) }
            let systemErrno = opened.map { sqlite3_system_errno($0) } ?? 0
            if let opened { sqlite3_close_v2(opened) }
            throw LedgerError.sqlite(status, "opening", path: path, detail: detail, systemErrno: systemErrno)
        }
        handle = opened
        sqlite3_extended_result_codes(handle, 1)
        // Another process's write transaction is waited for, not failed at once.
        sqlite3_busy_timeout(handle, 10_000)
    }

    /// Keeps the write-ahead log's file when the last connection closes, emptied by the
    /// checkpoint at close: the CLI and the active response make one change per process, and
    /// creating and deleting the file each time costs a directory sync and two unlinks.
    func keepWriteAheadLogOnClose() throws(LedgerError) {
        let status = csqlite_keep_write_ahead_log_file(handle)
        guard status == SQLITE_OK else { throw failure(status, "keeping the write-ahead log") }
    }

    /// A path as the path of a file: URI, with the characters a URI gives meaning escaped.
    private static func uriPath(_ path: String) -> String {
        var escaped = ""
        for scalar in path.unicodeScalars {
            switch scalar {
            case "%": escaped += "%25"
            case "?": escaped += "%3F"
            case "#": escaped += "%23"
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }

    deinit {
        statements.removeAll()
        sqlite3_close_v2(handle)
    }

    private var lastMessage: String? {
        sqlite3_errmsg(handle).map { String(cString: $0) }
    }

    func failure(_ code: CInt, _ operation: String) -> LedgerError {
        LedgerError.sqlite(code, operation, path: path, detail: lastMessage, systemErrno: sqlite3_system_errno(handle))
    }

    /// Runs SQL that returns no rows, statement by statement: `sqlite3_exec(3)`.
    func execute(_ sql: String) throws(LedgerError) {
        let status = sqlite3_exec(handle, sql, nil, nil, nil)
        guard status == SQLITE_OK else { throw failure(status, "running \(sql.prefix(60))") }
    }

    /// The statement for `sql`, prepared on first use: `sqlite3_prepare_v3(3)`.
    func statement(_ sql: String) throws(LedgerError) -> SQLiteStatement {
        if let cached = statements[sql] {
            cached.reset()
            return cached
        }
        var prepared: OpaquePointer?
        let status = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &prepared, nil)
        guard status == SQLITE_OK, let prepared else { throw failure(status, "preparing \(sql.prefix(60))") }
        let statement = SQLiteStatement(handle: prepared, connection: self)
        statements[sql] = statement
        return statement
    }

    /// Rows changed by the last statement: `sqlite3_changes(3)`.
    var changes: Int { Int(sqlite3_changes(handle)) }

    /// Whether a transaction is open: `sqlite3_get_autocommit(3)`.
    var inTransaction: Bool { sqlite3_get_autocommit(handle) == 0 }
}

/// A prepared statement: bind, step, read columns. Column and parameter indexes are as in
/// SQLite: parameters from 1, columns from 0.
final class SQLiteStatement {
    private let handle: OpaquePointer
    private unowned let connection: SQLiteConnection

    init(handle: OpaquePointer, connection: SQLiteConnection) {
        self.handle = handle
        self.connection = connection
    }

    deinit { sqlite3_finalize(handle) }

    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    /// For a statement whose every parameter is bound again before each step (a batch's
    /// insert): clearing them a million times is wasted.
    func resetKeepingBindings() {
        sqlite3_reset(handle)
    }

    @discardableResult
    func bind(_ index: Int32, _ value: Int64?) -> SQLiteStatement {
        if let value { sqlite3_bind_int64(handle, index, value) } else { sqlite3_bind_null(handle, index) }
        return self
    }

    @discardableResult
    func bind(_ index: Int32, _ value: String?) -> SQLiteStatement {
        if let value { sqlite3_bind_text(handle, index, value, -1, csqlite_transient()) } else { sqlite3_bind_null(handle, index) }
        return self
    }

    @discardableResult
    func bind(_ index: Int32, _ bytes: [UInt8]) -> SQLiteStatement {
        bytes.withUnsafeBytes { buffer in
            _ = sqlite3_bind_blob(handle, index, buffer.baseAddress, Int32(buffer.count), csqlite_transient())
        }
        return self
    }

    /// Advances to the next row: `sqlite3_step(3)`. False when there are no more.
    func step() throws(LedgerError) -> Bool {
        let status = sqlite3_step(handle)
        switch status {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            let sql = sqlite3_sql(handle).map { String(cString: $0) } ?? "a statement"
            let error = connection.failure(status, "running \(sql.prefix(60))")
            sqlite3_reset(handle)
            throw error
        }
    }

    /// Runs a statement that returns no rows.
    func run() throws(LedgerError) {
        while try step() {}
    }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }

    func optionalInt64(_ column: Int32) -> Int64? { isNull(column) ? nil : int64(column) }

    func string(_ column: Int32) -> String {
        guard let text = sqlite3_column_text(handle, column) else { return "" }
        let count = Int(sqlite3_column_bytes(handle, column))
        return String(decoding: UnsafeBufferPointer(start: text, count: count), as: UTF8.self)
    }

    func optionalString(_ column: Int32) -> String? { isNull(column) ? nil : string(column) }

    func blob(_ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(handle, column))
        guard count > 0, let bytes = sqlite3_column_blob(handle, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: bytes, count: count))
    }
}
