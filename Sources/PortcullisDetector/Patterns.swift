import PortcullisCore

/// The three pattern languages of Wazuh's rule and decoder files, behind one interface:
/// OS_Match (`<match>`, `<program_name>`), OS_Regex (`<regex>`, `<prematch>`) and, with
/// `type="pcre2"`, a Perl-style regular expression.
///
/// OS_Match and OS_Regex are Wazuh's own small languages, not POSIX or PCRE, and are
/// implemented here as small matchers over the UTF-8 bytes, as Wazuh does: a rule file
/// written for Wazuh must mean the same thing here. `type="pcre2"` is run with Swift's
/// Regex, whose syntax is PCRE's for everything a log rule uses (classes, `\d \s \w \S`,
/// non-greedy and possessive quantifiers, lookaround, named groups) and which needs no
/// system library in the binary.
///
/// `@unchecked Sendable`: Swift's `Regex<AnyRegexOutput>` is not declared Sendable, but a
/// compiled regex is immutable and only ever read; the other cases are plain values.
public enum Pattern: @unchecked Sendable {
    case osMatch(OSMatch)
    case osRegex(OSRegex)
    case pcre2(Regex<AnyRegexOutput>, source: String)

    /// A match: where it ends (a UTF-8 offset into the text given) and what the groups captured.
    public struct Match: Sendable, Equatable {
        public var end: Int
        /// The groups in order, as a decoder's `<order>` names them.
        public var captures: [String?]
        /// Named groups of a pcre2 pattern.
        public var named: [String: String]
    }

    public struct CompileError: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    public static func compile(_ text: String, type: String?, defaultType: String) throws(CompileError) -> Pattern {
        switch (type ?? defaultType).lowercased() {
        case "osmatch": return .osMatch(OSMatch(text))
        case "osregex": return .osRegex(try OSRegex(text))
        case "pcre2":
            do { return .pcre2(try Regex(text), source: text) } catch {
                throw CompileError(description: "invalid pcre2 expression '\(TerminalText.excerpt(text))': \(error)")
            }
        case let other: throw CompileError(description: "pattern type '\(TerminalText.excerpt(other))' is not supported (osmatch, osregex or pcre2)")
        }
    }

    /// Matches `text` from the UTF-8 offset `start` on.
    public func match(_ text: String, from start: Int = 0) -> Match? {
        switch self {
        case .osMatch(let pattern):
            return pattern.matches(Array(text.utf8.dropFirst(start))) ? Match(end: text.utf8.count, captures: [], named: [:]) : nil
        case .osRegex(let pattern):
            guard let found = pattern.firstMatch(Array(text.utf8.dropFirst(start))) else { return nil }
            return Match(end: start + found.end, captures: found.captures, named: [:])
        case .pcre2(let regex, let source):
            let utf8 = text.utf8
            let from = utf8.index(utf8.startIndex, offsetBy: min(start, utf8.count))
            // An anchored expression can only match at the start: trying it at every later
            // position (as firstMatch does) costs a decoder of ten such children dearly.
            let attempt = source.hasPrefix("^") && !source.contains("|") ? try? regex.prefixMatch(in: text[from...]) : try? regex.firstMatch(in: text[from...])
            guard let found = attempt else { return nil }
            var captures: [String?] = []
            var named: [String: String] = [:]
            for (index, element) in found.output.enumerated() where index > 0 {
                let value = element.substring.map(String.init)
                captures.append(value)
                if let name = element.name, let value { named[name] = value }
            }
            return Match(end: utf8.distance(from: utf8.startIndex, to: found.range.upperBound), captures: captures, named: named)
        }
    }

    public var isPCRE2: Bool { if case .pcre2 = self { true } else { false } }
}

/// Wazuh's OS_Match: literal text, case-insensitive, `|` between alternatives, each
/// optionally anchored with `^` (at the start) and `$` (at the end). Anything else,
/// backslashes and dots included, is the character itself.
public struct OSMatch: Sendable, Equatable {
    struct Alternative: Sendable, Equatable {
        var text: [UInt8]
        var atStart: Bool
        var atEnd: Bool
    }
    let alternatives: [Alternative]

    public init(_ pattern: String) {
        alternatives = pattern.utf8.split(separator: UInt8(ascii: "|"), omittingEmptySubsequences: false).map { part in
            var text = Array(part).map(asciiLowercase)
            let atStart = text.first == UInt8(ascii: "^")
            if atStart { text.removeFirst() }
            let atEnd = text.last == UInt8(ascii: "$")
            if atEnd { text.removeLast() }
            return Alternative(text: text, atStart: atStart, atEnd: atEnd)
        }
        // "a|" (a trailing bar, as Wazuh's files use to join several <match> lines) adds an
        // empty alternative that would match everything; Wazuh ignores it, and so does this.
        .enumerated().filter { index, alternative in !(alternative.text.isEmpty && !alternative.atStart && !alternative.atEnd && index > 0) }
        .map(\.element)
    }

