import ArgumentParser
import FoundationEssentials
import Glibc
import PortcullisBPF
import PortcullisControl
import PortcullisCore
import PortcullisIncidents
import PortcullisSystem

extension TopOrder: ExpressibleByArgument {}

struct Top: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top",
        abstract: "Watch what is being dropped now, refreshed every second.",
        discussion: """
            A live view for an attack: drop and pass rates per interface (packets and bits per \
            second), the blocks dropping the most right now with their rates from the change in \
            their counters between refreshes, the blocks about to expire and the latest incident \
            records. It fits any terminal size (80x24 over SSH is enough) and redraws when the \
            terminal is resized.

            Keys: p sorts by packets per second, b by bytes per second, t by everything the block \
            dropped, e by expiry (soonest first); l or Ctrl-L redraws; q or Ctrl-C quits. The \
            terminal is restored on every way out.

            It reads through the daemon when one runs (GET /v1/top), else the pins and ledger \
            directly, as root. It never takes the writer's lock. Each refresh costs the same at \
            ten blocks as at a million: it reads the blocks it watches by key and one slice of \
            the maps (65,536 exact entries and 4,096 prefixes), going round the maps over \
            several refreshes; a block that starts dropping is found within one trip of the \
            slices round the maps (16 s at a million blocks). The last line says what the \
            refresh read and cost.

            --once takes two samples one interval apart and prints the view as plain text, with \
            no terminal control; --json prints one JSON document per refresh (with --once, one \
            document): rates are per second, bytes are bytes.

            Examples:
              portcullis top
              portcullis top --sort bps --interval 2
              portcullis top --once
              portcullis top --once --json | jq '.blocks[0]'
            """)

    @OptionGroup var state: StateOptions

    @Flag(help: "Print one view, measured over one interval, as plain text (or JSON with --json), and exit.")
    var once = false

    @Flag(help: "Print one JSON document per refresh instead of drawing the view.")
    var json = false

    @Option(help: ArgumentHelp("Seconds between refreshes, from 0.5 to 60.", valueName: "seconds"))
    var interval: Double = 1

    @Option(help: ArgumentHelp("The order of the blocks: pps, bps, total or expiry.", valueName: "order"))
    var sort: TopOrder = .pps

    func validate() throws {
        guard interval.isFinite, (0.5...60).contains(interval) else { throw ValidationError("--interval must be from 0.5 to 60 seconds") }
    }

    func run() throws {
        let feed = TopFeed(state: state)
        if once {
            _ = try feed.sample()
            pause(seconds: interval)
            let sample = try feed.sample()
            if json {
                print(Output.json(sample.ordered(by: sort)))
            } else {
                print(TopScreen.lines(sample, context(feed, problem: nil), width: nil, height: nil).joined(separator: "\n"))
            }
            return
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            while true {
                let sample = try feed.sample().ordered(by: sort)
                guard let data = try? encoder.encode(sample) else { throw RuntimeFailure("cannot encode the sample") }
                var line = Array(data)
                line.append(UInt8(ascii: "\n"))
                // A reader that went away (a closed pipe) ends the stream.
                guard case .success = SystemCall.writeAll(1, line) else { return }
                pause(seconds: interval)
            }
        }
        try interactive(feed)
    }

    private func context(_ feed: TopFeed, problem: String?, order: TopOrder? = nil) -> TopContext {
        TopContext(via: feed.via, intervalSeconds: interval, order: order ?? sort, problem: problem, clock: Self.clock())
    }

    private func interactive(_ feed: TopFeed) throws {
        let terminal = try TerminalSession()
        defer { terminal.restore() }
        var order = sort
        var sample: TopSample?
        var problem: String?
        var next = ContinuousClock.now
        func draw() {
            let size = terminal.size
            terminal.draw(TopScreen.lines(sample, context(feed, problem: problem, order: order), width: size.width, height: size.height))
        }
        while true {
            if ContinuousClock.now >= next {
                do {
                    sample = try feed.sample()
                    problem = nil
                } catch {
                    problem = "\(error)"
                }
                next = ContinuousClock.now + .milliseconds(Int64(interval * 1000))
                draw()
            }
            switch terminal.wait(until: next) {
            case .keys(let bytes):
                for key in TopKeys.parse(bytes) {
                    switch key {
                    case .quit: return
                    case .sort(let chosen): order = chosen
                    case .redraw: break
                    }
                }
                draw()
            case .resized:
                draw()
            case .ended:
                return
            case .timeout:
                continue
            }
        }
    }

    static func clock() -> String {
        Output.localTime(unixMilliseconds: WallClock.nowUnixMilliseconds()).split(separator: " ").dropFirst().first.map(String.init) ?? ""
    }
}

/// Where the samples come from: the daemon's reader when a daemon answers, else the pins and
/// ledger directly. A daemon that stops answering is left for the pins, as other commands do.
final class TopFeed {
    private let remote: RemoteBlocklist
    private let state: StateOptions
    private var local: (blocklist: LocalBlocklist, sampler: TopSampler)?
    private var daemonAnswers = true
    /// "daemon", or the pin directory read.
    private(set) var via = "daemon"

    init(state: StateOptions) {
        self.state = state
        remote = RemoteBlocklist(client: ControlSocketClient.resolve(option: state.controlSocket))
    }

    func sample() throws(ServiceError) -> TopSample {
        if daemonAnswers {
            do {
                let sample = try remote.top(blocks: TopSampler.maximumBlocks, expiring: 10, incidents: 10)
                via = "daemon"
                return sample
            } catch {
                switch error.kind {
                case .unavailable:
                    daemonAnswers = false
                case .notFound:
                    // A daemon from before the live view: read what it serves directly.
                    daemonAnswers = false
                    let served = try remote.location()
                    local = (try LocalBlocklist.open(served, creatingWith: nil, recorder: state.recorder).0, TopSampler())
                default:
                    throw error
                }
            }
        }
        if local == nil { local = (try state.local(), TopSampler()) }
        guard let local else { throw ServiceError(.failed, "no blocklist to read") }
        via = local.blocklist.location.pins.path
        return try local.sampler.sample(local.blocklist, blocks: TopSampler.maximumBlocks, expiring: 10, incidents: 10)
    }
}

extension TopSample {
    /// The blocks in `order`, for scripts that asked for one.
    func ordered(by order: TopOrder) -> TopSample {
        var copy = self
        let byTarget = Dictionary(blocks.map { ($0.target, $0) }, uniquingKeysWith: { first, _ in first })
        copy.blocks = order.ranked(blocks.compactMap(\.watched)).compactMap { byTarget[$0.target.description] }
        return copy
    }
}

/// Sleeps for `seconds`, through interruptions.
func pause(seconds: Double) {
    var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
    var left = timespec()
    while nanosleep(&request, &left) != 0 && errno == EINTR { request = left }
}
