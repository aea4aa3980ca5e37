import Glibc
import PortcullisSystem
import Synchronization

// What the signal handlers need, set up before any handler is installed: a handler may only
// make async-signal-safe calls, so it finds the saved terminal settings and the pipe to the main
// loop through plain memory, never through Swift's lazy globals or allocation.
nonisolated(unsafe) private let savedTerminal: UnsafeMutablePointer<termios> = {
    let pointer = UnsafeMutablePointer<termios>.allocate(capacity: 1)
    pointer.initialize(to: termios())
    return pointer
}()
private let terminalIsRaw = Atomic<Bool>(false)
private let signalPipe = Atomic<Int32>(-1)

/// Leaves the alternate screen, shows the cursor and puts back the terminal's settings, with
/// async-signal-safe calls only: from a normal exit and from a fatal signal alike.
private func restoreTerminalNow() {
    guard terminalIsRaw.exchange(false, ordering: .sequentiallyConsistent) else { return }
    let leave: StaticString = "\u{1b}[?25h\u{1b}[?1049l"
    _ = write(1, leave.utf8Start, leave.utf8CodeUnitCount)
    _ = tcsetattr(0, TCSANOW, savedTerminal)
}

/// The terminal as the live view uses it: raw keys, the alternate screen, the size, and every
/// way out restoring what it found (quit, Ctrl-C, SIGTERM, SIGHUP, a crash).
final class TerminalSession {
    enum Event: Equatable {
        case keys([UInt8])
        case resized
        /// SIGINT, SIGTERM, SIGHUP or SIGQUIT, or the terminal went away.
        case ended
        case timeout
    }

    private let readEnd: Int32
    private let writeEnd: Int32

    /// Fails, changing nothing, unless standard input and output are both a terminal.
    init() throws(RuntimeFailure) {
        guard isatty(0) == 1, isatty(1) == 1 else {
            throw RuntimeFailure("top draws on a terminal; for scripts use --once or --json")
        }
        guard tcgetattr(0, savedTerminal) == 0 else {
            throw RuntimeFailure("cannot read the terminal's settings: \(String(cString: strerror(errno)))")
        }
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else {
            throw RuntimeFailure("cannot make a pipe for signals: \(String(cString: strerror(errno)))")
        }
        for end in ends {
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
            // A handler must never block on a full pipe.
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
        }
        (readEnd, writeEnd) = (ends[0], ends[1])
        signalPipe.store(writeEnd, ordering: .sequentiallyConsistent)

        var raw = savedTerminal.pointee
        // No echo, no line editing, no signals from keys (Ctrl-C arrives as a key and quits
        // through the same path as q), no flow control; output processing stays.
        raw.c_lflag &= ~tcflag_t(ECHO | ICANON | ISIG | IEXTEN)
        raw.c_iflag &= ~tcflag_t(IXON | ICRNL)
        withUnsafeMutableBytes(of: &raw.c_cc) { cc in
            cc[Int(VMIN)] = 1
            cc[Int(VTIME)] = 0
        }
        Self.install()
        guard tcsetattr(0, TCSANOW, &raw) == 0 else {
            throw RuntimeFailure("cannot set the terminal to raw input: \(String(cString: strerror(errno)))")
        }
        terminalIsRaw.store(true, ordering: .sequentiallyConsistent)
        write("\u{1b}[?1049h\u{1b}[?25l\u{1b}[H\u{1b}[2J")
    }

    deinit {
        restore()
        close(readEnd)
        close(writeEnd)
    }

    /// Idempotent; also what the signal handlers call.
    func restore() { restoreTerminalNow() }

    private static func install() {
        let notify: @convention(c) (Int32) -> Void = { signal in
            var byte = UInt8(truncatingIfNeeded: signal)
            _ = Glibc.write(signalPipe.load(ordering: .relaxed), &byte, 1)
        }
        let fatal: @convention(c) (Int32) -> Void = { _ in
            // SA_RESETHAND: once the terminal is back, the fault recurs with its default action.
            restoreTerminalNow()
        }
        func handle(_ signals: [Int32], with handler: @convention(c) (Int32) -> Void, flags: Int32) {
            for number in signals {
                var action = sigaction()
                action.__sigaction_handler.sa_handler = handler
                action.sa_flags = flags
                sigemptyset(&action.sa_mask)
                sigaction(number, &action, nil)
            }
        }
        handle([SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH], with: notify, flags: SA_RESTART)
        handle([SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP], with: fatal, flags: Int32(bitPattern: UInt32(SA_RESETHAND)))
        // Stopping with the terminal raw would leave the shell unusable; a write to a terminal
        // that went away is an error to end on, not a signal.
        signal(SIGTSTP, SIG_IGN)
        signal(SIGPIPE, SIG_IGN)
    }

    /// Waits for a key, a signal or `deadline`, whichever comes first.
    func wait(until deadline: ContinuousClock.Instant) -> Event {
        let left = deadline - ContinuousClock.now
        let milliseconds = max(0, Int32(min(60_000, left.fractionalMilliseconds.rounded(.up))))
        var descriptors = [pollfd(fd: 0, events: Int16(POLLIN), revents: 0), pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)]
        let ready = poll(&descriptors, 2, milliseconds)
        guard ready > 0 else { return ready < 0 && errno != EINTR ? .ended : .timeout }
        if descriptors[1].revents & Int16(POLLIN) != 0 {
            var signals = [UInt8](repeating: 0, count: 16)
            let count = read(readEnd, &signals, signals.count)
            let received = signals.prefix(max(0, count))
            if received.contains(where: { Int32($0) != SIGWINCH }) { return .ended }
            return .resized
        }
        if descriptors[0].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
            var bytes = [UInt8](repeating: 0, count: 64)
            let count = read(0, &bytes, bytes.count)
            if count <= 0 { return count < 0 && errno == EINTR ? .timeout : .ended }
            return .keys(Array(bytes.prefix(count)))
        }
        return .timeout
    }

    /// Columns and rows, from TIOCGWINSZ; 80x24 when the terminal does not say.
    var size: (width: Int, height: Int) {
        var window = winsize()
        if ioctl(1, UInt(TIOCGWINSZ), &window) == 0, window.ws_col > 0, window.ws_row > 0 {
            return (Int(window.ws_col), Int(window.ws_row))
        }
        return (80, 24)
    }

    /// Draws a frame over the last one: each line cleared to its end, nothing below the last.
    /// No line break after the last line, so a full last row never scrolls the screen.
    func draw(_ lines: [String]) {
        write("\u{1b}[H" + lines.joined(separator: "\u{1b}[K\r\n") + "\u{1b}[K\u{1b}[J")
    }

    /// False once the terminal is gone.
    @discardableResult
    func write(_ text: String) -> Bool {
        if case .success = SystemCall.writeAll(1, text.utf8) { return true }
        return false
    }
}

extension Duration {
    var fractionalMilliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }
}
