#!/usr/bin/env bash
# The Portcullis test lab: an attacker and a bastion network namespace joined by
# one veth pair, using documentation addresses only. Nothing here touches the
# root namespace's interfaces or routes.
#
#   tools/lab.sh up   [NAME]   create the lab (NAME defaults to "pclab", at most 8 characters)
#   tools/lab.sh down [NAME]   remove it (safe to run when it is half made or gone)
#   tools/lab.sh show [NAME]   print the lab's names and addresses as shell variables
#
# Layout for NAME=pclab:
#   netns pclab-attacker: veth pclab-a  198.51.100.2/24 (and .3, a second host), 2001:db8::2/64 (and ::3)
#   netns pclab-bastion:  veth pclab-b  198.51.100.1/24, 2001:db8::1/64
# Each end of the pair has a queue per core, up to 8.
set -euo pipefail

command=${1:-}
name=${2:-pclab}

if ! [[ $name =~ ^[a-z][a-z0-9]{0,7}$ ]]; then
    echo "lab.sh: lab name '$name' must be 1-8 lowercase letters or digits, starting with a letter" >&2
    exit 2
fi

attacker_ns=$name-attacker
bastion_ns=$name-bastion
attacker_if=$name-a
bastion_if=$name-b

show() {
    cat <<VARS
LAB_ATTACKER_NS=$attacker_ns
LAB_BASTION_NS=$bastion_ns
LAB_ATTACKER_IF=$attacker_if
LAB_BASTION_IF=$bastion_if
LAB_BASTION_V4=198.51.100.1
LAB_ATTACKER_V4=198.51.100.2
LAB_OTHER_V4=198.51.100.3
LAB_BASTION_V6=2001:db8::1
LAB_ATTACKER_V6=2001:db8::2
LAB_OTHER_V6=2001:db8::3
VARS
}

down() {
    ip netns del "$attacker_ns" 2>/dev/null || true
    ip netns del "$bastion_ns" 2>/dev/null || true
}

up() {
    if [[ $(id -u) != 0 ]]; then
        echo "lab.sh: creating network namespaces needs root" >&2
        exit 1
    fi
    down
    trap 'down' ERR
    ip netns add "$attacker_ns"
    ip netns add "$bastion_ns"
    # Create the pair inside the attacker namespace so no interface ever exists in the root namespace.
    # A queue per core (up to 8) on both ends: veth hands a frame to the peer's queue of the
    # sending core, so generators pinned to different cores load different queues, as a
    # multi-queue NIC's receive-side scaling would, and a benchmark measures the blocker on
    # each core rather than one queue shared by all.
    local queues
    queues=$(nproc)
    if ((queues > 8)); then queues=8; fi
    ip -n "$attacker_ns" link add "$attacker_if" numtxqueues "$queues" numrxqueues "$queues" type veth \
        peer name "$bastion_if" netns "$bastion_ns" numtxqueues "$queues" numrxqueues "$queues"
    for ns in "$attacker_ns" "$bastion_ns"; do
        ip -n "$ns" link set lo up
    done
    ip -n "$attacker_ns" addr add 198.51.100.2/24 dev "$attacker_if"
    ip -n "$attacker_ns" addr add 198.51.100.3/24 dev "$attacker_if"
    ip -n "$attacker_ns" -6 addr add 2001:db8::2/64 dev "$attacker_if" nodad
    ip -n "$attacker_ns" -6 addr add 2001:db8::3/64 dev "$attacker_if" nodad
    ip -n "$bastion_ns" addr add 198.51.100.1/24 dev "$bastion_if"
    ip -n "$bastion_ns" -6 addr add 2001:db8::1/64 dev "$bastion_if" nodad
    ip -n "$attacker_ns" link set "$attacker_if" up
    ip -n "$bastion_ns" link set "$bastion_if" up
    trap - ERR
    show
}

case $command in
    up) up ;;
    down) down ;;
    show) show ;;
    *)
        awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
        exit 2
        ;;
esac
