import CLibbpf
import Foundation
import Glibc
import PortcullisBPF
import PortcullisControl
import PortcullisCore
import PortcullisIncidents
import PortcullisLedger

/// A Portcullis state in its own pin directory, removed when the test is done
/// with it, also when the test fails.
final class ScratchState {
    let pins: PinDirectory
    let stateDirectory: String
    let datapath: Datapath
    /// The blocklist over these maps, with a ledger of its own.
    let blocks: ScratchBlocklist

    init(capacity: Capacity = Capacity(exact: 4096, prefixes: 256)) throws {
        let name = "portcullis-test-\(UUID().uuidString.prefix(8).lowercased())"
        pins = PinDirectory(path: "/sys/fs/bpf/\(name)")
        stateDirectory = "/tmp/\(name)"
        let location = BlocklistLocation(pins: pins, stateDirectory: stateDirectory)
        let recorder = IncidentRecorder(log: IncidentLog(path: stateDirectory + "/incidents.jsonl", stateDirectory: stateDirectory)) { _ in }
        let blocklist = try LocalBlocklist.open(location, creatingWith: capacity, recorder: recorder).0
        datapath = blocklist.datapath
        blocks = ScratchBlocklist(blocklist: blocklist)
    }

    deinit {
        _ = try? Datapath.purge(pins)
        try? FileManager.default.removeItem(atPath: stateDirectory)
    }

    /// Another handle on the same state, as another process would open it.
    func reopen() throws -> ScratchBlocklist {
        let location = BlocklistLocation(pins: pins, stateDirectory: stateDirectory)
        let recorder = IncidentRecorder(log: IncidentLog(path: stateDirectory + "/incidents.jsonl", stateDirectory: stateDirectory)) { _ in }
        return ScratchBlocklist(blocklist: try LocalBlocklist.open(location, creatingWith: nil, recorder: recorder).0)
    }

    /// The XDP program's verdict on `frame`, run in the kernel through BPF_PROG_TEST_RUN.
    func verdict(_ frame: [UInt8]) throws -> Verdict {
        let run = try datapath.xdpProgram.testRun(packet: frame)
        return Verdict(rawValue: run.returnValue) ?? .other
    }

    func block(_ text: String, for duration: Duration? = nil, reason: String = "") throws -> BlockOutcome {
        try blocks.block(BlockRequest(target: try BlockTarget.parse(text).target, duration: duration, reason: reason))
    }

    func throttle(_ text: String, rate: UInt32, burst: UInt32, newConnections: Bool = false,
                  for duration: Duration? = nil) throws -> BlockOutcome {
        try blocks.block(BlockRequest(target: try BlockTarget.parse(text).target, duration: duration,
                                      throttle: ThrottleRate(packetsPerSecond: rate, burst: burst, newConnectionsOnly: newConnections)))
    }

    /// The verdicts on `count` copies of `frame`, counted.
    func verdicts(_ frame: [UInt8], count: Int) throws -> (passed: Int, dropped: Int) {
        var (passed, dropped) = (0, 0)
        for _ in 0..<count {
            switch try verdict(frame) {
            case .pass: passed += 1
            case .drop: dropped += 1
            default: break
            }
        }
        return (passed, dropped)
    }

    func entry(_ text: String) throws -> BlockEntry? {
        try blocks.entry(for: try BlockTarget.parse(text).target)
    }
}

/// The blocklist as these tests use it: ledger, maps and the rules, through the same
/// ``LocalBlocklist`` every writer uses.
struct ScratchBlocklist {
    let blocklist: LocalBlocklist

    func block(_ request: BlockRequest) throws(ServiceError) -> BlockOutcome { try blocklist.block(request, context: .none) }

    /// Requests that share a reason and source, as one batch.
    func block(batch requests: [BlockRequest]) throws(ServiceError) -> BatchOutcome {
        let batch = BlockBatch(
            items: requests.map { BlockBatch.Item(target: $0.target, duration: $0.duration) },
            reason: requests.first?.reason ?? "", source: requests.first?.source ?? .file, origin: "test")
        return try blocklist.block(batch: batch).outcome
    }

    func unblock(_ target: BlockTarget) throws(ServiceError) -> BlockEntry? {
        switch try blocklist.unblock(target, requestedBy: .cli, onlyOwn: false, context: .none).outcome {
        case .removed(let entry): entry
        case .absent, .keptForOwner: nil
        }
    }

    func unthrottle(_ target: BlockTarget) throws(ServiceError) -> BlockEntry? {
        switch try blocklist.unblock(target, requestedBy: .cli, onlyOwn: false, context: .none, throttle: true).outcome {
        case .removed(let entry): entry
        case .absent, .keptForOwner: nil
        }
    }

    func unblock(_ target: BlockTarget, onlyFrom source: BlockSource?) throws(ServiceError) -> UnblockOutcome {
        try blocklist.unblock(target, requestedBy: source ?? .cli, onlyOwn: source != nil, context: .none).outcome
    }

    func list() throws(ServiceError) -> [BlockEntry] { try blocklist.list(BlockQuery()).entries }
    func sweep() throws(ServiceError) -> SweepReport { try blocklist.sweep() }
    func entry(for target: BlockTarget) throws(ServiceError) -> BlockEntry? { try blocklist.entry(for: target) }
    @discardableResult func allow(_ target: BlockTarget) throws(ServiceError) -> AllowlistChange { try blocklist.allow(target) }
    @discardableResult func disallow(_ target: BlockTarget) throws(ServiceError) -> AllowlistChange { try blocklist.disallow(target) }
}

enum Verdict: UInt32 {
    case aborted = 0, drop = 1, pass = 2, tx = 3, redirect = 4, other = 999
}
