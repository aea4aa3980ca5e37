#!/usr/bin/env python3
"""An XDP packet generator for load tests in the Portcullis lab.

It builds one template frame and runs tools/pktgen/pktgen.bpf.c over it with
BPF_PROG_TEST_RUN in live-frame mode (BPF_F_TEST_XDP_LIVE_FRAMES): the kernel
runs the program once per packet, the program writes the next source address,
and XDP_TX transmits the frame out of the interface. One core sends millions of
packets per second, with no socket and no copy from user space.

It only ever sends out of an interface inside a named network namespace it is
given (never the host's), and only from and to documentation addresses
(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32). Every run is
bounded by --count and --duration.

examples:
  tools/pktgen.py --netns pclab-attacker --interface pclab-a --src 198.51.100.2 --dst 198.51.100.1 --duration 5
  tools/pktgen.py --netns pclab-attacker --interface pclab-a --src 198.51.100.10 --spread 200 --random --count 10000000
  tools/pktgen.py --netns pclab-attacker --interface pclab-a --src 2001:db8::100 --spread 65536 --dst 2001:db8::1 --proto tcp-syn
  tools/pktgen.py --netns pclab-attacker --interface pclab-a --src 198.51.100.2 --cpu 1 --duration 5
"""
import argparse, ctypes, ipaddress, json, os, shutil, signal, socket, struct, subprocess, sys, tempfile, time

DOCUMENTATION = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]
HERE = os.path.dirname(os.path.abspath(__file__))
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
CLONE_NEWNET = 0x40000000


class TestRunOpts(ctypes.Structure):
    # struct bpf_test_run_opts from <bpf/bpf.h>
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


class XdpMd(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint32), ("data_end", ctypes.c_uint32), ("data_meta", ctypes.c_uint32),
                ("ingress_ifindex", ctypes.c_uint32), ("rx_queue_index", ctypes.c_uint32),
                ("egress_ifindex", ctypes.c_uint32)]


def fail(message):
    sys.exit(f"pktgen: {message}")


def documentation_address(text, what):
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        fail(f"{what} '{text}' is not an IP address")
    if not any(address in network for network in DOCUMENTATION):
        fail(f"{what} {address} is not a documentation address (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)")
    return address


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_frame(src_mac, dst_mac, source, destination, proto, size):
    if proto == "udp":
        transport_number, transport = 17, struct.pack("!HHHH", 40000, 9, 0, 0)
    else:  # a TCP SYN to port 22
        transport_number, transport = 6, struct.pack("!HHIIBBHHH", 40000, 22, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    if source.version == 4:
        header_length = 14 + 20 + len(transport)
        payload = bytes(max(0, size - header_length))
        total = 20 + len(transport) + len(payload)
        if proto == "udp":
            transport = struct.pack("!HHHH", 40000, 9, len(transport) + len(payload), 0)  # checksum 0: none, valid for IPv4
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, transport_number, 0, source.packed, destination.packed)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        ethertype = 0x0800
    else:
        header_length = 14 + 40 + len(transport)
        payload = bytes(max(0, size - header_length))
        if proto == "udp":
            transport = struct.pack("!HHHH", 40000, 9, len(transport) + len(payload), 0)
        ip = struct.pack("!IHBB16s16s", 0x60000000, len(transport) + len(payload), transport_number, 64, source.packed, destination.packed)
        ethertype = 0x86DD
    # Transport checksums are computed for the first source; frames from the others carry a
    # stale one, which only matters to a stack that accepts them, never to a firewall that drops.
    pseudo = source.packed + destination.packed + (struct.pack("!BBH", 0, transport_number, len(transport) + len(payload))
                                                   if source.version == 4 else struct.pack("!IxxxB", len(transport) + len(payload), transport_number))
    if proto != "udp" or source.version == 6:
        position = 16 if proto != "udp" else 6
        transport = transport[:position] + struct.pack("!H", checksum(pseudo + transport + payload)) + transport[position + 2:]
    return bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + struct.pack("!H", ethertype) + ip + transport + payload


