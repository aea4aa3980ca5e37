#!/usr/bin/env python3
"""What `portcullis top` costs each refresh with a million blocks held: the round's own
reads of the maps (one slice plus the watched blocks by key), how long the slices take to go
round the maps once, and, for comparison, the full walk `list --top` makes. Map keys come from
240.0.0.0/4, addresses no packet carries, loaded with `portcullis block --file` into pins of
its own. Also the latency of a block while top refreshes, against none running.

Writes perf/results/top-cost.md. Needs root and bpffs.
usage: perf/top_cost.py [PATH-TO-PORTCULLIS] [COUNT] [SECONDS]
"""
import ipaddress, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time, uuid

portcullis = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".build/release/portcullis")
count = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 40
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
work = tempfile.mkdtemp(prefix="portcullis-perf-top-")
pins = f"/sys/fs/bpf/portcullis-test-perf-top-{uuid.uuid4().hex[:8]}"
env = dict(os.environ, PORTCULLIS_PIN_DIR=pins, PORTCULLIS_INCIDENT_LOG=f"{work}/incidents.jsonl", PORTCULLIS_STATE_DIR=f"{work}/state",
           PORTCULLIS_CONTROL_SOCKET=f"{work}/none.sock")


def run(*arguments, **options):
    return subprocess.run([portcullis, *arguments], env=env, check=True, capture_output=True, text=True, **options)


def block_latencies(n):
    latencies = []
    for i in range(n):
        started = time.perf_counter()
        run("block", f"240.255.{i // 256}.{i % 256}", "--for", "1h")
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


top = None
try:
    base = int(ipaddress.IPv4Address("240.0.0.0"))
    with open(f"{work}/blocks.txt", "w") as f:
        f.write("\n".join(str(ipaddress.IPv4Address(base + n)) for n in range(count)) + "\n")
    started = time.perf_counter()
    run("block", "--file", f"{work}/blocks.txt", "--for", "1d", "--capacity", str(max(count + 65_536, 1_048_576)))
    load = time.perf_counter() - started

    started = time.perf_counter()
    run("list", "--top", "10")
    walk = time.perf_counter() - started

    idle = block_latencies(100)
    top = subprocess.Popen([portcullis, "top", "--json", "--interval", "1"], env=env, stdout=subprocess.PIPE, text=True)
    time.sleep(2)
    busy = block_latencies(100)
    samples = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        line = top.stdout.readline()
        if not line:
            break
        samples.append(json.loads(line)["sampling"])
    top.terminate()
    top.wait()
    rounds = sorted(s["roundMicroseconds"] / 1000 for s in samples[1:])
    passes = [s["passSeconds"] for s in samples if s.get("passSeconds")]
    held = samples[-1]["blocksHeld"]
    p = lambda values, q: values[min(len(values) - 1, int(q * len(values)))]
    lines = [
        "# portcullis top: cost per refresh",
        "",
        f"{platform.node()}, kernel {platform.release()}, {os.cpu_count()} CPUs; {held:,} blocks held ({count:,} loaded in {load:.1f} s); "
        f"{len(rounds)} refreshes, 1 s apart.",
        "",
        "| what | measured |",
        "|---|---|",
        f"| one refresh's reads of the maps (slice of {samples[-1]['exactSlice']:,} + watched by key), median / p95 / max | "
        f"{statistics.median(rounds):.1f} / {p(rounds, 0.95):.1f} / {rounds[-1]:.1f} ms |",
        f"| entries a refresh reads | {max(s['scanned'] for s in samples):,} at most, plus {max(s['readByKey'] for s in samples)} by key |",
        f"| one trip of the slices round the maps | {passes[-1]:.1f} s |" if passes else "| one trip round the maps | not finished |",
        f"| `list --top 10` (a full walk of the maps, the whole command) | {walk * 1000:.0f} ms |",
        f"| `block` (the whole command, directly), median / p95, idle | {statistics.median(idle):.1f} / {p(sorted(idle), 0.95):.1f} ms |",
        f"| the same while top refreshes every second | {statistics.median(busy):.1f} / {p(sorted(busy), 0.95):.1f} ms |",
        "",
    ]
    os.makedirs(f"{root}/perf/results", exist_ok=True)
    with open(f"{root}/perf/results/top-cost.md", "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
finally:
    if top and top.poll() is None:
        top.kill()
    subprocess.run([portcullis, "purge", "--yes"], env=env, capture_output=True)
    shutil.rmtree(work, ignore_errors=True)
