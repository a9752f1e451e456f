#!/usr/bin/env python3
"""TUN benchmarks: aiouring against the recipes Python VPN authors use today.

    make bench                       # everything, ~10 minutes
    .venv/bin/python benchmarks/run.py --quick

As root, inside a network namespace this script creates (IPv4 forwarding on,
ICMP redirects off, IPv6 on as on real hosts), with one TUN (aioubench0,
10.9.0.1/24, txqueuelen 10000) for every contender but the offload one, which
has its own (aioubench1, 10.9.1.1/24, packets from 10.9.1.2 to 10.9.1.3; see
below).

Payloads of 64, 200 and 1400 bytes (--sizes), modes bounce, read, write:

* bounce: the application writes IPv4/UDP packets from 10.9.0.2 to 10.9.0.3;
  the kernel forwards each one back out the same TUN; the application reads
  it and writes a fresh one, keeping 64 in flight.  One read, one write and
  the kernel's forwarding per packet.
* read: a C sender process fills the TUN through a UDP socket; packets read/s.
* write: packets written/s (the kernel drops them: 10.9.0.3 is not forwarded
  in this mode).
* ping: RTT p50/p99 of the real `ping` (every 2 ms) through
  examples/ping_responder.py on aiouring (both backends) against the same
  responder on the add_reader drain recipe.

The offload row (aiouring-offload) runs the same modes on the Transport
with TUN offloads (``create_tun_connection(fd=..., offload=True)``) on its
own TUN, opened with IFF_VNET_HDR and TSO/USO on.  Its packets are all
equal-size UDP packets of one flow, so the packets it writes in one loop
iteration (in bounce, the answers to the packets of one read) leave in USO
super-packets of up to 64 KiB (64 packets of 200 B in one, of 1400 B in
two); the kernel forwards each back unsegmented and one read brings it back,
split by the library into the packets the protocol sees.  It counts packets
(segments), like every row, so "× C loop" is its packets/s against the C
per-packet blocking loop on the plain device (issue 12's target: ≥ 3× in
bounce, on both loops).  That it really coalesces is shown beside it: the
kernel writes and reads per packet (the Transport's stats, in the window)
and the device's own rx/tx packets per packet moved (kernel_counters(), over
the whole run), both far below 1.  In read mode its sender still sends
packet by packet, so it reads one per packet; in write mode its writes
coalesce (and the kernel drops them, as for the others).  It is one of the
default contenders, so ``--quick`` has it too.

Each contender runs in its own process on a TUN fd handed over by this
script, and sets everything up (imports, ring, transport, the primed writes
of a bounce) before its measured window opens on its first packet read back
(bounce, read) or written (write); packets and CPU time are taken at the
window's edges (contenders.py, reference.c).  Contenders alternate within
each round; the table shows the median of the rounds, a failed or timed-out
run counting as 0 and shown as "2/3 runs ok" with its error, with ratios to
the drain recipe on the same loop, to the C blocking loop and to asyncio's
pipe transports, and, for the Transport contenders, kernel writes / reads
per packet (device rx / tx packets per packet).  aiouring-tun-batch
(Tun.read_batch/write_batch) is shown as skipped on builds that do not have
them.  Every table, the JSON and the chart name the commit (with -dirty) and
the date.  Results go to
benchmarks/results/latest.json and latest.png (quick.* with --quick).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "examples"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from packets import udp  # noqa: E402
from provenance import label, stamp  # noqa: E402
from support.netns import network_namespace, sysctl  # noqa: E402

SRC, DST = "10.9.0.2", "10.9.0.3"
TUN_ADDRESS = "10.9.0.1/24"
# the offload contenders' own device: IFF_VNET_HDR with TSO/USO on, its own subnet
OFFLOAD_SRC, OFFLOAD_DST = "10.9.1.2", "10.9.1.3"
OFFLOAD_TUN_ADDRESS = "10.9.1.1/24"
OFFLOAD_CONTENDERS = ["aiouring-offload"]
PYTHON_CONTENDERS = ["aiouring-protocol", "aiouring-tun", "aiouring-tun-batch", "aiouring-epoll", "aiouring-offload",
                     "drain-recipe", "pipe-transports"]
AIOURING = [c for c in PYTHON_CONTENDERS if c.startswith("aiouring")]
MODES = ["bounce", "read", "write"]
LOOPS = ["asyncio", "uvloop"]
RESULTS = os.path.join(HERE, "results")


# -- environment --------------------------------------------------------------


@contextlib.contextmanager
def bench_namespace() -> Iterator[str]:
    """A private network namespace for this thread and its children: IPv4
    forwarding on, ICMP redirects and reverse-path filtering off (IPv6 stays
    on: the contenders must cope with the kernel's own IPv6 packets)."""
    with network_namespace(forwarding=True) as name:
        for scope in ("all", "default"):
            sysctl(f"net/ipv4/conf/{scope}/send_redirects", "0")
            sysctl(f"net/ipv4/conf/{scope}/rp_filter", "0")
        yield name


@dataclasses.dataclass
class Bench:
    """A TUN handed to contenders (as an inherited fd) and the addresses of
    the packets they bounce through it."""

    fd: int
    src: str
    dst: str


@contextlib.contextmanager
def bench_tun(name: str = "aioubench0", address: str = TUN_ADDRESS, offload: bool = False) -> Iterator[Any]:
    """A TUN for the contenders: aioubench0 (plain) for all but the offload
    ones, which get aioubench1, opened with IFF_VNET_HDR and TSO/USO on."""
    import aiouring
    from pyroute2 import IPRoute

    device = aiouring.TunDevice.open(name, vnet_hdr=offload)
    try:
        if offload:
            device.enable_offloads(tso=True, uso=True)
        asyncio.run(device.configure(addresses=[address]))
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=device.name)[0], txqlen=10000)
        yield device
    finally:
        device.close()


