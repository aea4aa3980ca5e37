import PortcullisCore

extension IncidentReport {
    /// One self-contained page: inline CSS, the chart as inline SVG, no script, and no URL at
    /// all, so it opens the same offline, from a mail attachment or an archive. Its Content
    /// Security Policy forbids fetching anything, should text ever get through as markup.
    public var html: String {
        var out = """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>Portcullis incident report \(HTMLText.escaped(period.since)) to \(HTMLText.escaped(period.until))</title>
            <style>
            body { font: 14px/1.45 system-ui, sans-serif; color: #1d2430; margin: 2em auto; max-width: 1200px; padding: 0 1em; }
            h1 { font-size: 1.6em; margin-bottom: .2em; }
            h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #d5dae1; padding-bottom: .2em; }
            table { border-collapse: collapse; margin: .6em 0; }
            th, td { border: 1px solid #d5dae1; padding: .25em .6em; vertical-align: top; }
            th { background: #f1f3f6; text-align: left; font-weight: 600; }
            td.n { text-align: right; font-variant-numeric: tabular-nums; }
            td { overflow-wrap: break-word; max-width: 32em; }
            .intact { color: #17663a; font-weight: 600; }
            .broken, .unverified { color: #a8201a; font-weight: 600; }
            .legend span { display: inline-block; margin-right: 1.2em; }
            .legend i { display: inline-block; width: .9em; height: .9em; margin-right: .3em; vertical-align: -.1em; }
            </style>
            </head>
            <body>
            <h1>Portcullis incident report</h1>

            """
        for section in sections {
            out += "<section id=\"\(section.id)\">\n<h2>\(HTMLText.escaped(section.title))</h2>\n"
            for paragraph in section.paragraphs where !paragraph.isEmpty {
                if section.id == "chain" {
                    out += "<p class=\"\(HTMLText.escaped(chain.status))\">\(HTMLText.escaped(paragraph))</p>\n"
                } else {
                    out += "<p>\(HTMLText.escaped(paragraph))</p>\n"
                }
            }
            if section.id == "days" && !days.isEmpty { out += dayChart }
            if !section.header.isEmpty {
                if section.rows.isEmpty {
                    out += "<p>\(HTMLText.escaped(section.empty))</p>\n"
                } else {
                    out += "<table>\n<thead><tr>" + section.header.map { "<th>\(HTMLText.escaped($0))</th>" }.joined() + "</tr></thead>\n<tbody>\n"
                    for row in section.rows {
                        out += "<tr>" + row.map { cell in
                            if case .number(let text) = cell { return "<td class=\"n\">\(HTMLText.escaped(text))</td>" }
                            return "<td>\(HTMLText.escaped(cell.value))</td>"
                        }.joined() + "</tr>\n"
                    }
                    out += "</tbody>\n</table>\n"
                }
            }
            out += "</section>\n"
        }
        return out + "</body>\n</html>\n"
    }

    /// Stacked bars, one per day: detections, blocks and refreshes, ends, refusals.
    var dayChart: String {
        let series: [(name: String, color: String, value: (DailySummary) -> Int)] = [
            ("detected", "#8a6fd1", { $0.detected }),
            ("blocked or refreshed", "#c8412c", { $0.blocked + $0.refreshed }),
            ("unblocked or expired", "#3f7fbf", { $0.unblocked + $0.expired }),
            ("refused", "#d9a21b", { $0.refused }),
        ]
        let tallest = max(1, days.map { day in series.reduce(0) { $0 + $1.value(day) } }.max() ?? 1)
        let (height, top, bottom, left) = (200, 10, 40, 44)
        let slot = max(8, min(48, 1000 / max(1, days.count)))
        let width = left + slot * days.count + 10
        var svg = "<svg role=\"img\" aria-label=\"Incidents by day\" width=\"\(width)\" height=\"\(height + top + bottom)\" viewBox=\"0 0 \(width) \(height + top + bottom)\">\n"
        // The axis: 0 and the tallest day.
        svg += "<line x1=\"\(left - 4)\" y1=\"\(top + height)\" x2=\"\(width - 6)\" y2=\"\(top + height)\" stroke=\"#8a93a0\"/>\n"
        svg += "<text x=\"\(left - 8)\" y=\"\(top + height + 4)\" font-size=\"11\" text-anchor=\"end\">0</text>\n"
        svg += "<text x=\"\(left - 8)\" y=\"\(top + 8)\" font-size=\"11\" text-anchor=\"end\">\(tallest)</text>\n"
        for (index, day) in days.enumerated() {
            let x = left + index * slot + 1
            var base = top + height
            for entry in series {
                let value = entry.value(day)
                guard value > 0 else { continue }
                let barHeight = max(1, value * height / tallest)
                base -= barHeight
                svg += "<rect class=\"bar\" x=\"\(x)\" y=\"\(base)\" width=\"\(slot - 2)\" height=\"\(barHeight)\" fill=\"\(entry.color)\">"
                    + "<title>\(HTMLText.escaped("\(day.day): \(value) \(entry.name)"))</title></rect>\n"
            }
            if days.count <= 40 || index % max(1, days.count / 20) == 0 {
                svg += "<text x=\"\(x + slot / 2)\" y=\"\(top + height + 14)\" font-size=\"10\" text-anchor=\"end\" "
                    + "transform=\"rotate(-45 \(x + slot / 2) \(top + height + 14))\">\(HTMLText.escaped(String(day.day.dropFirst(5))))</text>\n"
            }
        }
        svg += "</svg>\n"
        let legend = "<p class=\"legend\">" + series.map { "<span><i style=\"background:\($0.color)\"></i>\(HTMLText.escaped($0.name))</span>" }.joined() + "</p>\n"
        return svg + legend
    }
}

/// Text made inert in HTML: control characters and bidirectional overrides shown as escapes
/// (as on a terminal), then the characters HTML gives a meaning to written as entities, so
/// it is safe in element content and in a quoted attribute.
public enum HTMLText {
    public static func escaped(_ text: String) -> String {
        var out = ""
        for character in TerminalText.escaped(text) {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }
}
