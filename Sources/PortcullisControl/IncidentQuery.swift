import Glibc
import PortcullisCore
import PortcullisIncidents

/// Which incidents a report covers.
public struct IncidentQuery: Sendable {
    public let sinceUnixMilliseconds: Int64?
    public let address: IPAddress?

    /// `since` is a day (YYYY-MM-DD, UTC), an RFC 3339 time, or a duration back from now (24h, 7d).
    public init(since: String?, address: String?) throws(ServiceError) {
        if let since {
            guard let start = Self.parseSince(since) else {
                throw ServiceError(.badRequest, "since must be YYYY-MM-DD, an RFC 3339 time or a duration like 24h, not '\(TerminalText.excerpt(since))'")
            }
            sinceUnixMilliseconds = start
        } else {
            sinceUnixMilliseconds = nil
        }
        if let address {
            do { self.address = try IPAddress(parsing: address) } catch { throw ServiceError(.badRequest, error.description) }
        } else {
            self.address = nil
        }
    }

    public func filter(_ incidents: [Incident]) -> [Incident] {
        incidents.filter { incident in
            if let sinceUnixMilliseconds, incident.timeUnixMs < sinceUnixMilliseconds { return false }
            if let address {
                switch try? BlockTarget.parse(incident.target).target {
                case .address(let blocked): return blocked == address
                case .prefix(let prefix): return prefix.contains(address)
                case nil: return false
                }
            }
            return true
        }
    }

    static func parseSince(_ text: String) -> Int64? {
        if let duration = try? DurationText.parse(text) {
            return Incident.nowUnixMilliseconds() - duration.components.seconds * 1000
        }
        let digits = text.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        guard digits.count >= 3, text.count >= 10 else { return nil }
        var parts = tm()
        parts.tm_year = Int32(digits[0] - 1900)
        parts.tm_mon = Int32(digits[1] - 1)
        parts.tm_mday = Int32(digits[2])
        if digits.count >= 6 {
            parts.tm_hour = Int32(digits[3])
            parts.tm_min = Int32(digits[4])
            parts.tm_sec = Int32(digits[5])
        }
        guard (1...12).contains(digits[1]), (1...31).contains(digits[2]) else { return nil }
        return Int64(timegm(&parts)) * 1000
    }
}

