#!/usr/bin/python3
"""The fleet: how fast a block made on one node is in force on the others, through one private
PostgreSQL 15, with three daemons on this machine (each its own pins, ledger and control socket).

1. Propagation: N single blocks through node a's control API (source api), one at a time, a
   pause between them; for each, the time from the request to the block being in the maps of b
   and of c, read from their incident records (a node writes a fleet block's record right after
   its map write, with its own clock, which is this machine's). Reports p50, p95, p99, max.
2. Bulk: one batch of COUNT blocks to node a; the time until b and c have applied all of them
   (their /v1/fleet `applied` counts, polled every 20 ms).

Bulk keys come from 240.0.0.0/4, addresses no packet carries; single blocks from 198.18.0.0/15.
Writes perf/results/fleet-propagation.md. Needs root, bpffs, Debian's postgresql and a build
(`swift build -c release`; a debug build works for a quick look).
usage: perf/fleet_propagation.py [BUILD-DIR] [SINGLE-BLOCKS] [BULK-COUNT]
"""
import ipaddress, json, os, platform, pwd, random, shutil, statistics, subprocess, sys, tempfile, time, uuid

build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".build/release")
portcullis = f"{build}/portcullis"
singles = int(sys.argv[2]) if len(sys.argv) > 2 else 200
bulk = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pg_bin = "/usr/lib/postgresql/15/bin"
work = tempfile.mkdtemp(prefix="portcullis-perf-fleet-")
tag = uuid.uuid4().hex[:6]
pg_dir = f"{work}/pg"
pg_port = 31000 + random.randrange(10000)
nodes = ["a", "b", "c"]
roles = {"a": "portcullis_owner", "b": "node_b", "c": "node_c"}
daemons = {}


def run(*command, check=True, **kwargs):
    return subprocess.run(command, check=check, capture_output=True, text=True, **kwargs)


def as_postgres(*command, check=True):
    return run("/usr/sbin/runuser", "-u", "postgres", "--", *command, check=check)


def psql(sql, database="postgres"):
    return as_postgres("/usr/bin/psql", "-h", pg_dir, "-p", str(pg_port), "-d", database, "-X", "-q", "-A", "-t",
                       "-v", "ON_ERROR_STOP=1", "-c", sql).stdout.strip()


