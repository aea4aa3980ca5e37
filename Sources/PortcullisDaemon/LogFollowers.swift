import Foundation
import Glibc
import Logging
import PortcullisConfig
import PortcullisDetector

/// Lines from a log file as it grows, like `tail -F`: it starts at the end,
/// follows the file across rotation (a new file at the path: the rest of the
/// old one is read first) and truncation (read again from the start), and
/// waits for a file that does not exist yet. As with `tail -F`, a truncation is
/// seen as the file growing shorter between two polls (200 ms apart).
struct FileFollower {
    let path: String
    var pollInterval: Duration = .milliseconds(200)

    func lines(logger: Logger) -> AsyncStream<String> {
        AsyncStream { continuation in
            let task = Task.detached {
                var fd: CInt = -1
                var inode: ino_t = 0
                var offset: off_t = 0
                var assembler = LineAssembler()
                var buffer = [UInt8](repeating: 0, count: 65_536)
                var firstOpen = true
                defer { if fd >= 0 { close(fd) } }

                func drain() {
                    while fd >= 0 {
                        let count = read(fd, &buffer, buffer.count)
                        if count <= 0 { return }
                        offset += off_t(count)
                        // Overlong lines are dropped whole, tail included (see LineAssembler).
                        for line in assembler.lines(in: buffer[0..<count]) { continuation.yield(line) }
                    }
                }

                while !Task.isCancelled {
                    var current = stat()
                    let exists = stat(path, &current) == 0
                    if fd >= 0 && exists && current.st_ino != inode {
                        drain()  // rotated: finish the old file first
                        close(fd)
                        fd = -1
                        logger.info("\(path) was rotated; following the new file")
                    }
                    if fd < 0 && exists {
                        fd = open(path, O_RDONLY | O_CLOEXEC)
                        if fd >= 0 {
                            inode = current.st_ino
                            // Only what is written from now on counts, except in a file that appears later.
                            offset = firstOpen ? lseek(fd, 0, SEEK_END) : 0
                            assembler.reset()
                        }
                        firstOpen = false
                    }
                    if fd >= 0 {
                        var opened = stat()
                        if fstat(fd, &opened) == 0 && opened.st_size < offset {
                            logger.info("\(path) was truncated; reading it from the start")
                            offset = lseek(fd, 0, SEEK_SET)
                            assembler.reset()
                        }
                        drain()
                    }
                    try? await Task.sleep(for: pollInterval)
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

/// Lines of `journalctl --follow --output=json` for one unit (or every sshd
/// message), restarted if journalctl exits.
struct JournalFollower {
    let unit: String?

    func lines(logger: Logger) -> AsyncStream<String> {
        AsyncStream { continuation in
            let task = Task.detached {
                while !Task.isCancelled {
                    let process = Process()
                    process.executableURL = URL(fileURLWithPath: "/usr/bin/journalctl")
                    var arguments = ["--follow", "--output=json", "--lines=0", "--no-pager"]
                    if let unit {
                        arguments.append("--unit=\(unit)")
                    } else {
                        // sshd's messages by its process name, or by the identifier it logs through syslog under.
                        arguments += ["_COMM=sshd", "_COMM=sshd-session", "+", "SYSLOG_IDENTIFIER=sshd", "SYSLOG_IDENTIFIER=sshd-session"]
                    }
                    process.arguments = arguments
                    let output = Pipe()
                    process.standardOutput = output
                    process.standardError = FileHandle.nullDevice
                    do {
                        try process.run()
                    } catch {
                        logger.error("cannot run journalctl: \(error); retrying in 5 s")
                        try? await Task.sleep(for: .seconds(5))
                        continue
                    }
                    let handle = output.fileHandleForReading
                    await withTaskCancellationHandler {
                        // A journal entry is JSON around the message: allow for its escaping.
                        var assembler = LineAssembler(maximumLineBytes: 4 * LineAssembler.defaultMaximumLineBytes)
                        while true {
                            let chunk = handle.availableData
                            if chunk.isEmpty { break }
                            for line in assembler.lines(in: chunk) { continuation.yield(line) }
                        }
                    } onCancel: {
                        process.terminate()
                    }
                    process.waitUntilExit()
                    if Task.isCancelled { break }
                    logger.warning("journalctl exited (\(process.terminationStatus)); restarting it in 2 s")
                    try? await Task.sleep(for: .seconds(2))
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

extension DaemonConfiguration.Detector.Source {
    /// The messages of this source: syslog lines from files, JSON entries from the journal.
    func messages(logger: Logger) -> AsyncStream<LogMessage> {
        switch self {
        case .file(let path, let program):
            let lines = FileFollower(path: path).lines(logger: logger)
            return AsyncStream { continuation in
                let task = Task {
                    for await line in lines {
                        let message = program.map { LogMessage(program: $0, text: line, line: line) } ?? LogMessage.syslog(Substring(line))
                        if let message { continuation.yield(message) }
                    }
                    continuation.finish()
                }
                continuation.onTermination = { _ in task.cancel() }
            }
        case .journal(let unit):
            let lines = JournalFollower(unit: unit).lines(logger: logger)
            return AsyncStream { continuation in
                let task = Task {
                    for await line in lines { if let message = LogMessage.journal(Substring(line)) { continuation.yield(message) } }
                    continuation.finish()
                }
                continuation.onTermination = { _ in task.cancel() }
            }
        }
    }
}
