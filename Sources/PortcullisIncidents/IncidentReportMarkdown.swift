import PortcullisCore

extension IncidentReport {
    /// The report's tables in GitHub-flavoured Markdown, for pasting into a ticket.
    public var markdown: String {
        var out = "# Portcullis incident report\n"
        for section in sections {
            out += "\n## " + MarkdownText.escaped(section.title) + "\n"
            for paragraph in section.paragraphs where !paragraph.isEmpty {
                out += "\n" + MarkdownText.escaped(paragraph) + "\n"
            }
            guard !section.header.isEmpty else { continue }
            if section.rows.isEmpty {
                out += "\n" + MarkdownText.escaped(section.empty) + "\n"
                continue
            }
            out += "\n| " + section.header.map(MarkdownText.escaped).joined(separator: " | ") + " |\n"
            out += "|" + section.rows[0].map { cell in
                if case .number = cell { return " ---: " }
                return " --- "
            }.joined(separator: "|") + "|\n"
            for row in section.rows {
                out += "| " + row.map { MarkdownText.escaped($0.value) }.joined(separator: " | ") + " |\n"
            }
        }
        return out
    }
}

/// Text made inert in Markdown: control characters and bidirectional overrides shown as
/// escapes (as on a terminal), then every character Markdown or a table gives a meaning
/// mid-line (emphasis, code, links, images, HTML, cell ends) backslash-escaped, and autolinks
/// broken, so a reason an attacker wrote is shown as written and never becomes markup or a link.
public enum MarkdownText {
    static let special: Set<Character> = ["\\", "`", "*", "_", "[", "]", "<", ">", "|", "!", "~", "&", "#", "{", "}", "$"]

    public static func escaped(_ text: String) -> String {
        let visible = Array(TerminalText.escaped(text))
        var out = ""
        out.reserveCapacity(visible.count)
        for (index, character) in visible.enumerated() {
            if special.contains(character) {
                out.append("\\")
            } else if character == ":" && visible[(index + 1)...].starts(with: ["/", "/"]) {
                // "scheme://" and "www." start GitHub's autolinks.
                out.append("\\")
            } else if character == "." && index >= 3 && visible[(index - 3)..<index].map({ $0.lowercased() }) == ["w", "w", "w"] {
                out.append("\\")
            }
            out.append(character)
        }
        return out
    }
}
