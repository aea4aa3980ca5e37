#!/usr/bin/env python3
"""The fast path against a bare XDP lookup, xdp-filter and nftables, interleaved.

Every configuration below is measured once per round, and the rounds repeat
(A, B, C, A, B, C, ...), so that the machine's drift falls on all of them alike;
the figures are medians over the rounds, and each ratio is the median of the
ratios taken within a round. Generators (tools/pktgen.py) are pinned to one core,
or to each of two, and start together; the lab's veth pair has a queue per core,
so each core's frames land on its own queue, as receive-side scaling spreads a
NIC's. What a blocker dropped is read from veth's own per-queue counters
(rx_queue_N_xdp_drops), the same for every XDP program, or from the nftables
rule's counter.

Configurations:
  - the bare lookup (perf/bare_lookup.bpf.c): Ethernet, IPv4 or IPv6, one hash
    lookup, drop on a hit; with the attacker alone in its map, and with 1M IPv4
    and 1M IPv6 addresses in it;
  - Portcullis, native XDP, with the same two blocklists;
  - xdp-filter from Debian's xdp-tools (features ipv4,ipv6) with the attacker alone
    (its maps hold at most 10,000 addresses);
  - an nftables set at the netdev ingress hook with the attacker alone;
and three floods: one IPv4 source; one IPv4 source over 1M blocked addresses; a
random source out of 1M blocked IPv6 addresses (documentation addresses
2001:db8:1::/64), which takes the lookups out of the cache as an attack from
many sources does. The filler IPv4 addresses come from 240.0.0.0/4 and never
send.

Writes perf/results/fast-path.md and perf/results/fast-path.png.
Needs root, bpffs, bpftool, ethtool, xdp-tools, nftables, matplotlib
(perf/setup.sh installs them) and a release build of portcullis.

usage: perf/fast_path.py [PATH-TO-PORTCULLIS] [SECONDS-PER-RUN] [ROUNDS]
"""
import ctypes, ipaddress, json, os, platform, shutil, signal, statistics, subprocess, sys, tempfile, time, uuid

# A kill still runs the cleanup below.
signal.signal(signal.SIGTERM, lambda *_: sys.exit("fast_path: stopped"))

portcullis = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".build/release/portcullis")
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
lab = "pcfast"
attacker_ns, bastion_ns, attacker_if, bastion_if = f"{lab}-attacker", f"{lab}-bastion", f"{lab}-a", f"{lab}-b"
attacker, destination = "198.51.100.2", "198.51.100.1"
spread_base, spread_destination = ipaddress.IPv6Address("2001:db8:1::"), "2001:db8::1"
large = 1_000_000
cores = [c for c in (1, 2) if c <= len(os.sched_getaffinity(0))]
run_id = uuid.uuid4().hex[:8]
work = tempfile.mkdtemp(prefix="portcullis-perf-fast-")
bare_pins = {size: f"/sys/fs/bpf/portcullis-perf-bare{size}-{run_id}" for size in (1, large, "shared", "percpu")}
BPF_F_NO_PREALLOC = 1
# libxdp keeps its own directory under bpffs for xdp-filter; remove it after only if this made it.
made_libxdp_pins = not os.path.exists("/sys/fs/bpf/xdp")

if os.geteuid() != 0:
    sys.exit("fast_path: needs root")
for tool in ("bpftool", "ethtool", "xdp-filter", "nft"):
    if not shutil.which(tool):
        sys.exit(f"fast_path: needs {tool} (perf/setup.sh installs it)")
if not os.access(portcullis, os.X_OK):
    sys.exit(f"fast_path: no portcullis at {portcullis} (swift build -c release)")


def run(*command, **kwargs):
    return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)


def bastion(*command, **kwargs):
    # nsenter rather than `ip netns exec`, which mounts a fresh /sys and so hides the host's bpffs.
    return run("nsenter", f"--net=/run/netns/{bastion_ns}", *command, **kwargs)


def portcullis_env(size):
    return dict(os.environ, PORTCULLIS_PIN_DIR=f"/sys/fs/bpf/portcullis-perf-{size}-{run_id}",
                PORTCULLIS_INCIDENT_LOG=f"{work}/{size}/incidents.jsonl", PORTCULLIS_STATE_DIR=f"{work}/{size}/state",
                PORTCULLIS_CONTROL_SOCKET=f"{work}/{size}/none.sock")


