import Glibc

/// Where a path-like setting comes from: the command-line option, else the
/// environment variable, else nothing (the caller's default).
public func setting(option: String?, environment variable: String) -> String? {
    if let option, !option.isEmpty { return option }
    guard let value = getenv(variable), let text = String(validatingCString: value), !text.isEmpty else { return nil }
    return text
}

/// A file that could not be read, with the errno that says why.
public struct FileReadError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let code: CInt
    public var description: String { "cannot read \(path): \(String(cString: strerror(code)))" }
}

/// Every byte of a file, or of standard input for `-`.
public func readWholeFile(_ path: String) throws(FileReadError) -> [UInt8] {
    let fd: CInt
    if path == "-" {
        fd = 0
    } else {
        switch SystemCall.retryingInterrupts({ open(path, O_RDONLY | O_CLOEXEC) }) {
        case .success(let opened): fd = opened
        case .failure(let code): throw FileReadError(path: path, code: code.rawValue)
        }
    }
    defer { if fd != 0 { close(fd) } }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        switch SystemCall.retryingInterrupts({ read(fd, &chunk, chunk.count) }) {
        case .success(0): return bytes
        case .success(let count): bytes.append(contentsOf: chunk[0..<count])
        case .failure(let code): throw FileReadError(path: path, code: code.rawValue)
        }
    }
}
