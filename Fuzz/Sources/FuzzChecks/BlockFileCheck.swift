import PortcullisCore

/// Block files, whole: split into lines on the byte, as `portcullis block --file` and the
/// control API's `lines` split them, each line through `BlockFile.parseLine`.
public enum BlockFileCheck {
    public static let target = "block-file"

    enum Outcome: Equatable {
        case skipped
        case entry(BlockFileEntry)
        case refused(BlockFileError)
    }

    static func outcome(_ line: Substring, _ number: Int) -> Outcome {
        do {
            guard let entry = try BlockFile.parseLine(line, number: number) else { return .skipped }
            return .entry(entry)
        } catch {
            return .refused(error)
        }
    }

    // What a block can never cover, whatever the line says.
    static let neverBlocked: [IPAddress] = [
        .v4(IPv4Address(127, 0, 0, 1)), .v4(IPv4Address(127, 255, 255, 255)),
        .v6(IPv6Address(high: 0, low: 1)), .v6(IPv6Address(high: 0, low: 0xFFFF_7F00_0001)),
    ]

    public static func check(_ input: [UInt8]) throws(InvariantViolation) {
        let text = String(decoding: input, as: UTF8.self)
        var number = 0
        for bytes in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            number += 1
            let line = Substring(bytes)
            let result = outcome(line, number)
            switch result {
            case .skipped:
                break
            case .refused(let error):
                try invariant(error.line == number, "line \(number) refused as line \(error.line)")
            case .entry(let entry):
                try checkEntry(entry, number: number, line: line)
            }
            // A comment is a comment wherever it starts: it never changes what the line means.
            // (Not after a CR, which the parser trims only at the very end of a line.)
            if !line.utf8.contains(UInt8(ascii: "\r")) {
                let commented = outcome(line + "\t# a note", number)
                try invariant(commented == result, "a trailing comment changed line \(number) from \(result) to \(commented)")
            }
        }
    }

    static func checkEntry(_ entry: BlockFileEntry, number: Int, line: Substring) throws(InvariantViolation) {
        try invariant(entry.line == number, "line \(number) parsed as line \(entry.line)")
        let target = entry.target
        // The canonical text of what was parsed parses back to it, with nothing to normalize.
        let again: ParsedTarget
        do {
            again = try BlockTarget.parse(target.description)
        } catch {
            throw InvariantViolation(description: "'\(line)' gave \(target), whose text is refused: \(error)")
        }
        try invariant(again.target == target && again.notes.isEmpty,
                      "'\(line)' gave \(target), whose text parses as \(again.target) with notes \(again.notes)")
        switch target {
        case .address(let address):
            try invariant(!address.isLoopback && !address.isUnspecified, "'\(line)' blocks \(address)")
            if case .v6(let v6) = address {
                try invariant(v6.mappedIPv4 == nil, "'\(line)' kept the IPv4-mapped form \(address)")
            }
        case .prefix(let prefix):
            try invariant(prefix.length < prefix.family.bitWidth, "'\(line)' gave the full-length prefix \(prefix)")
            try invariant(prefix.address.masked(to: prefix.length) == prefix.address, "'\(line)' kept host bits in \(prefix)")
            for address in neverBlocked where address.family == prefix.family {
                try invariant(!prefix.contains(address), "'\(line)' gave \(prefix), which covers \(address)")
            }
        }
        if let duration = entry.duration {
            let (seconds, attoseconds) = duration.components
            try invariant(attoseconds == 0 && (1...DurationText.maximumSeconds).contains(seconds),
                          "'\(line)' gave the duration \(duration)")
            // What `portcullis list` shows of a duration reads back as the same duration.
            let shown = DurationText.format(duration)
            try invariant((try? DurationText.parse(shown)) == duration, "'\(line)': \(duration) is shown as '\(shown)', which reads back otherwise")
        }
    }
}
