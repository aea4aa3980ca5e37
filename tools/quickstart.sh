#!/usr/bin/env bash
# The README's two commands, on a fresh Debian 12 machine as root:
#   tools/quickstart.sh demo   set up what is missing, build, and block an attacker in the netns lab
#   tools/quickstart.sh test   set up what is missing, build, run every test, and fuzz the parsers
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh

case ${1:-} in
    demo)
        # portcullis and portcullis-active-response are linked fully static; portcullis-daemon
        # needs only libc, libstdc++, libbpf, libelf and zlib at run time.
        swift build -c release --static-swift-stdlib
        exec tools/demo.sh "$(swift build -c release --static-swift-stdlib --show-bin-path)/portcullis"
        ;;
    test)
        # Swift Testing only: there are no XCTest cases, whose empty run would close the output.
        swift test --disable-xctest
        # Then each parser of untrusted input is fuzzed for a bounded time (30 s per target).
        exec tools/fuzz.sh --seconds 30
        ;;
    *)
        echo "usage: tools/quickstart.sh demo|test" >&2
        exit 2
        ;;
esac
