/// One decision of CrowdSec's Local API, as its decision stream sends it.
public struct CrowdSecDecision: Sendable, Equatable {
    public var id: Int64
    /// Who made it: `crowdsec` (a scenario), `cscli`, `CAPI`, `lists`, ...
    public var origin: String
    public var scenario: String
    /// `Ip`, `Range`, or another scope this bouncer does not enforce (`Country`, `AS`, ...).
    public var scope: String
    /// `ban`, `captcha`, ...
    public var type: String
    public var value: String
    /// How long it has left, as Go writes a duration (`3h59m50.2s`, `-28.5ms` on deletions).
    public var duration: String

    public init(id: Int64, origin: String, scenario: String, scope: String, type: String, value: String, duration: String) {
        (self.id, self.origin, self.scenario, self.scope, self.type, self.value, self.duration) = (id, origin, scenario, scope, type, value, duration)
    }
}

/// What of the stream this bouncer takes: decisions from these origins, of scenarios
/// containing one of these texts; empty takes all.
public struct CrowdSecFilter: Sendable, Equatable {
    public var origins: [String]
    public var scenarios: [String]

    public init(origins: [String] = [], scenarios: [String] = []) {
        (self.origins, self.scenarios) = (origins, scenarios)
    }

    public func admits(_ decision: CrowdSecDecision) -> Bool {
        (origins.isEmpty || origins.contains { $0.lowercased() == decision.origin.lowercased() })
            && (scenarios.isEmpty || scenarios.contains { decision.scenario.contains($0) })
    }
}

/// The bouncer's side of the decision stream, kept in memory: which decisions hold each
/// target, so that a deletion lifts a block only when no other decision still holds it, and
/// then only CrowdSec's own block (an operator's or fail2ban's block on the same address stays).
/// Rebuilt from the full set (`startup=true`) at every start of the daemon.
public struct CrowdSecStream: Sendable {
    /// What the stream asks of the blocklist.
    public enum Change: Sendable, Equatable {
        case block(BlockRequest, decision: Int64)
        /// Lift CrowdSec's block on the target, if it still holds one.
        case lift(BlockTarget, decision: Int64)
    }

    /// A decision the bouncer does not enforce, and why, for the log and the metrics.
    public struct Skip: Sendable, Equatable {
        public enum Why: String, Sendable, CaseIterable {
            /// Not a ban (captcha, throttle, ...).
            case type
            /// Neither Ip nor Range.
            case scope
            /// The value is not an address or prefix.
            case value
            /// Left out by the configured origins or scenarios.
            case filtered
            /// Its time is up already.
            case expired
        }
        public var decision: CrowdSecDecision
        public var why: Why
        public var detail: String
    }

    public let filter: CrowdSecFilter
    private var holding: [BlockTarget: Set<Int64>] = [:]

    public init(filter: CrowdSecFilter = CrowdSecFilter()) { self.filter = filter }

    /// How many targets some decision holds now.
    public var heldTargets: Int { holding.count }

    /// The changes one answer of the stream makes: its new decisions first, then its deleted
    /// ones (a decision both added and deleted since the last pull is lifted).
    public mutating func apply(new: [CrowdSecDecision], deleted: [CrowdSecDecision]) -> (changes: [Change], skipped: [Skip]) {
        var changes: [Change] = []
        var skipped: [Skip] = []
        for decision in new {
            switch Self.enforced(decision, filter: filter) {
            case .failure(let skip): skipped.append(skip)
            case .success(let target):
                let remaining: Duration
                do {
                    remaining = try GoDuration.parse(decision.duration)
                } catch {
                    skipped.append(Skip(decision: decision, why: .value, detail: error.description))
                    continue
                }
                // Whole seconds, rounded up: LAPI sends what is left to the nanosecond.
                let seconds = remaining.components.seconds + (remaining.components.attoseconds > 0 ? 1 : 0)
                guard seconds > 0 else {
                    skipped.append(Skip(decision: decision, why: .expired, detail: "its duration \(decision.duration) has run out"))
                    continue
                }
                holding[target, default: []].insert(decision.id)
                changes.append(.block(Self.request(decision, target: target, seconds: min(seconds, DurationText.maximumSeconds)),
                                      decision: decision.id))
            }
        }
        for decision in deleted {
            guard case .success(let target) = Self.enforced(decision, filter: filter) else { continue }
            var ids = holding[target] ?? []
            ids.remove(decision.id)
            if ids.isEmpty {
                holding[target] = nil
                changes.append(.lift(target, decision: decision.id))
            } else {
                holding[target] = ids
            }
        }
        return (changes, skipped)
    }

