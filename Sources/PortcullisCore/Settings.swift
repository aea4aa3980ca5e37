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
    let fd = path == "-" ? 0 : open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw FileReadError(path: path, code: errno) }
    defer { if fd != 0 { close(fd) } }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let count = read(fd, &chunk, chunk.count)
        if count == 0 { return bytes }
        if count < 0 {
            if errno == EINTR { continue }
            throw FileReadError(path: path, code: errno)
        }
        bytes.append(contentsOf: chunk[0..<count])
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces, tabs and line ends.
    public var trimmedSpace: String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}
