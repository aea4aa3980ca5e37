// swift-tools-version:6.1
import PackageDescription

// Release binaries carry no symbols or debug info: a third of the size, and less for execd to map
// per alert. Debug builds keep them for the debugger.
let strippedInRelease: [LinkerSetting] = [.unsafeFlags(["-Xlinker", "--strip-all"], .when(configuration: .release))]

// The active response is linked fully static in release (Swift runtime, libbpf, libelf, zlib and
// glibc): with no shared objects to find, map and relocate it starts in about a third of the time,
// and execd starts one per alert.
let staticInRelease: [LinkerSetting] = [
    .unsafeFlags(["-static-executable", "-Xlinker", "--strip-all"], .when(configuration: .release)),
    .linkedLibrary("elf", .when(configuration: .release)),
    .linkedLibrary("z", .when(configuration: .release)),
    .linkedLibrary("m", .when(configuration: .release)),
]

let package = Package(
    name: "portcullis",
    platforms: [.macOS(.v15)],
    products: [
        // The command line; `portcullis run` hands over to portcullis-daemon.
        .executable(name: "portcullis", targets: ["portcullis"]),
        // The daemon, the only executable that links the HTTP stack, YAML and the detector.
        .executable(name: "portcullis-daemon", targets: ["portcullis-daemon"]),
        // The Wazuh active response, which execd starts once per alert: as small as it can be.
        .executable(name: "portcullis-active-response", targets: ["portcullis-active-response"]),
        // The parsers of untrusted input, for the fuzz targets in Fuzz/: a package of its own,
        // so that this one never needs libFuzzer.
        .library(name: "PortcullisParsers", targets: ["PortcullisCore", "PortcullisWazuh", "PortcullisDetector", "PortcullisConfig"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // The daemon: HTTP for the control socket and metrics, service lifecycle and signals,
        // logging, Prometheus exposition, and a YAML parser that reports lines for config errors.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // Already under Hummingbird; named for a thread of the single writer's own and the
        // thread pool that runs ledger reads, so neither blocks the cooperative pool.
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // User-defined active-response commands: async, with time limits and teardown, off the cooperative pool.
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        // HMAC-SHA256 for the incident record's hash chain.
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        // The fleet: one blocklist shared through PostgreSQL (LISTEN/NOTIFY, inet types, TLS).
        // Only the daemon links it, through PortcullisFleet.
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        // TLS to the fleet's database (already under postgres-nio), named for its configuration.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    ],
    targets: [
        // Pure logic: addresses, prefixes, durations, block files, and the domain: block
        // sources, requests and outcomes, the refresh, owner and admission rules. No BPF, no root,
        // no files, no environment.
        .target(name: "PortcullisCore"),

        // POSIX plumbing in one place: EINTR retries with errno captured at the call, mkdir -p,
        // whole-file reads, settings from options or the environment, the wall clock.
        .target(name: "PortcullisSystem", dependencies: [.product(name: "SystemPackage", package: "swift-system")]),

        // The incident record: JSON lines, locked and fsync'd, HMAC-chained. No BPF, no root.
        .target(
            name: "PortcullisIncidents",
            dependencies: [
                "PortcullisCore", "PortcullisSystem", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]),

        // The daemon's YAML configuration, with file, line and key in every error. No BPF, no root.
        .target(
            name: "PortcullisConfig",
            dependencies: ["PortcullisCore", "PortcullisSystem", .product(name: "Yams", package: "Yams")]),

        // Standalone detection: log parsing, sshd rules as data, frequency counting,
        // ossec.conf active-response blocks. No BPF, no root.
        .target(
            name: "PortcullisDetector",
            dependencies: ["PortcullisCore", .product(name: "Yams", package: "Yams")]),

        // Wazuh's active-response protocol: message and reply codecs, log lines, paths. No BPF, no root.
        .target(name: "PortcullisWazuh", dependencies: ["PortcullisCore"]),

        // libbpf, libxdp (its dispatcher, for sharing an interface) and the layouts shared
        // with the XDP program (bpf/portcullis.h).
        .systemLibrary(
            name: "CLibbpf",
            pkgConfig: "libbpf",
            providers: [.apt(["libbpf-dev", "libxdp-dev"])]
        ),

        // libsqlite3 (Debian's, linked statically into the static executables), for the ledger.
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),

        // The ledger: every block with its record, and the allowlist, in SQLite. The source of
        // truth the maps are rebuilt from. No BPF, no root.
        .target(name: "PortcullisLedger", dependencies: ["CSQLite", "PortcullisCore", "PortcullisSystem"]),

        // Compiles bpf/*.bpf.c with clang -target bpf and embeds the object in the binary.
        .plugin(name: "EmbedBPFObject", capability: .buildTool()),

        // The thin Swift API over libbpf: load, pin, attach, block, list, sweep.
        .target(
            name: "PortcullisBPF",
            dependencies: [
                "CLibbpf",
                "PortcullisCore",
                "PortcullisSystem",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            plugins: ["EmbedBPFObject"]
        ),

        // The blocklist as a service: the pinned maps directly, or the daemon over its control
        // socket, with the JSON records both speak and every change written to the incident record.
        .target(
            name: "PortcullisControl",
            dependencies: ["PortcullisBPF", "PortcullisCore", "PortcullisIncidents", "PortcullisLedger", "PortcullisSystem"]),

        // The fleet: the shared change log in PostgreSQL, its schema, and a node's sync (snapshot,
        // catch-up, LISTEN, outbox). Only the daemon links it, so the CLI and the active response
        // stay static and small.
        .target(
            name: "PortcullisFleet",
            dependencies: [
                "PortcullisCore", "PortcullisConfig", "PortcullisControl", "PortcullisLedger", "PortcullisSystem",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        // `portcullis run`: the single writer, sweeper, control API and metrics.
        .target(
            name: "PortcullisDaemon",
            dependencies: [
                "PortcullisBPF", "PortcullisCore", "PortcullisIncidents", "PortcullisControl", "PortcullisConfig",
                "PortcullisDetector", "PortcullisFleet", "PortcullisLedger", "PortcullisSystem", "PortcullisWazuh",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),

        // The Wazuh active response: one message in, check_keys, one change, the record.
        .target(
            name: "PortcullisActiveResponse",
            dependencies: ["PortcullisBPF", "PortcullisControl", "PortcullisCore", "PortcullisIncidents", "PortcullisSystem", "PortcullisWazuh"]),

        .executableTarget(
            name: "portcullis",
            dependencies: [
                "PortcullisCore",
                "PortcullisBPF",
                "PortcullisWazuh",
                "PortcullisIncidents",
                "PortcullisControl",
                "PortcullisLedger",
                "PortcullisActiveResponse",
                "PortcullisSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            linkerSettings: staticInRelease
        ),
        .executableTarget(
            name: "portcullis-daemon",
            dependencies: [
                "PortcullisConfig",
                "PortcullisDaemon",
                "PortcullisDetector",
                "PortcullisSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            linkerSettings: strippedInRelease
        ),
        .executableTarget(
            name: "portcullis-active-response",
            dependencies: ["PortcullisActiveResponse"],
            linkerSettings: staticInRelease
        ),

        .testTarget(name: "PortcullisCoreTests", dependencies: ["PortcullisCore"]),
        .testTarget(name: "PortcullisSystemTests", dependencies: ["PortcullisSystem"]),
        .testTarget(name: "PortcullisConfigTests", dependencies: ["PortcullisConfig", "PortcullisCore"]),
        .testTarget(name: "PortcullisDetectorTests", dependencies: ["PortcullisDetector", "PortcullisCore"]),
        .testTarget(name: "PortcullisWazuhTests", dependencies: ["PortcullisWazuh", "PortcullisCore"]),
        .testTarget(name: "PortcullisLedgerTests", dependencies: ["PortcullisLedger", "PortcullisCore"]),
        .testTarget(name: "PortcullisIncidentsTests", dependencies: ["PortcullisIncidents", "PortcullisCore"]),
        // The strict reading of the fleet's change log rows. No database, no root.
        .testTarget(name: "PortcullisFleetTests", dependencies: ["PortcullisFleet", "PortcullisControl", "PortcullisCore", "PortcullisLedger"]),
        // Needs root and bpffs (skips with a message otherwise): verdicts through BPF_PROG_TEST_RUN.
        // Fixtures/ holds the frozen layout 3 and 5 XDP objects the upgrade tests pin (tools/build-layout-fixture.sh).
        .testTarget(
            name: "PortcullisBPFTests",
            dependencies: ["PortcullisBPF", "PortcullisControl", "PortcullisCore", "PortcullisIncidents", "PortcullisLedger", "CLibbpf"],
            resources: [.copy("Fixtures")]),
        // The control API's route handlers in process (HummingbirdTesting) over a real keeper; needs root and bpffs.
        .testTarget(
            name: "PortcullisDaemonTests",
            dependencies: [
                "PortcullisDaemon", "PortcullisConfig",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Runs the built portcullis binary: usage errors without root, the netns lab with root.
        .testTarget(
            name: "PortcullisCLITests",
            dependencies: ["portcullis", "portcullis-daemon", "portcullis-active-response", "PortcullisControl", "PortcullisCore", "PortcullisIncidents"]),
    ],
    swiftLanguageModes: [.v6]
)