def filler_v4(n):
    base = int(ipaddress.IPv4Address("240.0.0.0"))
    return [ipaddress.IPv4Address(base + i) for i in range(n)]


def spread_v6(n):
    return [spread_base + i for i in range(n)]


# --- the blockers -------------------------------------------------------------

libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)


def fill_map(path, keys):
    """Adds keys (bytes of one length) with a value of 1, a batch at a time (bpf_map_update_batch)."""
    fd = libbpf.bpf_obj_get(path.encode())
    if fd < 0:
        sys.exit(f"fast_path: cannot open {path}: {os.strerror(ctypes.get_errno())}")
    try:
        for start in range(0, len(keys), 100_000):
            chunk = keys[start:start + 100_000]
            key_buffer = ctypes.create_string_buffer(b"".join(chunk), len(chunk) * len(chunk[0]))
            value_buffer = ctypes.create_string_buffer(b"\x01" * len(chunk), len(chunk))
            count = ctypes.c_uint32(len(chunk))
            status = libbpf.bpf_map_update_batch(fd, key_buffer, value_buffer, ctypes.byref(count), None)
            if status != 0:
                sys.exit(f"fast_path: filling {path} failed: {os.strerror(-status)}")
    finally:
        os.close(fd)


def load_bare(size, v4, v6, counting=None):
    pin = bare_pins[counting or size]
    os.makedirs(pin)
    entries = max(len(v4), len(v6), 1)
    kind, value = {None: ("hash", "1"), "shared": ("hash", "16"), "percpu": ("percpu_hash", "16")}[counting]
    run("bpftool", "map", "create", f"{pin}/bare_v4", "type", kind, "key", "4", "value", value,
        "entries", str(entries), "name", "bare_v4", "flags", str(BPF_F_NO_PREALLOC))
    run("bpftool", "map", "create", f"{pin}/bare_v6", "type", "hash", "key", "16", "value", "1",
        "entries", str(entries), "name", "bare_v6", "flags", str(BPF_F_NO_PREALLOC))
    run("bpftool", "prog", "load", f"{work}/bare_lookup{'-' + counting if counting else ''}.o", f"{pin}/prog", "type", "xdp",
        "map", "name", "bare_v4", "pinned", f"{pin}/bare_v4", "map", "name", "bare_v6", "pinned", f"{pin}/bare_v6")
    if counting:
        # Only the attacker, with a zero count (on every core, for the per-CPU map).
        key = " ".join(f"{b}" for b in v4[0].packed)
        run("bpftool", "map", "update", "pinned", f"{pin}/bare_v4", "key", *key.split(), "value", *["0"] * 16)
    else:
        fill_map(f"{pin}/bare_v4", [a.packed for a in v4])
    if v6:
        fill_map(f"{pin}/bare_v6", [a.packed for a in v6])


def load_portcullis(size, v4, v6):
    env = portcullis_env(size)
    os.makedirs(f"{work}/{size}", exist_ok=True)
    lines = "\n".join(map(str, v4 + v6)) + "\n"
    run(portcullis, "block", "--file", "-", "--reason", "fast path benchmark", input=lines, env=env)


class Blocker:
    def __init__(self, name, attach, detach, dropped):
        self.name, self.attach, self.detach, self.dropped = name, attach, detach, dropped


def xdp_drops():
    total = 0
    for line in bastion("ethtool", "-S", bastion_if).stdout.splitlines():
        name, _, value = line.strip().partition(":")
        if name.startswith("rx_queue_") and name.endswith("_xdp_drops"):
            total += int(value)
    return total


def bare(size):
    return Blocker(f"bare lookup, {size:,} blocked",
                   lambda: bastion("ip", "link", "set", "dev", bastion_if, "xdpdrv", "pinned", f"{bare_pins[size]}/prog"),
                   lambda: bastion("ip", "link", "set", "dev", bastion_if, "xdpdrv", "off"), xdp_drops)


def bare_counting(counting):
    what = {"shared": "an atomic count in the entry", "percpu": "a per-CPU count"}[counting]
    return Blocker(f"bare lookup + {what}, 1 blocked",
                   lambda: bastion("ip", "link", "set", "dev", bastion_if, "xdpdrv", "pinned", f"{bare_pins[counting]}/prog"),
                   lambda: bastion("ip", "link", "set", "dev", bastion_if, "xdpdrv", "off"), xdp_drops)


