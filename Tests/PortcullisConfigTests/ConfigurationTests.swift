import PortcullisConfig
import PortcullisCore
import Testing

struct ConfigurationTests {
    func parse(_ text: String) throws(ConfigurationError) -> DaemonConfiguration {
        try DaemonConfiguration.parse(text, file: "test.yaml")
    }

    @Test func emptyFileGivesTheDefaults() throws {
        let configuration = try parse("")
        #expect(configuration == DaemonConfiguration())
        #expect(configuration.pinDirectory == "/sys/fs/bpf/portcullis")
        #expect(configuration.controlSocket == "/run/portcullis/control.sock")
        #expect(configuration.metricsAddress?.description == "127.0.0.1:9469")
        #expect(configuration.sweepInterval == .seconds(10))
        #expect(configuration.capacityExact == 1_048_576)
        #expect(!configuration.detachOnExit)
    }

    @Test func everyKeyIsRead() throws {
        let configuration = try parse("""
            pin_dir: /sys/fs/bpf/other
            interfaces:
              - eth0
              - name: veth1
                mode: native
                netns: bastion
              - name: eth2
                sharing: cooperative
                priority: 60
            capacity:
              exact: 2_000
              prefixes: 100
            sweep_interval: 1m30s
            allowlist: [192.0.2.1, "2001:db8:1::/48", 198.51.100.7/24]
            control_socket: /tmp/c.sock
            control_group: wheel
            metrics_address: "[::1]:9100"
            incident_log: /tmp/i.jsonl
            detach_on_exit: yes
            """)
        #expect(configuration.pinDirectory == "/sys/fs/bpf/other")
        #expect(configuration.interfaces == [
            .init(name: "eth0", mode: "auto", netns: nil), .init(name: "veth1", mode: "native", netns: "bastion"),
            .init(name: "eth2", mode: "auto", netns: nil, cooperative: true, priority: 60),
        ])
        #expect(configuration.capacityExact == 2000)
        #expect(configuration.capacityPrefixes == 100)
        #expect(configuration.sweepInterval == .seconds(90))
        #expect(configuration.allowlist.map(\.description) == ["192.0.2.1", "2001:db8:1::/48", "198.51.100.0/24"])
        #expect(configuration.controlGroup == "wheel")
        #expect(configuration.metricsAddress == .init(host: "::1", port: 9100))
        #expect(configuration.detachOnExit)
    }

    @Test func metricsCanBeTurnedOff() throws {
        #expect(try parse("metrics_address: off").metricsAddress == nil)
    }

    static let errors: [(String, Int?, String?, String)] = [
        ("allowlist: [192.0.2.1]\nbogus: 1", 2, "bogus", "unknown key"),
        ("allowlist:\n  - 192.0.2.1\n  - 127.1", 3, "allowlist", "four decimal octets"),
        ("sweep_interval: soon", 1, "sweep_interval", "soon"),
        ("interfaces:\n  - name: eth0\n    mode: turbo", 3, "interfaces.mode", "turbo"),
        ("interfaces:\n  - mode: native", 2, "interfaces", "needs a `name:`"),
        ("interfaces:\n  - name: eth0\n    sharing: polite", 3, "interfaces.sharing", "not exclusive or cooperative"),
        ("interfaces:\n  - name: eth0\n    sharing: cooperative\n    priority: -1", 4, "interfaces.priority", "from 0 to 1000"),
        ("interfaces:\n  - name: eth0\n    priority: 5", 2, "interfaces.priority", "needs `sharing: cooperative`"),
        ("interfaces:\n  - eth0\n  - eth0", 3, "interfaces", "listed twice"),
        ("capacity:\n  exact: 0", 2, "capacity.exact", "whole number"),
        ("capacity:\n  exact: 10\n  huge: 1", 3, "capacity.huge", "unknown key"),
        ("pin_dir: relative/path", 1, "pin_dir", "absolute path"),
        ("metrics_address: 0.0.0.0", 1, "metrics_address", "HOST:PORT"),
        ("metrics_address: 127.0.0.1:99999", 1, "metrics_address", "port"),
        ("metrics_address: localhost:9100", 1, "metrics_address", "not an IP address"),
        ("detach_on_exit: maybe", 1, "detach_on_exit", "true or false"),
        // libyaml notices the missing bracket where the input ends.
        ("allowlist: [1, 2", 2, nil, "invalid YAML"),
        ("- just\n- a list", 1, nil, "mapping"),
        ("a: 1\na: 2", 1, nil, "duplicated keys"),
    ]

    @Test(arguments: errors + FleetConfigurationTests.errors)
    func errorsNameFileLineAndKey(text: String, line: Int?, key: String?, fragment: String) {
        do {
            _ = try parse(text)
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.file == "test.yaml")
            #expect(error.line == line, "\(error)")
            #expect(error.key == key, "\(error)")
            #expect(error.description.contains(fragment), "\(error)")
            #expect(!error.description.contains("\n"))
        }
    }

    @Test func aMissingFileIsAnErrorNamingIt() {
        #expect(throws: ConfigurationError.self) { try DaemonConfiguration.load(path: "/nonexistent/portcullis.yaml") }
    }
}
