import CLibbpf
import Foundation
import PortcullisBPF
import PortcullisCore

/// A Portcullis state in its own pin directory, removed when the test is done
/// with it, also when the test fails.
final class ScratchState {
    let pins: PinDirectory
    let datapath: Datapath

    init(capacity: Capacity = Capacity(exact: 4096, prefixes: 256)) throws {
        pins = PinDirectory(path: "/sys/fs/bpf/portcullis-test-\(UUID().uuidString.prefix(8).lowercased())")
        datapath = try Datapath.open(pins, creatingWith: capacity)
    }

    deinit { _ = try? Datapath.purge(pins) }

    /// The XDP program's verdict on `frame`, run in the kernel through BPF_PROG_TEST_RUN.
    func verdict(_ frame: [UInt8]) throws -> Verdict {
        let run = try datapath.xdpProgram.testRun(packet: frame)
        return Verdict(rawValue: run.returnValue) ?? .other
    }

    func block(_ text: String, for duration: Duration? = nil, reason: String = "") throws -> BlockOutcome {
        try datapath.block(BlockRequest(target: try BlockTarget.parse(text).target, duration: duration, reason: reason))
    }

    func entry(_ text: String) throws -> BlockEntry? {
        try datapath.entry(for: try BlockTarget.parse(text).target)
    }
}

enum Verdict: UInt32 {
    case aborted = 0, drop = 1, pass = 2, tx = 3, redirect = 4, other = 999
}
