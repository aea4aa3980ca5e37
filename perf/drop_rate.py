#!/usr/bin/env python3
"""Drop rate end to end in the netns lab, side by side in one run.

tools/pktgen.py floods the bastion from a blocked address in the attacker
namespace (UDP, 64-byte frames) for a few seconds per configuration, while the
bastion drops with, in turn:

  - an XDP program that drops everything without looking (the lab's limit);
  - Portcullis, native XDP and generic XDP;
  - iptables with one rule per address in INPUT, as Wazuh's firewall-drop adds them,
    the attacker's the oldest (so the last to be checked);
  - iptables with one rule per address in the raw table's PREROUTING;
  - an ipset hash:ip set with one iptables rule in raw PREROUTING;
  - an nftables set at the netdev ingress hook;

with 1, 100, 10k and 100k blocked addresses (and 1M for Portcullis). The rate
is what the bastion dropped per second, read from each one's own counters.
Every configuration runs in the lab's namespaces only, and is removed after.

Writes perf/results/drop-rate.md and perf/results/drop-rate.png.
Needs root, bpffs, iptables, ipset, nftables, ethtool, bpftool, matplotlib
(perf/setup.sh installs them) and a release build of portcullis.

usage: perf/drop_rate.py [PATH-TO-PORTCULLIS] [SECONDS-PER-RUN]
"""
import ipaddress, json, os, platform, shutil, subprocess, sys, tempfile, time, uuid

portcullis = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".build/release/portcullis")
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
lab = "pcbench"
attacker_ns, bastion_ns, attacker_if, bastion_if = f"{lab}-attacker", f"{lab}-bastion", f"{lab}-a", f"{lab}-b"
attacker = "198.51.100.2"
run_id = uuid.uuid4().hex[:8]
pins = f"/sys/fs/bpf/portcullis-perf-{run_id}"
drop_all_pin = f"/sys/fs/bpf/portcullis-perf-dropall-{run_id}"
work = tempfile.mkdtemp(prefix="portcullis-perf-drop-")
env = dict(os.environ, PORTCULLIS_PIN_DIR=pins, PORTCULLIS_INCIDENT_LOG=f"{work}/incidents.jsonl", PORTCULLIS_STATE_DIR=f"{work}/state",
           PORTCULLIS_CONTROL_SOCKET=f"{work}/none.sock")
sizes = [1, 100, 10_000, 100_000]
xdp_sizes = sizes + [1_000_000]


def run(*command, **kwargs):
    return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)


def bastion(*command, **kwargs):
    # nsenter rather than `ip netns exec`, which mounts a fresh /sys and so hides the host's bpffs.
    return run("nsenter", f"--net=/run/netns/{bastion_ns}", *command, **kwargs)


def others(n):
    """n - 1 addresses that never send, from 240.0.0.0/4, plus the attacker's (first)."""
    base = int(ipaddress.IPv4Address("240.0.0.0"))
    return [attacker] + [str(ipaddress.IPv4Address(base + i)) for i in range(n - 1)]


def flood():
    # The bastion's MAC comes from its namespace: with everything dropped, ARP would not answer.
    mac = json.loads(run("ip", "-n", bastion_ns, "-j", "link", "show", "dev", bastion_if).stdout)[0]["address"]
    process = subprocess.run([sys.executable, f"{root}/tools/pktgen.py", "--netns", attacker_ns, "--interface", attacker_if,
                              "--src", attacker, "--dst-mac", mac, "--duration", str(seconds), "--count", "200000000", "--json"],
                             capture_output=True, text=True)
    if process.returncode != 0:
        sys.exit(f"drop_rate: the generator failed: {process.stderr.strip()}")
    return json.loads(process.stdout)


def measure(read_counter):
    before = read_counter()
    started = time.perf_counter()
    result = flood()
    elapsed = time.perf_counter() - started
    dropped = read_counter() - before
    return dropped / result["seconds"] if result["seconds"] else 0, result["pps"]


def portcullis_dropped():
    return json.loads(run(portcullis, "stats", "--json", env=env).stdout)["dropped"]


def iptables_counter(table, chain, rule_index):
    lines = bastion("iptables", "-t", table, "-nvxL", chain).stdout.splitlines()[2:]
    return int(lines[rule_index].split()[0])


