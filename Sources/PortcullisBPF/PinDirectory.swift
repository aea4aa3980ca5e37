import CLibbpf
import Glibc
import PortcullisCore
import PortcullisSystem

/// The bpffs directory that holds Portcullis's maps, programs and XDP links.
///
/// Everything that must outlive a process lives here, so the directory is the
/// state: a new process finds the blocks by opening the pins.
public struct PinDirectory: Sendable, Equatable {
    public static let defaultPath = "/sys/fs/bpf/portcullis"
    public static let environmentVariable = "PORTCULLIS_PIN_DIR"

    public let path: String

    public init(path: String) {
        var path = path
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        self.path = path
    }

    /// `--pin-dir` wins over `PORTCULLIS_PIN_DIR`, which wins over the default.
    public static func resolve(option: String?) -> PinDirectory {
        PinDirectory(path: setting(option: option, environment: environmentVariable) ?? defaultPath)
    }

    func path(of name: String) -> String { "\(path)/\(name)" }

    func contains(_ name: String) -> Bool { access(path(of: name), F_OK) == 0 }

    var exists: Bool { access(path, F_OK) == 0 }

    /// Fails unless the directory (or the nearest existing parent) is on bpffs:
    /// pins anywhere else would silently not be pins.
    func requireBPFFilesystem() throws(DatapathError) {
        // Without this, an unreadable directory would look like an empty blocklist.
        let unreadable = access(path, F_OK) == 0 ? access(path, R_OK | X_OK) != 0 : errno == EACCES
        if unreadable {
            throw DatapathError(
                .permission,
                "cannot read \(path): permission denied; run as root (Portcullis needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)",
                errno: .permissionDenied)
        }
        var probe = path
        while access(probe, F_OK) != 0, let slash = probe.lastIndex(of: "/"), slash != probe.startIndex {
            probe = String(probe[..<slash])
        }
        var fs = statfs()
        guard statfs(probe, &fs) == 0 else {
            throw .syscall("cannot inspect \(probe)", errno: errno)
        }
        let bpfMagic: Int = 0xCAFE_4A11
        guard Int(fs.f_type) == bpfMagic else {
            let mountPoint = probe == path ? probe : "\(probe) (the nearest existing parent of \(path))"
            throw DatapathError(
                .unsupported,
                "\(mountPoint) is not on a BPF filesystem; mount one with `mount -t bpf bpf /sys/fs/bpf` or choose a pin directory under it with --pin-dir")
        }
    }

    /// Creates the directory and its parents below the bpffs mount point.
    func create(_ relative: String? = nil) throws(DatapathError) {
        let target = relative.map(path(of:)) ?? path
        if case .failure(let error) = SystemCall.makeDirectories(target, mode: 0o700) {
            throw .syscall("cannot create directory \(error.path)", errno: error.code)
        }
    }

    /// Names of the entries of a subdirectory, without "." and "..".
    func entries(of relative: String) -> [String] {
        guard let directory = opendir(path(of: relative)) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in
                String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Every pinned XDP link of an exclusive attachment, `links/<namespace dir>/<interface>`.
    func linkPins() -> [LinkPin] { attachmentPins(.exclusive) }

    /// Every pinned program of a cooperative attachment, `cooperative/<namespace dir>/<interface>`.
    func cooperativePins() -> [LinkPin] { attachmentPins(.cooperative) }

    private func attachmentPins(_ sharing: XDPSharing) -> [LinkPin] {
        let root = LinkPin.root(sharing)
        return entries(of: root).flatMap { directory in
            entries(of: "\(root)/\(directory)").map { LinkPin(directory: directory, file: $0, sharing: sharing) }
        }
    }

    /// Takes the writer lock: an exclusive `flock(2)` on the directory itself.
    ///
    /// Every process that changes the maps holds it, so a sweep that decided an
    /// entry had expired cannot delete it after another process refreshed it.
    func lockForWriting() throws(DatapathError) -> WriterLock {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .syscall("cannot open pin directory \(path)", errno: errno) }
        if case .failure(let code) = SystemCall.retryingInterrupts({ flock(fd, LOCK_EX) }) {
            close(fd)
            throw .syscall("cannot lock pin directory \(path)", errno: code.rawValue)
        }
        return WriterLock(fileDescriptor: fd)
    }
}

/// Held while a process writes the maps; released when it goes out of scope
/// or the process dies (the kernel drops a dead process's flocks).
public final class WriterLock {
    private let fileDescriptor: CInt
    init(fileDescriptor: CInt) { self.fileDescriptor = fileDescriptor }
    deinit { close(fileDescriptor) }
}
