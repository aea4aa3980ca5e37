#!/usr/bin/env bash
# Installs what Portcullis needs to build, test and run on Debian 12, and
# checks what cannot be installed from here (the Swift toolchain, the kernel).
# Safe to run again: it only installs what is missing.
set -euo pipefail

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
fail() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || fail "run as root (it installs packages and mounts bpffs)"

# Build: libbpf headers and library (libbpf-dev brings libelf and zlib), libxdp (libxdp-dev: its
# dispatcher for sharing an interface, and the run-config header the XDP program is built with),
# and libsqlite3 for the ledger (libsqlite3-dev; the sqlite3 shell lets the ledger tests look inside it).
# Cooperative mode's lab test: xdp-filter from xdp-tools, another libxdp program on the same interface.
# Tests and demo: iproute2 for network namespaces, ping for traffic, runuser (util-linux) for the
# unprivileged check, bpftool for perf/ and for looking inside the pins, ethtool for veth's own
# per-queue counters, curl and Debian's Prometheus client (its text-format parser) for the daemon tests.
# The standalone detector's end-to-end test and the demo: a real OpenSSH server and client.
# The live view's test: tmux, a real terminal to drive `portcullis top` in (send-keys, capture-pane).
# The period report's test: headless Chromium, which renders its HTML page to a PNG.
# The integrations' tests: the real fail2ban and sshguard, which the tests run with files of their own.
# The fleet's tests and benchmark: Debian's PostgreSQL 15 (server and psql); each test starts a
# private cluster of its own (initdb in a temporary directory), never the packaged one; openssl
# makes the TLS test's certificate authority and server certificate.
packages=(libbpf-dev libxdp-dev xdp-tools libelf-dev zlib1g-dev libsqlite3-dev sqlite3 pkg-config iproute2 iputils-ping util-linux bpftool ethtool curl
          python3-prometheus-client openssh-server openssh-client ca-certificates tmux chromium fail2ban sshguard postgresql openssl)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Installing openssh-server, fail2ban, sshguard or postgresql must not start anything on the
    # host: the tests run their own (sshd in a namespace, private PostgreSQL clusters), with private files.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    ((own_policy)) && rm -f "$policy"
fi

# CrowdSec's Local API for the bouncer's test, unpacked, not installed: the package's install script
# registers with CrowdSec's central API on the internet and enables a service.
crowdsec_cache=/var/cache/portcullis-crowdsec
if [[ ! -x $crowdsec_cache/root/usr/bin/crowdsec ]]; then
    say "unpacking Debian's crowdsec into $crowdsec_cache"
    mkdir -p "$crowdsec_cache"
    rm -rf "$crowdsec_cache/root" "$crowdsec_cache"/crowdsec_*.deb
    (cd "$crowdsec_cache" && apt-get download -qq crowdsec 2>/dev/null || { apt-get update -qq && apt-get download -qq crowdsec; })
    dpkg-deb -x "$crowdsec_cache"/crowdsec_*.deb "$crowdsec_cache/root"
fi

# The Swift toolchain also provides the clang that compiles the XDP program (-target bpf).
if ! command -v swift >/dev/null; then
    for candidate in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
        [[ -x $candidate/swift ]] && export PATH="$candidate:$PATH" && break
    done
fi
command -v swift >/dev/null || fail "Swift 6.1 or later is not installed; install a toolchain from swift.org (it also provides the clang that builds the XDP program)"
clang_bin=$(dirname "$(command -v swift)")/clang
[[ -x $clang_bin ]] || clang_bin=$(command -v clang || true)
[[ -n $clang_bin ]] && "$clang_bin" -print-targets 2>/dev/null | grep -q '\bbpf\b' \
    || fail "no clang with the BPF target next to swift; install Swift's toolchain or clang (apt-get install clang)"

# The kernel: BTF for CO-RE-free loading checks, and bpffs for the pins.
[[ -e /sys/kernel/btf/vmlinux ]] || fail "this kernel has no BTF (/sys/kernel/btf/vmlinux); Portcullis needs CONFIG_DEBUG_INFO_BTF"
if ! awk '$2 == "/sys/fs/bpf" && $3 == "bpf" { found = 1 } END { exit !found }' /proc/self/mounts; then
    say "mounting bpffs at /sys/fs/bpf"
    mkdir -p /sys/fs/bpf
    mount -t bpf -o mode=700 bpf /sys/fs/bpf
fi
say "ready: $(swift --version 2>&1 | head -1), libbpf $(pkg-config --modversion libbpf), kernel $(uname -r)"
