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
    ],
    targets: [
        // Pure logic: addresses, prefixes, durations, block files. No BPF, no root.
        .target(name: "PortcullisCore"),

        // The incident record: JSON lines, locked and fsync'd. No BPF, no root.
        .target(name: "PortcullisIncidents"),

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

        .executableTarget(
            name: "portcullis",
            dependencies: [
                "PortcullisCore",
                "PortcullisBPF",
                "PortcullisWazuh",
                "PortcullisIncidents",
                "PortcullisControl",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        .testTarget(name: "PortcullisCoreTests", dependencies: ["PortcullisCore"]),
        .testTarget(name: "PortcullisWazuhTests", dependencies: ["PortcullisWazuh", "PortcullisCore"]),
        // Needs root and bpffs (skips with a message otherwise): verdicts through BPF_PROG_TEST_RUN.
        .testTarget(name: "PortcullisBPFTests", dependencies: ["PortcullisBPF", "PortcullisCore", "CLibbpf"]),
        // Runs the built portcullis binary: usage errors without root, the netns lab with root.
        .testTarget(name: "PortcullisCLITests", dependencies: ["portcullis", "PortcullisCore"]),
    ],
    swiftLanguageModes: [.v6]
)