    public func matches(_ bytes: [UInt8]) -> Bool {
        let text = bytes.map(asciiLowercase)
        return text.withUnsafeBufferPointer { text in
            alternatives.contains { alternative in
                alternative.text.withUnsafeBufferPointer { needle in
                    guard needle.count <= text.count else { return false }
                    func equal(at offset: Int) -> Bool {
                        var index = 0
                        while index < needle.count {
                            if text[offset + index] != needle[index] { return false }
                            index += 1
                        }
                        return true
                    }
                    switch (alternative.atStart, alternative.atEnd) {
                    case (true, true): return needle.count == text.count && equal(at: 0)
                    case (true, false): return equal(at: 0)
                    case (false, true): return equal(at: text.count - needle.count)
                    case (false, false):
                        guard let first = needle.first else { return true }
                        var offset = 0
                        // A plain scan for the first byte, then a compare: rules are short, lines too.
                        while offset <= text.count - needle.count {
                            if text[offset] == first && equal(at: offset) { return true }
                            offset += 1
                        }
                        return false
                    }
                }
            }
        }
    }
}

/// Wazuh's OS_Regex: `\w \d \s \t \p` and their negations `\W \D \S`, `\.` for any
/// character, `+` and `*` after any of them or a literal, `( )` capturing groups, `^` and
/// `$` anchors, `|` between alternatives, and `\\ \( \) \| \$ \* \+` for the characters
/// themselves. Literals compare case-insensitively. The matcher backtracks with a bounded
/// budget, so a pathological pattern on a long line gives up instead of stalling the detector.
public struct OSRegex: Sendable, Equatable {
    enum Atom: Sendable, Equatable {
        case byte(UInt8)
        case word, digit, space, tab, punctuation, notWord, notDigit, notSpace, any

        func matches(_ byte: UInt8) -> Bool {
            switch self {
            case .byte(let expected): asciiLowercase(byte) == expected
            case .word: Atom.isWord(byte)
            case .digit: byte >= 0x30 && byte <= 0x39
            case .space: byte == 0x20
            case .tab: byte == 0x09
            case .punctuation: Atom.punctuationBytes.contains(byte)
            case .notWord: !Atom.isWord(byte)
            case .notDigit: !(byte >= 0x30 && byte <= 0x39)
            case .notSpace: byte != 0x20
            case .any: true
            }
        }

        static func isWord(_ byte: UInt8) -> Bool {
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "@") || byte == UInt8(ascii: "_")
        }
        static let punctuationBytes = Set(#"()*+,-.:;<=>?[]!"'#$%&|{}"#.utf8)
    }

    enum Token: Sendable, Equatable {
        case atom(Atom, Repeat)
        /// Group numbers are fixed when compiling, so backtracking never has to search for them.
        case open(Int), close(Int)
    }
    enum Repeat: Sendable, Equatable { case one, oneOrMore, zeroOrMore }

    struct Alternative: Sendable, Equatable {
        var tokens: [Token]
        var atStart: Bool
        var atEnd: Bool
        var groups: Int
    }

    let alternatives: [Alternative]
    /// The most captures of any alternative: every match reports this many.
    let groupCount: Int

    /// Patterns longer than this are refused: the matcher recurses once per token.
    static let maximumTokens = 1024

