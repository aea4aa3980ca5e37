import PortcullisControl
import PortcullisCore
import PortcullisIncidents

/// A key pressed in the live view.
enum TopKey: Equatable {
    case quit
    case sort(TopOrder)
    case redraw
}

enum TopKeys {
    /// The keys in what one read from the terminal returned. Escape sequences (arrows, function
    /// keys) are skipped whole, so their letters are never taken for commands.
    static func parse(_ bytes: [UInt8]) -> [TopKey] {
        var keys: [TopKey] = []
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            if byte == 0x1b {
                guard index < bytes.count, bytes[index] == UInt8(ascii: "[") || bytes[index] == UInt8(ascii: "O") else { continue }
                index += 1
                // Parameter and intermediate bytes, then the final byte (0x40-0x7e).
                while index < bytes.count, !(0x40...0x7e).contains(bytes[index]) { index += 1 }
                index += 1
                continue
            }
            switch byte {
            case UInt8(ascii: "q"), UInt8(ascii: "Q"), 0x03, 0x04: keys.append(.quit)  // Ctrl-C, Ctrl-D
            case UInt8(ascii: "p"), UInt8(ascii: "P"): keys.append(.sort(.pps))
            case UInt8(ascii: "b"), UInt8(ascii: "B"): keys.append(.sort(.bps))
            case UInt8(ascii: "t"), UInt8(ascii: "T"): keys.append(.sort(.total))
            case UInt8(ascii: "e"), UInt8(ascii: "E"): keys.append(.sort(.expiry))
            case 0x0c, UInt8(ascii: "l"), UInt8(ascii: "L"): keys.append(.redraw)  // Ctrl-L
            default: break
            }
        }
        return keys
    }
}

/// What the screen shows besides the sample.
struct TopContext {
    /// "daemon" or the pin directory read directly.
    var via: String
    var intervalSeconds: Double
    var order: TopOrder
    /// The last sample's failure, shown on the last line while it lasts.
    var problem: String?
    /// Local time of day, for the title.
    var clock: String
}

/// The live view laid out in text: pure, so its layout is tested without a terminal.
enum TopScreen {
    /// The lines of one frame, each at most `width` columns, at most `height` of them (the last
    /// line is the footer). nil for either: as wide or as long as it takes (`--once`).
    static func lines(_ sample: TopSample?, _ context: TopContext, width: Int?, height: Int?) -> [String] {
        let title = "portcullis top  \(context.clock)  via \(context.via)  every \(Self.seconds(context.intervalSeconds))  "
            + "sort \(context.order.rawValue)  [p]ps [b]ps [t]otal [e]xpiry [q]uit"
        var footer: String
        if let problem = context.problem {
            footer = "error: " + TerminalText.escaped(problem)
        } else if let sampling = sample?.sampling {
            footer = "sampling: \(sampling.scanned) read of \(count(UInt64(max(0, sampling.blocksHeld)))) held, \(sampling.readByKey) by key, "
                + "round \(Output.fixed(Double(sampling.roundMicroseconds) / 1000, digits: 1)) ms, "
                + "full pass \(sampling.passSeconds.map(Self.seconds) ?? "in progress")"
        } else {
            footer = "waiting for the first sample"
        }
        guard let sample else {
            return clipped([title] + [String](repeating: "", count: max(0, (height ?? 2) - 2)) + [footer], width: width, height: height)
        }
        let summary = summaryLine(sample)
        let interfaces = interfaceTable(sample)
        let blocks = blockTable(sample, order: context.order)
        let expiring = expiringTable(sample)
        let incidents = incidentTable(sample)

        guard let height else {
            var all = [title, summary, ""] + interfaces.header + interfaces.rows
            all += [""] + blocks.header + blocks.rows
            if !expiring.rows.isEmpty { all += [""] + expiring.header + expiring.rows }
            if !incidents.rows.isEmpty { all += [""] + incidents.header + incidents.rows }
            return clipped(all + ["", footer], width: width, height: nil)
        }

        // Rows are granted in order of importance while the height lasts.
        var budget = height - 3
        var shown = (interfaces: 0, blocks: 0, expiring: 0, incidents: 0)
        var headers = (interfaces: false, blocks: false, expiring: false, incidents: false)
        func grant(_ header: inout Bool, _ count: inout Int, upTo wanted: Int, available rows: Int, headerLines: Int) {
            let target = min(wanted, rows)
            if !header {
                guard budget >= headerLines + min(1, target) else { return }
                header = true
                budget -= headerLines
            }
            let more = min(max(0, target - count), budget)
            count += more
            budget -= more
        }
        grant(&headers.interfaces, &shown.interfaces, upTo: 1, available: interfaces.rows.count, headerLines: interfaces.header.count)
        grant(&headers.blocks, &shown.blocks, upTo: 3, available: blocks.rows.count, headerLines: 1 + blocks.header.count)
        if !expiring.rows.isEmpty {
            grant(&headers.expiring, &shown.expiring, upTo: 1, available: expiring.rows.count, headerLines: 1 + expiring.header.count)
        }
        if !incidents.rows.isEmpty {
            grant(&headers.incidents, &shown.incidents, upTo: 1, available: incidents.rows.count, headerLines: 1 + incidents.header.count)
        }
        if headers.blocks { grant(&headers.blocks, &shown.blocks, upTo: 10, available: blocks.rows.count, headerLines: 0) }
        if headers.expiring { grant(&headers.expiring, &shown.expiring, upTo: 3, available: expiring.rows.count, headerLines: 0) }
        if headers.incidents { grant(&headers.incidents, &shown.incidents, upTo: 3, available: incidents.rows.count, headerLines: 0) }
        if headers.interfaces { grant(&headers.interfaces, &shown.interfaces, upTo: 4, available: interfaces.rows.count, headerLines: 0) }
        if headers.blocks { grant(&headers.blocks, &shown.blocks, upTo: .max, available: blocks.rows.count, headerLines: 0) }

        var frame = [title, summary]
        if headers.interfaces { frame += interfaces.header + interfaces.rows.prefix(shown.interfaces) }
        if headers.blocks { frame += [""] + blocks.header + blocks.rows.prefix(shown.blocks) }
        if headers.expiring { frame += [""] + expiring.header + expiring.rows.prefix(shown.expiring) }
        if headers.incidents { frame += [""] + incidents.header + incidents.rows.prefix(shown.incidents) }
        let room = max(0, height - 1 - frame.count)
        frame += [String](repeating: "", count: room)
        return clipped(Array(frame.prefix(max(0, height - 1))) + [footer], width: width, height: height)
    }

