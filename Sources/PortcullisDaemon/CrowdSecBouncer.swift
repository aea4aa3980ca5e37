import FoundationEssentials
import Glibc
import Logging
import NIOPosix
import PortcullisConfig
import PortcullisControl
import PortcullisCore
import PortcullisSystem
import ServiceLifecycle

/// A CrowdSec bouncer inside the daemon: pulls the Local API's decision stream
/// (`/v1/decisions/stream`, the full set with `startup=true` at every start, then what changed
/// since the last pull) and makes each `ban` of scope Ip or Range a block of source crowdsec,
/// origin `crowdsec/<origin>`, reason the scenario, for the decision's duration. A deleted (or
/// expired) decision lifts only CrowdSec's block, and only once no other decision holds the
/// target. Every block goes through the blocklist's admission: loopback and allowlisted
/// targets are refused and recorded. While the Local API does not answer, every block in
/// force stays, and the pull is retried with a growing pause.
struct CrowdSecBouncer: Service {
    let keeper: BlocklistKeeper
    let configuration: DaemonConfiguration.CrowdSec
    let apiKey: String
    let logger: Logger

    /// The longest pause between retries while the Local API does not answer.
    static let longestRetry: Duration = .seconds(30)
    static let requestTimeout: Duration = .seconds(30)

