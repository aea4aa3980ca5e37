#!/usr/bin/env python3
"""Wazuh active response: Portcullis's AR executable against what firewall-drop runs.

For each of N addresses, side by side in one run:
  - portcullis: one AR process per address, driven exactly as wazuh-execd drives it
    (argv[0] active-response/bin/NAME, the Wazuh home as cwd, the add message on stdin,
    check_keys read from stdout, "continue" sent back), timed from spawn to exit;
  - iptables: the two commands firewall-drop forks per address,
    `iptables -I INPUT -s IP -j DROP` and `iptables -I FORWARD -s IP -j DROP`,
    inside a network namespace made for the run (never the host's firewall).

Prints a Markdown table (and writes it to perf/results/wazuh-ar-latency.md) with the
median and 90th percentile per add, for the first and last 10% of the run, so a
slowdown as the blocklist grows shows. Needs root, bpffs, iptables and a built
portcullis (tools/setup.sh; swift build -c release --static-swift-stdlib).

usage: perf/wazuh_ar_latency.py [COUNT] [PATH-TO-PORTCULLIS]
"""
import json, os, platform, shutil, statistics, subprocess, sys, tempfile, time, uuid

count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
portcullis = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else ".build/release/portcullis")
if os.geteuid() != 0:
    sys.exit("wazuh_ar_latency: needs root")
if not shutil.which("iptables"):
    sys.exit("wazuh_ar_latency: needs iptables (apt-get install iptables)")

run_id = uuid.uuid4().hex[:8]
home = tempfile.mkdtemp(prefix="portcullis-perf-wazuh-")
pins = f"/sys/fs/bpf/portcullis-perf-{run_id}"
netns = f"pcperf-{run_id}"
env = dict(os.environ, PORTCULLIS_PIN_DIR=pins, PORTCULLIS_INCIDENT_LOG=f"{home}/incidents.jsonl")


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


def portcullis_add(ip):
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


try:
    os.makedirs(f"{home}/active-response/bin")
    os.makedirs(f"{home}/logs")
    subprocess.run([portcullis, "wazuh", "install", "--home", home], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ip", "netns", "add", netns], check=True)
    enter_namespace()
    subprocess.run([portcullis, "allow", "192.0.2.1"], env=env, check=True, stdout=subprocess.DEVNULL)  # creates the state

    ours, theirs = [], []
    for i in range(count):
        ip = address(i)
        # Interleaved, so both see the same machine noise.
        ours.append(portcullis_add(ip))
        theirs.append(iptables_add(ip))
    us, them = summary(ours), summary(theirs)
    ratio = us["median"] / them["median"]
    lines = [
        f"# Wazuh active response: one add per process, {count} addresses",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.node()} ({os.cpu_count()} cores, kernel {platform.release()}), "
        f"by `perf/wazuh_ar_latency.py {count}`.",
        "",
        "| per add | median | p90 | median, first 10% | median, last 10% |",
        "|---|---|---|---|---|",
        f"| Portcullis AR (spawn, check_keys, continue, block, exit) | {us['median']:.2f} ms | {us['p90']:.2f} ms | {us['first']:.2f} ms | {us['last']:.2f} ms |",
        f"| firewall-drop's iptables pair (INPUT and FORWARD) | {them['median']:.2f} ms | {them['p90']:.2f} ms | {them['first']:.2f} ms | {them['last']:.2f} ms |",
        "",
        f"At the median a Portcullis add takes {ratio:.2f}x the time of the bare iptables pair "
        f"(iptables {shutil.which('iptables') and subprocess.run(['iptables', '--version'], capture_output=True, text=True).stdout.strip()}). "
        "The iptables column counts only the two commands; firewall-drop itself also starts, takes its lock directory "
        "and then forks them, which is not counted. The Portcullis column counts a whole process: start-up of the binary, "
        "the handshake, the map update and the incident record (fsync'd). "
        f"Over the run, Portcullis's median went from {us['first']:.2f} to {us['last']:.2f} ms; "
        f"iptables', with one linear rule per address, from {them['first']:.2f} to {them['last']:.2f} ms.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    os.makedirs("perf/results", exist_ok=True)
    with open("perf/results/wazuh-ar-latency.md", "w") as f:
        f.write(report)
finally:
    subprocess.run([portcullis, "purge", "--yes"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "netns", "del", netns], stderr=subprocess.DEVNULL)
    shutil.rmtree(home, ignore_errors=True)
