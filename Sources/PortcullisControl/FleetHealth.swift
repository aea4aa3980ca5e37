import PortcullisCore

/// The fleet's health, for `portcullis status` and the metrics.
public struct FleetHealth: Codable, Sendable, Equatable {
    public var node: String
    public var database: String
    /// Whether this node reads the change log now (its listening connection is up).
    public var connected: Bool
    /// Whether its own changes can be published now.
    public var publishing: Bool
    /// The last sequence applied here; nil before the first snapshot.
    public var cursor: Int64?
    /// The newest sequence this node knows the log to hold.
    public var head: Int64?
    /// How many changes of others this node has not applied yet.
    public var lagEvents: Int64
    /// How long the newest change applied took from its commit to being in force here.
    public var lagSeconds: Double?
    /// When the last change of another node was applied here (Unix milliseconds, this host's clock).
    public var lastApplyUnixMs: Int64?
    /// This host's clock less the database's, in milliseconds (positive: this host is ahead).
    public var skewMilliseconds: Int64?
    /// This host's changes waiting for the database.
    public var outbox: Int
    public var applied: Int
    public var refused: Int
    public var published: Int
    public var snapshots: Int
    /// The last failure talking to the database, while it lasts.
    public var lastError: String?

    public init(node: String, database: String) {
        (self.node, self.database) = (node, database)
        (connected, publishing, lagEvents, outbox, applied, refused, published, snapshots) = (false, false, 0, 0, 0, 0, 0, 0)
    }
}
