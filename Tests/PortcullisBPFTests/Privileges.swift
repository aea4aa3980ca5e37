import CLibbpf
import Foundation
import Glibc
import Testing

/// Whether this process can load BPF programs and pin them: root, with bpffs
/// mounted at /sys/fs/bpf. Tests that need it are skipped, with this reason, elsewhere.
enum Privileges {
    static let canUseBPF: Bool = {
        guard geteuid() == 0 else { return false }
        var fs = statfs()
        guard statfs("/sys/fs/bpf", &fs) == 0 else { return false }
        return Int(fs.f_type) == 0xCAFE_4A11
    }()

    static let reason: Comment = "needs root and bpffs at /sys/fs/bpf (run as root; CI does)"
}