def start_database():
    os.makedirs(pg_dir)
    user = pwd.getpwnam("postgres")
    os.chown(work, user.pw_uid, user.pw_gid)
    os.chown(pg_dir, user.pw_uid, user.pw_gid)
    as_postgres(f"{pg_bin}/initdb", "-D", f"{pg_dir}/data", "-U", "postgres", "--auth-local=trust",
                "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
    with open(f"{pg_dir}/data/postgresql.conf", "a") as f:
        f.write(f"listen_addresses = '127.0.0.1'\nport = {pg_port}\nunix_socket_directories = '{pg_dir}'\n")
    as_postgres(f"{pg_bin}/pg_ctl", "-D", f"{pg_dir}/data", "-l", f"{pg_dir}/server.log", "-w", "start")
    for statement in ("CREATE ROLE portcullis_owner LOGIN PASSWORD 'owner-secret'", "CREATE DATABASE fleet OWNER portcullis_owner",
                      "CREATE ROLE portcullis_node NOLOGIN", "CREATE ROLE node_b LOGIN PASSWORD 'b-secret' IN ROLE portcullis_node",
                      "CREATE ROLE node_c LOGIN PASSWORD 'c-secret' IN ROLE portcullis_node"):
        psql(statement)


def start_daemon(node, index):
    directory = f"{work}/{node}"
    os.makedirs(directory)
    password = f"{directory}/fleet.password"
    with open(password, "w") as f:
        f.write({"a": "owner-secret", "b": "b-secret", "c": "c-secret"}[node])
    os.chmod(password, 0o600)
    config = f"{directory}/portcullis.yaml"
    with open(config, "w") as f:
        f.write(f"""pin_dir: /sys/fs/bpf/portcullis-perf-fleet-{tag}-{node}
control_socket: {directory}/control.sock
incident_log: {directory}/incidents.jsonl
metrics_address: off
capacity:
  exact: {max(bulk * 2, 65536)}
fleet:
  postgres: postgres://{roles[node]}@127.0.0.1:{pg_port}/fleet
  password_file: {password}
  node: {node}
  tls:
    mode: disable
""")
    env = dict(os.environ, PORTCULLIS_STATE_DIR=f"{directory}/state")
    log = open(f"{directory}/daemon.log", "w")
    process = subprocess.Popen([portcullis, "run", "--config", config], env=env, stdout=log, stderr=subprocess.STDOUT)
    daemons[node] = {"process": process, "dir": directory, "socket": f"{directory}/control.sock", "env": env,
                     "pins": f"/sys/fs/bpf/portcullis-perf-fleet-{tag}-{node}"}
    deadline = time.time() + 60
    while time.time() < deadline:
        health = api(node, "GET", "/v1/fleet")
        if health and health.get("connected"):
            return
        time.sleep(0.1)
    raise SystemExit(f"node {node} did not join the fleet; see {directory}/daemon.log")


def api(node, method, path, body=None):
    command = ["curl", "-s", "--max-time", "30", "--unix-socket", daemons[node]["socket"], "-X", method]
    if body is not None:
        command += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    result = subprocess.run(command + [f"http://portcullis{path}"], input=body, capture_output=True, text=True)
    try:
        return json.loads(result.stdout)
    except ValueError:
        return None


def records(node):
    found = {}
    try:
        with open(f"{daemons[node]['dir']}/incidents.jsonl") as f:
            for line in f:
                record = json.loads(line)
                if record.get("action") == "block" and record.get("node") != node:
                    found.setdefault(record["target"], record["timeUnixMs"])
    except FileNotFoundError:
        pass
    return found


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def cleanup():
    for node, daemon in daemons.items():
        daemon["process"].terminate()
        try:
            daemon["process"].wait(10)
        except subprocess.TimeoutExpired:
            daemon["process"].kill()
        run(portcullis, "purge", "--yes", check=False, env=dict(daemon["env"], PORTCULLIS_PIN_DIR=daemon["pins"]))
    as_postgres(f"{pg_bin}/pg_ctl", "-D", f"{pg_dir}/data", "-m", "immediate", "stop", check=False)
    shutil.rmtree(work, ignore_errors=True)


try:
    start_database()
    for index, node in enumerate(nodes):
        start_daemon(node, index)
    # 1. Propagation of single blocks.
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    sent = {}
    for n in range(singles):
        target = str(ipaddress.IPv4Address(base + n + 1))
        sent[target] = time.time() * 1000
        answer = api("a", "POST", "/v1/blocks", json.dumps({"target": target, "reason": "perf"}))
        if not answer or "error" in answer:
            raise SystemExit(f"block failed: {answer}")
        time.sleep(0.02)
    deadline = time.time() + 30
    while time.time() < deadline and not all(len(records(node)) >= singles for node in ("b", "c")):
        time.sleep(0.2)
    delays = []
    for node in ("b", "c"):
        applied = records(node)
        delays += [applied[t] - sent[t] for t in sent if t in applied]
    missing = 2 * singles - len(delays)
    # 2. Bulk: COUNT blocks in one batch on a, in force on b and c.
    before = {node: api(node, "GET", "/v1/fleet")["applied"] for node in ("b", "c")}
    lines = "\n".join(str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("240.0.0.0")) + n)) for n in range(bulk))
    started = time.time()
    answer = api("a", "POST", "/v1/blocks/batch", json.dumps({"lines": lines, "reason": "perf bulk", "source": "api", "origin": "perf"}))
    accepted = time.time() - started
    if not answer or "error" in answer:
        raise SystemExit(f"batch failed: {answer}")
    finished = {}
    deadline = time.time() + 120
    while time.time() < deadline and len(finished) < 2:
        for node in ("b", "c"):
            if node not in finished and api(node, "GET", "/v1/fleet")["applied"] - before[node] >= bulk:
                finished[node] = time.time() - started
        time.sleep(0.02)
finally:
    cleanup()

machine = f"{platform.node()}, {os.cpu_count()} cores, {platform.release()}"
p50, p95, p99 = (percentile(delays, q) if delays else float("nan") for q in (0.5, 0.95, 0.99))
bulk_time = max(finished.values()) if len(finished) == 2 else float("nan")
result = f"""# Fleet propagation

Three daemons and one private PostgreSQL 15 on {machine}; build {os.path.basename(build)}.
Run with `perf/fleet_propagation.py {os.path.relpath(build, root)} {singles} {bulk}`.

| measure | figure | target |
| --- | --- | --- |
| block on a, in force on b and c: p50 | {p50:.1f} ms | ≤ 50 ms |
| p95 | {p95:.1f} ms | |
| p99 | {p99:.1f} ms | ≤ 250 ms |
| max | {max(delays) if delays else float('nan'):.1f} ms | |
| samples (2 nodes × {singles} blocks) | {len(delays)} ({missing} missing) | |
| {bulk:,} blocks in one batch on a, accepted by a | {accepted:.2f} s | |
| the same, in force on both b and c | {bulk_time:.2f} s (b {finished.get('b', float('nan')):.2f} s, c {finished.get('c', float('nan')):.2f} s) | ≤ 5 s |
"""
os.makedirs(f"{root}/perf/results", exist_ok=True)
with open(f"{root}/perf/results/fleet-propagation.md", "w") as f:
    f.write(result)
print(result)
