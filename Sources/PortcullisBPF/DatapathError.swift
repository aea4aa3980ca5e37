import Glibc
import SystemPackage

/// A failure of the data plane or of its pinned state, phrased for the person
/// who has to act on it: what failed, the kernel's errno where there is one, and
/// what to do next.
public struct DatapathError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// Missing privileges (EPERM/EACCES from the bpf syscall, or not root).
        case permission
        /// The kernel or the machine lacks something Portcullis needs (bpffs, BTF, XDP mode).
        case unsupported
        /// An interface, namespace, pin or entry that does not exist.
        case notFound
        /// A map reached the capacity fixed at first load.
        case full
        /// The request would break a safety rule (allowlist, loopback) or the state is not ours.
        case refused
        /// Anything else the kernel said no to.
        case system
    }

    public let kind: Kind
    public let message: String
    public let errno: Errno?

    public init(_ kind: Kind, _ message: String, errno: Errno? = nil) {
        self.kind = kind
        self.message = message
        self.errno = errno
    }

    public var description: String { message }

    /// Builds the error for a failed libbpf or bpf(2) call from its errno,
    /// with the advice that errno calls for in a BPF operation.
    static func syscall(_ operation: String, errno code: CInt) -> DatapathError {
        let errno = Errno(rawValue: code)
        let text = "\(operation): \(errno.description)"
        switch errno {
        case .notPermitted, .permissionDenied:
            return DatapathError(.permission, text + "; run as root (Portcullis needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)", errno: errno)
        case .noSuchFileOrDirectory: return DatapathError(.notFound, text, errno: errno)
        case Errno(rawValue: E2BIG): return DatapathError(.full, text, errno: errno)
        case .notSupported: return DatapathError(.unsupported, text, errno: errno)
        default: return DatapathError(.system, text, errno: errno)
        }
    }
}
