import Foundation
import Glibc
import Hummingbird
import HummingbirdTesting
import Logging
import PortcullisConfig
@testable import PortcullisDaemon
import Testing

/// The incident chain's key for these tests, never /var/lib/portcullis.
enum TestStateDirectory {
    static let path: String = {
        let path = "/tmp/portcullis-test-api-state-\(getpid())"
        setenv("PORTCULLIS_STATE_DIR", path, 1)
        return path
    }()
}

enum BPFAvailability {
    static let usable: Bool = {
        guard geteuid() == 0, let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return false }
        return mounts.split(separator: "\n").contains { $0.split(separator: " ").dropFirst(2).first == "bpf" }
    }()
}

/// The control API's route handlers in process, over a real keeper on pins of their own:
/// what each route answers, and that a bad request changes nothing.
@Suite(.enabled(if: BPFAvailability.usable, "needs root and bpffs (run as root; CI does)"), .serialized)
struct ControlAPITests {
    /// A keeper on a fresh pin directory and incident log, removed afterwards.
    static func withRouter(_ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let id = UUID().uuidString.prefix(8).lowercased()
        var configuration = DaemonConfiguration()
        configuration.pinDirectory = "/sys/fs/bpf/portcullis-test-api-\(id)"
        configuration.incidentLog = "/tmp/portcullis-test-api-\(id).jsonl"
        // A ledger of its own: the blocklist's record must not carry over between tests.
        configuration.stateDirectory = "/tmp/portcullis-test-api-\(id)-state"
        configuration.capacityExact = 1024
        configuration.capacityPrefixes = 64
        let state = TestStateDirectory.path
        defer {
            try? FileManager.default.removeItem(atPath: configuration.pinDirectory)
            try? FileManager.default.removeItem(atPath: configuration.incidentLog)
            try? FileManager.default.removeItem(atPath: state)
            if let own = configuration.stateDirectory { try? FileManager.default.removeItem(atPath: own) }
        }
        let keeper = try BlocklistKeeper(configuration: configuration, metrics: DaemonMetrics(), logger: Logger(label: "test"))
        let application = Application(router: ControlAPI.router(keeper: keeper))
        try await application.test(.router) { client in try await body(client) }
    }

