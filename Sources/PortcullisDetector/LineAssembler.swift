/// Splits a followed log into lines, refusing lines longer than a limit whole.
///
/// Dropping only the head of an overlong line is not enough: its tail, read as a line of
/// its own, could start with `sshd[1]: Invalid user x from 192.0.2.1` and be taken for
/// sshd's, so another program (or a user who can write to the log) could have any address
/// blocked. An overlong line is therefore discarded up to and including its newline.
public struct LineAssembler: Sendable {
    /// sshd's longest lines are a few hundred bytes; syslog daemons cap theirs at 8 KiB or 64 KiB.
    public static let defaultMaximumLineBytes = 64 * 1024

    public let maximumLineBytes: Int
    private var pending: [UInt8] = []
    private var discarding = false
    /// How many overlong lines were discarded, for the log.
    public private(set) var discardedLines = 0

    public init(maximumLineBytes: Int = defaultMaximumLineBytes) { self.maximumLineBytes = maximumLineBytes }

    /// The complete lines in `bytes` (with what came before), without their `\n` or `\r\n`.
    public mutating func lines<Bytes: Collection<UInt8>>(in bytes: Bytes) -> [String] {
        var lines: [String] = []
        for byte in bytes {
            if byte == 10 {
                if !discarding {
                    if pending.last == 13 { pending.removeLast() }
                    lines.append(String(decoding: pending, as: UTF8.self))
                }
                pending.removeAll(keepingCapacity: true)
                discarding = false
            } else if !discarding {
                pending.append(byte)
                if pending.count > maximumLineBytes {
                    discarding = true
                    discardedLines += 1
                    pending.removeAll(keepingCapacity: false)
                }
            }
        }
        return lines
    }

    /// The last line when the input ended without a newline (unless it was overlong).
    public mutating func finish() -> String? {
        defer { reset() }
        return discarding || pending.isEmpty ? nil : String(decoding: pending, as: UTF8.self)
    }

    /// Forgets a partial line (after a truncation or a rotation).
    public mutating func reset() {
        pending.removeAll()
        discarding = false
    }
}
