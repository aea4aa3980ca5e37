import CLibFuzzerDriver
import FuzzChecks
import Glibc

exit(portcullis_run_fuzzer(CommandLine.argc, CommandLine.unsafeArgv) { FuzzEntry.run($0, $1, DaemonConfigurationCheck.check) })
