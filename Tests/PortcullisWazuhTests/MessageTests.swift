import PortcullisCore
import PortcullisWazuh
import Testing

/// The messages execd sends, parsed as Wazuh's own active-response library would.
struct MessageTests {
    static let stock = #"{"version":1,"origin":{"name":"","module":"wazuh-execd"},"command":"add","parameters":{"extra_args":[],"alert":{"rule":{"level":5,"description":"Test.","id":5715},"data":{"dstuser":"Test.","srcip":"3.3.3.3"}},"program":"active-response/bin/firewall-drop"}}"#

    func parse(_ text: String) throws(ActiveResponseError) -> ActiveResponseMessage {
        try ActiveResponseMessage.parse(Array(text.utf8))
    }

    @Test func stockExampleParses() throws {
        let message = try parse(Self.stock)
        #expect(message.command == .add)
        #expect(message.address == .v4(IPv4Address(3, 3, 3, 3)))
        #expect(message.alert.ruleID == "5715")
        #expect(message.alert.ruleLevel == "5")
        #expect(message.alert.ruleDescription == "Test.")
        #expect(message.alert.reason == "wazuh rule 5715: Test.")
        #expect(message.extraArguments.isEmpty)
    }

    @Test func deleteAndExtraArguments() throws {
        let text = Self.stock.replacing(#""command":"add""#, with: #""command":"delete""#)
            .replacing(#""extra_args":[]"#, with: #""extra_args":["--for","100s"]"#)
        let message = try parse(text)
        #expect(message.command == .delete)
        #expect(message.extraArguments == ["--for", "100s"])
        #expect(try ExtraArguments(message.extraArguments).duration == .seconds(100))
    }

    @Test func windowsEventAddressesComeFirst() throws {
        let both = #"{"version":1,"origin":{},"command":"add","parameters":{"alert":{"data":{"srcip":"192.0.2.1","win":{"eventdata":{"ipAddress":"192.0.2.2","destinationIp":"192.0.2.3"}}}}}}"#
        #expect(try parse(both).address.description == "192.0.2.2")
        let destination = #"{"version":1,"origin":{},"command":"add","parameters":{"alert":{"data":{"srcip":"192.0.2.1","win":{"eventdata":{"destinationIp":"192.0.2.3"}}}}}}"#
        #expect(try parse(destination).address.description == "192.0.2.3")
    }

    @Test func ipv6AndMappedAddresses() throws {
        let v6 = Self.stock.replacing("3.3.3.3", with: "2001:db8::bad")
        #expect(try parse(v6).address.description == "2001:db8::bad")
        let mapped = Self.stock.replacing("3.3.3.3", with: "::ffff:198.51.100.7")
        #expect(try parse(mapped).address == .v4(IPv4Address(198, 51, 100, 7)))
    }

    @Test func wazuh5Dialect() throws {
        let enable = #"{"wazuh":{"active_response":{"name":"block","extra_arguments":"--for 60s"},"agent":{"id":"002","name":"db"},"rule":{"id":"5710","description":"sshd: invalid user"}},"source":{"ip":"203.0.113.5"},"user":{"name":"x"},"command":"enable"}"#
        let message = try parse(enable)
        #expect(message.command == .add)
        #expect(message.commandWord == "enable")
        #expect(message.address.description == "203.0.113.5")
        #expect(message.alert.ruleID == "5710")
        #expect(message.alert.agentID == "002")
        #expect(message.extraArguments == ["--for", "60s"])
        let disable = enable.replacing(#""command":"enable""#, with: #""command":"disable""#)
        #expect(try parse(disable).command == .delete)
    }

    static let malformed: [(String, ActiveResponseError)] = [
        ("", .invalidFormat),
        ("not json", .invalidFormat),
        ("[1,2,3]", .invalidFormat),
        (#"{"version":"1","origin":{},"command":"add","parameters":{}}"#, .invalidFormat),
        (#"{"version":1,"command":"add","parameters":{}}"#, .invalidFormat),
        (#"{"version":1,"origin":{},"parameters":{}}"#, .invalidFormat),
        (#"{"version":1,"origin":{},"command":"add"}"#, .invalidFormat),
        (#"{"version":1,"origin":{},"command":"add","parameters":[]}"#, .invalidFormat),
        (#"{"version":1,"origin":{},"command":"restart","parameters":{}}"#, .invalidCommand),
        (#"{"version":1,"origin":{},"command":"continue","parameters":{}}"#, .invalidCommand),
        (#"{"version":1,"origin":{},"command":"add","parameters":{}}"#, .noAddress),
        (#"{"version":1,"origin":{},"command":"add","parameters":{"alert":{"data":{"srcport":"30855"}}}}"#, .noAddress),
        (#"{"version":1,"origin":{},"command":"add","parameters":{"alert":{"data":{"srcip":"999.1.1.1"}}}}"#, .noAddress),
        (#"{"version":1,"origin":{},"command":"add","parameters":{"alert":{"data":{"srcip":"127.1"}}}}"#, .noAddress),
        (#"{"version":1,"origin":{},"command":"add","parameters":{"alert":{"data":{"srcip":"192.0.2.0/24"}}}}"#, .noAddress),
        (#"{"version":1,"origin":{},"command":"add","parameters":{"alert":{"data":{"srcip":"fe80::1%eth0"}}}}"#, .noAddress),
        (#"{"version":1,"origin":{},"command":"add","parameters":{"alert":{"data":{"srcip":3}}}}"#, .noAddress),
        (#"{"command":"enable","source":{"ip":"not an ip"}}"#, .noAddress),
    ]

    @Test(arguments: malformed)
    func malformedMessagesGiveWazuhsMessages(text: String, expected: ActiveResponseError) {
        #expect(throws: expected) { try parse(text) }
    }

    @Test func errorTextsAreWazuhs() {
        #expect(ActiveResponseError.noInput.description == "Cannot read input from stdin")
        #expect(ActiveResponseError.invalidFormat.description == "Invalid input format")
        #expect(ActiveResponseError.invalidCommand.description == "Invalid value of 'command'")
        #expect(ActiveResponseError.noAddress.description == "Cannot read 'srcip' from data or invalid IP format")
    }

    @Test func checkKeysLineIsByteExact() {
        #expect(CheckKeys.line(program: "firewall-drop", keys: ["3.3.3.3"])
            == #"{"version":1,"origin":{"name":"firewall-drop","module":"active-response"},"command":"check_keys","parameters":{"keys":["3.3.3.3"]}}"#)
        #expect(CheckKeys.line(program: #"odd"name"#, keys: ["a", "b"])
            == #"{"version":1,"origin":{"name":"odd\"name","module":"active-response"},"command":"check_keys","parameters":{"keys":["a","b"]}}"#)
    }

    @Test func repliesAreReadFromTheWholeMessage() throws {
        let reply = Self.stock.replacing(#""command":"add""#, with: #""command":"continue""#)
        #expect(try ActiveResponseReply.parse(Array(reply.utf8)) == .continue)
        let abort = Self.stock.replacing(#""command":"add""#, with: #""command":"abort""#)
        #expect(try ActiveResponseReply.parse(Array(abort.utf8)) == .abort)
        // A field inside the alert named command must not be mistaken for the reply.
        let tricky = #"{"version":1,"parameters":{"alert":{"command":"abort"}},"command":"continue","origin":{}}"#
        #expect(try ActiveResponseReply.parse(Array(tricky.utf8)) == .continue)
        #expect(throws: ActiveResponseError.invalidCommand) { try ActiveResponseReply.parse(Array(Self.stock.utf8)) }
        #expect(throws: ActiveResponseError.invalidFormat) { try ActiveResponseReply.parse(Array("continue".utf8)) }
    }

    @Test func homeIsDerivedLikeWazuh() {
        #expect(WazuhPaths.home(fromExecutable: "/var/ossec/active-response/bin/firewall-drop-xdp") == "/var/ossec")
        #expect(WazuhPaths.home(fromExecutable: "/opt/wazuh/agent/active-response/bin/x") == "/opt/wazuh/agent")
        #expect(WazuhPaths.home(fromExecutable: "/usr/local/bin/portcullis") == nil)
    }

    @Test func logLinesHaveWazuhsForm() {
        let line = ActiveResponseLogLine(year: 2026, month: 3, day: 9, hour: 7, minute: 5, second: 2,
                                         program: "active-response/bin/firewall-drop-xdp", message: "Starting")
        #expect(line.text == "2026/03/09 07:05:02 active-response/bin/firewall-drop-xdp: Starting\n")
        let multiline = ActiveResponseLogLine(year: 2026, month: 12, day: 31, hour: 23, minute: 59, second: 59,
                                              program: "p", message: "a\nb")
        #expect(multiline.text == "2026/12/31 23:59:59 p: a b\n")
        // Runs of line ends of every kind are one space; none is left at either end.
        let ragged = ActiveResponseLogLine(year: 2026, month: 12, day: 31, hour: 23, minute: 59, second: 59,
                                           program: "p", message: "\r\n\na\r\n\u{2028}b\u{0B}c \u{85}d\n")
        #expect(ragged.text == "2026/12/31 23:59:59 p: a b c  d\n")
    }

    @Test func extraArguments() throws {
        #expect(try ExtraArguments(["--for=10m", "--pin-dir", "/sys/fs/bpf/x"]).duration == .seconds(600))
        #expect(try ExtraArguments(["--pin-dir", "/sys/fs/bpf/x"]).pinDirectory == "/sys/fs/bpf/x")
        #expect(try ExtraArguments(["-v", "--for", "1h"]).ignored == ["-v"])
        #expect(throws: ExtraArgumentsError.self) { try ExtraArguments(["--for"]) }
        #expect(throws: ExtraArgumentsError.self) { try ExtraArguments(["--for", "soon"]) }
    }

    @Test func aRateInTheExtraArgumentsMakesAThrottle() throws {
        #expect(try ExtraArguments(["--for", "100s"]).throttle == nil)
        #expect(try ExtraArguments(["--for", "100s", "--rate", "20/s"]).throttle == ThrottleRate(packetsPerSecond: 20, burst: 2))
        #expect(try ExtraArguments(["--rate=500", "--burst", "50", "--new-connections"]).throttle
                == ThrottleRate(packetsPerSecond: 500, burst: 50, newConnectionsOnly: true))
        for bad in [["--rate"], ["--rate", "fast"], ["--rate", "0/s"], ["--rate", "20/s", "--burst", "0"], ["--burst", "5"],
                    ["--new-connections"], ["--rate", "20/s", "--burst", "many"]] {
            #expect(throws: ExtraArgumentsError.self, "\(bad)") { try ExtraArguments(bad) }
        }
    }
}