    /// The origin a decision's block carries: `crowdsec/cscli`.
    public static func origin(of decision: CrowdSecDecision) -> String {
        let name = decision.origin.isEmpty ? "unknown" : decision.origin
        let origin = "crowdsec/" + name
        return OriginText.isValid(origin) ? origin : "crowdsec/unknown"
    }

    static func request(_ decision: CrowdSecDecision, target: BlockTarget, seconds: Int64) -> BlockRequest {
        let reason = (decision.scenario.isEmpty ? "crowdsec decision \(decision.id)" : decision.scenario)
            .utf8Prefix(BlockRequest.maximumReasonBytes)
        return BlockRequest(target: target, duration: .seconds(seconds), reason: reason, source: .crowdsec, origin: origin(of: decision))
    }

    /// The target a decision names, when this bouncer enforces it.
    static func enforced(_ decision: CrowdSecDecision, filter: CrowdSecFilter) -> Result<BlockTarget, Skip> {
        guard decision.type.lowercased() == "ban" else {
            return .failure(Skip(decision: decision, why: .type, detail: "type \(decision.type) is not enforced, only ban"))
        }
        let scope = decision.scope.lowercased()
        guard scope == "ip" || scope == "range" else {
            return .failure(Skip(decision: decision, why: .scope, detail: "scope \(decision.scope) is not enforced, only Ip and Range"))
        }
        guard filter.admits(decision) else {
            return .failure(Skip(decision: decision, why: .filtered, detail: "origin \(decision.origin), scenario \(decision.scenario) left out by the configuration"))
        }
        let parsed: ParsedTarget
        do {
            parsed = try BlockTarget.parse(decision.value)
        } catch {
            return .failure(Skip(decision: decision, why: .value, detail: error.description))
        }
        if scope == "ip", case .prefix = parsed.target {
            return .failure(Skip(decision: decision, why: .value, detail: "an Ip decision names the prefix \(decision.value)"))
        }
        return .success(parsed.target)
    }
}

extension CrowdSecStream.Skip: Error {}

/// Go's `time.Duration` text (`1h2m3.5s`, `300ms`, `-1.5µs`, `0s`), which CrowdSec sends.
public enum GoDuration {
    public static func parse(_ text: String) throws(GoDurationError) -> Duration {
        var rest = Substring(text)
        var negative = false
        if rest.hasPrefix("-") || rest.hasPrefix("+") {
            negative = rest.first == "-"
            rest = rest.dropFirst()
        }
        if rest == "0" { return .zero }
        guard !rest.isEmpty else { throw GoDurationError(text: text) }
        var total: Duration = .zero
        while !rest.isEmpty {
            let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            guard !number.isEmpty, number.filter({ $0 == "." }).count <= 1 else { throw GoDurationError(text: text) }
            rest = rest.dropFirst(number.count)
            let unitText = rest.prefix { !($0.isASCII && ($0.isNumber || $0 == ".")) }
            rest = rest.dropFirst(unitText.count)
            let nanoseconds: Double
            switch unitText {
            case "ns": nanoseconds = 1
            case "us", "µs", "μs": nanoseconds = 1e3
            case "ms": nanoseconds = 1e6
            case "s": nanoseconds = 1e9
            case "m": nanoseconds = 60e9
            case "h": nanoseconds = 3600e9
            default: throw GoDurationError(text: text)
            }
            guard let value = Double(number) else { throw GoDurationError(text: text) }
            let amount = value * nanoseconds
            guard amount.magnitude < 9e18 else { throw GoDurationError(text: text) }
            total += .nanoseconds(Int64(amount.rounded()))
        }
        return negative ? .zero - total : total
    }
}

public struct GoDurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public let text: String
    public var description: String { "'\(TerminalText.excerpt(text))' is not a duration as CrowdSec writes one (like 3h59m50.2s)" }
}
