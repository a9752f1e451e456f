#!/usr/bin/env python3
"""Tunnel benchmark: examples/tunnel.py on aiouring against wireguard-go (upstream
with offloads, and Debian's without), the same tunnel on the stdlib, and the bare
veth pair.

    sh scripts/bench.sh tunnel [--quick]   # or: .venv/bin/python benchmarks/tunnel.py [--seconds 5] [--rounds 3]

Two network namespaces (IPv6 on, as on real hosts) joined by a veth pair
(192.168.77.1 <-> .2).  For each contender a tunnel comes up between them
(10.50.0.1 <-> .2, MTU 1420), then one TCP flow of iperf3 runs through it for
--seconds, and `ping` (every 10 ms) gives the RTT.  The CPU time of the tunnel
processes (both sides, from /proc/PID/stat, taken just before and after the
iperf3 run) gives CPU seconds per Gbit moved.  Rounds alternate the contenders;
the median is shown, a failed run counting as 0 Gbit/s and shown with its
error.  Ratios are to upstream wireguard-go 0.0.20250522 (TUN TSO/USO and UDP
GSO/GRO; built once from ../shared/peers/wireguard-go and cached), run like
Debian's 2022 wireguard-go (no offloads): in the foreground with -f, one per
namespace with distinct interface names, configured with wg and ip, stopped by
its pid.  Each table, the JSON and the chart name the commit and the date.
Results go to benchmarks/results/tunnel.json and tunnel.png (tunnel-quick.*
with --quick).

The contenders are data (CONTENDERS below): one line per row.  A spec's
"args" are extra command-line arguments for the contender's processes (e.g.
``"args": ["--offload", "off"]`` for the example with offloads off).
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

sys.path.insert(0, HERE)

from provenance import label, stamp  # noqa: E402
from support.netns import two_namespaces  # noqa: E402

A_UNDERLAY, B_UNDERLAY = "192.168.77.1", "192.168.77.2"
A_INNER, B_INNER = "10.50.0.1", "10.50.0.2"
KEY = "7e" * 32
RESULTS = os.path.join(HERE, "results")

WG_BUILD = os.path.join(ROOT, "..", "shared", "peers", "wireguard-go", "build.sh")
BASELINE = "wireguard-go upstream (offloads)"

# name -> spec.  kind: "veth" (no tunnel), "wireguard" (binary: "upstream" or
# "debian"), "example" (examples/tunnel.py: io, plain, backend).  "args": extra
# arguments for each of the contender's processes.
CONTENDERS: list[tuple[str, dict]] = [
    ("veth (no tunnel)", {"kind": "veth"}),
    (BASELINE, {"kind": "wireguard", "binary": "upstream"}),
    ("wireguard-go Debian (no offloads)", {"kind": "wireguard", "binary": "debian"}),
    ("aiouring tunnel, encrypted", {"kind": "example", "io": "aiouring", "plain": False}),
    ("aiouring tunnel, encrypted, offloads off", {"kind": "example", "io": "aiouring", "plain": False, "args": ["--offload", "off"]}),
    ("aiouring tunnel (uring), encrypted", {"kind": "example", "io": "aiouring", "plain": False, "backend": "uring"}),
    ("aiouring tunnel (epoll), encrypted", {"kind": "example", "io": "aiouring", "plain": False, "backend": "epoll"}),
    ("stdlib drain tunnel, encrypted", {"kind": "example", "io": "stdlib-drain", "plain": False}),
    ("stdlib pipes tunnel, encrypted", {"kind": "example", "io": "stdlib-pipes", "plain": False}),
    ("aiouring tunnel, plain", {"kind": "example", "io": "aiouring", "plain": True}),
    ("aiouring tunnel, plain, offloads off", {"kind": "example", "io": "aiouring", "plain": True, "args": ["--offload", "off"]}),
    ("aiouring tunnel (uring), plain", {"kind": "example", "io": "aiouring", "plain": True, "backend": "uring"}),
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
    cmd += spec.get("args", [])
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


def wireguard_binary(which: str) -> str:
    """The wireguard-go to run: Debian's package, or upstream built once from
    the vendored source (build.sh caches the binary and prints its path)."""
    if which == "debian":
        path = shutil.which("wireguard-go")
        if path is None:
            raise RuntimeError("Debian's wireguard-go is not installed (apt-get install wireguard-go)")
        return path
    if not os.path.exists(WG_BUILD):
        raise RuntimeError(f"no {WG_BUILD} to build upstream wireguard-go from")
    build = subprocess.run(["sh", WG_BUILD], capture_output=True, text=True, timeout=600)
    if build.returncode != 0:
        raise RuntimeError(f"building upstream wireguard-go failed: {build.stderr.strip()[-300:]}")
    return build.stdout.strip().splitlines()[-1]


def start_wireguard(a: str, b: str, tmp: str, binary: str, args: list[str]) -> list[subprocess.Popen]:
    keys = {}
    for side in "ab":
        private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
        public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True, check=True).stdout.strip()
        path = os.path.join(tmp, f"wg-{side}.key")
        with open(path, "w") as f:
            f.write(private)
        keys[side] = (path, public)
    procs = []
    # control sockets live in /var/run/wireguard, shared by all namespaces (and
    # by other runs on this machine): one name per side and per process
    tag = os.getpid() % 10000
    layout = [(a, f"wga{tag}", A_INNER, keys["a"][0], keys["b"][1], B_UNDERLAY, B_INNER),
              (b, f"wgb{tag}", B_INNER, keys["b"][0], keys["a"][1], A_UNDERLAY, A_INNER)]
    env = dict(os.environ, WG_PROCESS_FOREGROUND="1")
    try:
        for ns, ifname, *_ in layout:
            procs.append(subprocess.Popen(netns_exec(ns, binary, *args, "-f", ifname), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        for (ns, ifname, *_), proc in zip(layout, procs):
            deadline = time.monotonic() + 10
            while subprocess.run(netns_exec(ns, "ip", "link", "show", ifname), capture_output=True).returncode != 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{os.path.basename(binary)} did not bring up {ifname}: {proc.stderr.read()[-200:] if proc.poll() is not None else 'timed out'}")
                time.sleep(0.05)
        for ns, ifname, inner, private, peer_public, peer_underlay, peer_inner in layout:
            subprocess.run(netns_exec(ns, "wg", "set", ifname, "private-key", private, "listen-port", "51820",
                                      "peer", peer_public, "endpoint", f"{peer_underlay}:51820", "allowed-ips", f"{peer_inner}/32"), check=True)
            subprocess.run(netns_exec(ns, "ip", "addr", "add", f"{inner}/24", "dev", ifname), check=True)
            subprocess.run(netns_exec(ns, "ip", "link", "set", ifname, "mtu", "1420", "up"), check=True)
    except BaseException:
        for proc in procs:
            stop(proc)
        raise
    return procs


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of whole processes (all threads), from /proc/PID/stat."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / os.sysconf("SC_CLK_TCK")


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


def measure(name: str, spec: dict, a: str, b: str, seconds: float, loop: str, tmp: str, binaries: dict, pings: int) -> dict:
    procs: list[subprocess.Popen] = []
    target = B_INNER
    try:
        if spec["kind"] == "veth":
            target = B_UNDERLAY
        elif spec["kind"] == "wireguard":
            binary = binaries.get(spec["binary"])
            if isinstance(binary, Exception):
                raise binary
            procs = start_wireguard(a, b, tmp, binary, spec.get("args", []))
        else:
            procs.append(start_example(a, A_INNER, B_UNDERLAY, spec, loop))
            procs.append(start_example(b, B_INNER, A_UNDERLAY, spec, loop))
        subprocess.run(netns_exec(a, "ping", "-c", "1", "-W", "2", target), capture_output=True, timeout=10)
        pids = [p.pid for p in procs]  # `ip netns exec` execs the command: same pid
        cpu0 = cpu_seconds(pids)
        gbits = iperf(a, b, target, seconds)
        cpu = cpu_seconds(pids) - cpu0
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a tunnel process exited during the run (status {proc.returncode})")
        rtt = ping_rtt(a, target, pings)
        result = {"gbits": gbits, "cpu": cpu, **rtt}
        if procs:
            result["cpu_s_per_gbit"] = cpu / (gbits * seconds) if gbits else None
        return result
    except Exception as exc:  # one contender failing must not hide the others
        return {"gbits": 0.0, "p50": None, "p99": None, "error": str(exc)[:200]}
    finally:
        for proc in procs:
            stop(proc)


def summarize(name: str, spec: dict, rs: list[dict]) -> dict:
    """A failed run counts as 0 Gbit/s in the median and is shown."""
    ok = [x for x in rs if "error" not in x and x["gbits"] > 0]

    def median(key: str, runs: list[dict]) -> float | None:
        values = [x[key] for x in runs if x.get(key) is not None]
        return statistics.median(values) if values else None

    return {
        "contender": name, "spec": spec,
        "gbits": statistics.median([x["gbits"] if x in ok else 0.0 for x in rs]) if rs else 0.0,
        "cpu_s_per_gbit": median("cpu_s_per_gbit", ok),
        "p50_ms": median("p50", ok), "p99_ms": median("p99", ok),
        "runs_ok": len(ok), "runs_total": len(rs),
        "errors": [x.get("error", "no throughput") for x in rs if x not in ok],
        "runs": rs,
    }


def table(results: list[dict], meta: dict) -> str:
    by = {r["contender"]: r for r in results}
    base = by.get(BASELINE, {})

    def f(x: float | None, fmt: str = "{:.2f}") -> str:
        return "–" if x is None else fmt.format(x)

    def ratio(x: float | None, y: float | None) -> str:
        return f"{x / y:.2f}" if x and y else "–"

    lines = [
        f"Tunnel, one TCP flow of iperf3 ({label(meta)}; median of {meta['rounds']} rounds of {meta['seconds']:g} s, loop {meta['loop']}, a failed run counts as 0)",
        "",
        "| contender | Gbit/s | × wireguard-go upstream | CPU s / Gbit | CPU × wireguard-go upstream | × stdlib drain | ping p50 ms | ping p99 ms | runs ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        spec = r["spec"]
        drain = None
        if spec["kind"] == "example":
            drain = by.get("stdlib drain tunnel, " + ("plain" if spec["plain"] else "encrypted"), {}).get("gbits")
        runs = f"{r['runs_ok']}/{r['runs_total']}" + (f" ({r['errors'][0][:70]})" if r["errors"] else "")
        lines.append(
            f"| {r['contender']} | {r['gbits']:.2f} | {ratio(r['gbits'], base.get('gbits'))} | {f(r['cpu_s_per_gbit'])} | "
            f"{ratio(r['cpu_s_per_gbit'], base.get('cpu_s_per_gbit'))} | {ratio(r['gbits'], drain) if drain is not None else '–'} | "
            f"{f(r['p50_ms'], '{:.3f}')} | {f(r['p99_ms'], '{:.3f}')} | {runs} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument("--only", default=None, help="run only the contenders whose names contain one of these comma-separated words")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s, 50 pings: checks that every contender works")
    parser.add_argument("--out", default=None, help="path prefix for .json and .png (default: results/tunnel, or results/tunnel-quick with --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.pings = 2.0, 1, 50
    if args.out is None:
        args.out = os.path.join(RESULTS, "tunnel-quick" if args.quick else "tunnel")
    if os.geteuid() != 0:
        print("the tunnel benchmark needs root (namespaces, TUN devices)", file=sys.stderr)
        return 1
    missing = [tool for tool in ("iperf3", "wg") if shutil.which(tool) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)} (apt-get install iperf3 wireguard-tools)", file=sys.stderr)
        return 1
    global CONTENDERS
    if args.only:
        words = [w.strip() for w in args.only.split(",") if w.strip()]
        CONTENDERS = [(n, spec) for n, spec in CONTENDERS if any(w in n for w in words)]
        if not CONTENDERS:
            parser.error(f"--only {args.only!r} matches no contender")
    stamped = stamp()
    print(f"measured on {label(stamped)}", flush=True)
    binaries: dict = {}
    for which in sorted({spec["binary"] for _, spec in CONTENDERS if spec["kind"] == "wireguard"}):
        try:
            binaries[which] = wireguard_binary(which)
            print(f"wireguard-go {which}: {binaries[which]}", flush=True)
        except Exception as exc:  # its rows show the failure; the others still run
            binaries[which] = exc
            print(f"wireguard-go {which}: {exc}", flush=True)
    runs: dict[str, list[dict]] = {name: [] for name, _ in CONTENDERS}
    with tempfile.TemporaryDirectory() as tmp, two_namespaces(addresses=(A_UNDERLAY, B_UNDERLAY)) as (a, b):
        for r in range(args.rounds):
            order = CONTENDERS if r % 2 == 0 else list(reversed(CONTENDERS))
            for name, spec in order:
                result = measure(name, spec, a, b, args.seconds, args.loop, tmp, binaries, args.pings)
                runs[name].append(result)
                cpu = f"  {result['cpu_s_per_gbit']:.2f} CPU s/Gbit" if result.get("cpu_s_per_gbit") else ""
                print(f"  {name:38} {result['gbits']:6.2f} Gbit/s{cpu}  p50 {result['p50']} ms" + (f"  ({result['error']})" if "error" in result else ""), flush=True)
    results = [summarize(name, spec, runs[name]) for name, spec in CONTENDERS]
    meta = {**stamped, "kernel": platform.release(), "python": platform.python_version(), "cpus": os.cpu_count(), "seconds": args.seconds,
            "rounds": args.rounds, "loop": args.loop, "quick": args.quick,
            "wireguard_go": {k: (v if isinstance(v, str) else f"error: {v}") for k, v in binaries.items()}}
    print()
    print(table(results, meta))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
        colors = ["#555555" if "veth" in r["contender"] else "#2ca02c" if "wireguard" in r["contender"] else "#1f77b4" if "aiouring" in r["contender"] else "#ff7f0e" for r in results]
        ax.barh(range(len(results)), [r["gbits"] for r in results], color=colors)
        ax.set_yticks(range(len(results)))
        ax.set_yticklabels([r["contender"] + (f" ({r['runs_ok']}/{r['runs_total']} ok)" if r["runs_ok"] < r["runs_total"] else "") for r in results], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("Gbit/s, one TCP flow (log scale)")
        ax2.barh(range(len(results)), [r["cpu_s_per_gbit"] or 0 for r in results], color=colors)
        ax2.set_xlabel("CPU seconds per Gbit (tunnel processes, both sides)")
        fig.suptitle(f"Tunnel between two namespaces ({label(meta)}; blue: aiouring, orange: stdlib, green: wireguard-go, grey: bare veth)", fontsize=9)
        fig.tight_layout()
        fig.savefig(args.out + ".png", dpi=110)
        print(f"\nwrote {args.out}.json and {args.out}.png")
    except ImportError:
        print(f"\nwrote {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
