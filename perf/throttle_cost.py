#!/usr/bin/env python3
"""Per-packet cost of the throttle bucket alternatives, through BPF_PROG_TEST_RUN.

Compiles perf/throttle_cost.bpf.c once per variant (see its header: lookup only, the one-word
GCRA with compare-and-exchange that Portcullis uses, an atomic token count, a spin-locked
bucket, and a per-CPU bucket), and runs each on a flood from one source, which after the burst
is all drops: the case a throttle exists for. Each round runs every variant on one CPU, then on
two CPUs at once (two BPF_PROG_TEST_RUN loops pinned with taskset, the same source, so both hit
one entry), in interleaved order (A, B, C, ..., A, B, C, ...); the table gives medians.

Writes perf/results/throttle-cost.md. Needs root, bpftool, taskset and clang (the one beside swift).

usage: perf/throttle_cost.py [REPEAT] [ROUNDS]
"""
import os, platform, shutil, statistics, struct, subprocess, sys, tempfile, time, uuid

repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
here = os.path.dirname(os.path.abspath(__file__))
variants = {0: "lookup only, no bucket", 1: "one-word GCRA, compare-and-exchange (chosen)",
            2: "token count, atomic consume + CAS refill", 3: "token bucket under bpf_spin_lock",
            4: "one-word GCRA per CPU (PERCPU_HASH)"}
if os.geteuid() != 0 or not shutil.which("bpftool") or not shutil.which("taskset"):
    sys.exit("throttle_cost: needs root, bpftool and taskset")
cpus = sorted(os.sched_getaffinity(0))
if len(cpus) < 2:
    sys.exit("throttle_cost: needs two CPUs")

work = tempfile.mkdtemp(prefix="portcullis-throttle-cost-")
run_id = uuid.uuid4().hex[:8]
pins = {}
frame = f"{work}/frame.bin"
header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 46, 0, 0x4000, 64, 17, 0, bytes([203, 0, 113, 9]), bytes([198, 51, 100, 1]))
with open(frame, "wb") as f:
    f.write(bytes.fromhex("020000000001020000000002") + b"\x08\x00" + header + bytes(26))


def run(pin, cpu):
    return subprocess.Popen(["taskset", "-c", str(cpu), "bpftool", "prog", "run", "pinned", pin, "data_in", frame,
                             "repeat", str(repeat)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def ns(process):
    out = process.communicate()[0]
    return int(out.split("average):")[1].split("ns")[0])


try:
    clang = os.path.join(os.path.dirname(shutil.which("swift")), "clang")
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
    for variant in variants:
        obj = f"{work}/v{variant}.o"
        subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-mcpu=v3", f"-DVARIANT={variant}", "-Wno-unused",
                        "-I", f"/usr/include/{multiarch}", "-c", f"{here}/throttle_cost.bpf.c", "-o", obj], check=True)
        pins[variant] = f"/sys/fs/bpf/portcullis-throttle-cost-{run_id}-{variant}"
        subprocess.run(["bpftool", "prog", "load", obj, pins[variant]], check=True)
        ns(run(pins[variant], cpus[0]))  # creates the entry and empties the bucket
    one, two = {v: [] for v in variants}, {v: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            one[variant].append(ns(run(pins[variant], cpus[0])))
        for variant in variants:
            pair = [run(pins[variant], cpus[0]), run(pins[variant], cpus[1])]
            two[variant].append(max(ns(p) for p in pair))
    base1, base2 = statistics.median(one[0]), statistics.median(two[0])
    lines = [
        "# Throttle bucket alternatives (BPF_PROG_TEST_RUN)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.node()} ({os.cpu_count()} cores, kernel {platform.release()}) by "
        f"`perf/throttle_cost.py {repeat} {rounds}`: a flood from one source over its rate (after the burst, all drops), "
        f"{repeat:,} packets per run, {rounds} interleaved rounds, medians. \"2 CPUs\" runs the same flood on two CPUs at "
        "once against the same entry (the slower of the two).",
        "",
        "| variant | 1 CPU | 2 CPUs, one entry | bucket's cost on 1 CPU | on 2 CPUs |",
        "|---|---|---|---|---|",
    ]
    for variant, name in variants.items():
        a, b = statistics.median(one[variant]), statistics.median(two[variant])
        lines.append(f"| {name} | {a:.0f} ns | {b:.0f} ns | +{a - base1:.0f} ns | +{b - base2:.0f} ns |")
    report = "\n".join(lines) + "\n"
    os.makedirs(f"{here}/results", exist_ok=True)
    with open(f"{here}/results/throttle-cost.md", "w") as f:
        f.write(report)
    print(report)
finally:
    for pin in pins.values():
        if os.path.exists(pin):
            os.unlink(pin)
    shutil.rmtree(work, ignore_errors=True)