def portcullis_blocker(size):
    env = portcullis_env(size)
    return Blocker(f"Portcullis, {size:,} blocked",
                   lambda: run(portcullis, "attach", bastion_if, "--netns", bastion_ns, "--mode", "native", env=env),
                   lambda: run(portcullis, "detach", bastion_if, "--netns", bastion_ns, env=env), xdp_drops)


def xdp_filter():
    def attach():
        bastion("xdp-filter", "load", "--mode", "native", "--features", "ipv4,ipv6", bastion_if)
        bastion("xdp-filter", "ip", "--mode", "src", attacker)

    return Blocker("xdp-filter, 1 blocked", attach, lambda: bastion("xdp-filter", "unload", bastion_if), xdp_drops)


def nftables():
    def attach():
        ruleset = (f"table netdev pcfast {{\n set blocked {{ type ipv4_addr; elements = {{ {attacker} }} }}\n"
                   f" chain ingress {{ type filter hook ingress device \"{bastion_if}\" priority -500; policy accept;\n"
                   f"  ip saddr @blocked counter drop\n }}\n}}\n")
        bastion("nft", "-f", "-", input=ruleset)

    def dropped():
        out = bastion("nft", "-j", "list", "chain", "netdev", "pcfast", "ingress").stdout
        for item in json.loads(out)["nftables"]:
            for expression in item.get("rule", {}).get("expr", []):
                if "counter" in expression:
                    return expression["counter"]["packets"]
        return 0

    return Blocker("nftables set, netdev ingress, 1 blocked", attach,
                   lambda: bastion("nft", "delete", "table", "netdev", "pcfast"), dropped)


# --- the floods ---------------------------------------------------------------

def flood(cores_used, source, dst, spread=1):
    mac = json.loads(run("ip", "-n", bastion_ns, "-j", "link", "show", "dev", bastion_if).stdout)[0]["address"]
    start_at = time.time() + 1.5  # time for every generator to build and load its program
    generators = []
    for cpu in range(cores_used):
        command = [sys.executable, f"{root}/tools/pktgen.py", "--netns", attacker_ns, "--interface", attacker_if,
                   "--src", str(source), "--dst", dst, "--dst-mac", mac, "--cpu", str(cpu), "--start-at", f"{start_at:.3f}",
                   "--duration", str(seconds), "--count", "400000000", "--json"]
        if spread > 1:
            command += ["--spread", str(spread), "--random"]
        generators.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for generator in generators:
        out, err = generator.communicate(timeout=seconds + 60)
        if generator.returncode != 0:
            sys.exit(f"fast_path: the generator failed: {err.strip()}")
        results.append(json.loads(out))
    return max(r["seconds"] for r in results), sum(r["sent"] for r in results)


floods = {
    "one source": (attacker, destination, 1),
    "random source of 1M": (spread_base, spread_destination, large),
}
# (flood, blocker) pairs; every round measures each once, for one core and for two.
plan = [("one source", "bare", 1), ("one source", "bare-shared", 1), ("one source", "bare-percpu", 1), ("one source", "portcullis", 1), ("one source", "xdp-filter", 1), ("one source", "nftables", 1),
        ("one source", "bare", large), ("one source", "portcullis", large),
        ("random source of 1M", "bare", large), ("random source of 1M", "portcullis", large)]

