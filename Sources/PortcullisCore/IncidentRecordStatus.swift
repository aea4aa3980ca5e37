/// Whether every incident record a change called for was written. The change stands either
/// way: a record that cannot be written is never a reason to leave an attacker unblocked, so
/// it is reported beside the outcome instead of failing it.
public enum IncidentRecordStatus: Sendable, Equatable {
    /// Written, or none was due (a sweep that removed nothing).
    case written
    case notWritten(IncidentRecordFailure)

    public var failure: IncidentRecordFailure? {
        if case .notWritten(let failure) = self { return failure }
        return nil
    }

    /// Of two writes for one change (the chunks of a load, the slices of a sweep): the first
    /// failure, since any missing record makes the change's record incomplete.
    public func combined(with other: IncidentRecordStatus) -> IncidentRecordStatus {
        if case .notWritten = self { return self }
        return other
    }

    /// One line for the operator, saying that `change` took effect and what is missing; nil
    /// when nothing is.
    public func warning(after change: @autoclosure () -> String) -> String? {
        failure?.warning(after: change())
    }
}

/// An incident record that was not written: where it should have gone, and why it did not.
public struct IncidentRecordFailure: Sendable, Equatable, CustomStringConvertible {
    /// The incident log's path.
    public let log: String
    /// The log's own error, which says what to do about it (free space, fix permissions).
    public let reason: String

    public init(log: String, reason: String) {
        (self.log, self.reason) = (log, reason)
    }

    public var description: String { reason }

    /// "203.0.113.9 is blocked, but the incident record was not written: cannot write to the
    /// incident log PATH: No space left on device; ...". The log's path is named once: most
    /// causes name it already, a missing key does not.
    public func warning(after change: String) -> String {
        let place = reason.contains(log) ? "" : " to \(log)"
        return "\(change), but the incident record was not written\(place): \(reason)"
    }
}