    private static func clipped(_ lines: [String], width: Int?, height: Int?) -> [String] {
        let kept = height.map { Array(lines.prefix($0)) } ?? lines
        guard let width else { return kept }
        return kept.map { clip($0, to: width) }
    }

    // MARK: - Sections

    static func summaryLine(_ sample: TopSample) -> String {
        let total = sample.total
        var line = "dropping \(rate(total.droppedPerSecond)) pps \(rate(total.droppedBytesPerSecond.map { $0 * 8 })) bit/s"
        line += "  passing \(rate(total.passedPerSecond)) pps"
        line += "  blocks \(count(UInt64(max(0, sample.sampling.blocksHeld))))  watching \(sample.sampling.watched)"
        return line
    }

    typealias Table = (header: [String], rows: [String])

    static func interfaceTable(_ sample: TopSample) -> Table {
        var rows = sample.interfaces.map { interface in
            [TerminalText.escaped(interface.names.joined(separator: ", ")), rate(interface.droppedPerSecond),
             rate(interface.droppedBytesPerSecond.map { $0 * 8 }), rate(interface.passedPerSecond), rate(interface.seenPerSecond)]
        }
        if rows.isEmpty { rows = [["(no packets seen on any interface)", "", "", "", ""]] }
        return table(["INTERFACE", "DROP PPS", "DROP BIT/S", "PASS PPS", "SEEN PPS"], rows, rightAligned: [1, 2, 3, 4])
    }

    static func blockTable(_ sample: TopSample, order: TopOrder) -> Table {
        let byTarget = Dictionary(sample.blocks.map { ($0.target, $0) }, uniquingKeysWith: { first, _ in first })
        let ranked = order.ranked(sample.blocks.compactMap(\.watched)).compactMap { byTarget[$0.target.description] }
        var rows = ranked.map { block in
            [TerminalText.escaped(block.target), rate(block.packetsPerSecond), rate(block.bytesPerSecond * 8), count(block.droppedPackets),
             left(block.remainingSeconds, permanent: block.permanent, expired: block.expired),
             block.source?.rawValue ?? "-", TerminalText.escaped(block.reason)]
        }
        if rows.isEmpty { rows = [["(no block is dropping now)", "", "", "", "", "", ""]] }
        var header = ["DROPPING NOW", "PPS", "BIT/S", "DROPPED", "LEFT", "SOURCE", "REASON"]
        let marked = switch order {
        case .pps: 1
        case .bps: 2
        case .total: 3
        case .expiry: 4
        }
        header[marked] += "*"
        return table(header, rows, rightAligned: [1, 2, 3, 4])
    }

    static func expiringTable(_ sample: TopSample) -> Table {
        let rows = sample.expiring.map { block in
            [TerminalText.escaped(block.target), left(block.remainingSeconds, permanent: block.permanent, expired: block.expired),
             count(block.droppedPackets), block.source?.rawValue ?? "-", TerminalText.escaped(block.reason)]
        }
        return table(["EXPIRING SOON", "LEFT", "DROPPED", "SOURCE", "REASON"], rows, rightAligned: [1, 2])
    }

