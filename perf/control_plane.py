#!/usr/bin/env python3
"""Control-plane timings, side by side in one run: how long a million blocks take
to load (directly, and through the daemon's API), to sweep once expired, and how
much memory the daemon and the maps hold with a million blocks. Map keys come
from 240.0.0.0/4, addresses no packet carries. For one Wazuh add per process
against the iptables pair firewall-drop runs, see perf/wazuh_ar_latency.py.

Writes perf/results/control-plane.md. Needs root, bpffs and a release build.
usage: perf/control_plane.py [PATH-TO-PORTCULLIS] [COUNT]
"""
import ipaddress, json, os, platform, shutil, signal, subprocess, sys, tempfile, time, uuid

portcullis = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".build/release/portcullis")
count = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
work = tempfile.mkdtemp(prefix="portcullis-perf-control-")
pins = f"/sys/fs/bpf/portcullis-perf-{uuid.uuid4().hex[:8]}"
socket_path = f"{work}/control.sock"
env = dict(os.environ, PORTCULLIS_PIN_DIR=pins, PORTCULLIS_INCIDENT_LOG=f"{work}/incidents.jsonl", PORTCULLIS_STATE_DIR=f"{work}/state",
           PORTCULLIS_CONTROL_SOCKET=f"{work}/none.sock")
base = int(ipaddress.IPv4Address("240.0.0.0"))
with open(f"{work}/blocks.txt", "w") as f:
    f.write("\n".join(str(ipaddress.IPv4Address(base + n)) for n in range(count)) + "\n")


def timed(*command, environment=env):
    started = time.perf_counter()
    subprocess.run(command, env=environment, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def purge():
    subprocess.run([portcullis, "purge", "--yes"], env=env, capture_output=True)


def map_memory():
    status = json.loads(subprocess.run([portcullis, "status", "--json"], env=env, check=True, capture_output=True, text=True).stdout)
    return sum(m.get("memoryBytes") or 0 for m in status["maps"])


rows = []
daemon = None
try:
    purge()
    load = timed(portcullis, "block", "--file", f"{work}/blocks.txt", "--for", "1h")
    rows.append((f"block --file, {count:,} addresses, directly", f"{load:.2f} s", "under 2 s" if count >= 1_000_000 else ""))
    memory = map_memory()
    rows.append((f"kernel memory of the maps with {count:,} blocks", f"{memory / 2**20:.0f} MiB", ""))
    refresh = timed(portcullis, "block", "--file", f"{work}/blocks.txt", "--for", "2h")
    rows.append((f"block --file again (all {count:,} refreshed)", f"{refresh:.2f} s", ""))
    purge()

    timed(portcullis, "block", "--file", f"{work}/blocks.txt", "--for", "1s")
    time.sleep(1.5)
    sweep = timed(portcullis, "sweep")
    rows.append((f"sweep of {count:,} expired blocks (the whole command)", f"{sweep:.2f} s", "under 1 s"))
    purge()

    with open(f"{work}/portcullis.yaml", "w") as f:
        f.write(f"pin_dir: {pins}\ncontrol_socket: {socket_path}\nmetrics_address: off\n"
                f"incident_log: {work}/incidents.jsonl\nsweep_interval: 1h\ncapacity: {{exact: {max(count, 1_048_576)}}}\n")
    daemon = subprocess.Popen([portcullis, "run", "--config", f"{work}/portcullis.yaml"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if os.path.exists(socket_path):
            break
        time.sleep(0.05)
    through = dict(env, PORTCULLIS_CONTROL_SOCKET=socket_path)
    api = timed(portcullis, "block", "--file", f"{work}/blocks.txt", "--for", "1h", environment=through)
    rows.append((f"block --file, {count:,} addresses, through the daemon's API", f"{api:.2f} s", ""))
    with open(f"/proc/{daemon.pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    rows.append((f"daemon resident memory after loading {count:,} blocks", f"{rss / 1024:.0f} MiB", ""))
    listing = timed(portcullis, "list", "--json", environment=through)
    rows.append((f"list --json of {count:,} blocks through the daemon", f"{listing:.2f} s", ""))

    lines = [
        "# Control plane: loading, sweeping and memory",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.node()} ({os.cpu_count()} cores, kernel {platform.release()}) "
        f"by `perf/control_plane.py`, all in one run.",
        "",
        "| what | time or size | target |",
        "|---|---|---|",
    ] + [f"| {what} | {value} | {target} |" for what, value, target in rows] + [
        "",
        "One Wazuh add per process, against the iptables pair firewall-drop runs: "
        "[wazuh-ar-latency.md](wazuh-ar-latency.md).",
    ]
    report = "\n".join(lines) + "\n"
    os.makedirs(f"{root}/perf/results", exist_ok=True)
    with open(f"{root}/perf/results/control-plane.md", "w") as f:
        f.write(report)
    print(report)
finally:
    if daemon:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    purge()
    shutil.rmtree(work, ignore_errors=True)