    /// The bouncer's key, from a regular file that only its owner may read or write: a key
    /// anyone on the host can read lets them delete every decision's effect.
    static func readKey(_ path: String) throws(Daemon.StartupError) -> String {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            throw Daemon.StartupError(description: "crowdsec.api_key_file \(path): \(String(cString: strerror(errno))); write the key from `cscli bouncers add portcullis` there (mode 0600)")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw Daemon.StartupError(description: "crowdsec.api_key_file \(path) is not a regular file")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw Daemon.StartupError(description: "crowdsec.api_key_file \(path) has mode \(String(info.st_mode & 0o777, radix: 8)); make it readable by its owner only: chmod 600 \(path)")
        }
        let bytes: [UInt8]
        do {
            bytes = try readWholeFile(path, maximumBytes: 4096)
        } catch {
            throw Daemon.StartupError(description: "crowdsec.api_key_file \(path): \(error.description)")
        }
        let key = String(decoding: bytes, as: UTF8.self).trimmingPrefix(while: \.isWhitespace)
        let trimmed = String(key.reversed().drop(while: \.isWhitespace).reversed())
        guard !trimmed.isEmpty, trimmed.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F }) else {
            throw Daemon.StartupError(description: "crowdsec.api_key_file \(path) must hold one bouncer key (printable, no spaces)")
        }
        return trimmed
    }

    func run() async throws {
        let client = PlainHTTPClient(host: configuration.lapi.host, port: configuration.lapi.port, timeout: Self.requestTimeout)
        logger.info("crowdsec: pulling decisions from http://\(client.authority) every \(DurationText.format(configuration.updateFrequency))")
        try? await cancelWhenGracefulShutdown {
            var stream = CrowdSecStream(filter: CrowdSecFilter(origins: configuration.origins, scenarios: configuration.scenarios))
            var startup = true
            var failures = 0
            while !Task.isCancelled {
                var pause = configuration.updateFrequency
                do {
                    let (new, deleted) = try await pull(client, startup: startup)
                    if failures > 0 { logger.notice("crowdsec: the Local API at \(client.authority) answers again") }
                    (failures, startup) = (0, false)
                    keeper.metrics.recordCrowdSecPull(ok: true)
                    let (changes, skipped) = stream.apply(new: new, deleted: deleted)
                    await carryOut(changes)
                    note(skipped)
                } catch {
                    failures += 1
                    keeper.metrics.recordCrowdSecPull(ok: false)
                    // Doubling from 1 s, to at most 30 s (or the update frequency, if longer).
                    let exponent = min(failures - 1, 10)
                    pause = min(.seconds(1 << exponent), max(Self.longestRetry, configuration.updateFrequency))
                    if failures == 1 || failures % 10 == 0 {
                                logger.error("crowdsec: \(String(describing: error)); the blocks in force stay, retrying in \(DurationText.format(pause)) (\(failures) failed pulls)")
                    }
                }
                try await Task.sleep(for: pause)
            }
        }
    }

    struct PullError: Error, CustomStringConvertible {
        let description: String
    }

    /// One answer of the stream, off the cooperative pool (the client blocks).
    private func pull(_ client: PlainHTTPClient, startup: Bool) async throws(PullError) -> ([CrowdSecDecision], [CrowdSecDecision]) {
        var query = "/v1/decisions/stream?startup=\(startup)"
        if !configuration.origins.isEmpty { query += "&origins=" + RemoteBlocklist.query(configuration.origins.joined(separator: ",")) }
        if !configuration.scenarios.isEmpty {
            query += "&scenarios_containing=" + RemoteBlocklist.query(configuration.scenarios.joined(separator: ","))
        }
        let target = query
        let key = apiKey
        let response: ControlSocketClient.Response
        do {
            response = try await NIOThreadPool.singleton.runIfActive {
                do throws(ControlSocketClient.Failure) {
                    return try client.get(target, headers: [("X-Api-Key", key)])
                } catch {
                    switch error {
                    case .timedOut(let limit):
                        throw PullError(description: "the Local API at \(client.authority) did not answer within \(DurationText.format(limit))")
                    case .notRunning, .permissionDenied:
                        throw PullError(description: "cannot reach the Local API at \(client.authority)")
                    case .failed(let message):
                        throw PullError(description: message)
                    }
                }
            }
        } catch let error as PullError {
            throw error
        } catch {
            throw PullError(description: "the daemon is shutting down")
        }
        switch response.status {
        case 200: break
        case 401, 403:
            throw PullError(description: "the Local API at \(client.authority) refused the bouncer key (\(response.status)); check crowdsec.api_key_file against `cscli bouncers list`")
        default:
            throw PullError(description: "the Local API at \(client.authority) answered \(response.status)")
        }
        do {
            let body = try JSONDecoder().decode(StreamBody.self, from: Data(response.body))
            return ((body.new ?? []).map(\.decision), (body.deleted ?? []).map(\.decision))
        } catch {
            throw PullError(description: "the Local API's decision stream is not what CrowdSec sends: \(error)")
        }
    }

    private func carryOut(_ changes: [CrowdSecStream.Change]) async {
        var (blocked, lifted, refused) = (0, 0, 0)
        for change in changes {
            switch change {
            case .block(let request, let decision):
                do {
                    _ = try await keeper.block(request, context: .none)
                    blocked += 1
                } catch {
                    refused += 1
                    logger.warning("crowdsec: decision \(decision) on \(request.target) not enforced: \(error.description)")
                }
            case .lift(let target, let decision):
                do {
                    let result = try await keeper.unblock(target, requestedBy: .crowdsec, onlyOwn: true, context: .none)
                    switch result.outcome {
                    case .removed: lifted += 1
                    case .absent: break
                    case .keptForOwner(let entry):
                        logger.info("crowdsec: decision \(decision) on \(target) is gone; the block stays, \(entry.source?.rawValue ?? "the operator") owns it")
                    }
                } catch {
                    logger.error("crowdsec: cannot lift the block of decision \(decision) on \(target): \(error.description)")
                }
            }
        }
        keeper.metrics.recordCrowdSecDecisions(blocked, outcome: "blocked")
        keeper.metrics.recordCrowdSecDecisions(lifted, outcome: "lifted")
        keeper.metrics.recordCrowdSecDecisions(refused, outcome: "refused")
        if blocked + lifted > 0 { logger.info("crowdsec: \(blocked) decisions blocked, \(lifted) lifted") }
    }

    /// One log line per kind of skip in a pull, naming the first, and the metrics.
    private func note(_ skipped: [CrowdSecStream.Skip]) {
        for why in CrowdSecStream.Skip.Why.allCases {
            let these = skipped.filter { $0.why == why }
            guard let first = these.first else { continue }
            keeper.metrics.recordCrowdSecDecisions(these.count, outcome: "skipped_\(why.rawValue)")
            let more = these.count > 1 ? " and \(these.count - 1) more" : ""
            logger.info("crowdsec: skipped decision \(first.decision.id) on \(TerminalText.escaped(first.decision.value))\(more): \(first.detail)")
        }
    }
}

/// The stream's answer, as the Local API sends it: only here does its JSON meet the domain.
private struct StreamBody: Decodable {
    struct Decision: Decodable {
        var id: Int64
        var origin: String?
        var scenario: String?
        var scope: String?
        var type: String?
        var value: String?
        var duration: String?

        var decision: CrowdSecDecision {
            CrowdSecDecision(id: id, origin: origin ?? "", scenario: scenario ?? "", scope: scope ?? "", type: type ?? "",
                             value: value ?? "", duration: duration ?? "0s")
        }
    }

    var new: [Decision]?
    var deleted: [Decision]?
}
