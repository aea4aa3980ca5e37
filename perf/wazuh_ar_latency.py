#!/usr/bin/env python3
"""Wazuh active response: Portcullis's AR executable against what firewall-drop runs.

For each of N addresses, interleaved in one run so all see the same machine noise:
  - portcullis, daemon absent: one AR process per address, driven exactly as wazuh-execd
    drives it (argv[0] active-response/bin/NAME, the Wazuh home as cwd, the add message on
    stdin, check_keys read from stdout, "continue" sent back), timed from spawn to exit; it
    writes the pinned maps and the incident record itself;
  - portcullis, daemon present: the same, with a daemon running, which the AR asks instead;
  - iptables: the two commands firewall-drop forks per address,
    `iptables -I INPUT -s IP -j DROP` and `iptables -I FORWARD -s IP -j DROP`,
    inside a network namespace made for the run (never the host's firewall).
Then `--version` of portcullis against `iptables --version`, and the binaries' sizes.

Prints a Markdown table (and writes it to perf/results/wazuh-ar-latency.md) with the
median and 90th percentile per add, for the first and last 10% of the run, so a
slowdown as the blocklist grows shows. Needs root, bpffs, iptables and the release
binaries (tools/setup.sh; swift build -c release --static-swift-stdlib).

Targets: an add at most 0.5x the iptables pair at the median, with and without the daemon;
`portcullis --version` within 3x of `iptables --version`.

usage: perf/wazuh_ar_latency.py [COUNT] [BIN-DIR]
"""
import json, os, platform, shutil, signal, statistics, subprocess, sys, tempfile, time, uuid

count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
bin_dir = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else ".build/release")
portcullis = f"{bin_dir}/portcullis"
if os.geteuid() != 0:
    sys.exit("wazuh_ar_latency: needs root")
if not shutil.which("iptables"):
    sys.exit("wazuh_ar_latency: needs iptables (apt-get install iptables)")
for name in ("portcullis", "portcullis-daemon", "portcullis-active-response"):
    if not os.access(f"{bin_dir}/{name}", os.X_OK):
        sys.exit(f"wazuh_ar_latency: no {name} in {bin_dir} (swift build -c release --static-swift-stdlib)")

run_id = uuid.uuid4().hex[:8]
home = tempfile.mkdtemp(prefix="portcullis-perf-wazuh-")
netns = f"pcperf-{run_id}"
# Each path has its own state, so the direct AR and the daemon never share a map.
direct_env = dict(os.environ, PORTCULLIS_PIN_DIR=f"/sys/fs/bpf/portcullis-perf-{run_id}", PORTCULLIS_STATE_DIR=f"{home}/state",
                  PORTCULLIS_INCIDENT_LOG=f"{home}/incidents.jsonl",
                  PORTCULLIS_CONTROL_SOCKET=f"{home}/no-daemon.sock")
daemon_pins = f"/sys/fs/bpf/portcullis-perf-{run_id}-daemon"
daemon_env = dict(os.environ, PORTCULLIS_PIN_DIR=daemon_pins, PORTCULLIS_STATE_DIR=f"{home}/state",
                  PORTCULLIS_INCIDENT_LOG=f"{home}/daemon-incidents.jsonl",
                  PORTCULLIS_CONTROL_SOCKET=f"{home}/control.sock")
daemon = None


def address(i):
    # 198.18.0.0/15 is reserved for benchmarking (RFC 2544): room for 131,072 addresses.
    return f"198.{18 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


def message(ip):
    return json.dumps({
        "version": 1, "origin": {"name": "", "module": "wazuh-execd"}, "command": "add",
        "parameters": {"extra_args": ["--for", "100s"], "alert": {
            "rule": {"level": 5, "description": "sshd: Attempt to login using a non-existent user", "id": "5710"},
            "agent": {"id": "001", "name": "bastion"}, "id": "1795849766.1234",
            "data": {"srcip": ip, "srcport": "30855"}},
            "program": "active-response/bin/firewall-drop-xdp"}}, separators=(",", ":"))


