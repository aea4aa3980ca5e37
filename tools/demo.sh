#!/usr/bin/env bash
# The standalone active response, end to end with real programs: an OpenSSH
# server in a bastion namespace, the Portcullis daemon following its log with
# Wazuh's rule 5710 and an ossec.conf <active-response> (timeout 20 s), and a
# real ssh client in an attacker namespace trying a user that does not exist.
#   tools/demo.sh [PATH-TO-PORTCULLIS]
# Everything it makes (namespaces, sshd, daemon, pins, files) is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
portcullis=$(realpath "${1:-.build/release/portcullis}")
[[ -x $portcullis ]] || { echo "demo: no portcullis binary at $portcullis (swift build -c release)" >&2; exit 1; }

work=$(mktemp -d /tmp/portcullis-demo.XXXXXX)
# The incident record's chain key stays with the demo, not in /var/lib/portcullis.
export PORTCULLIS_STATE_DIR=$work/state
pins=/sys/fs/bpf/portcullis-demo
timeout=20
daemon_pid=
tail_pid=

step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }
cleanup() {
    # Stopping the daemon also ends the tail that shows its log (tail --pid).
    [[ -n $daemon_pid ]] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    [[ -n $tail_pid ]] && wait "$tail_pid" 2>/dev/null
    tools/lab-sshd.sh stop "$work/sshd"
    PORTCULLIS_PIN_DIR=$pins "$portcullis" purge --yes >/dev/null 2>&1 || true
    tools/lab.sh down pcdemo
    rm -rf "$work"
}
trap cleanup EXIT

# One ssh attempt from the attacker namespace, bounded by a 3 s connect timeout.
attempt() {
    local user=$1 source=$2 output
    output=$(ip netns exec pcdemo-attacker ssh -b "$source" -o BatchMode=yes -o ConnectTimeout=3 \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
        "$user@198.51.100.1" true 2>&1 || true)
    if grep -q "Permission denied" <<<"$output"; then
        printf '   ssh %s@bastion from %s: \033[32mreached the server\033[0m (and was refused a login)\n' "$user" "$source"
    else
        printf '   ssh %s@bastion from %s: \033[31mno answer\033[0m (%s)\n' "$user" "$source" "${output##*: }"
    fi
}

step "Building the lab: an attacker and a bastion namespace joined by a veth pair"
tools/lab.sh up pcdemo >/dev/null
echo "   attacker 198.51.100.2 and a neighbour 198.51.100.3 (netns pcdemo-attacker)"
echo "   bastion  198.51.100.1 (netns pcdemo-bastion), running OpenSSH with its log in $work/sshd/auth.log"
tools/lab-sshd.sh start pcdemo "$work/sshd"

step "Starting the Portcullis daemon, configured the way Wazuh users write it"
cat > "$work/ossec.conf" <<XML
<ossec_config>
  <active-response>
    <command>firewall-drop</command>
    <location>local</location>
    <rules_id>5710</rules_id>
    <timeout>$timeout</timeout>
  </active-response>
</ossec_config>
XML
cat > "$work/portcullis.yaml" <<YAML
pin_dir: $pins
interfaces:
  - name: pcdemo-b
    netns: pcdemo-bastion
    mode: native
control_socket: $work/control.sock
metrics_address: off
incident_log: $work/incidents.jsonl
sweep_interval: 1s
detector:
  active_response: $work/ossec.conf
  sources:
    - file: $work/sshd/auth.log
      program: sshd
YAML
sed 's/^/   /' "$work/ossec.conf"
"$portcullis" run --config "$work/portcullis.yaml" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do [[ -S $work/control.sock ]] && break; sleep 0.1; done
[[ -S $work/control.sock ]] || { cat "$work/daemon.log"; exit 1; }
# Show what the daemon does as it does it.
tail --pid="$daemon_pid" -n +1 -f "$work/daemon.log" | grep --line-buffered -E "attached|rule|blocked|refreshed|swept|watching" \
    | sed -u 's/^.*\] /   daemon: /' &
tail_pid=$!
sleep 0.5

step "Before the attack, the attacker reaches the server"
attempt root 198.51.100.2

step "The attacker tries a user that does not exist: sshd logs it, rule 5710 fires"
attempt nosuchuser 198.51.100.2
sleep 1.5

step "Now the attacker's new connections go unanswered; the neighbour's still work"
attempt root 198.51.100.2
attempt root 198.51.100.3
PORTCULLIS_CONTROL_SOCKET=$work/control.sock "$portcullis" list | sed 's/^/   /'

step "Waiting for the ${timeout} s timeout: the block expires in the kernel"
for _ in $(seq 1 $((timeout + 5))); do
    left=$(PORTCULLIS_CONTROL_SOCKET=$work/control.sock "$portcullis" list --json | sed -n 's/.*"remainingSeconds" : \([0-9]*\).*/\1/p' | head -1)
    [[ -z $left || $left == 0 ]] && break
    printf '\r   %2ss left ' "$left"
    sleep 1
done
printf '\r   expired    \n'
attempt root 198.51.100.2

step "The record: the event, the response and its outcome"
sleep 1.5
PORTCULLIS_INCIDENT_LOG=$work/incidents.jsonl "$portcullis" incidents | sed 's/^/   /'