    static func incidentTable(_ sample: TopSample) -> Table {
        let rows = sample.incidents.map { incident in
            [Output.localTime(unixMilliseconds: incident.timeUnixMs).split(separator: " ").dropFirst().first.map(String.init) ?? incident.time,
             incident.action.rawValue, TerminalText.escaped(incident.target), TerminalText.escaped(incident.source),
             TerminalText.escaped(incident.reason ?? incident.error ?? incident.detection?.ruleDescription ?? "")]
        }
        return table(["LATEST INCIDENTS", "ACTION", "TARGET", "SOURCE", "REASON"], rows, rightAligned: [])
    }

    /// The first column's width at most: a long IPv6 target widens its own row, not every row,
    /// so the other rows keep their reasons on an 80-column screen.
    static let firstColumnCap = 24

    /// Columns padded to their widest cell (by display width); the last one is left ragged.
    static func table(_ header: [String], _ rows: [[String]], rightAligned: Set<Int>) -> Table {
        var widths = header.map(displayWidth)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], displayWidth(cell)) }
        }
        widths[0] = min(widths[0], max(firstColumnCap, displayWidth(header[0])))
        func line(_ cells: [String]) -> String {
            var parts: [String] = []
            for (index, cell) in cells.enumerated() {
                let last = index == cells.count - 1
                let pad = String(repeating: " ", count: max(0, widths[index] - displayWidth(cell)))
                parts.append(last && !rightAligned.contains(index) ? cell : rightAligned.contains(index) ? pad + cell : cell + pad)
            }
            var joined = parts.joined(separator: "  ")
            while joined.last == " " { joined.removeLast() }
            return joined
        }
        return ([line(header)], rows.map(line))
    }

    // MARK: - Numbers

    /// 12, 1.23k, 45.6M: three significant digits, SI prefixes; "-" when not known yet.
    static func rate(_ value: Double?) -> String {
        guard let value, value.isFinite else { return "-" }
        return si(max(0, value))
    }

    static func count(_ value: UInt64) -> String { si(Double(value)) }

    private static func si(_ value: Double) -> String {
        if value < 999.5 { return String(Int64(value.rounded())) }
        let prefixes = ["k", "M", "G", "T", "P", "E"]
        var scaled = value
        var index = -1
        while scaled >= 999.5 && index < prefixes.count - 1 {
            scaled /= 1000
            index += 1
        }
        let digits = scaled < 9.995 ? 2 : scaled < 99.95 ? 1 : 0
        return Output.fixed(scaled, digits: digits) + prefixes[index]
    }

    /// "42s", "12m05s", "5h12m", "6d23h"; "perm" for a permanent block.
    static func left(_ seconds: Double?, permanent: Bool, expired: Bool) -> String {
        if expired { return "expired" }
        guard let seconds, !permanent else { return "perm" }
        let whole = Int64(max(0, seconds.rounded(.down)))
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : String(value) }
        if whole < 60 { return "\(whole)s" }
        if whole < 3600 { return "\(whole / 60)m\(two(whole % 60))s" }
        if whole < 86_400 { return "\(whole / 3600)h\(two(whole % 3600 / 60))m" }
        return "\(whole / 86_400)d\(two(whole % 86_400 / 3600))h"
    }

    static func seconds(_ value: Double) -> String {
        value.rounded() == value ? "\(Int64(value))s" : Output.fixed(value, digits: 1) + "s"
    }

    // MARK: - Width

    /// Columns `text` takes on a terminal: combining marks none, East Asian wide and emoji two.
    static func displayWidth(_ text: String) -> Int {
        text.unicodeScalars.reduce(0) { $0 + columns($1) }
    }

    /// The longest start of `text` that fits in `width` columns.
    static func clip(_ text: String, to width: Int) -> String {
        var used = 0
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            let needed = columns(scalar)
            if used + needed > width { break }
            used += needed
            out.append(scalar)
        }
        return String(out)
    }

    private static func columns(_ scalar: Unicode.Scalar) -> Int {
        let value = scalar.value
        if value < 0x300 { return 1 }
        switch scalar.properties.generalCategory {
        case .nonspacingMark, .enclosingMark, .format: return 0
        default: break
        }
        if scalar.properties.isEmojiPresentation { return 2 }
        switch value {
        case 0x1100...0x115F, 0x2E80...0x303E, 0x3041...0x33FF, 0x3400...0x4DBF, 0x4E00...0x9FFF, 0xA000...0xA4CF,
             0xAC00...0xD7A3, 0xF900...0xFAFF, 0xFE30...0xFE4F, 0xFF00...0xFF60, 0xFFE0...0xFFE6, 0x20000...0x3FFFD:
            return 2
        default:
            return 1
        }
    }
}
