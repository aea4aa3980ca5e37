import Glibc

/// Where a path-like setting comes from: the command-line option, else the
/// environment variable, else nothing (the caller's default).
public func setting(option: String?, environment variable: String) -> String? {
    if let option, !option.isEmpty { return option }
    guard let value = getenv(variable), let text = String(validatingCString: value), !text.isEmpty else { return nil }
    return text
}

/// A file that could not be read: the errno that says why, or a bound it broke.
public struct FileReadError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let code: CInt
    /// Set when the file is not one that may be read (not regular, too large), rather than unreadable.
    public let problem: String?

    public init(path: String, code: CInt, problem: String? = nil) {
        (self.path, self.code, self.problem) = (path, code, problem)
    }

    public var description: String {
        let name = path == "-" ? "standard input" : path
        return problem.map { "\(name) \($0)" } ?? "cannot read \(name): \(String(cString: strerror(code)))"
    }
}

/// Every byte of a regular file, or of standard input for `-`, at most `maximumBytes`.
/// Anything else (a device, a FIFO, a directory) is refused at once, without waiting for
/// a writer or reading an endless stream.
public func readWholeFile(_ path: String, maximumBytes: Int) throws(FileReadError) -> [UInt8] {
    let fd: CInt
    if path == "-" {
        fd = 0
    } else {
        // O_NONBLOCK: opening a FIFO with no writer returns at once instead of hanging.
        switch SystemCall.retryingInterrupts({ open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY) }) {
        case .success(let opened): fd = opened
        case .failure(let code): throw FileReadError(path: path, code: code.rawValue)
        }
    }
    defer { if fd != 0 { close(fd) } }
    if fd != 0 {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw FileReadError(path: path, code: errno) }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw FileReadError(path: path, code: EINVAL, problem: "is not a regular file (give a file, or - for standard input)")
        }
        guard info.st_size <= maximumBytes else {
            throw FileReadError(path: path, code: EFBIG, problem: "is larger than \(ByteSize(maximumBytes)) (\(info.st_size) bytes)")
        }
    }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        switch SystemCall.retryingInterrupts({ read(fd, &chunk, chunk.count) }) {
        case .success(0): return bytes
        case .success(let count):
            bytes.append(contentsOf: chunk[0..<count])
            if bytes.count > maximumBytes {
                throw FileReadError(path: path, code: EFBIG, problem: "is larger than \(ByteSize(maximumBytes))")
            }
        case .failure(let code): throw FileReadError(path: path, code: code.rawValue)
        }
    }
}

/// Every byte of a file, for files Portcullis writes itself (records it keeps).
public func readWholeFile(_ path: String) throws(FileReadError) -> [UInt8] {
    try readWholeFile(path, maximumBytes: Int.max)
}

/// A size for a message: "16 MiB".
struct ByteSize: CustomStringConvertible {
    let bytes: Int
    init(_ bytes: Int) { self.bytes = bytes }
    var description: String {
        bytes >= 1 << 20 && bytes % (1 << 20) == 0 ? "\(bytes >> 20) MiB" : "\(bytes) bytes"
    }
}