def portcullis_add(ip, env):
    text = message(ip)
    start = time.perf_counter()
    process = subprocess.Popen(["active-response/bin/firewall-drop-xdp"], executable=f"{home}/active-response/bin/firewall-drop-xdp",
                               cwd=home, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    process.stdin.write((text + "\n").encode())
    process.stdin.flush()
    keys = process.stdout.readline()
    if b"check_keys" not in keys:
        sys.exit(f"wazuh_ar_latency: no check_keys from the AR for {ip}: {keys!r}")
    process.stdin.write((text.replace('"command":"add"', '"command":"continue"') + "\n").encode())
    process.stdin.close()
    status = process.wait()
    elapsed = time.perf_counter() - start
    if status != 0:
        sys.exit(f"wazuh_ar_latency: the AR failed for {ip} (exit {status}); see {home}/logs/active-responses.log")
    return elapsed


def iptables_add(ip):
    # This process runs inside the run's own network namespace (see below), so these
    # are the bare commands, and they never touch the host's firewall.
    start = time.perf_counter()
    for chain in ("INPUT", "FORWARD"):
        subprocess.run(["iptables", "-w", "-I", chain, "-s", ip, "-j", "DROP"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def enter_namespace():
    """setns(2) this process into the run's namespace; the mount namespace, and so bpffs, stay the host's."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        sys.exit(f"wazuh_ar_latency: cannot enter netns {netns}: {os.strerror(ctypes.get_errno())}")
    os.close(fd)


def summary(samples):
    tenth = max(1, len(samples) // 10)
    def ms(values, q):
        values = sorted(values)
        return values[min(len(values) - 1, int(q * len(values)))] * 1000
    return {
        "median": ms(samples, 0.5), "p90": ms(samples, 0.9),
        "first": ms(samples[:tenth], 0.5), "last": ms(samples[-tenth:], 0.5),
    }


def start_daemon():
    config = f"{home}/portcullis.yaml"
    with open(config, "w") as f:
        f.write(f"pin_dir: {daemon_pins}\ncontrol_socket: {home}/control.sock\ncontrol_group: root\n"
                f"metrics_address: 127.0.0.1:{19000 + int(run_id, 16) % 20000}\nincident_log: {home}/daemon-incidents.jsonl\n")
    process = subprocess.Popen([portcullis, "run", "--config", config], env=daemon_env,
                               stdout=subprocess.DEVNULL, stderr=open(f"{home}/daemon.log", "w"))
    for _ in range(200):  # 10 s at most
        health = subprocess.run(["curl", "-sf", "--unix-socket", f"{home}/control.sock", "http://portcullis/v1/health"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if health.returncode == 0:
            return process
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    sys.exit(f"wazuh_ar_latency: the daemon did not start; see {home}/daemon.log")


def command_time(argv, rounds):
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def size_mb(path):
    return os.path.getsize(path) / 1e6


try:
    os.makedirs(f"{home}/active-response/bin")
    os.makedirs(f"{home}/logs")
    subprocess.run([portcullis, "wazuh", "install", "--home", home], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ip", "netns", "add", netns], check=True)
    daemon = start_daemon()
    enter_namespace()
    subprocess.run([portcullis, "allow", "192.0.2.1"], env=direct_env, check=True, stdout=subprocess.DEVNULL)  # creates the state

    direct, through_daemon, theirs = [], [], []
    for i in range(count):
        # Interleaved, so all three see the same machine noise; distinct addresses for each path.
        direct.append(portcullis_add(address(i), direct_env))
        through_daemon.append(portcullis_add(address(i + count), daemon_env))
        theirs.append(iptables_add(address(i)))
    versions = [(command_time([portcullis, "--version"], 200), command_time(["iptables", "--version"], 200)) for _ in range(3)]
    ours_version = statistics.median(v[0] for v in versions)
    their_version = statistics.median(v[1] for v in versions)
    us, via, them = summary(direct), summary(through_daemon), summary(theirs)
    iptables_version = subprocess.run(["iptables", "--version"], capture_output=True, text=True).stdout.strip()

    def row(name, s):
        return f"| {name} | {s['median']:.2f} ms | {s['p90']:.2f} ms | {s['first']:.2f} ms | {s['last']:.2f} ms | {s['median'] / them['median']:.2f}x |"

    lines = [
        f"# Wazuh active response: one add per process, {count} addresses",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.node()} ({os.cpu_count()} cores, kernel {platform.release()}), "
        f"by `perf/wazuh_ar_latency.py {count}`, the three paths interleaved address by address.",
        "",
        "| per add | median | p90 | median, first 10% | median, last 10% | median vs iptables |",
        "|---|---|---|---|---|---|",
        row("Portcullis AR, no daemon (spawn, check_keys, continue, map update, fsync'd record, exit)", us),
        row("Portcullis AR, daemon running (spawn, check_keys, continue, request to the daemon, exit)", via),
        row("firewall-drop's iptables pair (INPUT and FORWARD)", them),
        "",
        "| start-up | median | vs iptables |",
        "|---|---|---|",
        f"| `portcullis --version` | {ours_version:.2f} ms | {ours_version / their_version:.2f}x |",
        f"| `iptables --version` | {their_version:.2f} ms | 1.00x |",
        "",
        "| release binary (stripped, static Swift runtime) | size |",
        "|---|---|",
    ] + [f"| {name} | {size_mb(f'{bin_dir}/{name}'):.1f} MB |" for name in ("portcullis-active-response", "portcullis", "portcullis-daemon")] + [
        "",
        f"Targets: an add at most 0.5x the iptables pair ({iptables_version}) at the median: "
        f"{us['median'] / them['median']:.2f}x without the daemon, {via['median'] / them['median']:.2f}x with it; "
        f"`--version` within 3x of iptables': {ours_version / their_version:.2f}x. "
        "The iptables column counts only the two commands; firewall-drop itself also starts, takes its lock directory "
        "and then forks them, which is not counted. Each Portcullis column counts a whole process. "
        f"Over the run, the direct AR's median went from {us['first']:.2f} to {us['last']:.2f} ms; "
        f"iptables', with one linear rule per address, from {them['first']:.2f} to {them['last']:.2f} ms.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    os.makedirs("perf/results", exist_ok=True)
    with open("perf/results/wazuh-ar-latency.md", "w") as f:
        f.write(report)
finally:
    if daemon is not None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
    for env in (direct_env, daemon_env):
        subprocess.run([portcullis, "purge", "--yes"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "netns", "del", netns], stderr=subprocess.DEVNULL)
    shutil.rmtree(home, ignore_errors=True)
