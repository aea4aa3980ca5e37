import Glibc
import PortcullisActiveResponse

// The Wazuh active response on its own: no argument parser, no daemon, nothing at start-up but
// what one add or delete needs, because execd starts one process per alert.
let arguments = CommandLine.arguments
if arguments.count > 1 {
    let usage = """
        portcullis-active-response: a Wazuh active-response executable; it takes no arguments.
        wazuh-execd runs it with one JSON message on standard input. Install it with `portcullis wazuh install`.

        """
    _ = usage.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
    exit(2)
}
exit(WazuhActiveResponse.run(program: arguments.first ?? "portcullis-active-response"))
