#!/usr/bin/env python3
"""The aiouring demo (run as root; `make demo` does the set-up first).

1. Says what this kernel's io_uring can do (aiouring.probe()).
2. In a private network namespace, starts examples/ping_responder.py on an
   aiouring TUN and runs the real `ping` through it.
3. Runs a short bounce measurement (read a forwarded packet, write a fresh one,
   64 in flight) for aiouring against asyncio's `connect_read_pipe` /
   `connect_write_pipe` and the `add_reader` drain recipe, and prints packets/s.
4. Joins two namespaces with a veth pair, brings up the encrypted tunnel of
   examples/tunnel.py between them, and runs `ping` and a short iperf3 through it.
"""
from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import aiouring  # noqa: E402
from run import DST, SRC, Bench, bench_namespace, bench_tun, run_one  # type: ignore[import-not-found]  # noqa: E402  # benchmarks/run.py, on sys.path above; not type-checked


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main() -> int:
    if os.geteuid() != 0:
        print("the demo creates network namespaces and TUN devices: run it as root", file=sys.stderr)
        return 1
    step("what this kernel offers")
    print(aiouring.probe(), flush=True)

    with bench_namespace():
        step("ping through a TUN answered by aiouring (examples/ping_responder.py)")
        responder = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "ping_responder.py"), "--address", "10.7.0.1/24"],
            stdout=subprocess.PIPE, text=True,
        )
        assert responder.stdout is not None  # stdout=PIPE
        print(responder.stdout.readline().rstrip(), flush=True)
        ping = subprocess.run(["ping", "-c", "5", "-i", "0.2", "10.7.0.5"], text=True)
        responder.terminate()
        print(responder.communicate(timeout=20)[0].rstrip(), flush=True)
        if ping.returncode != 0:
            print("ping got no answer: something is wrong", file=sys.stderr)
            return 1

        step("bounce: read a forwarded packet, write a fresh one, 64 in flight, 64-byte payloads, 2 s each")
        rows = {}
        with bench_tun() as device:
            for name in ("aiouring-protocol", "aiouring-epoll", "aiouring-tun", "drain-recipe", "pipe-transports"):
                result = run_one(name, "asyncio", "bounce", 64, 2.0, Bench(device.fileno(), SRC, DST))
                rows[name] = result["packets"] / result["seconds"] if "error" not in result else 0.0
                error = f"  (failed: {result['error'][:80]})" if "error" in result else ""
                print(f"  {name:20} {rows[name]:>10,.0f} packets/s{error}", flush=True)
        ours, drain, pipes = rows["aiouring-protocol"], rows["drain-recipe"], rows["pipe-transports"]
        if ours and drain and pipes:
            print(f"\naiouring (Transport/Protocol) moved {ours / drain:.2f}x the packets of the add_reader drain recipe "
                  f"and {ours / pipes:.1f}x those of asyncio's connect_read_pipe/connect_write_pipe on the same TUN.")
        else:
            print("\nsome contender moved no packets (above): no ratios", file=sys.stderr)
        print("Full comparison (both loops, read/write/bounce, C reference, ping RTT): sh scripts/bench.sh", flush=True)

    step("an encrypted tunnel (examples/tunnel.py, ChaCha20-Poly1305) between two namespaces")
    import importlib.util

    from support.netns import two_namespaces

    # benchmarks/tunnel.py, not examples/tunnel.py (which this directory puts first on the path)
    spec_ = importlib.util.spec_from_file_location("tunnel_benchmark", os.path.join(ROOT, "benchmarks", "tunnel.py"))
    assert spec_ is not None and spec_.loader is not None  # a .py file that exists
    bench = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(bench)
    A_INNER, A_UNDERLAY, B_INNER, B_UNDERLAY = bench.A_INNER, bench.A_UNDERLAY, bench.B_INNER, bench.B_UNDERLAY
    iperf, start_example, stop = bench.iperf, bench.start_example, bench.stop

    with two_namespaces(addresses=(A_UNDERLAY, B_UNDERLAY)) as (a, b):
        spec = {"io": "aiouring", "plain": False}
        sides = [start_example(a, A_INNER, B_UNDERLAY, spec, "asyncio"), start_example(b, B_INNER, A_UNDERLAY, spec, "asyncio")]
        try:
            print(f"namespace A: {A_INNER} (UDP {A_UNDERLAY}:51820)  <->  namespace B: {B_INNER} (UDP {B_UNDERLAY}:51820)", flush=True)
            ping = subprocess.run(["ip", "netns", "exec", a, "ping", "-c", "4", "-i", "0.2", B_INNER], text=True)
            gbits = iperf(a, b, B_INNER, 3)
            print(f"\niperf3, one TCP flow for 3 s through the encrypted tunnel: {gbits:.2f} Gbit/s", flush=True)
        finally:
            for side in sides:
                print(stop(side).strip().splitlines()[-1], flush=True)
        if ping.returncode != 0:
            print("no ping through the tunnel: something is wrong", file=sys.stderr)
            return 1
        print("Tunnel against wireguard-go, the stdlib and the bare veth: sh scripts/bench.sh tunnel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
