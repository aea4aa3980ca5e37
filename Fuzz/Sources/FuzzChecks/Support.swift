// This file is compiled twice: into the fuzz targets (Fuzz/) and, through symbolic links,
// into the test targets that replay the committed corpus and regressions, so that a fuzz
// input and its replay in `swift test` go through exactly the same code.
import FoundationEssentials

/// A property of a parser's result that an input broke: a bug as real as a crash.
public struct InvariantViolation: Error, CustomStringConvertible {
    public let description: String
}

@inline(__always)
func invariant(_ condition: Bool, _ message: @autoclosure () -> String) throws(InvariantViolation) {
    if !condition { throw InvariantViolation(description: message()) }
}

/// libFuzzer's side: a broken invariant aborts, so libFuzzer keeps the input as a crash.
public enum FuzzEntry {
    public static func run(
        _ data: UnsafePointer<UInt8>?, _ size: Int, _ check: ([UInt8]) throws(InvariantViolation) -> Void
    ) -> CInt {
        let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
        do {
            try check(bytes)
        } catch {
            fatalError("invariant broken: \(error)")
        }
        return 0
    }
}

/// The replay's side: every committed input of a fuzz target.
public enum FuzzInputs {
    /// Paths relative to Fuzz/, e.g. `Corpus/block-file/cidr`, sorted: the corpus, then the
    /// regressions. Found from the caller's place in the repository, so no working directory is assumed.
    public static func files(of target: String, near file: String = #filePath) -> [String] {
        guard let fuzz = fuzzDirectory(near: file) else { return [] }
        var found: [String] = []
        for kind in ["Corpus", "Regressions"] {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: "\(fuzz)/\(kind)/\(target)")) ?? []
            found += names.filter { !$0.hasPrefix(".") }.sorted().map { "\(kind)/\(target)/\($0)" }
        }
        return found
    }

    /// One committed input through `check`, timed: nil when every invariant held, else the one broken.
    public static func replay(
        _ path: String, near file: String = #filePath, through check: ([UInt8]) throws(InvariantViolation) -> Void
    ) -> (violation: String?, elapsed: Duration) {
        guard let fuzz = fuzzDirectory(near: file), let data = FileManager.default.contents(atPath: "\(fuzz)/\(path)") else {
            return ("cannot read Fuzz/\(path)", .zero)
        }
        let bytes = [UInt8](data)
        let started = ContinuousClock.now
        do {
            try check(bytes)
        } catch {
            return (error.description, ContinuousClock.now - started)
        }
        return (nil, ContinuousClock.now - started)
    }

    static func fuzzDirectory(near file: String) -> String? {
        var directory = file
        while let slash = directory.lastIndex(of: "/") {
            directory = String(directory[..<slash])
            if FileManager.default.fileExists(atPath: "\(directory)/Fuzz/Corpus") { return "\(directory)/Fuzz" }
        }
        return nil
    }
}
