import Glibc
import Logging
import PortcullisCore
import PortcullisIncidents
import PortcullisSystem

/// The daemon's log, on standard error (journald reads it): one line per record, written with
/// one write(2) so that records from different tasks never interleave.
///
/// Much of what the daemon logs arrived from outside (a log line an attacker shaped, a request
/// from the control group, an error naming a bad value), so the message and every metadata
/// value are escaped as for a terminal (`TerminalText`): a newline cannot forge a second record
/// and an escape sequence cannot reach whoever reads the log. swift-log's StreamLogHandler
/// writes messages as they are.
public struct DaemonLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let output: CInt

    /// `output` is a descriptor the handler writes to and never closes.
    public init(label: String, output: CInt = STDERR_FILENO) {
        self.label = label
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        // A log that cannot be written has nowhere to say so.
        _ = SystemCall.writeAll(output, Array(line(for: event).utf8))
    }

    /// `2026-12-02T14:05:09.123Z notice portcullis: message key=value`, ending in a newline.
    func line(for event: LogEvent) -> String {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let explicit = event.metadata { all.merge(explicit) { $1 } }
        var text = "\(Incident.rfc3339(unixMilliseconds: WallClock.nowUnixMilliseconds())) \(event.level) \(label): \(TerminalText.escaped(event.message.description))"
        for (key, value) in all.sorted(by: { $0.key < $1.key }) {
            text += " \(TerminalText.escaped(key))=\(TerminalText.escaped(value.description))"
        }
        return text + "\n"
    }
}
