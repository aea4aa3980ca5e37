import Foundation
import Glibc
@testable import PortcullisIncidents

/// A temporary directory holding an incident log and a state directory, removed at the end.
final class Scratch {
    let directory: String
    var logPath: String { directory + "/log/incidents.jsonl" }
    var stateDirectory: String { directory + "/state" }
    var log: IncidentLog { IncidentLog(path: logPath, stateDirectory: stateDirectory) }

    init() {
        directory = "/tmp/portcullis-incidents-test-\(UUID().uuidString.prefix(8).lowercased())"
        mkdir(directory, 0o700)
        mkdir(directory + "/log", 0o750)
    }

    deinit { remove(directory) }

    func remove(_ path: String) {
        var status = stat()
        guard lstat(path, &status) == 0 else { return }
        if status.st_mode & S_IFMT == S_IFDIR {
            if let entries = try? FileManager.default.contentsOfDirectory(atPath: path) {
                for entry in entries { remove(path + "/" + entry) }
            }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    /// The records written at fixed times, so lines are the same from run to run.
    static func incident(_ n: Int, reason: String? = nil) -> Incident {
        Incident(timeUnixMs: 1_780_000_000_000 + Int64(n) * 1000, action: .block, target: "198.51.100.\(n)", source: "cli",
                 reason: reason ?? "test \(n)", requestedSeconds: 100)
    }

    func lines(_ path: String? = nil) -> [String] {
        let text = (try? String(contentsOfFile: path ?? logPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).dropLast(text.hasSuffix("\n") ? 1 : 0)
    }

    func write(_ lines: [String], to path: String? = nil, newlineAtEnd: Bool = true) {
        let text = lines.joined(separator: "\n") + (newlineAtEnd && !lines.isEmpty ? "\n" : "")
        FileManager.default.createFile(atPath: path ?? logPath, contents: Data(text.utf8))
    }

    func bytes(_ path: String? = nil) -> [UInt8] {
        Array(FileManager.default.contents(atPath: path ?? logPath) ?? Data())
    }
}
