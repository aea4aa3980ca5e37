#!/usr/bin/env bash
# What the benchmarks need beyond tools/setup.sh: the firewalls they compare against,
# ethtool for the lab, hyperfine, and matplotlib for the plots.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
missing=()
for package in iptables ipset nftables ethtool hyperfine python3-matplotlib; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
swift build -c release --static-swift-stdlib --product portcullis
