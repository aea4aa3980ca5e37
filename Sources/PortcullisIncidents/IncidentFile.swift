import FoundationEssentials
import Glibc
import PortcullisSystem
import SystemPackage

/// An open incident log: checked to be a regular file owned by root or by the
/// effective user, never reached through a symbolic link, never a FIFO that
/// would hang the open. Every system call is retried on EINTR.
struct IncidentFile {
    let fd: CInt
    let path: String
    /// "the incident log", "the rotated incident log": for messages.
    let what: String

    /// What the last whole record of a file says about the chain.
    enum Link: Equatable {
        /// A record with a hash: the next record links to it.
        case chained(hash: String, sequence: Int64)
        /// A record written before the chain began: the next record starts a chain.
        case unchained
        /// No record at all: an empty file, or one holding only lines that are not records.
        case noRecords
    }

    /// nil when the file does not exist and `forWriting` is false.
    static func open(_ path: String, forWriting: Bool, what: String = "the incident log") throws(IncidentLogError) -> IncidentFile? {
        // O_NONBLOCK so a FIFO planted at the path cannot hang the open; cleared once it is known to be a regular file.
        let flags = (forWriting ? O_RDWR | O_APPEND | O_CREAT : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC
        let fd: CInt
        switch SystemCall.retryingInterrupts({ Glibc.open(path, flags, 0o640) }) {
        case .success(let opened): fd = opened
        case .failure(.noSuchFileOrDirectory) where !forWriting: return nil
        case .failure(.tooManySymbolicLinkLevels):
            throw IncidentLogError(description: "refusing \(what) \(path): it is a symbolic link; replace it with a regular file, or give the real path")
        case .failure(.isDirectory), .failure(.noSuchAddressOrDevice):
            throw IncidentLogError(description: "refusing \(what) \(path): it is not a regular file; move it away, or give another path")
        case .failure(let code):
            throw IncidentLogError(description: "cannot open \(what) \(path): \(message(code)); check it and its directory's permissions")
        }
        let file = IncidentFile(fd: fd, path: path, what: what)
        do throws(IncidentLogError) {
            let status = try file.status()
            guard status.st_mode & mode_t(S_IFMT) == mode_t(S_IFREG) else {
                throw IncidentLogError(description: "refusing \(what) \(path): it is \(kind(of: status.st_mode)), not a regular file; move it away, or give another path")
            }
            guard status.st_uid == 0 || status.st_uid == geteuid() else {
                throw IncidentLogError(description: "refusing \(what) \(path): it is owned by uid \(status.st_uid), not root; check who wrote it, then chown root \(path)")
            }
            let cleared = SystemCall.retryingInterrupts { fcntl(fd, F_GETFL) }.flatMap { current in
                SystemCall.retryingInterrupts { fcntl(fd, F_SETFL, current & ~O_NONBLOCK) }
            }
            if case .failure(let code) = cleared { throw file.failure("cannot set the flags of", code) }
        } catch {
            file.close()
            throw error
        }
        return file
    }

    func close() { _ = Glibc.close(fd) }

    func lock(exclusive: Bool) throws(IncidentLogError) {
        if case .failure(let code) = SystemCall.retryingInterrupts({ flock(fd, exclusive ? LOCK_EX : LOCK_SH) }) {
            throw failure("cannot lock", code)
        }
    }

    func unlock() {
        _ = SystemCall.retryingInterrupts { flock(fd, LOCK_UN) }
    }

    func status() throws(IncidentLogError) -> stat {
        var status = stat()
        if case .failure(let code) = SystemCall.retryingInterrupts({ fstat(fd, &status) }) { throw failure("cannot stat", code) }
        return status
    }

    func size() throws(IncidentLogError) -> Int64 { Int64(try status().st_size) }

    /// Whether `path` still names this open file (it was not rotated or replaced meanwhile).
    func isStill(at path: String) throws(IncidentLogError) -> Bool {
        let mine = try status()
        var named = stat()
        switch SystemCall.retryingInterrupts({ lstat(path, &named) }) {
        case .success: return named.st_dev == mine.st_dev && named.st_ino == mine.st_ino
        case .failure(.noSuchFileOrDirectory): return false
        case .failure(let code): throw failure("cannot stat", code)
        }
    }

    func truncate(to length: Int64) throws(IncidentLogError) {
        if case .failure(let code) = SystemCall.retryingInterrupts({ ftruncate(fd, off_t(length)) }) {
            throw failure("cannot cut back", code)
        }
    }

    /// Exactly `count` bytes from `offset` (fewer only at the end of the file).
    func bytes(at offset: Int64, count: Int) throws(IncidentLogError) -> [UInt8] {
        switch SystemCall.readAll(fd, count: count, at: offset) {
        case .success(let bytes): return bytes
        case .failure(let code): throw failure("cannot read", code)
        }
    }

    /// The offset of the last "\n" before `end`, reading backwards in chunks: only the tail is read.
    func lastNewline(before end: Int64) throws(IncidentLogError) -> Int64? {
        // A record is a few hundred bytes: the first read is small, later ones larger.
        var chunk: Int64 = 4096
        var high = end
        while high > 0 {
            let low = max(0, high - chunk)
            let part = try bytes(at: low, count: Int(high - low))
            if let index = part.lastIndex(of: UInt8(ascii: "\n")) { return low + Int64(index) }
            high = low
            chunk = 64 * 1024
        }
        return nil
    }

    /// The value of the top-level `"sequence"` member of a record's JSON. The key appears
    /// nowhere else: no nested record has it, and inside a string its quotes would be escaped.
    static func sequence(in record: [UInt8]) -> Int64? {
        let key = Array(#""sequence":"#.utf8)
        guard record.count > key.count,
              let start = (0...(record.count - key.count)).first(where: { record[$0..<($0 + key.count)].elementsEqual(key) })
        else { return nil }
        let digits = record[(start + key.count)...].prefix { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
        guard !digits.isEmpty, digits.count <= 18 else { return nil }
        return Int64(String(decoding: digits, as: UTF8.self))
    }

    /// Where the whole lines end: `length` when the file ends with "\n", else the start of the torn last line.
    func endOfLastWholeLine(before length: Int64) throws(IncidentLogError) -> Int64 {
        guard length > 0 else { return 0 }
        if try bytes(at: length - 1, count: 1) == [UInt8(ascii: "\n")] { return length }
        return try lastNewline(before: length).map { $0 + 1 } ?? 0
    }

    /// The chain link of the last record among the whole lines before `length`,
    /// reading back from the end past any lines that are not records.
    func lastLink(before length: Int64) throws(IncidentLogError) -> Link {
        var decoder: JSONDecoder?
        var end = length
        while end > 0 {
            let newline = end - 1
            let start = try lastNewline(before: newline).map { $0 + 1 } ?? 0
            let line = try bytes(at: start, count: Int(newline - start))
            // A sealed line carries its hash at the end and its sequence under the one key of
            // that name, so the link is read without decoding the record (a fresh process's
            // first JSONDecoder costs more than the rest of the append).
            if let (canonical, hash) = IncidentChain.unsealed(line), let sequence = Self.sequence(in: canonical) {
                return .chained(hash: hash, sequence: sequence)
            }
            // Only an unsealed record (written before records were sealed) needs a decoder.
            let unsealedDecoder = decoder ?? JSONDecoder()
            decoder = unsealedDecoder
            if let record = try? unsealedDecoder.decode(ChainRecord.self, from: Data(line)) {
                guard let hash = record.hash else { return .unchained }
                return .chained(hash: hash, sequence: record.sequence ?? 0)
            }
            end = start
        }
        return .noRecords
    }

    /// Writes `bytes` at the end of the file and syncs them, or, if any part of
    /// that fails (a full disk, an I/O error), cuts the file back to `length` so
    /// no partial record is left.
    func appendWhole(_ bytes: [UInt8], restoringLength length: Int64) throws(IncidentLogError) {
        let written = SystemCall.writeAll(fd, bytes).flatMap { SystemCall.retryingInterrupts { fdatasync(fd) } }
        guard case .failure(let code) = written else { return }
        let cut = SystemCall.retryingInterrupts { ftruncate(fd, off_t(length)) }
        let left = if case .success = cut { "nothing of it was left in the file" } else { "a partial line may be left, which the next record cuts off" }
        let advice = code == .noSpace || code == .diskQuotaExceeded ? "free space on its filesystem" : "check the disk"
        throw IncidentLogError(description: "cannot write to \(what) \(path): \(IncidentFile.message(code)); the record was not written and \(left); \(advice)")
    }

    /// Calls `body` with each line up to `length` (without its "\n"), its number
    /// from 1, and whether it ended with "\n"; stops when `body` returns false.
    func forEachLine(upTo length: Int64, _ body: ([UInt8], Int, Bool) throws(IncidentLogError) -> Bool) throws(IncidentLogError) {
        let chunk = 1 << 20
        var offset: Int64 = 0
        var carry: [UInt8] = []
        var number = 0
        while offset < length {
            let part = try bytes(at: offset, count: Int(min(Int64(chunk), length - offset)))
            if part.isEmpty { break }
            offset += Int64(part.count)
            var start = part.startIndex
            while let newline = part[start...].firstIndex(of: UInt8(ascii: "\n")) {
                number += 1
                let line = carry.isEmpty ? Array(part[start..<newline]) : carry + part[start..<newline]
                carry.removeAll(keepingCapacity: true)
                guard try body(line, number, true) else { return }
                start = newline + 1
            }
            carry.append(contentsOf: part[start...])
        }
        if !carry.isEmpty {
            _ = try body(carry, number + 1, false)
        }
    }

    /// Creates `directory` and its missing parents with `mode`.
    static func createDirectories(_ directory: String, mode: mode_t, what: String) throws(IncidentLogError) {
        if case .failure(let error) = SystemCall.makeDirectories(directory, mode: mode) {
            throw IncidentLogError(description: "cannot create the directory \(error.path) for \(what): \(message(error.code)); create it, or give another path")
        }
    }

    /// `code` is the errno of the failed call, taken by the caller: formatting the message could change errno.
    func failure(_ what: String, _ code: Errno) -> IncidentLogError {
        IncidentLogError(description: "\(what) \(self.what) \(path): \(IncidentFile.message(code))")
    }

    static func message(_ code: CInt) -> String { String(cString: strerror(code)) }

    static func message(_ code: Errno) -> String { message(code.rawValue) }

    static func kind(of mode: mode_t) -> String {
        switch mode & mode_t(S_IFMT) {
        case mode_t(S_IFIFO): "a FIFO"
        case mode_t(S_IFDIR): "a directory"
        case mode_t(S_IFCHR): "a character device"
        case mode_t(S_IFBLK): "a block device"
        case mode_t(S_IFSOCK): "a socket"
        default: "not a regular file"
        }
    }
}
