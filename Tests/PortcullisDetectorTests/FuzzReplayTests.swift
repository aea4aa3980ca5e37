import Testing

/// The committed inputs of the xml fuzz target, Fuzz/Corpus/xml and Fuzz/Regressions/xml,
/// through the check the target runs (ConfigurationXMLCheck, linked from Fuzz/): each goes through
/// `ActiveResponseConfiguration.parse` and `RuleSet(wazuhXML:file:)` without a crash, an unbounded run or a broken invariant, so a
/// crash the fuzzer once found stays fixed without libFuzzer.
@Suite struct ConfigurationXMLFuzzReplay {
    static let files = FuzzInputs.files(of: ConfigurationXMLCheck.target)

    @Test func theCorpusIsCommitted() {
        #expect(Self.files.contains { $0.hasPrefix("Corpus/") })
    }

    @Test(.timeLimit(.minutes(2)), arguments: files)
    func replays(_ path: String) {
        let (violation, elapsed) = FuzzInputs.replay(path, through: ConfigurationXMLCheck.check)
        #expect(violation == nil, "Fuzz/\(path): \(violation ?? "")")
        // Far above a debug build's time for any committed input, far below a hang's.
        #expect(elapsed < .seconds(10), "Fuzz/\(path) took \(elapsed)")
    }
}

/// The committed inputs of the log-header fuzz target, Fuzz/Corpus/log-header and Fuzz/Regressions/log-header,
/// through the check the target runs (LogHeaderCheck, linked from Fuzz/): each goes through
/// `LineAssembler` and `LogMessage.predecode` without a crash, an unbounded run or a broken invariant, so a
/// crash the fuzzer once found stays fixed without libFuzzer.
@Suite struct LogHeaderFuzzReplay {
    static let files = FuzzInputs.files(of: LogHeaderCheck.target)

    @Test func theCorpusIsCommitted() {
        #expect(Self.files.contains { $0.hasPrefix("Corpus/") })
    }

    @Test(.timeLimit(.minutes(2)), arguments: files)
    func replays(_ path: String) {
        let (violation, elapsed) = FuzzInputs.replay(path, through: LogHeaderCheck.check)
        #expect(violation == nil, "Fuzz/\(path): \(violation ?? "")")
        // Far above a debug build's time for any committed input, far below a hang's.
        #expect(elapsed < .seconds(10), "Fuzz/\(path) took \(elapsed)")
    }
}