def in_namespace(netns, *command, **kwargs):
    return subprocess.run(["ip", "-n", netns, *command], capture_output=True, text=True, **kwargs)


def main():
    # A generator stopped with SIGTERM (as the lab tests stop one) still removes its pins and files.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--netns", required=True, help="the named network namespace (ip netns) to send from")
    parser.add_argument("--interface", required=True, help="the interface in that namespace to send out of")
    parser.add_argument("--src", required=True, help="the first source address")
    parser.add_argument("--spread", type=int, default=1, help="how many source addresses, counted up from --src (default 1)")
    parser.add_argument("--random", action="store_true", help="pick a random source of the spread for each packet (default: in turn)")
    parser.add_argument("--dst", default="198.51.100.1", help="the destination address (default 198.51.100.1)")
    parser.add_argument("--dst-mac", help="the destination MAC (default: resolved with one ping of --dst)")
    parser.add_argument("--proto", choices=["udp", "tcp-syn"], default="udp")
    parser.add_argument("--size", type=int, default=64, help="frame size in bytes, without the FCS (default 64)")
    parser.add_argument("--count", type=int, default=10_000_000, help="packets to send at most (default 10,000,000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to send at most (default 10)")
    parser.add_argument("--batch-size", type=int, default=64, help="frames the kernel sends per batch (default 64)")
    parser.add_argument("--cpu", type=int, help="the core to send from (default: any); veth hands each frame to the peer's "
                        "queue of the sending core, so generators on different cores load different queues")
    parser.add_argument("--start-at", type=float, help="wall-clock time (seconds since the epoch) to start sending at, "
                        "so that generators on several cores send over the same seconds")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    arguments = parser.parse_args()

    if os.geteuid() != 0:
        fail("needs root")
    if not os.path.exists(f"/run/netns/{arguments.netns}") or "/" in arguments.netns:
        fail(f"no network namespace named '{arguments.netns}' (see `ip netns list`); the generator never sends from the host's")
    source = documentation_address(arguments.src, "source")
    destination = documentation_address(arguments.dst, "destination")
    if source.version != destination.version:
        fail("the source and destination must be of one family")
    if not 1 <= arguments.spread <= 1 << 24:
        fail("--spread must be from 1 to 16777216")
    last = source + (arguments.spread - 1)
    if not any(last in network and source in network for network in DOCUMENTATION):
        fail(f"the spread runs past the documentation range of {source}: its last address would be {last}")
    if not 60 <= arguments.size <= 1500:
        fail("--size must be from 60 to 1500")
    if arguments.count < 1 or arguments.duration <= 0:
        fail("--count and --duration must be positive")
    if arguments.cpu is not None and arguments.cpu not in os.sched_getaffinity(0):
        fail(f"--cpu {arguments.cpu} is not one of the cores this process may run on ({', '.join(map(str, sorted(os.sched_getaffinity(0))))})")

    link = in_namespace(arguments.netns, "-j", "link", "show", "dev", arguments.interface)
    if link.returncode != 0:
        fail(f"no interface {arguments.interface} in network namespace {arguments.netns}")
    src_mac = json.loads(link.stdout)[0]["address"]
    dst_mac = arguments.dst_mac
    if not dst_mac:
        # Any answer will do: the ping is only there to make the namespace resolve the neighbour's MAC.
        subprocess.run(["ip", "netns", "exec", arguments.netns, "ping", "-c", "1", "-W", "1", str(destination)],
                       capture_output=True, timeout=5)
        neighbours = json.loads(in_namespace(arguments.netns, "-j", "neigh", "show", str(destination)).stdout or "[]")
        dst_mac = next((n.get("lladdr") for n in neighbours if n.get("lladdr")), None)
        if not dst_mac:
            fail(f"cannot resolve the MAC of {destination}; give --dst-mac")

    work = tempfile.mkdtemp(prefix="portcullis-pktgen-")
    pin = f"/sys/fs/bpf/portcullis-pktgen-{os.getpid()}"
    try:
        clang = os.path.join(os.path.dirname(shutil.which("swift") or "/usr/bin/clang"), "clang")
        if not os.path.exists(clang):
            clang = shutil.which("clang") or fail("no clang with the BPF target (install Swift or clang)")
        multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
        subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-I", f"/usr/include/{multiarch}",
                        "-c", f"{HERE}/pktgen/pktgen.bpf.c", "-o", f"{work}/pktgen.o"], check=True)
        os.makedirs(pin)
        subprocess.run(["bpftool", "prog", "load", f"{work}/pktgen.o", f"{pin}/prog", "type", "xdp", "pinmaps", pin], check=True)
        base = source.packed.ljust(16, b"\0")
        value = struct.pack("<IIII", source.version, arguments.spread, 1 if arguments.random else 0, 0) + base
        subprocess.run(["bpftool", "map", "update", "pinned", f"{pin}/pktgen_config", "key", "hex", "00", "00", "00", "00",
                        "value", "hex", *[f"{b:02x}" for b in value]], check=True)

        frame = build_frame(src_mac, dst_mac, source, destination, arguments.proto, arguments.size)
        libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
        libc = ctypes.CDLL(None, use_errno=True)
        program = libbpf.bpf_obj_get(f"{pin}/prog".encode())
        if program < 0:
            fail(f"cannot open the loaded program: {os.strerror(ctypes.get_errno())}")
        target = os.open(f"/run/netns/{arguments.netns}", os.O_RDONLY)
        if libc.setns(target, CLONE_NEWNET) != 0:
            fail(f"cannot enter network namespace {arguments.netns}: {os.strerror(ctypes.get_errno())}")
        os.close(target)
        ifindex = socket.if_nametoindex(arguments.interface)
        if arguments.cpu is not None:
            # The kernel runs the test on the calling thread's core and transmits from it.
            os.sched_setaffinity(0, {arguments.cpu})

        data = ctypes.create_string_buffer(frame, len(frame))
        # The kernel wants the context to describe the frame: data_end is its length.
        context = XdpMd(data_end=len(frame), ingress_ifindex=ifindex)
        if arguments.start_at is not None:
            wait = arguments.start_at - time.time()
            if wait > 60:
                fail("--start-at is more than a minute away")
            if wait > 0:
                time.sleep(wait)
        sent = 0
        started = time.perf_counter()
        deadline = started + arguments.duration
        while sent < arguments.count and time.perf_counter() < deadline:
            # Batches of at most 0.1 s at the expected rate, so --duration is kept closely.
            repeat = min(arguments.count - sent, 500_000)
            options = TestRunOpts(sz=ctypes.sizeof(TestRunOpts), data_in=ctypes.cast(data, ctypes.c_void_p), data_size_in=len(frame),
                                  ctx_in=ctypes.cast(ctypes.pointer(context), ctypes.c_void_p), ctx_size_in=ctypes.sizeof(XdpMd),
                                  repeat=repeat, flags=BPF_F_TEST_XDP_LIVE_FRAMES, batch_size=arguments.batch_size)
            status = libbpf.bpf_prog_test_run_opts(program, ctypes.byref(options))
            if status != 0:
                fail(f"BPF_PROG_TEST_RUN failed: {os.strerror(-status if status < 0 else ctypes.get_errno())}")
            sent += repeat
        elapsed = time.perf_counter() - started
        result = {"sent": sent, "seconds": round(elapsed, 3), "pps": round(sent / elapsed), "frame_bytes": len(frame),
                  "source": str(source), "spread": arguments.spread, "destination": str(destination), "proto": arguments.proto,
                  "cpu": arguments.cpu}
        if arguments.json:
            print(json.dumps(result))
        else:
            print(f"sent {sent:,} packets of {len(frame)} bytes in {elapsed:.2f} s: {sent / elapsed / 1e6:.2f} Mpps "
                  f"({sent * len(frame) * 8 / elapsed / 1e9:.2f} Gbit/s) from {source}"
                  f"{f' (+{arguments.spread - 1} more)' if arguments.spread > 1 else ''} to {destination}")
    finally:
        shutil.rmtree(pin, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