    public init(_ pattern: String) throws(Pattern.CompileError) {
        var alternatives: [Alternative] = []
        var current: [Token] = []
        var atStart = false, atEnd = false, groups = 0
        var openGroups: [Int] = []
        let bytes = Array(pattern.utf8)
        var index = 0
        func finish() throws(Pattern.CompileError) {
            guard openGroups.isEmpty else { throw Pattern.CompileError(description: "unbalanced ( in OS_Regex '\(TerminalText.excerpt(pattern))'") }
            alternatives.append(Alternative(tokens: current, atStart: atStart, atEnd: atEnd, groups: groups))
            (current, atStart, atEnd, groups) = ([], false, false, 0)
            openGroups = []
        }
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            var atom: Atom
            switch byte {
            case UInt8(ascii: "|"):
                try finish()
                continue
            case UInt8(ascii: "^") where current.isEmpty && !atStart:
                atStart = true
                continue
            case UInt8(ascii: "$") where index == bytes.count || bytes[index] == UInt8(ascii: "|"):
                atEnd = true
                continue
            case UInt8(ascii: "("):
                openGroups.append(groups)
                current.append(.open(groups))
                groups += 1
                continue
            case UInt8(ascii: ")"):
                guard let group = openGroups.popLast() else { throw Pattern.CompileError(description: "unbalanced ) in OS_Regex '\(TerminalText.excerpt(pattern))'") }
                current.append(.close(group))
                continue
            case UInt8(ascii: "\\"):
                guard index < bytes.count else { throw Pattern.CompileError(description: "OS_Regex '\(TerminalText.excerpt(pattern))' ends with a lone \\") }
                let escaped = bytes[index]
                index += 1
                switch escaped {
                case UInt8(ascii: "w"): atom = .word
                case UInt8(ascii: "d"): atom = .digit
                case UInt8(ascii: "s"): atom = .space
                case UInt8(ascii: "t"): atom = .tab
                case UInt8(ascii: "p"): atom = .punctuation
                case UInt8(ascii: "W"): atom = .notWord
                case UInt8(ascii: "D"): atom = .notDigit
                case UInt8(ascii: "S"): atom = .notSpace
                case UInt8(ascii: "."): atom = .any
                default:
                    let isLetterOrDigit = Atom.isWord(escaped) && escaped != UInt8(ascii: "-") && escaped != UInt8(ascii: "@") && escaped != UInt8(ascii: "_")
                    guard !isLetterOrDigit else {
                        throw Pattern.CompileError(description: "\\\(Character(Unicode.Scalar(escaped))) is not an OS_Regex class (\\w \\d \\s \\t \\p \\W \\D \\S \\.) in '\(TerminalText.excerpt(pattern))'")
                    }
                    atom = .byte(escaped)
                }
            default:
                atom = .byte(asciiLowercase(byte))
            }
            var repetition = Repeat.one
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") { repetition = .oneOrMore; index += 1 }
            else if index < bytes.count, bytes[index] == UInt8(ascii: "*") { repetition = .zeroOrMore; index += 1 }
            current.append(.atom(atom, repetition))
            guard current.count <= Self.maximumTokens else {
                throw Pattern.CompileError(description: "OS_Regex '\(pattern.prefix(40))...' is longer than \(Self.maximumTokens) elements")
            }
        }
        try finish()
        self.alternatives = alternatives
        groupCount = alternatives.map(\.groups).max() ?? 0
    }

    public struct Found: Sendable, Equatable {
        public var end: Int
        public var captures: [String?]
    }

    /// The first alternative that matches, at the leftmost start it matches at.
    public func firstMatch(_ text: [UInt8]) -> Found? {
        for alternative in alternatives {
            var budget = 200_000 + 20 * text.count
            let starts = alternative.atStart ? 0...0 : 0...text.count
            for start in starts {
                var groupStarts = [Int](repeating: 0, count: alternative.groups)
                var spans = [(Int, Int)?](repeating: nil, count: alternative.groups)
                if let end = Self.run(alternative, tokenIndex: 0, at: start, in: text, groupStarts: &groupStarts,
                                      spans: &spans, budget: &budget) {
                    var captures: [String?] = spans.map { span in span.map { String(decoding: text[$0.0..<$0.1], as: UTF8.self) } }
                    captures += [String?](repeating: nil, count: groupCount - captures.count)
                    return Found(end: end, captures: captures)
                }
                if budget <= 0 { break }
            }
        }
        return nil
    }

    public func matches(_ text: [UInt8]) -> Bool { firstMatch(text) != nil }

    /// Matches the tokens from `tokenIndex` at `position`; the end of the match, or nil.
    private static func run(_ alternative: Alternative, tokenIndex: Int, at position: Int, in text: [UInt8],
                            groupStarts: inout [Int], spans: inout [(Int, Int)?], budget: inout Int) -> Int? {
        budget -= 1
        guard budget > 0 else { return nil }
        guard tokenIndex < alternative.tokens.count else {
            return !alternative.atEnd || position == text.count ? position : nil
        }
        switch alternative.tokens[tokenIndex] {
        case .open(let group):
            let saved = groupStarts[group]
            groupStarts[group] = position
            if let end = run(alternative, tokenIndex: tokenIndex + 1, at: position, in: text, groupStarts: &groupStarts,
                             spans: &spans, budget: &budget) { return end }
            groupStarts[group] = saved
            return nil
        case .close(let group):
            let saved = spans[group]
            spans[group] = (groupStarts[group], position)
            if let end = run(alternative, tokenIndex: tokenIndex + 1, at: position, in: text, groupStarts: &groupStarts,
                             spans: &spans, budget: &budget) { return end }
            spans[group] = saved
            return nil
        case .atom(let atom, let repetition):
            var longest = 0
            let limit = repetition == .one ? 1 : text.count - position
            while longest < limit, position + longest < text.count, atom.matches(text[position + longest]) { longest += 1 }
            let shortest = repetition == .zeroOrMore ? 0 : 1
            guard longest >= shortest else { return nil }
            // Greedy: the longest run first, then shorter ones.
            for count in stride(from: longest, through: shortest, by: -1) {
                if let end = run(alternative, tokenIndex: tokenIndex + 1, at: position + count, in: text, groupStarts: &groupStarts,
                                 spans: &spans, budget: &budget) { return end }
                if budget <= 0 { return nil }
            }
            return nil
        }
    }
}

@inline(__always) func asciiLowercase(_ byte: UInt8) -> UInt8 {
    byte >= 0x41 && byte <= 0x5a ? byte + 32 : byte
}
