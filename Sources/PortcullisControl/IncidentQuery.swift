import Glibc
import PortcullisCore
import PortcullisIncidents

/// Which incidents a report covers.
public struct IncidentQuery: Sendable {
    /// The first millisecond covered.
    public let sinceUnixMilliseconds: Int64?
    /// The first millisecond no longer covered.
    public let untilUnixMilliseconds: Int64?
    public let address: IPAddress?

    /// `since` and `until` are each a day (YYYY-MM-DD, UTC), an RFC 3339 time, or a duration
    /// back from now (24h, 7d). A day given to `until` is covered whole: `--since 2026-11-01
    /// --until 2026-11-30` is November.
    public init(since: String?, until: String? = nil, address: String?) throws(ServiceError) {
        if let since {
            guard let start = Self.parseSince(since) else {
                throw ServiceError(.badRequest, "since must be YYYY-MM-DD, an RFC 3339 time or a duration like 24h, not '\(TerminalText.excerpt(since))'")
            }
            sinceUnixMilliseconds = start
        } else {
            sinceUnixMilliseconds = nil
        }
        if let until {
            guard let end = Self.parseUntil(until) else {
                throw ServiceError(.badRequest, "until must be YYYY-MM-DD, an RFC 3339 time or a duration like 24h, not '\(TerminalText.excerpt(until))'")
            }
            untilUnixMilliseconds = end
        } else {
            untilUnixMilliseconds = nil
        }
        if let sinceUnixMilliseconds, let untilUnixMilliseconds, untilUnixMilliseconds <= sinceUnixMilliseconds {
            throw ServiceError(.badRequest, "until (\(TerminalText.excerpt(until ?? ""))) must be later than since (\(TerminalText.excerpt(since ?? "")))")
        }
        if let address {
            do { self.address = try IPAddress(parsing: address) } catch { throw ServiceError(.badRequest, error.description) }
        } else {
            self.address = nil
        }
    }

    /// A period already in milliseconds.
    public init(sinceUnixMilliseconds: Int64?, untilUnixMilliseconds: Int64?, address: IPAddress? = nil) {
        (self.sinceUnixMilliseconds, self.untilUnixMilliseconds, self.address) = (sinceUnixMilliseconds, untilUnixMilliseconds, address)
    }

    public func filter(_ incidents: [Incident]) -> [Incident] {
        incidents.filter { incident in
            if let sinceUnixMilliseconds, incident.timeUnixMs < sinceUnixMilliseconds { return false }
            if let untilUnixMilliseconds, incident.timeUnixMs >= untilUnixMilliseconds { return false }
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

    /// As `parseSince`, but a bare day ends where the next day begins.
    static func parseUntil(_ text: String) -> Int64? {
        guard let start = parseSince(text) else { return nil }
        let isBareDay = text.count == 10 && text.split(separator: "-").count == 3 && (try? DurationText.parse(text)) == nil
        return isBareDay ? start + 86_400_000 : start
    }

    static func parseSince(_ text: String) -> Int64? {
        if let duration = try? DurationText.parse(text) {
            return Incident.nowUnixMilliseconds() - duration.components.seconds * 1000
        }
        // A full time with its offset, honoured; what follows reads days and times without one as UTC.
        if let exact = Incident.unixMilliseconds(rfc3339: text) { return exact }
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

