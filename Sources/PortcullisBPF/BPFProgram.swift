import CLibbpf
import Glibc

/// A loaded BPF program, named by an open file descriptor.
public struct BPFProgram: Sendable {
    public let fileDescriptor: CInt
    public let name: String

    init(fileDescriptor: CInt, name: String) {
        self.fileDescriptor = fileDescriptor
        self.name = name
    }

    /// Opens a pinned program: `bpf_obj_get(3)`.
    static func openPinned(at path: String, name: String) throws(DatapathError) -> BPFProgram {
        let fd = bpf_obj_get(path)
        guard fd >= 0 else { throw .syscall("cannot open pinned program \(path)", errno: errno) }
        return BPFProgram(fileDescriptor: fd, name: name)
    }

    func close() { _ = Glibc.close(fileDescriptor) }

    public struct TestRun: Sendable {
        /// The program's return code, e.g. `XDP_DROP`.
        public let returnValue: UInt32
        /// The frame as the program left it.
        public let output: [UInt8]
        /// Mean run time per repetition, as the kernel measured it.
        public let nanosecondsPerRun: UInt32
    }

    /// Runs the program on `packet` in the kernel without attaching it:
    /// `bpf_prog_test_run_opts(3)` (BPF_PROG_TEST_RUN).
    public func testRun(packet: [UInt8], repetitions: Int = 1) throws(DatapathError) -> TestRun {
        var output = [UInt8](repeating: 0, count: max(packet.count, 64) + 256)
        var options = bpf_test_run_opts()
        options.sz = MemoryLayout<bpf_test_run_opts>.size
        options.data_size_in = UInt32(packet.count)
        options.data_size_out = UInt32(output.count)
        options.repeat = Int32(repetitions)
        let status = packet.withUnsafeBytes { input in
            output.withUnsafeMutableBytes { out in
                options.data_in = input.baseAddress
                options.data_out = out.baseAddress
                return bpf_prog_test_run_opts(fileDescriptor, &options)
            }
        }
        guard status == 0 else {
            throw .syscall("cannot test-run program \(name)", errno: errno)
        }
        return TestRun(
            returnValue: options.retval,
            output: Array(output.prefix(Int(options.data_size_out))),
            nanosecondsPerRun: options.duration)
    }
}
