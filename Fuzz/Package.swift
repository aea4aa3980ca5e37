// swift-tools-version:6.1
import PackageDescription

// libFuzzer targets for the parsers of untrusted input, one executable each, built with
// libFuzzer and AddressSanitizer and run by tools/fuzz.sh. Each keeps the main SwiftPM gives an
// executable and hands its check to libFuzzer's driver (CLibFuzzerDriver). A package of its own,
// so that the main build and `swift test` never need the sanitizers. The checks are in
// FuzzChecks; the test targets compile the same files (symbolic links) to replay Corpus/ and
// Regressions/.
let targets = ["ar-message", "block-file", "xml", "yaml-config", "log-header"]

let package = Package(
    name: "portcullis-fuzz",
    dependencies: [.package(name: "portcullis", path: "..")],
    targets: [
        .target(name: "FuzzChecks", dependencies: [.product(name: "PortcullisParsers", package: "portcullis")]),
        .target(name: "CLibFuzzerDriver"),
    ] + targets.map { .executableTarget(name: "fuzz-\($0)", dependencies: ["FuzzChecks", "CLibFuzzerDriver"]) },
    swiftLanguageModes: [.v6]
)
