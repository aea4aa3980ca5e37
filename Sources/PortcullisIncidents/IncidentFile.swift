import FoundationEssentials
import Glibc

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
        var fd: CInt
        repeat { fd = Glibc.open(path, flags, 0o640) } while fd < 0 && errno == EINTR
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT && !forWriting { return nil }
            if code == ELOOP {
                throw IncidentLogError(description: "refusing \(what) \(path): it is a symbolic link; replace it with a regular file, or give the real path")
            }
            if code == EISDIR || code == ENXIO {
                throw IncidentLogError(description: "refusing \(what) \(path): it is not a regular file; move it away, or give another path")
            }
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
            let current = fcntl(fd, F_GETFL)
            guard current >= 0, fcntl(fd, F_SETFL, current & ~O_NONBLOCK) == 0 else { throw file.failure("cannot set the flags of") }
        } catch {
            file.close()
            throw error
        }
        return file
    }

    func close() { _ = Glibc.close(fd) }

    func lock(exclusive: Bool) throws(IncidentLogError) {
        while flock(fd, exclusive ? LOCK_EX : LOCK_SH) != 0 {
            guard errno == EINTR else { throw failure("cannot lock") }
        }
    }

    func unlock() {
        while flock(fd, LOCK_UN) != 0 && errno == EINTR {}
    }

    func status() throws(IncidentLogError) -> stat {
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw failure("cannot stat") }
        return status
    }

    func size() throws(IncidentLogError) -> Int64 { Int64(try status().st_size) }

    /// Whether `path` still names this open file (it was not rotated or replaced meanwhile).
    func isStill(at path: String) throws(IncidentLogError) -> Bool {
        let mine = try status()
        var named = stat()
        guard lstat(path, &named) == 0 else {
            if errno == ENOENT { return false }
            throw failure("cannot stat")
        }
        return named.st_dev == mine.st_dev && named.st_ino == mine.st_ino
    }

    func truncate(to length: Int64) throws(IncidentLogError) {
        while ftruncate(fd, off_t(length)) != 0 {
            guard errno == EINTR else { throw failure("cannot cut back") }
        }
    }

    /// Exactly `count` bytes from `offset` (fewer only at the end of the file).
    func bytes(at offset: Int64, count: Int) throws(IncidentLogError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = buffer.withUnsafeMutableBytes { raw in
                pread(fd, raw.baseAddress.map { $0 + done }, count - done, off_t(offset) + off_t(done))
            }
            if got < 0 {
                if errno == EINTR { continue }
                throw failure("cannot read")
            }
            if got == 0 { break }
            done += got
        }
        return Array(buffer.prefix(done))
    }

    /// The offset of the last "\n" before `end`, reading backwards in chunks: only the tail is read.
    func lastNewline(before end: Int64) throws(IncidentLogError) -> Int64? {
        let chunk: Int64 = 64 * 1024
        var high = end
        while high > 0 {
            let low = max(0, high - chunk)
            let part = try bytes(at: low, count: Int(high - low))
            if let index = part.lastIndex(of: UInt8(ascii: "\n")) { return low + Int64(index) }
            high = low
        }
        return nil
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
        let decoder = JSONDecoder()
        var end = length
        while end > 0 {
            let newline = end - 1
            let start = try lastNewline(before: newline).map { $0 + 1 } ?? 0
            let line = try bytes(at: start, count: Int(newline - start))
            if let record = try? decoder.decode(ChainRecord.self, from: Data(line)) {
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
        var offset = 0
        var failed: CInt?
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                failed = errno
                break
            }
            if written == 0 {
                failed = ENOSPC
                break
            }
            offset += written
        }
        if failed == nil {
            while fdatasync(fd) != 0 {
                if errno == EINTR { continue }
                failed = errno
                break
            }
        }
        guard let code = failed else { return }
        var cut = false
        while !cut {
            if ftruncate(fd, off_t(length)) == 0 { cut = true } else if errno != EINTR { break }
        }
        let left = cut ? "nothing of it was left in the file" : "a partial line may be left, which the next record cuts off"
        let advice = code == ENOSPC || code == EDQUOT ? "free space on its filesystem" : "check the disk"
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
        var built = directory.hasPrefix("/") ? "" : "."
        for component in directory.split(separator: "/") {
            built += "/\(component)"
            if mkdir(built, mode) != 0 && errno != EEXIST {
                throw IncidentLogError(description: "cannot create the directory \(built) for \(what): \(message(errno)); create it, or give another path")
            }
        }
    }

    func failure(_ what: String) -> IncidentLogError {
        IncidentLogError(description: "\(what) \(self.what) \(path): \(IncidentFile.message(errno))")
    }

    static func message(_ code: CInt) -> String { String(cString: strerror(code)) }

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
