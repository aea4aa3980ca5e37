import PortcullisConfig
import Testing

struct CrowdSecConfigurationTests {
    func parse(_ text: String) throws(ConfigurationError) -> DaemonConfiguration {
        try DaemonConfiguration.parse(text, file: "test.yaml")
    }

    @Test func everyCrowdSecKeyIsRead() throws {
        let crowdsec = try #require(try parse("""
            crowdsec:
              lapi_url: http://127.0.0.1:8080/
              api_key_file: /etc/portcullis/crowdsec.key
              update_frequency: 5s
              origins: [crowdsec, cscli]
              scenarios: [ssh]
            """).crowdsec)
        #expect(crowdsec.lapi.description == "127.0.0.1:8080")
        #expect(crowdsec.apiKeyFile == "/etc/portcullis/crowdsec.key")
        #expect(crowdsec.updateFrequency == .seconds(5))
        #expect(crowdsec.origins == ["crowdsec", "cscli"])
        #expect(crowdsec.scenarios == ["ssh"])
        let named = try #require(try parse("crowdsec:\n  lapi_url: http://[::1]:8081\n  api_key_file: /k").crowdsec)
        #expect(named.lapi.host == "::1" && named.lapi.port == 8081 && named.updateFrequency == .seconds(10))
        #expect(try parse("").crowdsec == nil)
    }

    @Test func badCrowdSecSettingsNameTheirLineAndKey() {
        let cases: [(String, String)] = [
            ("crowdsec:\n  lapi_url: https://lapi:8080\n  api_key_file: /k", "test.yaml:2: crowdsec.lapi_url: 'https://lapi:8080' must be http://HOST:PORT (https is not supported"),
            ("crowdsec:\n  lapi_url: http://lapi\n  api_key_file: /k", "test.yaml:2: crowdsec.lapi_url: 'http://lapi' must be http://HOST:PORT"),
            ("crowdsec:\n  lapi_url: http://lapi:0\n  api_key_file: /k", "is not a port"),
            ("crowdsec:\n  lapi_url: http://lapi:8080", "give the bouncer's key file"),
            ("crowdsec:\n  api_key_file: /k", "give the Local API's address"),
            ("crowdsec:\n  lapi_url: http://lapi:8080\n  api_key_file: key", "must be an absolute path"),
            ("crowdsec:\n  lapi_url: http://lapi:8080\n  api_key_file: /k\n  update_frequency: 0s", "crowdsec.update_frequency"),
            ("crowdsec:\n  lapi_url: http://lapi:8080\n  api_key_file: /k\n  pull: 1s", "test.yaml:4: crowdsec.pull: unknown key"),
        ]
        for (text, expected) in cases {
            #expect(throws: ConfigurationError.self) { try parse(text) }
            do {
                _ = try parse(text)
            } catch {
                #expect(error.description.contains(expected), "\(error.description)")
            }
        }
    }
}
