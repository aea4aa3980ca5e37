import Foundation
import PortcullisBPF
import PortcullisCore

/// How blocks and times are shown to people and to scripts.
enum Output {
    static func localTime(unixMilliseconds: Int64) -> String {
        var seconds = time_t(unixMilliseconds / 1000)
        var parts = tm()
        localtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let length = strftime(&buffer, buffer.count, "%Y-%m-%d %H:%M:%S %Z", &parts)
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func isoTime(unixMilliseconds: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: Double(unixMilliseconds) / 1000))
    }

    static func bytes(_ count: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
    }

    /// "1m40s left", "permanent", "expired 3s ago".
    static func remaining(_ entry: BlockEntry) -> String {
        guard let remaining = entry.remaining else { return "permanent" }
        if entry.isExpired { return "expired \(DurationText.format(.zero - remaining)) ago" }
        return DurationText.format(remaining)
    }

    static func expiry(_ entry: BlockEntry) -> String {
        entry.expiresUnixMilliseconds.map { localTime(unixMilliseconds: $0) } ?? "never"
    }

    /// Pads columns to the widest cell; the last column is left ragged.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    static func json<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else { return "null" }
        return String(decoding: data, as: UTF8.self)
    }
}

/// The JSON form of a block, stable for scripts.
struct BlockJSON: Encodable {
    let target: String
    let family: String
    let kind: String
    let permanent: Bool
    let expired: Bool
    let remainingSeconds: Double?
    let expiresAt: String?
    let expiresAtUnixMs: Int64?
    let droppedPackets: UInt64
    let droppedBytes: UInt64
    let reason: String
    let source: String?
    let createdAt: String?
    let refreshedAt: String?
    let requestedSeconds: Int64?

    init(_ entry: BlockEntry) {
        target = entry.target.description
        family = entry.target.family.rawValue
        if case .prefix = entry.target { kind = "prefix" } else { kind = "address" }
        permanent = entry.isPermanent
        expired = entry.isExpired
        remainingSeconds = entry.remaining.map { d in
            let (seconds, attoseconds) = d.components
            return max(0, Double(seconds) + Double(attoseconds) / 1e18)
        }
        expiresAt = entry.expiresUnixMilliseconds.map { Output.isoTime(unixMilliseconds: $0) }
        expiresAtUnixMs = entry.expiresUnixMilliseconds
        droppedPackets = entry.droppedPackets
        droppedBytes = entry.droppedBytes
        reason = entry.reason
        source = entry.source?.rawValue
        createdAt = entry.createdUnixMilliseconds.map { Output.isoTime(unixMilliseconds: $0) }
        refreshedAt = entry.refreshedUnixMilliseconds.map { Output.isoTime(unixMilliseconds: $0) }
        requestedSeconds = entry.requestedDuration?.components.seconds
    }
}