    static func json(_ response: TestResponse) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
    }

    static func post(_ client: some TestClientProtocol, _ path: String, _ body: String) async throws -> TestResponse {
        try await client.execute(uri: path, method: .post, body: ByteBuffer(string: body))
    }

    @Test func blockRefreshAndKeepLonger() async throws {
        try await Self.withRouter { client in
            var response = try await Self.post(client, "/v1/blocks", #"{"target":"203.0.113.9","duration":"100s","source":"wazuh"}"#)
            #expect(response.status == .ok)
            #expect(try Self.json(response)["change"] as? String == "added")
            response = try await Self.post(client, "/v1/blocks", #"{"target":"203.0.113.9","duration":"1h","reason":"operator"}"#)
            #expect(try Self.json(response)["change"] as? String == "refreshed")
            response = try await Self.post(client, "/v1/blocks", #"{"target":"203.0.113.9","duration":"10s","source":"wazuh"}"#)
            let body = try Self.json(response)
            #expect(body["change"] as? String == "kept-longer")
            #expect((body["block"] as? [String: Any])?["source"] as? String == "api")
        }
    }

    @Test func aBodyWithARateThrottlesAndUnthrottleLiftsOnlyTheThrottle() async throws {
        try await Self.withRouter { client in
            var response = try await Self.post(client, "/v1/blocks", #"{"target":"203.0.113.0/24","rate":500,"burst":100,"newConnections":true}"#)
            #expect(response.status == .ok)
            let throttle = try #require((try Self.json(response)["block"] as? [String: Any])?["throttle"] as? [String: Any])
            #expect(throttle["rate"] as? Int == 500)
            #expect(throttle["burst"] as? Int == 100)
            #expect(throttle["newConnections"] as? Bool == true)
            // Bad terms are refused and change nothing.
            for body in [#"{"target":"203.0.113.9","rate":0}"#, #"{"target":"203.0.113.9","burst":5}"#,
                         #"{"target":"203.0.113.9","rate":100000,"burst":1}"#] {
                response = try await Self.post(client, "/v1/blocks", body)
                #expect(response.status == .badRequest, "\(body)")
            }
            response = try await Self.post(client, "/v1/unblock", #"{"target":"203.0.113.0/24"}"#)
            #expect(try Self.json(response)["wasBlocked"] as? Bool == false)
            response = try await client.execute(uri: "/v1/block?target=203.0.113.0/24", method: .get)
            #expect(response.status == .ok)
            response = try await Self.post(client, "/v1/unblock", #"{"target":"203.0.113.0/24","throttle":true}"#)
            #expect(try Self.json(response)["wasBlocked"] as? Bool == true)
            response = try await client.execute(uri: "/v1/block?target=203.0.113.0/24", method: .get)
            #expect(response.status == .notFound)
        }
    }

    @Test func oneBlockIsLookedUpByKey() async throws {
        try await Self.withRouter { client in
            var response = try await client.execute(uri: "/v1/block?target=198.51.100.7", method: .get)
            #expect(response.status == .notFound)
            #expect(try Self.json(response)["error"] as? String == "198.51.100.7 is not blocked")
            _ = try await Self.post(client, "/v1/blocks", #"{"target":"198.51.100.0/24"}"#)
            response = try await client.execute(uri: "/v1/block?target=198.51.100.0/24", method: .get)
            #expect(response.status == .ok)
            #expect(try Self.json(response)["kind"] as? String == "prefix")
            // The prefix covers the address, but the address itself holds no block of its own.
            response = try await client.execute(uri: "/v1/block?target=198.51.100.7", method: .get)
            #expect(response.status == .notFound)
        }
    }

    @Test func anOwnersUnblockLeavesAnotherSourcesBlock() async throws {
        try await Self.withRouter { client in
            _ = try await Self.post(client, "/v1/blocks", #"{"target":"2001:db8::bad","source":"cli"}"#)
            var response = try await Self.post(client, "/v1/unblock", #"{"target":"2001:db8::bad","source":"wazuh","onlyOwn":true}"#)
            var body = try Self.json(response)
            #expect(body["wasBlocked"] as? Bool == false)
            #expect(body["keptFor"] as? String == "cli")
            response = try await client.execute(uri: "/v1/blocks?target=2001:db8::bad", method: .delete)
            body = try Self.json(response)
            #expect(body["wasBlocked"] as? Bool == true)
        }
    }

    @Test func refusalsAndBadRequestsChangeNothing() async throws {
        try await Self.withRouter { client in
            _ = try await Self.post(client, "/v1/allowlist", #"{"target":"192.0.2.0/24"}"#)
            let cases: [(String, String, HTTPResponse.Status)] = [
                ("/v1/blocks", #"{"target":"192.0.2.7"}"#, .conflict),
                ("/v1/blocks", #"{"target":"127.0.0.1"}"#, .badRequest),
                ("/v1/blocks", #"{"target":"203.0.113.300"}"#, .badRequest),
                ("/v1/blocks", #"{"target":"203.0.113.9","source":"nobody"}"#, .badRequest),
                ("/v1/blocks", #"{"target":"203.0.113.9","duration":"forever"}"#, .badRequest),
                ("/v1/blocks/batch", #"{"items":[{"target":"203.0.113.1"},{"target":"192.0.2.9"}]}"#, .conflict),
                ("/v1/blocks/batch", #"{"items":[{"target":"203.0.113.1"},{"target":"nonsense"}]}"#, .badRequest),
                ("/v1/unblock", #"{"target":"203.0.113.1","source":"nobody"}"#, .badRequest),
            ]
            for (path, body, status) in cases {
                let response = try await Self.post(client, path, body)
                #expect(response.status == status, "\(path) \(body)")
                #expect(try Self.json(response)["error"] is String, "\(path) \(body)")
            }
            let page = try Self.json(try await client.execute(uri: "/v1/blocks?limit=0", method: .get))
            #expect(page["total"] as? Int == 0)
        }
    }

    @Test func aBatchAsBlockFileLinesIsAllOrNothing() async throws {
        try await Self.withRouter { client in
            var response = try await Self.post(client, "/v1/blocks/batch", #"{"lines":"203.0.113.1\n203.0.113.2 90s\n# a comment\n\n2001:db8::/48 1h\n","origin":"feed"}"#)
            #expect(response.status == .ok)
            #expect(try Self.json(response)["added"] as? Int == 3)
            response = try await Self.post(client, "/v1/blocks/batch", #"{"lines":"203.0.113.3\nnot-an-address\n"}"#)
            #expect(response.status == .badRequest)
            #expect((try Self.json(response)["error"] as? String)?.contains("line 2") == true)
            response = try await Self.post(client, "/v1/blocks/batch", #"{"reason":"nothing to block"}"#)
            #expect(response.status == .badRequest)
            let page = try Self.json(try await client.execute(uri: "/v1/blocks?limit=0", method: .get))
            #expect(page["total"] as? Int == 3, "the bad batches changed nothing")
            let one = try Self.json(try await client.execute(uri: "/v1/block?target=203.0.113.2", method: .get))
            #expect(one["requestedSeconds"] as? Int == 90)
        }
    }

    @Test func listFiltersWithoutFormattingWhatItSkips() async throws {
        try await Self.withRouter { client in
            let items = (1...50).map { #"{"target":"203.0.113.\#($0)"}"# }.joined(separator: ",")
            _ = try await Self.post(client, "/v1/blocks/batch", #"{"items":[\#(items)],"origin":"test"}"#)
            _ = try await Self.post(client, "/v1/blocks", #"{"target":"2001:db8::/64","source":"detector"}"#)
            var page = try Self.json(try await client.execute(uri: "/v1/blocks?limit=10&offset=45", method: .get))
            #expect(page["total"] as? Int == 51)
            #expect((page["blocks"] as? [Any])?.count == 6)
            page = try Self.json(try await client.execute(uri: "/v1/blocks?contains=2001:db8::1", method: .get))
            #expect(page["total"] as? Int == 1)
            page = try Self.json(try await client.execute(uri: "/v1/blocks?source=file&family=ipv4", method: .get))
            #expect(page["total"] as? Int == 50)
            let response = try await client.execute(uri: "/v1/blocks?family=ipx", method: .get)
            #expect(response.status == .badRequest)
        }
    }

    @Test func theLiveViewIsSampledByTheReaderWithItsListsBounded() async throws {
        try await Self.withRouter { client in
            _ = try await Self.post(client, "/v1/blocks", #"{"target":"198.51.100.7","duration":"10m","reason":"scanner"}"#)
            _ = try await Self.post(client, "/v1/blocks", #"{"target":"203.0.113.0/24"}"#)
            var response = try await client.execute(uri: "/v1/top?expiring=5&incidents=1", method: .get)
            #expect(response.status == .ok)
            let body = try Self.json(response)
            #expect((body["blocks"] as? [Any])?.isEmpty == true)
            #expect(body["intervalSeconds"] == nil)
            let expiring = try #require(body["expiring"] as? [[String: Any]])
            #expect(expiring.map { $0["target"] as? String } == ["198.51.100.7"])
            let incidents = try #require(body["incidents"] as? [[String: Any]])
            #expect(incidents.count == 1 && incidents.first?["target"] as? String == "203.0.113.0/24")
            let sampling = try #require(body["sampling"] as? [String: Any])
            #expect(sampling["blocksHeld"] as? Int == 2 && sampling["scanned"] as? Int == 2)
            // Asked again at once: the same round (no rates yet), not a new one.
            response = try await client.execute(uri: "/v1/top", method: .get)
            #expect(try Self.json(response)["intervalSeconds"] == nil)
            try await Task.sleep(for: .milliseconds(600))
            response = try await client.execute(uri: "/v1/top", method: .get)
            #expect((try Self.json(response)["intervalSeconds"] as? Double ?? 0) >= 0.5)
            for bad in ["/v1/top?blocks=257", "/v1/top?expiring=101", "/v1/top?incidents=-1", "/v1/top?blocks=x"] {
                response = try await client.execute(uri: bad, method: .get)
                #expect(response.status == .badRequest, "\(bad)")
            }
        }
    }
}
