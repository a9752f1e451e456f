#!/usr/bin/env python3
"""WireGuard benchmark: examples/wireguard on aiouring against upstream wireguard-go.

    .venv/bin/python benchmarks/wireguard.py [--seconds 5] [--rounds 3] [--quick]

Two network namespaces joined by a veth pair (192.168.77.1 <-> .2, IPv6 on);
for each contender a WireGuard tunnel comes up between them (10.60.0.1 <->
.2, MTU 1420), a ping is answered (so the handshake is done and the clock
starts at the first packet through the tunnel, not at process start), then
one TCP flow of iperf3 runs for --seconds in each direction (A->B, and B->A
with -R), and `ping` every 10 ms gives the RTT.  Contenders:

* aiouring pair: examples/wireguard on both sides;
* aiouring <-> wireguard-go: ours on A, upstream wireguard-go on B (so A->B
  is our encryption and their decryption, B->A the other way round);
* wireguard-go pair: upstream wireguard-go 0.0.20250522 on both sides (TUN
  offloads, UDP GSO/GRO), built by ../shared/peers/wireguard-go/build.sh,
  or --wireguard-go PATH;
* with --debian, Debian's packaged wireguard-go pair too.

Rounds alternate the contenders' order; medians are shown with every failed
run counted and its reason printed; ratios are to the wireguard-go pair.
Results go to benchmarks/results/wireguard.json (quick runs: quick.wireguard.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from support.wg import (  # noqa: E402
    A4, B4, INNER, PORT, AiouringWg, WireguardGo, config_text, genkey, lab, nsrun, wait_ping,
)

RESULTS = os.path.join(HERE, "results")
B_IN4 = INNER["b"][0]
UPSTREAM_BUILD = os.path.join(ROOT, "..", "shared", "peers", "wireguard-go", "build.sh")


def upstream_binary(path: str | None) -> str:
    if path:
        return path
    out = subprocess.run(["sh", UPSTREAM_BUILD], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"building upstream wireguard-go failed:\n{out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


def start(kind: str, ns: str, side: str, keys: dict, peer_underlay: str | None, binary: str | None, loop: str, extra: tuple[str, ...] = ()) -> object:
    other = "b" if side == "a" else "a"
    o4, o6 = INNER[other]
    s4, s6 = INNER[side]
    endpoint = f"{peer_underlay}:{PORT}" if peer_underlay else None
    if kind == "aiouring":
        conf = config_text(keys[side][0], PORT, [f"{s4}/24", f"{s6}/64"],
                           [dict(public=keys[other][1], endpoint=endpoint, allowed_ips=f"{o4}/32, {o6}/128")])
        return AiouringWg(ns, side, conf, args=("--loop", loop, *extra)).start()
    g = WireguardGo(ns, side, keys[side][0], binary=binary)
    return g.start(peers=[dict(public=keys[other][1], endpoint=endpoint, allowed_ips=f"{o4}/32,{o6}/128")])


def iperf(a: str, b: str, target: str, seconds: float, reverse: bool) -> float:
    server = subprocess.Popen(["ip", "netns", "exec", b, "iperf3", "-s", "-1", "-B", target], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while "LISTEN" not in nsrun(b, "ss", "-ltn", "sport = :5201", check=False).stdout:
            if time.monotonic() > deadline:
                raise RuntimeError("iperf3 server did not listen")
            time.sleep(0.05)
        cmd = ["iperf3", "-c", target, "-t", str(seconds), "-J"] + (["-R"] if reverse else [])
        out = nsrun(a, *cmd, check=False, timeout=seconds + 30).stdout
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    result = json.loads(out)
    if "error" in result:
        raise RuntimeError(result["error"])
    return result["end"]["sum_received"]["bits_per_second"] / 1e9


def ping_rtt(a: str, target: str, count: int) -> dict:
    out = nsrun(a, "ping", "-c", str(count), "-i", "0.01", "-W", "1", target, check=False, timeout=count + 30).stdout
    rtts = sorted(float(m) for m in re.findall(r"time=([\d.]+) ms", out))
    if not rtts:
        return {"p50": None, "p99": None}
    return {"p50": rtts[len(rtts) // 2], "p99": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]}


def measure(spec: dict, a: str, b: str, args: argparse.Namespace, binaries: dict) -> dict:
    keys = {"a": genkey(), "b": genkey()}
    procs: list = []
    result: dict = {"ab": None, "ba": None, "p50": None, "p99": None, "errors": []}
    try:
        extra = tuple(spec.get("args", ()))
        procs.append(start(spec["a"], a, "a", keys, B4, binaries.get(spec["a"]), args.loop, extra))
        procs.append(start(spec["b"], b, "b", keys, A4, binaries.get(spec["b"]), args.loop, extra))
        wait_ping(a, B_IN4, timeout=15)  # the handshake is done: clocks start at the first packet
        for key, reverse in (("ab", False), ("ba", True)):
            try:
                result[key] = iperf(a, b, B_IN4, args.seconds, reverse)
            except Exception as exc:  # one direction failing must not hide the other
                result["errors"].append(f"{key}: {exc}"[:200])
        result.update(ping_rtt(a, B_IN4, args.pings))
    except Exception as exc:
        result["errors"].append(str(exc)[:300])
    finally:
        for p in procs:
            try:
                if isinstance(p, AiouringWg) and p.proc is not None:
                    counters = p.stop()
                    bad = {k: v for k, v in counters.items() if k.startswith("drop_") and v and k not in ("drop_no_route",)}
                    if bad:
                        result.setdefault("drops", {})[p.side] = bad
            except Exception as exc:
                result["errors"].append(f"stop: {exc}"[:200])
            finally:
                p.close()
    return result


def git_commit() -> str:
    out = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    return (out or "unknown") + ("+dirty" if dirty else "")


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pings", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s, 50 pings (checks it works; numbers are noise)")
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--wireguard-go", default=None, help="upstream wireguard-go binary (default: build it)")
    parser.add_argument("--debian", action="store_true", help="also Debian's wireguard-go pair")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.pings = 2.0, 1, 50
    if os.geteuid() != 0:
        print("the WireGuard benchmark needs root (namespaces, TUN devices)", file=sys.stderr)
        return 1
    missing = [tool for tool in ("iperf3", "wg") if shutil.which(tool) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)} (apt-get install --no-install-recommends iperf3 wireguard-tools)", file=sys.stderr)
        return 1
    binaries = {"upstream": upstream_binary(args.wireguard_go), "aiouring": None}
    contenders = [
        ("aiouring pair", {"a": "aiouring", "b": "aiouring"}),
        ("aiouring pair, offloads off", {"a": "aiouring", "b": "aiouring", "args": ["--offload", "off"]}),
        ("aiouring <-> wireguard-go", {"a": "aiouring", "b": "upstream"}),
        ("wireguard-go pair", {"a": "upstream", "b": "upstream"}),
    ]
    if args.debian:
        binaries["debian"] = shutil.which("wireguard-go")
        contenders.append(("Debian wireguard-go pair", {"a": "debian", "b": "debian"}))
    commit = git_commit()
    runs: dict[str, list[dict]] = {name: [] for name, _ in contenders}
    with lab() as names:
        a, b = names.a, names.b
        for r in range(args.rounds):
            order = contenders if r % 2 == 0 else list(reversed(contenders))
            for name, spec in order:
                result = measure(spec, a, b, args, binaries)
                runs[name].append(result)
                fmt = lambda v: f"{v:5.2f}" if v is not None else "  -  "  # noqa: E731
                print(f"  round {r + 1} {name:28} A->B {fmt(result['ab'])}  B->A {fmt(result['ba'])} Gbit/s  p50 {result['p50']} ms"
                      + (f"  errors: {result['errors']}" if result["errors"] else "")
                      + (f"  drops: {result['drops']}" if result.get("drops") else ""), flush=True)
    rows = []
    for name, _ in contenders:
        rs = runs[name]
        rows.append({
            "contender": name,
            "ab": median([x["ab"] for x in rs]), "ba": median([x["ba"] for x in rs]),
            "p50": median([x["p50"] for x in rs]), "p99": median([x["p99"] for x in rs]),
            "failed": sum(1 for x in rs if x["errors"] or x["ab"] is None or x["ba"] is None),
            "runs": rs,
        })
    base = next(r for r in rows if r["contender"] == "wireguard-go pair")
    kind = "quick, noisy" if args.quick else f"{args.rounds} rounds of {args.seconds:g} s"
    print()
    print(f"commit {commit}, kernel {platform.release()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"loop {args.loop}, {kind}, {time.strftime('%Y-%m-%d %H:%M')}")
    print()
    print("| contender | A->B Gbit/s | × wg-go pair | B->A Gbit/s | × wg-go pair | ping p50 ms | ping p99 ms | failed runs | commit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")

    def num(v: float | None, f: str = "{:.2f}") -> str:
        return f.format(v) if v is not None else "–"

    def ratio(v: float | None, ref: float | None) -> str:
        return f"{v / ref:.2f}" if v is not None and ref else "–"

    for r in rows:
        print(f"| {r['contender']} | {num(r['ab'])} | {ratio(r['ab'], base['ab'])} | {num(r['ba'])} | {ratio(r['ba'], base['ba'])} | "
              f"{num(r['p50'], '{:.3f}')} | {num(r['p99'], '{:.3f}')} | {r['failed']}/{len(r['runs'])} | {commit} |")
    out = args.out or os.path.join(RESULTS, "quick.wireguard" if args.quick else "wireguard")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    meta = {"commit": commit, "kernel": platform.release(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "seconds": args.seconds, "rounds": args.rounds, "loop": args.loop, "quick": args.quick,
            "date": time.strftime("%Y-%m-%d %H:%M"), "wireguard_go": binaries["upstream"]}
    with open(out + ".json", "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=1)
    print(f"\nwrote {out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
