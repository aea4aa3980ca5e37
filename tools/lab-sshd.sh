#!/usr/bin/env bash
# An OpenSSH server inside the lab's bastion namespace, for the standalone
# detector's end-to-end test and demo. It listens on the bastion's lab
# addresses only, logs with `sshd -E` to a file of its own, and accepts no
# password or keyboard-interactive logins (nobody can log in: the attempts
# are what matters).
#
#   tools/lab-sshd.sh start NAME DIR   start it for lab NAME; state and log in DIR (DIR/auth.log)
#   tools/lab-sshd.sh stop DIR         stop it
set -euo pipefail

command=${1:-}
case $command in
    start)
        name=${2:?lab name}
        dir=${3:?state directory}
        mkdir -p "$dir" /run/sshd
        [[ -f $dir/host_key ]] || ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
        cat > "$dir/sshd_config" <<CONFIG
ListenAddress 198.51.100.1
ListenAddress [2001:db8::1]
HostKey $dir/host_key
PidFile $dir/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel INFO
CONFIG
        : > "$dir/auth.log"
        ip netns exec "$name-bastion" /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/auth.log"
        for _ in $(seq 1 50); do
            grep -q "Server listening on 198.51.100.1" "$dir/auth.log" 2>/dev/null && exit 0
            sleep 0.1
        done
        echo "lab-sshd: sshd did not start; see $dir/auth.log" >&2
        exit 1
        ;;
    stop)
        dir=${2:?state directory}
        if [[ -f $dir/sshd.pid ]]; then
            kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true
            rm -f "$dir/sshd.pid"
        fi
        ;;
    *)
        sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
