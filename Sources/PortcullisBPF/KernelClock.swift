import CLibbpf
import Glibc

/// Converts between the jiffies the XDP program compares and the durations and
/// wall-clock times people read.
///
/// One reading pairs the kernel's jiffies with the wall clock at the same
/// moment; the tick rate (HZ) is fixed for a booted kernel and kept in the
/// pinned meta map. A jiffy is at most 10 ms, so expiries are exact to well under
/// a second.
public struct ClockReading: Sendable {
    public let jiffies: UInt64
    public let jiffiesPerSecond: UInt32
    /// Wall-clock time of the reading, Unix epoch nanoseconds.
    public let unixNanoseconds: Int64

    /// The first jiffy at which a block of `duration` no longer applies.
    public func expiry(after duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        let hz = UInt64(jiffiesPerSecond)
        let whole = UInt64(max(seconds, 0)).multipliedReportingOverflow(by: hz)
        let fraction = UInt64(max(attoseconds, 0) / 1_000_000_000) * hz / 1_000_000_000
        // Round up, so a block never ends before the time asked for.
        let ticks = whole.overflow ? UInt64.max / 2 : whole.partialValue + fraction + 1
        return jiffies &+ ticks
    }

    /// Time left until `expiry`; zero or negative once it has passed.
    public func remaining(until expiry: UInt64) -> Duration {
        let ticks = Int64(bitPattern: expiry &- jiffies)
        let hz = Int64(jiffiesPerSecond)
        return .seconds(ticks / hz) + .nanoseconds((ticks % hz) * 1_000_000_000 / hz)
    }

    /// The wall-clock time, Unix milliseconds, at which jiffies reach `expiry`.
    public func unixMilliseconds(at expiry: UInt64) -> Int64 {
        let (seconds, attoseconds) = remaining(until: expiry).components
        // Saturate rather than trap: a far-off expiry is as good as never.
        let (milliseconds, overflow) = seconds.multipliedReportingOverflow(by: 1000)
        guard !overflow else { return seconds < 0 ? .min / 2 : .max / 2 }
        return (unixNanoseconds / 1_000_000).addingReportingOverflow(milliseconds + attoseconds / 1_000_000_000_000_000).partialValue
    }

    public var unixMilliseconds: Int64 { unixNanoseconds / 1_000_000 }

    public func isExpired(_ expiry: UInt64) -> Bool {
        expiry != PORTCULLIS_PERMANENT && jiffies >= expiry
    }
}

/// The clock probe program, run through BPF_PROG_TEST_RUN.
struct KernelClock {
    let probe: BPFProgram

    struct Sample {
        let jiffies: UInt64
        let monotonicNanoseconds: UInt64
        let configuredHZ: UInt64
    }

    func sample() throws(DatapathError) -> Sample {
        let frame = [UInt8](repeating: 0, count: 64)
        let run = try probe.testRun(packet: frame)
        guard run.returnValue == UInt32(XDP_PASS.rawValue), run.output.count >= MemoryLayout<portcullis_clock_sample>.size else {
            throw DatapathError(.system, "the kernel clock probe returned \(run.returnValue); the pinned program is not Portcullis's")
        }
        let sample = run.output.withUnsafeBytes { $0.loadUnaligned(as: portcullis_clock_sample.self) }
        return Sample(jiffies: sample.jiffies, monotonicNanoseconds: sample.monotonic_ns, configuredHZ: sample.config_hz)
    }

    func read(jiffiesPerSecond: UInt32) throws(DatapathError) -> ClockReading {
        let sample = try sample()
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return ClockReading(
            jiffies: sample.jiffies, jiffiesPerSecond: jiffiesPerSecond,
            unixNanoseconds: Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec))
    }

    /// The kernel's HZ: from its kconfig when libbpf could read it, otherwise
    /// measured between two jiffy edges against CLOCK_MONOTONIC.
    func jiffiesPerSecond() throws(DatapathError) -> UInt32 {
        let first = try sample()
        if first.configuredHZ > 0 && first.configuredHZ < 100_000 { return UInt32(first.configuredHZ) }
        func nextEdge(after jiffies: UInt64) throws(DatapathError) -> Sample {
            for _ in 0..<2_000_000 {
                let next = try sample()
                if next.jiffies != jiffies { return next }
            }
            throw DatapathError(.unsupported, "the kernel's jiffies did not advance; cannot calibrate the block clock")
        }
        let start = try nextEdge(after: first.jiffies)
        var end = start
        while end.monotonicNanoseconds - start.monotonicNanoseconds < 200_000_000 {
            end = try nextEdge(after: end.jiffies)
        }
        let ticks = Double(end.jiffies - start.jiffies)
        let seconds = Double(end.monotonicNanoseconds - start.monotonicNanoseconds) / 1e9
        return UInt32((ticks / seconds).rounded())
    }
}
