// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "portcullis",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "portcullis", targets: ["portcullis"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // The daemon: HTTP for the control socket and metrics, service lifecycle and signals,
        // logging, Prometheus exposition, and a YAML parser that reports lines for config errors.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // HMAC-SHA256 for the incident record's hash chain.
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // Pure logic: addresses, prefixes, durations, block files. No BPF, no root.
        .target(name: "PortcullisCore"),

        // The incident record: JSON lines, locked and fsync'd, HMAC-chained. No BPF, no root.
        .target(
            name: "PortcullisIncidents",
            dependencies: ["PortcullisCore", .product(name: "Crypto", package: "swift-crypto")]),

        // The daemon's YAML configuration, with file, line and key in every error. No BPF, no root.
        .target(
            name: "PortcullisConfig",
            dependencies: ["PortcullisCore", .product(name: "Yams", package: "Yams")]),

        // Standalone detection: log parsing, sshd rules as data, frequency counting,
        // ossec.conf active-response blocks. No BPF, no root.
        .target(
            name: "PortcullisDetector",
            dependencies: ["PortcullisCore", .product(name: "Yams", package: "Yams")]),

        // Wazuh's active-response protocol: message and reply codecs, log lines, paths. No BPF, no root.
        .target(name: "PortcullisWazuh", dependencies: ["PortcullisCore"]),

        // libbpf and the layouts shared with the XDP program (bpf/portcullis.h).
        .systemLibrary(
            name: "CLibbpf",
            pkgConfig: "libbpf",
            providers: [.apt(["libbpf-dev"])]
        ),

        // Compiles bpf/*.bpf.c with clang -target bpf and embeds the object in the binary.
        .plugin(name: "EmbedBPFObject", capability: .buildTool()),

        // The thin Swift API over libbpf: load, pin, attach, block, list, sweep.
        .target(
            name: "PortcullisBPF",
            dependencies: [
                "CLibbpf",
                "PortcullisCore",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            plugins: ["EmbedBPFObject"]
        ),

        // The blocklist as a service: the pinned maps directly, or the daemon over its control
        // socket, with the JSON records both speak and every change written to the incident record.
        .target(
            name: "PortcullisControl",
            dependencies: ["PortcullisBPF", "PortcullisCore", "PortcullisIncidents"]),

        // `portcullis run`: the single writer, sweeper, control API and metrics.
        .target(
            name: "PortcullisDaemon",
            dependencies: [
                "PortcullisBPF", "PortcullisCore", "PortcullisIncidents", "PortcullisControl", "PortcullisConfig",
                "PortcullisDetector", "PortcullisWazuh",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),

        .executableTarget(
            name: "portcullis",
            dependencies: [
                "PortcullisCore",
                "PortcullisBPF",
                "PortcullisWazuh",
                "PortcullisIncidents",
                "PortcullisControl",
                "PortcullisConfig",
                "PortcullisDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        .testTarget(name: "PortcullisCoreTests", dependencies: ["PortcullisCore"]),
        .testTarget(name: "PortcullisConfigTests", dependencies: ["PortcullisConfig", "PortcullisCore"]),
        .testTarget(name: "PortcullisDetectorTests", dependencies: ["PortcullisDetector", "PortcullisCore"]),
        .testTarget(name: "PortcullisWazuhTests", dependencies: ["PortcullisWazuh", "PortcullisCore"]),
        .testTarget(name: "PortcullisIncidentsTests", dependencies: ["PortcullisIncidents", "PortcullisCore"]),
        // Needs root and bpffs (skips with a message otherwise): verdicts through BPF_PROG_TEST_RUN.
        .testTarget(name: "PortcullisBPFTests", dependencies: ["PortcullisBPF", "PortcullisCore", "CLibbpf"]),
        // Runs the built portcullis binary: usage errors without root, the netns lab with root.
        .testTarget(name: "PortcullisCLITests", dependencies: ["portcullis", "PortcullisCore", "PortcullisIncidents"]),
    ],
    swiftLanguageModes: [.v6]
)