results = {}  # name -> {size: pps}
offered = []
try:
    run(f"{root}/tools/lab.sh", "up", lab)
    # veth hands XDP_TX frames only to a peer running NAPI: GRO turns it on for the
    # configurations without a native XDP program.
    bastion("ethtool", "-K", bastion_if, "gro", "on")

    # The limit: drop everything.
    clang = os.path.join(os.path.dirname(shutil.which("swift")), "clang")
    multiarch = run("gcc", "-print-multiarch").stdout.strip()
    run(clang, "-O2", "-g", "-target", "bpf", "-I", f"/usr/include/{multiarch}", "-c",
        f"{root}/perf/xdp_drop_all.bpf.c", "-o", f"{work}/drop_all.o")
    os.makedirs(drop_all_pin)
    run("bpftool", "prog", "load", f"{work}/drop_all.o", f"{drop_all_pin}/prog", "type", "xdp", "pinmaps", drop_all_pin)
    bastion("ip", "link", "set", "dev", bastion_if, "xdpdrv", "pinned", f"{drop_all_pin}/prog")

    def drop_all_count():
        out = run("bpftool", "-j", "map", "lookup", "pinned", f"{drop_all_pin}/dropped", "key", "0", "0", "0", "0").stdout
        return sum(int.from_bytes(bytes(int(b, 16) for b in cpu["value"]), "little") for cpu in json.loads(out)["values"])

    rate, sent = measure(drop_all_count)
    results["XDP drop-all (limit)"] = {s: rate for s in xdp_sizes}
    offered.append(sent)
    print(f"XDP drop-all: {rate / 1e6:.2f} Mpps", flush=True)
    bastion("ip", "link", "set", "dev", bastion_if, "xdpdrv", "off")

    for mode in ["native", "generic"]:
        for n in xdp_sizes:
            subprocess.run([portcullis, "purge", "--yes"], env=env, capture_output=True)
            run(portcullis, "attach", bastion_if, "--netns", bastion_ns, "--mode", mode, env=env)
            run(portcullis, "block", "--file", "-", input="\n".join(others(n)) + "\n", env=env)
            rate, sent = measure(portcullis_dropped)
            results.setdefault(f"Portcullis XDP {mode}", {})[n] = rate
            print(f"Portcullis {mode} {n:>9}: {rate / 1e6:.2f} Mpps", flush=True)
        subprocess.run([portcullis, "purge", "--yes"], env=env, capture_output=True)

    def iptables_rules(table, chain, n):
        # firewall-drop inserts each new address at the top: the attacker's, the oldest, is last.
        lines = [f"*{table}"] + [f"-I {chain} -s {address} -j DROP" for address in others(n)] + ["COMMIT", ""]
        bastion("iptables-restore", "--noflush", input="\n".join(lines))
        return n - 1

    for name, table, chain in [("iptables, a rule per address (INPUT)", "filter", "INPUT"),
                               ("iptables, a rule per address (raw)", "raw", "PREROUTING")]:
        for n in sizes:
            index = iptables_rules(table, chain, n)
            rate, sent = measure(lambda: iptables_counter(table, chain, index))
            results.setdefault(name, {})[n] = rate
            print(f"{name} {n:>7}: {rate / 1e6:.3f} Mpps", flush=True)
            bastion("iptables", "-t", table, "-F", chain)

    for n in sizes:
        bastion("ipset", "create", "pcbench", "hash:ip", "maxelem", str(max(65536, 2 * n)))
        bastion("ipset", "restore", input="\n".join(f"add pcbench {a}" for a in others(n)) + "\n")
        bastion("iptables", "-t", "raw", "-A", "PREROUTING", "-m", "set", "--match-set", "pcbench", "src", "-j", "DROP")
        rate, sent = measure(lambda: iptables_counter("raw", "PREROUTING", 0))
        results.setdefault("ipset hash:ip, one rule (raw)", {})[n] = rate
        print(f"ipset {n:>7}: {rate / 1e6:.3f} Mpps", flush=True)
        bastion("iptables", "-t", "raw", "-F", "PREROUTING")
        bastion("ipset", "destroy", "pcbench")

    for n in sizes:
        ruleset = (f"table netdev pcbench {{\n set blocked {{ type ipv4_addr; size {max(65536, 2 * n)}; }}\n"
                   f" chain ingress {{ type filter hook ingress device \"{bastion_if}\" priority -500; policy accept;\n"
                   f"  ip saddr @blocked counter drop\n }}\n}}\n")
        bastion("nft", "-f", "-", input=ruleset)
        for start in range(0, n, 50_000):
            chunk = others(n)[start:start + 50_000]
            bastion("nft", "-f", "-", input=f"add element netdev pcbench blocked {{ {', '.join(chunk)} }}\n")

        def nft_counter():
            out = bastion("nft", "-j", "list", "chain", "netdev", "pcbench", "ingress").stdout
            for item in json.loads(out)["nftables"]:
                for expression in item.get("rule", {}).get("expr", []):
                    if "counter" in expression:
                        return expression["counter"]["packets"]
            return 0

        rate, sent = measure(nft_counter)
        results.setdefault("nftables set, netdev ingress", {})[n] = rate
        print(f"nftables {n:>7}: {rate / 1e6:.3f} Mpps", flush=True)
        bastion("nft", "delete", "table", "netdev", "pcbench")

    native = results["Portcullis XDP native"]
    limit = results["XDP drop-all (limit)"][1]
    names = list(results)
    all_sizes = xdp_sizes
    lines = [
        "# Drop rate in the lab: packets per second dropped by the bastion",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.node()} ({os.cpu_count()} cores, kernel {platform.release()}) by "
        f"`perf/drop_rate.py`, {seconds:g} s per run, all in one run: tools/pktgen.py floods the bastion's veth from a blocked "
        "address with 64-byte UDP frames; the rate is what each blocker's own counters say it dropped.",
        "",
        "| blocker | " + " | ".join(f"{n:,} blocked" for n in all_sizes) + " |",
        "|---|" + "---|" * len(all_sizes),
    ]
    for name in names:
        cells = []
        for n in all_sizes:
            if n in results[name]:
                value = results[name][n]
                ratio = "" if name.startswith("Portcullis XDP native") else f" ({value / native[n]:.2f}x)" if n in native and native[n] else ""
                cells.append(f"{value / 1e6:.3f} Mpps{ratio}")
            else:
                cells.append("-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    best_netfilter = {n: max(results[k][n] for k in names if ("ipset" in k or "nftables" in k) and n in results[k]) for n in sizes}
    lines += [
        "",
        "In brackets: the ratio to Portcullis native with as many blocked addresses.",
        "",
        "Targets (benchmarks, not tests):",
        f"- Portcullis native drops at least 90% of the limit: {native[1] / limit:.0%} with 1 blocked address, "
        f"{native[1_000_000] / limit:.0%} with 1M;",
        f"- at least 3x the best of nftables and ipset: {min(native[n] / best_netfilter[n] for n in sizes):.2f}x at the worst size;",
        f"- at least 200x iptables with a rule per address at 10k: "
        f"{native[10_000] / results['iptables, a rule per address (INPUT)'][10_000]:.0f}x.",
        "",
        "The generator and the bastion share the machine's cores: veth delivers a frame in the sender's context, so a rate "
        "here is the whole path's, generator included, and the limit is what this machine can do, not a NIC.",
        "",
        "![drop rate](drop-rate.png)",
    ]
    report = "\n".join(lines) + "\n"
    os.makedirs(f"{root}/perf/results", exist_ok=True)
    with open(f"{root}/perf/results/drop-rate.md", "w") as f:
        f.write(report)
    print(report)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(9, 5))
    for name in names:
        points = sorted(results[name].items())
        axis.plot([p[0] for p in points], [p[1] / 1e6 for p in points], marker="o", label=name,
                  linestyle=":" if "limit" in name else "-")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("blocked addresses")
    axis.set_ylabel("Mpps dropped (log)")
    axis.set_title(f"Drop rate from a blocked source, veth lab ({os.cpu_count()} cores, kernel {platform.release()})")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(f"{root}/perf/results/drop-rate.png", dpi=110)
finally:
    subprocess.run([portcullis, "purge", "--yes"], env=env, capture_output=True)
    subprocess.run(["nsenter", f"--net=/run/netns/{bastion_ns}", "ip", "link", "set", "dev", bastion_if, "xdpdrv", "off"], capture_output=True)
    shutil.rmtree(drop_all_pin, ignore_errors=True)
    subprocess.run([f"{root}/tools/lab.sh", "down", lab], capture_output=True)
    shutil.rmtree(work, ignore_errors=True)
