#!/usr/bin/env python3
"""Tunnel benchmark: examples/tunnel.py on aiouring against wireguard-go, the
same tunnel on the stdlib, and the bare veth pair.

    sh scripts/bench.sh --tunnel        # or: .venv/bin/python benchmarks/tunnel.py [--seconds 5] [--rounds 2]

Two network namespaces joined by a veth pair (192.168.77.1 <-> .2).  For each
contender a tunnel comes up between them (10.50.0.1 <-> .2, MTU 1420), then
one TCP flow of iperf3 runs through it for --seconds, and `ping` (every 10 ms)
gives the RTT.  Contenders, each with and without encryption where that
applies: the aiouring tunnel (TUN transport + UDP endpoint on the ring), the
same tunnel with the epoll backend, the stdlib tunnel with the add_reader
drain recipe on the TUN and with connect_read_pipe/connect_write_pipe (both
with loop.create_datagram_endpoint), wireguard-go (Debian's package,
ChaCha20-Poly1305, run in the foreground with -f and stopped by its pid), and
the bare veth as the ceiling.  Rounds alternate the contenders; the median is
shown.  Results go to benchmarks/results/tunnel.json and tunnel.png.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from support.netns import two_namespaces  # noqa: E402

A_UNDERLAY, B_UNDERLAY = "192.168.77.1", "192.168.77.2"
A_INNER, B_INNER = "10.50.0.1", "10.50.0.2"
KEY = "7e" * 32
RESULTS = os.path.join(HERE, "results")

CONTENDERS = [
    ("veth (no tunnel)", {"kind": "veth"}),
    ("wireguard-go", {"kind": "wireguard"}),
    ("aiouring tunnel, encrypted", {"kind": "example", "io": "aiouring", "plain": False}),
    ("aiouring tunnel (epoll), encrypted", {"kind": "example", "io": "aiouring", "plain": False, "backend": "epoll"}),
    ("stdlib drain tunnel, encrypted", {"kind": "example", "io": "stdlib-drain", "plain": False}),
    ("stdlib pipes tunnel, encrypted", {"kind": "example", "io": "stdlib-pipes", "plain": False}),
    ("aiouring tunnel, plain", {"kind": "example", "io": "aiouring", "plain": True}),
    ("aiouring tunnel (epoll), plain", {"kind": "example", "io": "aiouring", "plain": True, "backend": "epoll"}),
    ("stdlib drain tunnel, plain", {"kind": "example", "io": "stdlib-drain", "plain": True}),
    ("stdlib pipes tunnel, plain", {"kind": "example", "io": "stdlib-pipes", "plain": True}),
]


def netns_exec(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def start_example(ns: str, inner: str, peer: str, spec: dict, loop: str) -> subprocess.Popen:
    cmd = [sys.executable, os.path.join(ROOT, "examples", "tunnel.py"), "--address", f"{inner}/24",
           "--listen", "0.0.0.0:51820", "--peer", f"{peer}:51820", "--io", spec["io"], "--loop", loop,
           "--backend", spec.get("backend", "auto")]
    cmd += ["--plain"] if spec["plain"] else ["--key", KEY]
    proc = subprocess.Popen(netns_exec(ns, *cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        raise RuntimeError(f"tunnel did not start: {line}{proc.stderr.read()}")
    return proc


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def start_wireguard(a: str, b: str, tmp: str) -> list[subprocess.Popen]:
    keys = {}
    for side in "ab":
        private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
        public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True, check=True).stdout.strip()
        path = os.path.join(tmp, f"wg-{side}.key")
        with open(path, "w") as f:
            f.write(private)
        keys[side] = (path, public)
    procs = []
    # control sockets live in /var/run/wireguard, shared by all namespaces: one name each
    layout = [(a, "aiouwg0", A_INNER, keys["a"][0], keys["b"][1], B_UNDERLAY, B_INNER),
              (b, "aiouwg1", B_INNER, keys["b"][0], keys["a"][1], A_UNDERLAY, A_INNER)]
    for ns, ifname, inner, private, peer_public, peer_underlay, peer_inner in layout:
        env = dict(os.environ, WG_PROCESS_FOREGROUND="1")
        procs.append(subprocess.Popen(netns_exec(ns, "wireguard-go", "-f", ifname), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for ns, ifname, *_ in layout:
        for _ in range(100):
            if subprocess.run(netns_exec(ns, "ip", "link", "show", ifname), capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
    for ns, ifname, inner, private, peer_public, peer_underlay, peer_inner in layout:
        subprocess.run(netns_exec(ns, "wg", "set", ifname, "private-key", private, "listen-port", "51820",
                                  "peer", peer_public, "endpoint", f"{peer_underlay}:51820", "allowed-ips", f"{peer_inner}/32"), check=True)
        subprocess.run(netns_exec(ns, "ip", "addr", "add", f"{inner}/24", "dev", ifname), check=True)
        subprocess.run(netns_exec(ns, "ip", "link", "set", ifname, "mtu", "1420", "up"), check=True)
    return procs


def iperf(a: str, b: str, target: str, seconds: float) -> float:
    server = subprocess.Popen(netns_exec(b, "iperf3", "-s", "-1", "-B", target), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if subprocess.run(netns_exec(b, "ss", "-ltn", "sport = :5201"), capture_output=True, text=True).stdout.count("LISTEN"):
                break
            time.sleep(0.05)
        out = subprocess.run(netns_exec(a, "iperf3", "-c", target, "-t", str(seconds), "-J"), capture_output=True, text=True, timeout=seconds + 30).stdout
    finally:
        server.wait(timeout=30)
    result = json.loads(out)
    if "error" in result:
        raise RuntimeError(result["error"])
    return result["end"]["sum_received"]["bits_per_second"] / 1e9


def ping_rtt(a: str, target: str, count: int = 200) -> dict:
    out = subprocess.run(netns_exec(a, "ping", "-c", str(count), "-i", "0.01", "-W", "1", target), capture_output=True, text=True, timeout=count + 30).stdout
    rtts = sorted(float(m) for m in re.findall(r"time=([\d.]+) ms", out))
    if not rtts:
        return {"p50": None, "p99": None}
    return {"p50": rtts[len(rtts) // 2], "p99": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]}


def measure(name: str, spec: dict, a: str, b: str, seconds: float, loop: str, tmp: str) -> dict:
    procs: list[subprocess.Popen] = []
    target = B_INNER
    try:
        if spec["kind"] == "veth":
            target = B_UNDERLAY
        elif spec["kind"] == "wireguard":
            procs = start_wireguard(a, b, tmp)
        else:
            procs = [start_example(a, A_INNER, B_UNDERLAY, spec, loop), start_example(b, B_INNER, A_UNDERLAY, spec, loop)]
        subprocess.run(netns_exec(a, "ping", "-c", "1", "-W", "2", target), capture_output=True, timeout=10)
        gbits = iperf(a, b, target, seconds)
        rtt = ping_rtt(a, target)
        return {"gbits": gbits, **rtt}
    except Exception as exc:  # one contender failing must not hide the others
        return {"gbits": 0.0, "p50": None, "p99": None, "error": str(exc)[:200]}
    finally:
        for proc in procs:
            stop(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--out", default=os.path.join(RESULTS, "tunnel"))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the tunnel benchmark needs root (namespaces, TUN devices)", file=sys.stderr)
        return 1
    missing = [tool for tool in ("iperf3", "wireguard-go", "wg") if shutil.which(tool) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)} (apt-get install iperf3 wireguard-go wireguard-tools)", file=sys.stderr)
        return 1
    runs: dict[str, list[dict]] = {name: [] for name, _ in CONTENDERS}
    with tempfile.TemporaryDirectory() as tmp, two_namespaces(addresses=(A_UNDERLAY, B_UNDERLAY)) as (a, b):
        for r in range(args.rounds):
            order = CONTENDERS if r % 2 == 0 else list(reversed(CONTENDERS))
            for name, spec in order:
                result = measure(name, spec, a, b, args.seconds, args.loop, tmp)
                runs[name].append(result)
                print(f"  {name:38} {result['gbits']:6.2f} Gbit/s  p50 {result['p50']} ms" + (f"  ({result['error']})" if "error" in result else ""), flush=True)
    results = []
    for name, spec in CONTENDERS:
        rs = runs[name]
        good = [x for x in rs if x["gbits"] > 0]
        results.append({
            "contender": name,
            "gbits": statistics.median([x["gbits"] for x in good]) if good else 0.0,
            "p50_ms": statistics.median([x["p50"] for x in good if x["p50"] is not None]) if good else None,
            "p99_ms": statistics.median([x["p99"] for x in good if x["p99"] is not None]) if good else None,
            "runs": rs,
        })
    by = {r["contender"]: r for r in results}
    wg = by["wireguard-go"]["gbits"]
    print()
    print("| contender | Gbit/s (1 TCP flow) | × wireguard-go | × stdlib drain | × stdlib pipes | ping p50 ms | ping p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        suffix = ", plain" if r["contender"].endswith("plain") else ", encrypted"
        drain = by.get("stdlib drain tunnel" + suffix, {}).get("gbits")
        pipes = by.get("stdlib pipes tunnel" + suffix, {}).get("gbits")

        def ratio(base: float | None) -> str:
            return f"{r['gbits'] / base:.2f}" if base else "–"

        p50 = f"{r['p50_ms']:.3f}" if r["p50_ms"] is not None else "–"
        p99 = f"{r['p99_ms']:.3f}" if r["p99_ms"] is not None else "–"
        tunnel_row = r["contender"] not in ("veth (no tunnel)", "wireguard-go")
        print(f"| {r['contender']} | {r['gbits']:.2f} | {ratio(wg)} | {ratio(drain) if tunnel_row else '–'} | {ratio(pipes) if tunnel_row else '–'} | {p50} | {p99} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    meta = {"kernel": platform.release(), "python": platform.python_version(), "cpus": os.cpu_count(), "seconds": args.seconds,
            "rounds": args.rounds, "loop": args.loop, "date": time.strftime("%Y-%m-%d %H:%M")}
    with open(args.out + ".json", "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 4.5))
        colors = ["#555555" if "veth" in r["contender"] else "#2ca02c" if "wireguard" in r["contender"] else "#1f77b4" if "aiouring" in r["contender"] else "#ff7f0e" for r in results]
        ax.barh(range(len(results)), [r["gbits"] for r in results], color=colors)
        ax.set_yticks(range(len(results)))
        ax.set_yticklabels([r["contender"] for r in results], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("Gbit/s, one TCP flow (log scale)")
        ax.set_title("Tunnel between two namespaces (blue: aiouring, orange: stdlib, green: wireguard-go, grey: bare veth)", fontsize=9)
        fig.tight_layout()
        fig.savefig(args.out + ".png", dpi=110)
        print(f"\nwrote {args.out}.json and {args.out}.png")
    except ImportError:
        print(f"\nwrote {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
