import Glibc
import SystemPackage

/// A POSIX thread that runs one body and hands back its result when joined:
/// `pthread_create(3)` and `pthread_join(3)`.
///
/// For work that must overlap a blocking loop on the caller's own thread (kernel map writes
/// beside a database transaction) without a dispatch library or the cooperative pool, which
/// must never block. Join it exactly once; the body's result comes back from `join()`.
public final class JoinableThread<Result: Sendable>: @unchecked Sendable {
    // Written by the thread before it exits and read only after pthread_join returns, which
    // orders the two: no lock is needed.
    private var result: Result?
    private let body: @Sendable () -> Result
    private var thread = pthread_t()
    private var joined = false

    /// Starts `body` on a new thread; the errno of pthread_create when it cannot be started.
    public static func start(_ body: @escaping @Sendable () -> Result) -> Swift.Result<JoinableThread, Errno> {
        let started = JoinableThread(body)
        let entry = Unmanaged.passRetained(ThreadEntry { started.result = started.body() })
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, runThreadEntry, entry.toOpaque())
        guard status == 0 else {
            entry.release()
            return .failure(Errno(rawValue: status))
        }
        started.thread = thread
        return .success(started)
    }

    private init(_ body: @escaping @Sendable () -> Result) {
        self.body = body
    }

    /// Waits for the body to finish and returns what it returned.
    public func join() -> Result {
        precondition(!joined, "a JoinableThread is joined once")
        joined = true
        pthread_join(thread, nil)
        guard let result else { preconditionFailure("the thread ended without a result") }
        return result
    }

    deinit {
        // A thread never joined would otherwise keep its resources until the process ends.
        if !joined { pthread_detach(thread) }
    }
}

/// What a new thread runs: a box a C entry point can take as its one pointer.
private final class ThreadEntry {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

private func runThreadEntry(_ context: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    guard let context else { return nil }
    Unmanaged<ThreadEntry>.fromOpaque(context).takeRetainedValue().run()
    return nil
}