def build_c(name: str) -> str:
    """Compile benchmarks/NAME.c once per source text (the binary's name
    carries the source's hash: /tmp is shared with other checkouts)."""
    import hashlib

    src = os.path.join(HERE, f"{name}.c")
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    out = os.path.join(tempfile.gettempdir(), f"aiouring-bench-{name}-{digest}")
    if not os.path.exists(out):
        subprocess.run(["gcc", "-O2", "-Wall", "-o", out + ".tmp", src], check=True)
        os.replace(out + ".tmp", out)
    return out


def drain(fd: int) -> None:
    """Empty the TUN's queue between runs."""
    os.set_blocking(fd, False)
    try:
        while True:
            os.read(fd, 65536)
    except BlockingIOError:
        pass


def set_forwarding(on: bool) -> None:
    sysctl("net/ipv4/ip_forward", "1" if on else "0")


# -- one run ---------------------------------------------------------------------


def run_one(contender: str, loop: str, mode: str, size: int, seconds: float, bench: Bench | str) -> dict:
    """One process running one contender on ``bench`` (or the reason its
    device could not be opened: the run fails with it); returns packets,
    seconds and cpu measured inside its window (see contenders.py), plus
    "error" for a run that failed (its packets are 0) or "skipped" with the
    reason."""
    if isinstance(bench, str):
        return {"packets": 0, "seconds": seconds, "cpu": 0.0, "error": bench}
    fd = bench.fd
    packet = udp(bench.src, bench.dst, 1000, 2000, b"\xab" * size)
    drain(fd)
    set_forwarding(mode == "bounce")
    sender = None
    if mode == "read":
        sender = subprocess.Popen([build_c("sender"), bench.dst, str(size), str(seconds + 2)])
        time.sleep(0.1)
    try:
        if contender == "c-blocking":
            cmd = [build_c("reference"), str(fd), mode, str(seconds), packet.hex()]
        else:
            cmd = [sys.executable, os.path.join(HERE, "contenders.py"), contender, loop, mode, str(seconds), str(fd), packet.hex()]
        try:
            proc = subprocess.run(cmd, pass_fds=[fd], capture_output=True, text=True, timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            return {"packets": 0, "seconds": seconds, "cpu": 0.0, "error": f"timed out after {seconds + 30:g} s"}
    finally:
        if sender is not None:
            sender.kill()
            sender.wait()
    if proc.returncode != 0 or not proc.stdout.strip():
        # the error is the traceback's last line (one line: it goes into the table); the JSON keeps the tail
        stderr = proc.stderr.strip()
        return {"packets": 0, "seconds": seconds, "cpu": 0.0, "stderr": stderr[-2000:],
                "error": f"exit {proc.returncode}: " + (stderr.splitlines()[-1][-300:] if stderr else "no output")}
    line = proc.stdout.strip().splitlines()[-1]
    if contender == "c-blocking":
        packets, wall, cpu = line.split()
        return {"packets": int(packets), "seconds": float(wall), "cpu": float(cpu)}
    result = json.loads(line)
    if "skipped" not in result and not result.get("packets"):
        result["error"] = "moved no packets"
    return result


def ping_rtts(backend_script: list[str], count: int) -> dict:
    """RTTs (ms) of `ping` through a responder process."""
    responder = subprocess.Popen(backend_script, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = responder.stdout.readline()
        if not ready.startswith("ready"):
            return {"error": ready + responder.stderr.read()}
        out = subprocess.run(["ping", "-c", str(count), "-i", "0.002", "-W", "1", "10.11.0.5"], capture_output=True, text=True, timeout=count + 30).stdout
    finally:
        responder.terminate()
        responder.communicate(timeout=20)
    rtts = sorted(float(m) for m in re.findall(r"time=([\d.]+) ms", out))
    if not rtts:
        return {"error": out}
    return {"p50": rtts[len(rtts) // 2], "p99": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))], "replies": len(rtts), "sent": count}


DRAIN_RESPONDER = r"""
import asyncio, os, sys
sys.path.insert(0, {examples!r})
import aiouring
from packets import echo_reply
async def main():
    device = aiouring.TunDevice.open()
    await device.configure(addresses=["10.11.0.1/24"])
    fd = device.fileno()
    loop = asyncio.get_running_loop()
    def on_readable():
        try:
            for _ in range(64):
                reply = echo_reply(os.read(fd, 65536))
                if reply is not None:
                    os.write(fd, reply)
        except BlockingIOError:
            pass
    loop.add_reader(fd, on_readable)
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        loop.remove_reader(fd)
        device.close()
{runner}
"""


def ping_comparison(loop: str, count: int) -> dict:
    runner = "import uvloop; uvloop.run(main())" if loop == "uvloop" else "asyncio.run(main())"
    drain_script = [sys.executable, "-c", DRAIN_RESPONDER.format(examples=os.path.join(ROOT, "examples"), runner=runner)]
    aiou_script = [sys.executable, os.path.join(ROOT, "examples", "ping_responder.py"), "--address", "10.11.0.1/24", "--loop", loop]
    contenders = (
        ("aiouring-protocol", aiou_script),
        ("aiouring-epoll", aiou_script + ["--backend", "epoll"]),
        ("drain-recipe", drain_script),
    )
    results = {}
    for _ in range(2):  # alternate, keep the better of two for each
        for name, script in contenders:
            r = ping_rtts(script, count)
            if "p50" in r and (name not in results or r["p50"] < results[name]["p50"]):
                results[name] = r
            elif name not in results:
                results[name] = r
    return results


# -- the whole benchmark ----------------------------------------------------------------


def summarize(mode: str, size: int, contender: str, loop: str, rs: list[dict]) -> dict:
    """One table row from a contender's runs.  A failed or timed-out run
    counts as 0 packets/s in the median and is shown, never dropped."""
    entry: dict = {"mode": mode, "size": size, "contender": contender, "loop": loop, "runs": rs}
    skipped = [x["skipped"] for x in rs if "skipped" in x]
    if skipped:
        entry.update(pps=None, pps_runs=[], cpu_s_per_mpkt=None, runs_ok=0, runs_total=0, errors=[], skipped=skipped[0])
        return entry
    ok = [x for x in rs if "error" not in x and x["packets"] > 0 and x["seconds"] > 0]
    rates = [x["packets"] / x["seconds"] if x in ok else 0.0 for x in rs]
    cpu_per_m = [x["cpu"] / x["packets"] * 1e6 for x in ok]

    def median_of(values: list[Any]) -> float | None:
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    entry.update(
        pps=statistics.median(rates) if rates else 0.0,
        pps_runs=rates,
        cpu_s_per_mpkt=statistics.median(cpu_per_m) if cpu_per_m else None,
        runs_ok=len(ok), runs_total=len(rs),
        errors=[x.get("error", "moved no packets") for x in rs if x not in ok],
        # kernel calls per packet, for the contenders that count them (the Transport's stats, in the window)
        writes_per_packet=median_of([x.get("writes_per_packet") for x in ok]),
        reads_per_packet=median_of([x.get("reads_per_packet") for x in ok]),
        # the device's own packet counts per packet moved (whole run, set-up included)
        kernel_rx_per_packet=median_of([x.get("kernel", {}).get("rx_per_packet_sent") for x in ok]),
        kernel_tx_per_packet=median_of([x.get("kernel", {}).get("tx_per_packet_received") for x in ok]),
    )
    return entry


def per_packet(r: dict) -> str:
    """Kernel calls and device packets per packet, where the contender counted them."""
    def f(x: float | None) -> str:
        return "–" if x is None else f"{x:.3f}"

    if r.get("writes_per_packet") is None and r.get("reads_per_packet") is None:
        return "–"
    out = f"{f(r['writes_per_packet'])} / {f(r['reads_per_packet'])}"
    if r.get("kernel_rx_per_packet") is not None or r.get("kernel_tx_per_packet") is not None:
        out += f" (device {f(r['kernel_rx_per_packet'])} / {f(r['kernel_tx_per_packet'])})"
    return out


def run_matrix(modes: list[str], sizes: list[int], loops: list[str], contenders: list[str], seconds: float, rounds: int, log: Any = print) -> list[dict]:
    results = []
    with contextlib.ExitStack() as stack:
        plain = stack.enter_context(bench_tun())
        benches: dict[str, Bench | str] = {"": Bench(plain.fileno(), SRC, DST)}
        if any(c in OFFLOAD_CONTENDERS for c in contenders):
            try:
                device = stack.enter_context(bench_tun("aioubench1", OFFLOAD_TUN_ADDRESS, offload=True))
                benches["offload"] = Bench(device.fileno(), OFFLOAD_SRC, OFFLOAD_DST)
            except (OSError, ValueError) as exc:
                benches["offload"] = f"offload device: {exc}"  # each of its runs fails with this, shown in the table
                log(f"  {benches['offload']}")
        for mode in modes:
            for size in sizes:
                runs: dict[tuple[str, str], list[dict]] = {}
                plan = [("c-blocking", "-")] + [(c, loop) for loop in loops for c in contenders]
                for r in range(rounds):
                    # alternate the order each round so no contender always runs first
                    order = plan if r % 2 == 0 else list(reversed(plan))
                    for contender, loop in order:
                        previous = runs.setdefault((contender, loop), [])
                        if previous and "skipped" in previous[0]:
                            continue  # once is enough to know
                        bench = benches["offload" if contender in OFFLOAD_CONTENDERS else ""]
                        previous.append(run_one(contender, loop, mode, size, seconds, bench))
                for (contender, loop), rs in runs.items():
                    entry = summarize(mode, size, contender, loop, rs)
                    results.append(entry)
                    if entry.get("skipped"):
                        log(f"  {mode:6} {size:5}B {contender:18} {loop:8} skipped: {entry['skipped']}")
                    else:
                        calls = per_packet(entry)
                        log(f"  {mode:6} {size:5}B {contender:18} {loop:8} {entry['pps']:>12,.0f} pkt/s  {entry['runs_ok']}/{entry['runs_total']} runs ok"
                            + (f"  writes/reads per pkt {calls}" if calls != "–" else "")
                            + (f"  ({entry['errors'][0][:80]})" if entry["errors"] else ""))
    return results


def add_ratios(results: list[dict]) -> None:
    index = {(r["mode"], r["size"], r["contender"], r["loop"]): r for r in results}
    for r in results:
        drain_same_loop = index.get((r["mode"], r["size"], "drain-recipe", r["loop"]))
        c = index.get((r["mode"], r["size"], "c-blocking", "-"))
        pipe_std = index.get((r["mode"], r["size"], "pipe-transports", "asyncio"))

        def ratio(base: dict | None) -> float | None:
            return r["pps"] / base["pps"] if r["pps"] is not None and base and base["pps"] else None

        r["x_drain"], r["x_c"], r["x_pipe_asyncio"] = ratio(drain_same_loop), ratio(c), ratio(pipe_std)


def winners(results: list[dict]) -> list[str]:
    """Which aiouring contender moved the most packets, per (mode, size, loop),
    among the per-packet ones: the offload row moves super-packets on a
    device of its own, so it would always win and hide which backend does."""
    lines = []
    results = [r for r in results if r["contender"] != "aiouring-offload"]
    keys = sorted({(r["mode"], r["size"], r["loop"]) for r in results if r["contender"] in AIOURING},
                  key=lambda k: (MODES.index(k[0]) if k[0] in MODES else 9, k[1], k[2]))
    for mode, size, loop in keys:
        rows = [r for r in results if (r["mode"], r["size"], r["loop"]) == (mode, size, loop) and r["contender"] in AIOURING and r["pps"]]
        if not rows:
            lines.append(f"- {mode}, {size} B, {loop}: no aiouring contender moved packets")
            continue
        best = max(rows, key=lambda r: r["pps"])
        drain = f", {best['x_drain']:.2f}× the drain recipe" if best["x_drain"] else ""
        lines.append(f"- {mode}, {size} B, {loop}: **{best['contender']}** won ({best['pps']:,.0f} packets/s{drain})")
    return lines


OFFLOAD_NOTE = (
    "aiouring-offload: the Transport with TUN offloads on its own device (IFF_VNET_HDR, TSO/USO on), "
    "packets counted as segments, as the protocol sees them: its writes in one loop iteration leave as "
    "USO super-packets and (bounce) come back whole, so its kernel writes and reads per packet, and the "
    "device's own rx/tx packets per packet, are far below 1 (in read mode the sender sends packet by "
    "packet: one read each). The C loop and the other contenders write and read one packet per kernel "
    "call on the plain device."
)


def table(results: list[dict], meta: dict) -> str:
    """A markdown table per mode, then which aiouring contender won where."""

    def f(x: float | None, fmt: str = "{:.2f}") -> str:
        return "–" if x is None else fmt.format(x)

    out = []
    for mode in [m for m in MODES if any(r["mode"] == m for r in results)]:
        out += [
            f"**{mode}** ({label(meta)}; median of {meta['rounds']} runs of {meta['seconds']:g} s, a failed run counts as 0)",
            "",
            "| payload | contender | loop | packets/s | × drain recipe (same loop) | × C loop | × pipes (asyncio) | CPU s / Mpkt "
            "| writes / reads per pkt (device rx / tx) | runs ok |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        rows = [r for r in results if r["mode"] == mode]
        for r in rows:
            if r.get("skipped"):
                out.append(f"| {r['size']} B | {r['contender']} | {r['loop']} | skipped: {r['skipped']} | | | | | | – |")
                continue
            runs = f"{r['runs_ok']}/{r['runs_total']}" + (f" ({r['errors'][0][:70]})" if r["errors"] else "")
            out.append(
                f"| {r['size']} B | {r['contender']} | {r['loop']} | {r['pps']:,.0f} | "
                f"{f(r['x_drain'])} | {f(r['x_c'])} | {f(r['x_pipe_asyncio'])} | {f(r['cpu_s_per_mpkt'])} | {per_packet(r)} | {runs} |"
            )
        out.append("")
        if any(r["contender"] in OFFLOAD_CONTENDERS for r in rows):
            out += [OFFLOAD_NOTE, ""]
    out.append("Best aiouring contender per mode, payload and loop:")
    out += winners(results)
    return "\n".join(out)


def chart(results: list[dict], path: str, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in results if not r.get("skipped")]
    groups = sorted({(r["mode"], r["size"]) for r in results}, key=lambda g: (MODES.index(g[0]), g[1]))
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 3.2 * len(groups)), squeeze=False)
    for ax, (mode, size) in zip(axes[:, 0], groups):
        rows = [r for r in results if r["mode"] == mode and r["size"] == size]
        labels = [f"{r['contender']}\n{r['loop']}" if r["loop"] != "-" else r["contender"] for r in rows]
        colors = ["#555555" if r["contender"] == "c-blocking" else "#1f77b4" if r["contender"].startswith("aiouring") else "#ff7f0e" for r in rows]
        ax.bar(range(len(rows)), [r["pps"] / 1000 for r in rows], color=colors)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel("k packets/s")
        ax.set_title(f"{mode}, {size}-byte UDP payload ({label(meta)}; blue: aiouring, orange: stdlib recipes, grey: C)", fontsize=8)
        for i, r in enumerate(rows):
            if r["runs_ok"] < r["runs_total"]:
                ax.annotate(f"{r['runs_ok']}/{r['runs_total']} ok", (i, r["pps"] / 1000), ha="center", va="bottom", fontsize=6, color="red")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="aiouring TUN benchmarks")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per contender (median)")
    parser.add_argument("--modes", default="bounce,read,write")
    parser.add_argument("--sizes", default="64,200,1400")
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument("--contenders", default=",".join(PYTHON_CONTENDERS))
    parser.add_argument("--ping", type=int, default=1000, help="pings per RTT measurement (0: skip)")
    parser.add_argument("--quick", action="store_true", help="bounce at 64 B only, 1 s runs, 3 rounds")
    parser.add_argument("--out", default=None, help="path prefix for .json and .png (default: results/latest, or results/quick with --quick)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks need root (network namespaces and TUN devices)", file=sys.stderr)
        return 1
    if args.quick:
        args.modes, args.sizes, args.seconds, args.ping = "bounce", "64", 1.0, 200
    if args.out is None:
        args.out = os.path.join(RESULTS, "quick" if args.quick else "latest")
    modes = args.modes.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    loops = args.loops.split(",")
    contenders = args.contenders.split(",")
    import aiouring

    stamped = stamp()
    print(aiouring.probe())
    print(f"measured on {label(stamped)}")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs; {args.rounds} rounds of {args.seconds:g}s per contender")
    with bench_namespace():
        results = run_matrix(modes, sizes, loops, contenders, args.seconds, args.rounds)
        add_ratios(results)
        pings = {loop: ping_comparison(loop, args.ping) for loop in loops} if args.ping else {}
    meta = {**stamped, "kernel": platform.release(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "probe": str(aiouring.probe()), "seconds": args.seconds, "rounds": args.rounds, "quick": args.quick}
    print()
    print(table(results, meta))
    if pings:
        print()
        print(f"Ping RTT ({label(meta)}):")
        print()
        print("| ping RTT through the ping responder | loop | p50 ms | p99 ms | replies |")
        print("|---|---|---:|---:|---:|")
        for loop, rs in pings.items():
            for name, r in rs.items():
                if "p50" in r:
                    print(f"| {name} | {loop} | {r['p50']:.3f} | {r['p99']:.3f} | {r['replies']}/{r['sent']} |")
                else:
                    print(f"| {name} | {loop} | error: {r.get('error', '')[:60]} | | |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"meta": meta, "results": results, "ping": pings}, f, indent=1)
    try:
        chart(results, args.out + ".png", meta)
        print(f"\nwrote {args.out}.json and {args.out}.png")
    except ImportError:
        print(f"\nwrote {args.out}.json (install matplotlib for the chart)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
