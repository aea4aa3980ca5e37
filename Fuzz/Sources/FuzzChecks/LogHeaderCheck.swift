import PortcullisDetector

/// Log lines as the daemon reads a followed file: split by `LineAssembler`, each pre-decoded
/// (`LogMessage.predecode`, and `syslog`, which the daemon calls), and read as a journal
/// entry too, which shares nothing with the header but takes the same lines.
public enum LogHeaderCheck {
    public static let target = "log-header"

    public static func check(_ input: [UInt8]) throws(InvariantViolation) {
        var assembler = LineAssembler()
        var lines = assembler.lines(in: input)
        if let last = assembler.finish() { lines.append(last) }
        for line in lines {
            try checkLine(line)
            _ = LogMessage.journal(Substring(line))
        }
    }

    static func checkLine(_ line: String) throws(InvariantViolation) {
        let message = LogMessage.predecode(Substring(line))
        let bytes = Array(line.utf8)
        try invariant(message.line == line, "'\(line)' is recorded as '\(message.line)'")
        // Taking a header off leaves the rest of the line exactly as written.
        try invariant(bytes.suffix(message.text.utf8.count).elementsEqual(message.text.utf8), "the text '\(message.text)' is not the end of '\(line)'")
        try invariant(!message.program.utf8.contains(0x20), "the program '\(message.program)' of '\(line)'")
        if message.program.isEmpty && message.timestamp == nil {
            try invariant(message.text == line, "'\(line)' has no header, yet its text is '\(message.text)'")
        }
        if let timestamp = message.timestamp {
            try invariant(!timestamp.isEmpty && bytes.firstRange(of: Array(timestamp.utf8)) != nil, "the timestamp '\(timestamp)' is not in '\(line)'")
        }
        if let hostname = message.hostname {
            try invariant(message.timestamp != nil, "'\(line)' has a hostname but no timestamp")
            try invariant(!hostname.isEmpty && !hostname.utf8.contains(0x20), "the hostname '\(hostname)' of '\(line)'")
        }
        try invariant(LogMessage.syslog(Substring(line)) == (message.program.isEmpty ? nil : message),
                      "syslog and predecode disagree on '\(line)'")
    }
}
