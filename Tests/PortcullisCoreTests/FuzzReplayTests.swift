import Testing

/// The committed inputs of the block-file fuzz target, Fuzz/Corpus/block-file and Fuzz/Regressions/block-file,
/// through the check the target runs (BlockFileCheck, linked from Fuzz/): each goes through
/// `BlockFile.parseLine`, line by line, without a crash, an unbounded run or a broken invariant, so a
/// crash the fuzzer once found stays fixed without libFuzzer.
@Suite struct BlockFileFuzzReplay {
    static let files = FuzzInputs.files(of: BlockFileCheck.target)

    @Test func theCorpusIsCommitted() {
        #expect(Self.files.contains { $0.hasPrefix("Corpus/") })
    }

    @Test(.timeLimit(.minutes(2)), arguments: files)
    func replays(_ path: String) {
        let (violation, elapsed) = FuzzInputs.replay(path, through: BlockFileCheck.check)
        #expect(violation == nil, "Fuzz/\(path): \(violation ?? "")")
        // Far above a debug build's time for any committed input, far below a hang's.
        #expect(elapsed < .seconds(10), "Fuzz/\(path) took \(elapsed)")
    }
}
