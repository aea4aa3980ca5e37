import Glibc
import PortcullisConfig
import PortcullisCore
import Testing

struct FleetConfigurationTests {
    func parse(_ text: String) throws(ConfigurationError) -> DaemonConfiguration {
        try DaemonConfiguration.parse(text, file: "test.yaml")
    }

    @Test func noFleetByDefault() throws {
        #expect(try parse("").fleet == nil)
    }

    @Test func everyFleetKeyIsRead() throws {
        let fleet = try #require(try parse("""
            fleet:
              postgres: postgres://bastion_1@db.example.net:6432/portcullis
              password_file: /etc/portcullis/fleet.password
              node: bastion-1
              share: [detector, file]
              tls:
                mode: verify-full
                ca_file: /etc/portcullis/db-ca.pem
              resync_interval: 2s
            """).fleet)
        #expect(fleet.endpoint == .tcp(host: "db.example.net", port: 6432))
        #expect(fleet.user == "bastion_1")
        #expect(fleet.database == "portcullis")
        #expect(fleet.passwordFile == "/etc/portcullis/fleet.password")
        #expect(fleet.node == "bastion-1")
        #expect(fleet.share == [.detector, .file])
        #expect(fleet.tls == .init(mode: .verifyFull, caFile: "/etc/portcullis/db-ca.pem"))
        #expect(fleet.resyncInterval == .seconds(2))
    }

    @Test func defaultsShareTheDetectorWazuhAndTheAPIAndCheckTheServer() throws {
        let fleet = try #require(try parse("fleet:\n  postgres: postgresql://n@[2001:db8::5]/fleet").fleet)
        #expect(fleet.endpoint == .tcp(host: "2001:db8::5", port: 5432))
        #expect(fleet.share == [.detector, .wazuh, .api])
        #expect(fleet.tls.mode == .verifyFull)
        #expect(fleet.node == FleetConfiguration.hostname())
        #expect(fleet.passwordFile == nil)
    }

    @Test func aUnixSocketNeedsNoTLS() throws {
        let fleet = try #require(try parse("fleet:\n  postgres: postgres://n@/fleet?host=/run/postgresql&port=5433").fleet)
        #expect(fleet.endpoint == .socket(directory: "/run/postgresql", port: 5433))
        #expect(fleet.endpoint.description == "/run/postgresql/.s.PGSQL.5433")
        #expect(fleet.tls.mode == .disable)
    }

    /// Checked with the other sections' errors, in ``ConfigurationTests``.
    static let errors: [(String, Int?, String?, String)] = [
        ("fleet:\n  node: a", 2, "fleet", "give `postgres:`"),
        ("fleet:\n  postgres: mysql://a@b/c", 2, "fleet.postgres", "postgres://"),
        ("fleet:\n  postgres: postgres://a:secret@b/c", 2, "fleet.postgres", "password_file"),
        ("fleet:\n  postgres: postgres://b/c", 2, "fleet.postgres", "no user"),
        ("fleet:\n  postgres: postgres://a@b", 2, "fleet.postgres", "no database"),
        ("fleet:\n  postgres: postgres://a@b:70000/c", 2, "fleet.postgres", "port"),
        ("fleet:\n  postgres: postgres://a@b/c?sslmode=off", 2, "fleet.postgres", "unknown URL parameter"),
        ("fleet:\n  postgres: postgres://a@b/c?host=relative", 2, "fleet.postgres", "absolute path"),
        ("fleet:\n  postgres: postgres://a@b%zz/c", 2, "fleet.postgres", "hex digits"),
        ("fleet:\n  postgres: postgres://a@b/c\n  node: 'has space'", 3, "fleet.node", "not a node name"),
        ("fleet:\n  postgres: postgres://a@b/c\n  share: [api, ftp]", 3, "fleet.share", "unknown source 'ftp'"),
        ("fleet:\n  postgres: postgres://a@b/c\n  password_file: fleet.pw", 3, "fleet.password_file", "absolute path"),
        ("fleet:\n  postgres: postgres://a@b/c\n  tls:\n    mode: sometimes", 4, "fleet.tls.mode", "verify-full"),
        ("fleet:\n  postgres: postgres://a@b/c\n  tls:\n    mode: disable\n    ca_file: /ca.pem", 4, "fleet.tls", "need mode"),
        ("fleet:\n  postgres: postgres://a@b/c\n  tls:\n    cert_file: /c.pem", 4, "fleet.tls", "together"),
        ("fleet:\n  postgres: postgres://a@b/c\n  resync_interval: 2h", 3, "fleet.resync_interval", "from 1s to 1h"),
        ("fleet:\n  postgres: postgres://a@b/c\n  peers: 3", 3, "fleet.peers", "unknown key"),
    ]

    /// The password file is checked when the configuration is loaded (`run --check` and start).
    @Test func thePasswordFileMustBeOnlyItsOwners() throws {
        let directory = try #require(mkdtemp(strdup("/tmp/portcullis-fleet-config-XXXXXX")).map { String(cString: $0) })
        defer {
            for name in ["fleet.password", "portcullis.yaml"] { unlink("\(directory)/\(name)") }
            rmdir(directory)
        }
        let passwordPath = "\(directory)/fleet.password"
        let configPath = "\(directory)/portcullis.yaml"
        func write(_ path: String, _ text: String, mode: mode_t) throws {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)
            try #require(fd >= 0)
            _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
            close(fd)
            chmod(path, mode)
        }
        try write(configPath, "fleet:\n  postgres: postgres://n@127.0.0.1/fleet\n  password_file: \(passwordPath)\n", mode: 0o644)
        #expect(throws: ConfigurationError.self) { try DaemonConfiguration.load(path: configPath) }  // missing
        try write(passwordPath, "s3cret\n", mode: 0o640)
        do {
            _ = try DaemonConfiguration.load(path: configPath)
            Issue.record("a password file of mode 0640 was accepted")
        } catch {
            #expect(error.key == "fleet.password_file")
            #expect(error.description.contains("mode 640"), "\(error)")
        }
        chmod(passwordPath, 0o600)
        let fleet = try #require(try DaemonConfiguration.load(path: configPath).fleet)
        #expect(try fleet.readPassword() == "s3cret")
    }
}
