import Foundation
import Glibc
import Hummingbird
import HummingbirdTesting
import Logging
import PortcullisBPF
import PortcullisConfig
import PortcullisCore
@testable import PortcullisDaemon
import Testing

/// Changes whose incident record cannot be written, the log's filesystem being full: each
/// answers 200, since it is in force, and says in `incidentRecord` that its record is missing;
/// the daemon counts every such write.
@Suite(.enabled(if: BPFAvailability.usable, "needs root and bpffs (run as root; CI does)"), .serialized)
struct MissingRecordTests {
    @Test func everyChangeStandsAndSaysItsRecordIsMissing() async throws {
        let id = UUID().uuidString.prefix(8).lowercased()
        let directory = "/tmp/portcullis-test-api-record-\(id)"
        var configuration = DaemonConfiguration()
        configuration.pinDirectory = "/sys/fs/bpf/portcullis-test-api-\(id)"
        configuration.incidentLog = directory + "/log/incidents.jsonl"
        configuration.stateDirectory = directory + "/state"
        configuration.capacityExact = 1024
        configuration.capacityPrefixes = 64
        let full = try FullFilesystem(at: directory + "/log")
        defer {
            full.unmount()
            try? FileManager.default.removeItem(atPath: configuration.pinDirectory)
            try? FileManager.default.removeItem(atPath: directory)
        }
        let metrics = DaemonMetrics()
        #expect(Self.failures(metrics) == 0, "the counter is there before anything fails")
        let keeper = try BlocklistKeeper(configuration: configuration, metrics: metrics, logger: Logger(label: "test"))
        let application = Application(router: ControlAPI.router(keeper: keeper))
        let log = configuration.incidentLog
        let pins = PinDirectory(path: configuration.pinDirectory)

        try await application.test(.router) { client in
            func missing(_ body: [String: Any], _ what: String) {
                let record = body["incidentRecord"] as? [String: Any]
                #expect(record?["written"] as? Bool == false, "\(what): \(body)")
                #expect(record?["log"] as? String == log, "\(what): \(body)")
                #expect((record?["error"] as? String)?.contains("No space left on device") == true, "\(what): \(body)")
            }

            var response = try await ControlAPITests.post(client, "/v1/blocks", #"{"target":"203.0.113.9","duration":"1h"}"#)
            #expect(response.status == .ok)
            var body = try ControlAPITests.json(response)
            #expect(body["change"] as? String == "added")
            missing(body, "block")
            #expect(try Datapath.open(pins).dataplaneBlock(for: try BlockTarget.parse("203.0.113.9").target) != nil, "the block is in the maps")

            response = try await ControlAPITests.post(client, "/v1/blocks/batch", #"{"lines":"203.0.113.1\n203.0.113.2 1s\n","origin":"feed"}"#)
            #expect(response.status == .ok)
            body = try ControlAPITests.json(response)
            #expect(body["added"] as? Int == 2)
            missing(body, "batch")

            response = try await client.execute(uri: "/v1/blocks?target=203.0.113.9", method: .delete)
            #expect(response.status == .ok)
            body = try ControlAPITests.json(response)
            #expect(body["wasBlocked"] as? Bool == true)
            missing(body, "unblock")
            #expect(try Datapath.open(pins).dataplaneBlock(for: try BlockTarget.parse("203.0.113.9").target) == nil, "the block is lifted")

            // Nothing lifted, nothing to record: no field.
            response = try await client.execute(uri: "/v1/blocks?target=203.0.113.9", method: .delete)
            #expect(try ControlAPITests.json(response)["incidentRecord"] == nil)

            try await Task.sleep(for: .milliseconds(1200))
            response = try await ControlAPITests.post(client, "/v1/sweep", "")
            #expect(response.status == .ok)
            body = try ControlAPITests.json(response)
            #expect(body["removedCount"] as? Int == 1)
            missing(body, "sweep")

            // A refusal's record goes the same way, with nobody to tell but the daemon's log.
            response = try await ControlAPITests.post(client, "/v1/blocks", #"{"target":"127.0.0.1"}"#)
            #expect(response.status == .badRequest)
            #expect(Self.failures(metrics) == 5, "block, batch, unblock, sweep and the refusal")

            // With room again, records are written and the answer says so.
            full.makeRoom()
            response = try await ControlAPITests.post(client, "/v1/blocks", #"{"target":"198.51.100.7"}"#)
            body = try ControlAPITests.json(response)
            #expect((body["incidentRecord"] as? [String: Any])?["written"] as? Bool == true, "\(body)")
            #expect((body["incidentRecord"] as? [String: Any])?["error"] == nil)
            #expect(Self.failures(metrics) == 5)
        }
        let records = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        #expect(records.count == 1, "only the last block was recorded: \(records)")
    }

    /// `portcullis_incident_record_failures_total`, as the metrics endpoint renders it.
    static func failures(_ metrics: DaemonMetrics) -> Int? {
        let text = String(decoding: metrics.registry.emitToBuffer(), as: UTF8.self)
        let line = text.split(separator: "\n").first { $0.hasPrefix("portcullis_incident_record_failures_total ") }
        return line.flatMap { Int($0.split(separator: " ").last ?? "") }
    }
}

/// A small tmpfs with no room left: files can be created in it, not written. Unmounted by
/// ``unmount()`` (call it in a defer) or, failing that, when released. Unchecked: one test
/// uses it at a time, from the router test's closure.
final class FullFilesystem: @unchecked Sendable {
    let path: String
    private var mounted = false

    init(at path: String) throws {
        self.path = path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        guard mount("tmpfs", path, "tmpfs", 0, "size=64k,mode=0700") == 0 else {
            throw FullFilesystemError("cannot mount a tmpfs at \(path): \(String(cString: strerror(errno)))")
        }
        mounted = true
        let filler = open(path + "/filler", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard filler >= 0 else {
            unmount()
            throw FullFilesystemError("cannot create \(path)/filler")
        }
        let page = [UInt8](repeating: 0, count: 4096)
        while page.withUnsafeBytes({ write(filler, $0.baseAddress, $0.count) }) > 0 {}
        close(filler)
    }

    func makeRoom() { unlink(path + "/filler") }

    func unmount() {
        guard mounted else { return }
        mounted = false
        umount2(path, Int32(MNT_DETACH))
        rmdir(path)
    }

    deinit { unmount() }
}

struct FullFilesystemError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
