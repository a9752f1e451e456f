#!/usr/bin/env python3
"""Ring options measured on the bounce loop (aiouring Transport/Protocol, 64-byte payloads).

    .venv/bin/python benchmarks/options.py [--seconds 2] [--rounds 3]

Each variant runs in its own process on the same TUN (see run.py), variants
alternate within each round, and the table shows the median packets/s and the
ratio to the default configuration.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import DST, SRC, bench_namespace, bench_tun, drain, set_forwarding, udp  # noqa: E402

VARIANTS: dict[str, dict] = {
    "default (coop, 256 SQ, 256 read buffers)": {},
    "setup=plain": {"setup": "plain"},
    "setup=defer (SINGLE_ISSUER|DEFER_TASKRUN)": {"setup": "defer"},
    "setup=sqpoll": {"setup": "sqpoll"},
    "64-entry SQ": {"entries": 64},
    "1024-entry SQ": {"entries": 1024},
    "64 read buffers": {"read_buffers": 64},
    "1024 read buffers": {"read_buffers": 1024},
    "single reads (no multishot)": {"read_mode": "single"},
    "registered write pool (WRITE_FIXED)": {"register_pool": True},
}

CHILD = r"""
import asyncio, json, sys, time, resource
import aiouring
fd, seconds, packet, options = int(sys.argv[1]), float(sys.argv[2]), bytes.fromhex(sys.argv[3]), json.loads(sys.argv[4])
ring_options = {k: v for k, v in options.items() if k in ("setup", "entries", "register_pool")}
conn_options = {k: v for k, v in options.items() if k in ("read_buffers", "read_mode")}

async def main():
    ring = aiouring.Ring(**ring_options)
    class Bounce(aiouring.TunProtocol):
        count = 0
        def connection_made(self, t):
            self.t = t
            for _ in range(64):
                t.write(packet)
        def packets_received(self, packets):
            self.count += len(packets)
            for _ in packets:
                self.t.write(packet)
    t, p = await aiouring.create_tun_connection(Bounce, fd=fd, ring=ring, **conn_options)
    start = time.monotonic()
    await asyncio.sleep(seconds)
    rate = p.count / (time.monotonic() - start)
    t.abort()
    await asyncio.sleep(0.01)
    ring.close()
    print(json.dumps({"pps": rate}))

asyncio.run(main())
"""


def run_variant(fd: int, options: dict, seconds: float) -> float:
    packet = udp(SRC, DST, 1000, 2000, b"\xab" * 64)
    drain(fd)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(fd), str(seconds), packet.hex(), json.dumps(options)],
        pass_fds=[fd], capture_output=True, text=True, timeout=seconds + 30,
    )
    if proc.returncode != 0:
        print(proc.stderr[-500:], file=sys.stderr)
        return 0.0
    return json.loads(proc.stdout.strip().splitlines()[-1])["pps"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with bench_namespace(), bench_tun() as device:
        set_forwarding(True)
        for r in range(args.rounds):
            names = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
            for name in names:
                rates[name].append(run_variant(device.fileno(), VARIANTS[name], args.seconds))
    base = statistics.median(rates[next(iter(VARIANTS))])
    print("| option | packets/s | × default |")
    print("|---|---:|---:|")
    for name, rs in rates.items():
        med = statistics.median(rs)
        print(f"| {name} | {med:,.0f} | {med / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
