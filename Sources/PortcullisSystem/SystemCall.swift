import Glibc
import SystemPackage

/// The POSIX plumbing every layer needs, in one place: a call retried on EINTR with its
/// errno captured right after it fails, `mkdir -p`, and the wall clock.
public enum SystemCall {
    /// Runs `call` (a system call that returns -1 and sets errno on failure) until it does
    /// not fail with EINTR; a failure carries the errno read at once, before anything
    /// (string formatting, another call) can change it.
    public static func retryingInterrupts<Value: BinaryInteger>(_ call: () -> Value) -> Result<Value, Errno> {
        while true {
            let value = call()
            if value != -1 { return .success(value) }
            let code = Errno(rawValue: errno)
            if code != .interrupted { return .failure(code) }
        }
    }

    /// Writes every byte, however many writes it takes; the errno of a failed write otherwise.
    ///
    /// A write that takes none of the bytes is reported as ENOSPC: retrying it could spin forever.
    ///
    /// The corresponding C function is `write`.
    public static func writeAll(_ fd: CInt, _ bytes: some Collection<UInt8>) -> Result<Void, Errno> {
        let bytes = Array(bytes)
        var offset = 0
        while offset < bytes.count {
            let written = retryingInterrupts { bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
            switch written {
            case .success(0): return .failure(.noSpace)
            case .success(let count): offset += count
            case .failure(let code): return .failure(code)
            }
        }
        return .success(())
    }

    /// Reads `count` bytes starting at `offset`, however many reads it takes, without moving
    /// the file offset; fewer only where the file ends first.
    ///
    /// - Parameters:
    ///   - fd: A descriptor open for reading, of a file that can seek.
    ///   - count: How many bytes to read at most.
    ///   - offset: Where in the file to start.
    /// - Returns: The bytes read, or the errno of the read that failed.
    ///
    /// The corresponding C function is `pread`.
    public static func readAll(_ fd: CInt, count: Int, at offset: Int64) -> Result<[UInt8], Errno> {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let result = retryingInterrupts {
                buffer.withUnsafeMutableBytes { raw in
                    pread(fd, raw.baseAddress.map { $0 + done }, count - done, off_t(offset) + off_t(done))
                }
            }
            switch result {
            case .success(0): return .success(Array(buffer.prefix(done)))
            case .success(let got): done += got
            case .failure(let code): return .failure(code)
            }
        }
        return .success(buffer)
    }

    /// Creates `path` and any missing parents with `mode` (`mkdir -p`); the directory that
    /// could not be made and why otherwise. A relative path stays relative to the working directory.
    ///
    /// The corresponding C function is `mkdir`.
    public static func makeDirectories(_ path: String, mode: mode_t) -> Result<Void, DirectoryError> {
        var built = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            if !built.isEmpty && built != "/" { built += "/" }
            built += component
            if mkdir(built, mode) != 0 {
                let code = errno
                if code != EEXIST { return .failure(DirectoryError(path: built, code: code)) }
            }
        }
        return .success(())
    }

    /// The directory part of `path` ("/a/b" for "/a/b/c"), or nil for a name in the working directory or at the root.
    public static func parent(of path: String) -> String? {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return nil }
        return String(path[..<slash])
    }
}

public struct DirectoryError: Error, Sendable, CustomStringConvertible {
    public let path: String
    public let code: CInt
    public var description: String { "cannot create directory \(path): \(String(cString: strerror(code)))" }
}

/// The wall clock, for records people read; expiries in the data plane use the kernel's.
public enum WallClock {
    public static func nowUnixMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}

/// Standard error, unbuffered, for one-line messages a person reads.
public struct StandardError: TextOutputStream {
    public init() {}

    public mutating func write(_ string: String) {
        _ = SystemCall.writeAll(2, Array(string.utf8))
    }
}

/// One line on standard error.
public func printError(_ line: String) {
    var stderr = StandardError()
    print(line, to: &stderr)
}

/// Local groups, read from /etc/group. The command line and the Wazuh response are linked
/// fully static, where glibc's getgrnam(3) would load NSS modules at run time and can crash;
/// the groups Portcullis needs (wazuh, portcullis) are local groups that packages create there.
public enum LocalGroups {
    public static func id(of name: String, in path: String = "/etc/group") -> gid_t? {
        guard let bytes = try? readWholeFile(path, maximumBytes: 16 << 20) else { return nil }
        for line in bytes.split(separator: UInt8(ascii: "\n")) {
            let fields = line.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
            guard fields.count >= 3, String(decoding: fields[0], as: UTF8.self) == name else { continue }
            return gid_t(String(decoding: fields[2], as: UTF8.self))
        }
        return nil
    }
}
