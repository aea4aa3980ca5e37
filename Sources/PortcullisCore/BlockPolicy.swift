/// When a block ends, on whatever clock the caller keeps: the data plane's jiffies, or
/// the wall clock. Ordered by how long the block lasts, so `.never` is the greatest.
public enum Expiry<Instant: Comparable & Sendable>: Sendable, Equatable, Comparable {
    case at(Instant)
    case never

    // Both written out and inlinable: the derived == of a generic enum is called unspecialized
    // from other modules, building tuple metadata at each call (a million in a load).
    @inlinable
    public static func == (lhs: Expiry, rhs: Expiry) -> Bool {
        switch (lhs, rhs) {
        case (.at(let a), .at(let b)): a == b
        case (.never, .never): true
        default: false
        }
    }

    @inlinable
    public static func < (lhs: Expiry, rhs: Expiry) -> Bool {
        switch (lhs, rhs) {
        case (.at(let a), .at(let b)): a < b
        case (.at, .never): true
        case (.never, _): false
        }
    }
}

/// What decides a live block's future: when it ends, who owns it and why.
public struct BlockTerms<Instant: Comparable & Sendable>: Sendable, Equatable {
    public var expiry: Expiry<Instant>
    public var source: BlockSource?
    public var reason: String
    /// What the owner asked for; nil for a permanent block.
    public var requestedDuration: Duration?

    public init(expiry: Expiry<Instant>, source: BlockSource?, reason: String, requestedDuration: Duration?) {
        (self.expiry, self.source, self.reason, self.requestedDuration) = (expiry, source, reason, requestedDuration)
    }
}

/// The rules every writer of the blocklist follows, whatever it writes to.
public enum BlockPolicy {
    /// The refresh rule: a request for a target that is already blocked (and not expired:
    /// the caller passes nil for an expired block, which makes a new incident) keeps the
    /// longer expiry. When the existing block lasts at least as long, it stays as it is,
    /// owner and reason included: its owner, not this request, decides when it ends, so a
    /// Wazuh delete never lifts an operator's longer block. Otherwise the request's terms
    /// apply, keeping the existing reason when the request gives none.
    public static func refresh<Instant>(
        _ current: BlockTerms<Instant>?, with requested: BlockTerms<Instant>
    ) -> (terms: BlockTerms<Instant>, change: BlockChange) {
        guard let current else { return (requested, .added) }
        if current.expiry >= requested.expiry { return (current, .keptLonger) }
        var terms = requested
        if terms.reason.isEmpty { terms.reason = current.reason }
        return (terms, .refreshed)
    }

    /// The owner rule: an unblock that names a source lifts only that source's block, and
    /// one that also names an origin (a fail2ban jail) only that origin's; an expired block
    /// belongs to nobody any more, and an unblock that names no owner (an operator's) lifts
    /// any block.
    public static func mayLift(ownedBy owner: BlockSource?, origin: String = "", isExpired: Bool,
                               requestedBy requester: BlockOwner?) -> Bool {
        guard let requester else { return true }
        if isExpired { return true }
        guard owner == requester.source else { return false }
        return requester.origin.map { $0 == origin } ?? true
    }

    /// The owner rule for a requester that names only a source.
    public static func mayLift(ownedBy owner: BlockSource?, isExpired: Bool, requestedBy requester: BlockSource?) -> Bool {
        mayLift(ownedBy: owner, isExpired: isExpired, requestedBy: requester.map { BlockOwner(source: $0) })
    }
}

/// Why a target may not be blocked now.
public enum Refusal: Error, Sendable, Equatable, CustomStringConvertible {
    /// Loopback, the unspecified address, or a prefix holding loopback: never blocked.
    case notBlockable(AddressError)
    /// An allowlist entry covers the target.
    case allowlisted(BlockTarget, by: BlockTarget)

    public var description: String {
        switch self {
        case .notBlockable(let error):
            error.description
        case .allowlisted(let target, let entry):
            "refusing to block \(target): it is allowlisted by \(entry) (`portcullis allow --list` shows the allowlist; `portcullis disallow \(entry)` removes the entry)"
        }
    }
}

/// The one admission check every path in makes before blocking anything: the CLI, a
/// block file, the Wazuh active response, the detector, the control API and the data
/// path itself.
public enum Admission {
    /// Refuses loopback and the unspecified address, which no caller may block.
    public static func checkBlockable(_ target: BlockTarget) throws(Refusal) {
        do {
            try target.validateBlockable()
        } catch {
            throw .notBlockable(error)
        }
    }

    /// Refuses what ``checkBlockable(_:)`` refuses, and targets inside an allowlist entry.
    ///
    /// Inlinable, so callers in other modules get it specialized for their sequence: generic,
    /// each call looked up the sequence's metadata and witnesses, a sixth of a second over the
    /// million lines of a block file.
    @inlinable
    public static func check(_ target: BlockTarget, allowlist: some Sequence<BlockTarget>) throws(Refusal) {
        try checkBlockable(target)
        if let entry = allowlist.first(where: { $0.contains(target) }) {
            throw .allowlisted(target, by: entry)
        }
    }
}