measurements = {}  # (flood, kind, size, cores) -> [(pps dropped, pps offered)] per round
try:
    run(f"{root}/tools/lab.sh", "up", lab)
    # veth hands XDP_TX frames only to a peer running NAPI: GRO turns it on for nftables, which has no XDP program.
    bastion("ethtool", "-K", bastion_if, "gro", "on")
    clang = os.path.join(os.path.dirname(shutil.which("swift") or "/usr/bin/clang"), "clang")
    multiarch = run("gcc", "-print-multiarch").stdout.strip()
    run(clang, "-O2", "-g", "-target", "bpf", "-I", f"/usr/include/{multiarch}", "-c",
        f"{root}/perf/bare_lookup.bpf.c", "-o", f"{work}/bare_lookup.o")
    for counting, value in (("shared", 1), ("percpu", 2)):
        run(clang, "-O2", "-g", "-target", "bpf", "-I", f"/usr/include/{multiarch}", f"-DCOUNT_DROPS={value}", "-c",
            f"{root}/perf/bare_lookup.bpf.c", "-o", f"{work}/bare_lookup-{counting}.o")

    attacker_address = ipaddress.IPv4Address(attacker)
    large_v4, large_v6 = [attacker_address] + filler_v4(large - 1), spread_v6(large)
    print("loading the blocklists ...", flush=True)
    load_bare(1, [attacker_address], [])
    load_bare(large, large_v4, large_v6)
    load_bare(1, [attacker_address], [], "shared")
    load_bare(1, [attacker_address], [], "percpu")
    load_portcullis(1, [attacker_address], [])
    load_portcullis(large, large_v4, large_v6)
    blockers = {("bare", 1): bare(1), ("bare", large): bare(large), ("portcullis", 1): portcullis_blocker(1),
                ("portcullis", large): portcullis_blocker(large), ("xdp-filter", 1): xdp_filter(), ("nftables", 1): nftables(),
                ("bare-shared", 1): bare_counting("shared"), ("bare-percpu", 1): bare_counting("percpu")}

    for round_number in range(rounds):
        for cores_used in cores:
            for flood_name, kind, size in plan:
                blocker = blockers[(kind, size)]
                source, dst, spread = floods[flood_name]
                blocker.attach()
                try:
                    before = blocker.dropped()
                    elapsed, sent = flood(cores_used, source, dst, spread)
                    dropped = blocker.dropped() - before
                finally:
                    blocker.detach()
                rate = dropped / elapsed if elapsed else 0
                measurements.setdefault((flood_name, kind, size, cores_used), []).append((rate, sent / elapsed if elapsed else 0))
                print(f"round {round_number + 1}/{rounds}, {cores_used} core{'s' if cores_used > 1 else ''}, {flood_name}, "
                      f"{blocker.name}: {rate / 1e6:.2f} Mpps dropped of {sent / elapsed / 1e6:.2f} offered", flush=True)

    def median_rate(key):
        return statistics.median(r for r, _ in measurements[key])

    def ratio(key, reference):
        return statistics.median(a[0] / b[0] for a, b in zip(measurements[key], measurements[reference]) if b[0])

    def spread_of_ratios(key, reference):
        values = [a[0] / b[0] for a, b in zip(measurements[key], measurements[reference]) if b[0]]
        return min(values), max(values)

    rows = [("one source", "bare", 1, "bare lookup, 1 blocked"),
            ("one source", "bare-shared", 1, "bare lookup + an atomic count in the entry, 1 blocked"),
            ("one source", "bare-percpu", 1, "bare lookup + a per-CPU count, 1 blocked"),
            ("one source", "portcullis", 1, "Portcullis, 1 blocked"),
            ("one source", "xdp-filter", 1, "xdp-filter, 1 blocked"), ("one source", "nftables", 1, "nftables ingress set, 1 blocked"),
            ("one source", "bare", large, "bare lookup, 1M blocked"), ("one source", "portcullis", large, "Portcullis, 1M blocked"),
            ("random source of 1M", "bare", large, "bare lookup, random source of 1M blocked (IPv6)"),
            ("random source of 1M", "portcullis", large, "Portcullis, random source of 1M blocked (IPv6)")]
    references = {("one source", "portcullis", 1): ("one source", "bare", 1),
                  ("one source", "bare-shared", 1): ("one source", "bare", 1),
                  ("one source", "bare-percpu", 1): ("one source", "bare", 1),
                  ("one source", "xdp-filter", 1): ("one source", "bare", 1),
                  ("one source", "nftables", 1): ("one source", "bare", 1),
                  ("one source", "portcullis", large): ("one source", "bare", large),
                  ("random source of 1M", "portcullis", large): ("random source of 1M", "bare", large)}
    header = " | ".join(f"{c} core{'s' if c > 1 else ''}: Mpps dropped | vs bare (min-max)" for c in cores)
    lines = [
        "# The fast path: Portcullis against a bare XDP lookup, interleaved",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.node()} ({os.cpu_count()} cores, kernel {platform.release()}) by "
        f"`perf/fast_path.py`: {rounds} interleaved rounds of {seconds:g} s per configuration; 64-byte frames from "
        "tools/pktgen.py pinned to one core, or to each of two, on a veth pair with a queue per core. Medians over the rounds; "
        "a ratio is the median of the ratios within a round, with the lowest and highest in brackets.",
        "",
        f"| configuration | {header} |",
        "|---|" + "---|---|" * len(cores),
    ]
    for flood_name, kind, size, label in rows:
        cells = []
        for c in cores:
            key = (flood_name, kind, size, c)
            reference = references.get((flood_name, kind, size))
            cells.append(f"{median_rate(key) / 1e6:.2f}")
            if reference:
                low, high = spread_of_ratios(key, reference + (c,))
                cells.append(f"{ratio(key, reference + (c,)):.2f}x ({low:.2f}-{high:.2f})")
            else:
                cells.append("reference")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    def verdict(value, goal, at_least=True):
        return "met" if (value >= goal if at_least else value <= goal) else "missed"

    lines += ["", "Targets (issue 14; benchmarks, not tests):"]
    for c in cores:
        for size in (1, large):
            value = ratio(("one source", "portcullis", size, c), ("one source", "bare", size, c))
            lines.append(f"- {c} core{'s' if c > 1 else ''}, {size:,} blocked: Portcullis at least 0.95x the bare lookup: "
                         f"{value:.2f}x ({verdict(value, 0.95)});")
        value = statistics.median(a[0] / b[0] for a, b in zip(measurements[("one source", "portcullis", 1, c)],
                                                               measurements[("one source", "nftables", 1, c)]) if b[0])
        lines.append(f"- {c} core{'s' if c > 1 else ''}: at least 3x the nftables ingress set: {value:.2f}x ({verdict(value, 3)});")
        value = ratio(("random source of 1M", "portcullis", large, c), ("random source of 1M", "bare", large, c))
        lines.append(f"- {c} core{'s' if c > 1 else ''}, random source over 1M blocked: within 1.2x of the bare lookup "
                     f"(its rate at least 1/1.2 = 0.83x): {value:.2f}x ({verdict(value, 1 / 1.2)}).")
    lines += [
        "",
        "Where the time goes: veth hands a frame to the peer's queue on the sending core, so generator and blocker share each "
        "core, and a rate is the whole path's. The generator's share is the same for every blocker in a row, so a ratio "
        "understates how much faster the faster program is, never overstates it.",
        "",
        "![fast path](fast-path.png)",
    ]
    report = "\n".join(lines) + "\n"
    os.makedirs(f"{root}/perf/results", exist_ok=True)
    with open(f"{root}/perf/results/fast-path.md", "w") as f:
        f.write(report)
    print(report)

    try:
        import matplotlib
    except ImportError:
        sys.exit("fast_path: the results are written, but the plot needs matplotlib (run with /usr/bin/python3; perf/setup.sh installs python3-matplotlib)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(1, len(cores), figsize=(6 * len(cores), 5), sharey=True, squeeze=False)
    for axis, c in zip(axes[0], cores):
        labels = [label.replace(", ", "\n", 1) for *_, label in rows]
        values = [median_rate((f, k, s, c)) / 1e6 for f, k, s, _ in rows]
        colours = ["#4c72b0" if k == "portcullis" else "#999999" if k.startswith("bare") else "#dd8452" for _, k, _, _ in rows]
        axis.barh(range(len(rows)), values, color=colours)
        for index, value in enumerate(values):
            axis.text(value, index, f" {value:.2f}", va="center", fontsize=8)
        axis.set_yticks(range(len(rows)), labels, fontsize=7)
        axis.invert_yaxis()
        axis.set_xlabel("Mpps dropped (median of rounds)")
        axis.set_title(f"{c} core{'s' if c > 1 else ''}")
        axis.grid(True, axis="x", alpha=0.3)
    figure.suptitle(f"Fast path, interleaved rounds ({os.cpu_count()} cores, kernel {platform.release()})")
    figure.tight_layout()
    figure.savefig(f"{root}/perf/results/fast-path.png", dpi=110)
finally:
    for size in (1, large):
        subprocess.run([portcullis, "purge", "--yes"], env=portcullis_env(size), capture_output=True)
    subprocess.run(["nsenter", f"--net=/run/netns/{bastion_ns}", "xdp-filter", "unload", bastion_if], capture_output=True)
    subprocess.run(["nsenter", f"--net=/run/netns/{bastion_ns}", "ip", "link", "set", "dev", bastion_if, "xdpdrv", "off"], capture_output=True)
    for pin in bare_pins.values():
        shutil.rmtree(pin, ignore_errors=True)
    subprocess.run([f"{root}/tools/lab.sh", "down", lab], capture_output=True)
    if made_libxdp_pins and os.path.isdir("/sys/fs/bpf/xdp"):
        try:
            os.rmdir("/sys/fs/bpf/xdp")
        except OSError:
            pass  # something else keeps pins there now
    shutil.rmtree(work, ignore_errors=True)
