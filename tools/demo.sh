#!/usr/bin/env bash
# Blocks an attacker in the netns lab for 10 seconds and shows each step.
#   tools/demo.sh [PATH-TO-PORTCULLIS]
# Uses its own lab (pcdemo) and pin directory, and removes both on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
portcullis=${1:-.build/release/portcullis}
[[ -x $portcullis ]] || { echo "demo: no portcullis binary at $portcullis (swift build -c release)" >&2; exit 1; }
export PORTCULLIS_PIN_DIR=/sys/fs/bpf/portcullis-demo

step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }
run() { printf '\033[2m$'; printf ' %q' "$@"; printf '\033[0m\n'; "$@"; }
cleanup() {
    "$portcullis" purge --yes >/dev/null 2>&1 || true
    tools/lab.sh down pcdemo
}
trap cleanup EXIT
probe() {
    # Three pings, 0.2 s apart, one second to answer each: bounded in count and time.
    if ip netns exec pcdemo-attacker ping -n -q -c 3 -i 0.2 -W 1 -I 198.51.100.2 198.51.100.1 >/dev/null; then
        printf '   attacker 198.51.100.2 -> bastion: \033[32mreachable\033[0m\n'
    else
        printf '   attacker 198.51.100.2 -> bastion: \033[31mdropped\033[0m\n'
    fi
}

step "Building the lab: an attacker and a bastion namespace joined by a veth pair"
tools/lab.sh up pcdemo >/dev/null
echo "   attacker 198.51.100.2 (netns pcdemo-attacker)  <-- veth -->  bastion 198.51.100.1 (netns pcdemo-bastion)"
probe

step "Attaching the XDP program to the bastion's interface (native mode)"
run "$portcullis" attach pcdemo-b --netns pcdemo-bastion --mode native
probe

step "Blocking the attacker for 10 seconds, as Wazuh's rule 5710 would"
run "$portcullis" block 198.51.100.2 --for 10s --reason "sshd: attempt to login using a non-existent user"
probe
run "$portcullis" list

step "Waiting for the block to expire (no sweep, no daemon: the data plane checks the expiry itself)"
for _ in $(seq 1 15); do
    state=$("$portcullis" list --json)
    grep -q '"expired" : true' <<<"$state" && break
    remaining=$(sed -n 's/.*"remainingSeconds" : \([0-9]*\).*/\1/p' <<<"$state" | head -1)
    printf '\r   %ss left ' "${remaining:-0}"
    sleep 1
done
printf '\r   expired    \n'
probe

step "Sweeping: the expired block is removed and its outcome reported"
run "$portcullis" sweep
run "$portcullis" stats

step "Detaching and cleaning up"
run "$portcullis" detach pcdemo-b --netns pcdemo-bastion
