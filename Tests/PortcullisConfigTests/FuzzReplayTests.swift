import Testing

/// The committed inputs of the yaml-config fuzz target, Fuzz/Corpus/yaml-config and Fuzz/Regressions/yaml-config,
/// through the check the target runs (DaemonConfigurationCheck, linked from Fuzz/): each goes through
/// `DaemonConfiguration.parse` without a crash, an unbounded run or a broken invariant, so a
/// crash the fuzzer once found stays fixed without libFuzzer.
@Suite struct DaemonConfigurationFuzzReplay {
    static let files = FuzzInputs.files(of: DaemonConfigurationCheck.target)

    @Test func theCorpusIsCommitted() {
        #expect(Self.files.contains { $0.hasPrefix("Corpus/") })
    }

    @Test(.timeLimit(.minutes(2)), arguments: files)
    func replays(_ path: String) {
        let (violation, elapsed) = FuzzInputs.replay(path, through: DaemonConfigurationCheck.check)
        #expect(violation == nil, "Fuzz/\(path): \(violation ?? "")")
        // Far above a debug build's time for any committed input, far below a hang's.
        #expect(elapsed < .seconds(10), "Fuzz/\(path) took \(elapsed)")
    }
}
