import Foundation
import Testing

/// The three executables: `portcullis run` hands over to portcullis-daemon, and
/// `portcullis wazuh install` installs the small active response, not the command line.
@Suite struct ExecutablesTests {
    static let binDirectory = URL(fileURLWithPath: Command.portcullis).deletingLastPathComponent().path

    @Test func runHandsOverToTheDaemonWithItsArguments() throws {
        let help = try Command.run(Command.portcullis, ["run", "--help"])
        #expect(help.status == 0, "\(help)")
        #expect(help.stdout.contains("USAGE: portcullis run"), "\(help)")
        #expect(help.stdout.contains("--detach-on-exit"), "\(help)")

        let missing = try Command.run(Command.portcullis, ["run", "--check", "--config", "/nonexistent/portcullis.yaml"])
        #expect(missing.status == 1, "\(missing)")
        #expect(missing.stderr == "portcullis: no configuration file at /nonexistent/portcullis.yaml\n", "\(missing)")

        let bad = try Command.run(Command.portcullis, ["run", "--no-such-option"])
        #expect(bad.status == 2, "\(bad)")
        #expect(bad.stderr.contains("see `portcullis run --help`"), "\(bad)")
    }

    @Test func runWithoutTheDaemonBesideItSaysWhatToInstall() throws {
        let directory = "/tmp/portcullis-lonely-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.copyItem(atPath: Command.portcullis, toPath: "\(directory)/portcullis")
        let result = try Command.run("\(directory)/portcullis", ["run", "--check"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("the daemon executable \(directory)/portcullis-daemon is missing"), "\(result)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result)")
    }

    @Test func wazuhInstallCopiesTheSmallActiveResponse() throws {
        let home = "/tmp/portcullis-wazuh-install-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: "\(home)/active-response/bin", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: home) }
        let install = try Command.run(Command.portcullis, ["wazuh", "install", "--home", home])
        #expect(install.status == 0, "\(install)")
        let installed = try Data(contentsOf: URL(fileURLWithPath: "\(home)/active-response/bin/firewall-drop-xdp"))
        let small = try Data(contentsOf: URL(fileURLWithPath: "\(Self.binDirectory)/portcullis-active-response"))
        #expect(installed == small)
    }

    @Test func theActiveResponseRefusesArguments() throws {
        let result = try Command.run("\(Self.binDirectory)/portcullis-active-response", ["--help"])
        #expect(result.status == 2, "\(result)")
        #expect(result.stderr.contains("it takes no arguments"), "\(result)")
    }
}
