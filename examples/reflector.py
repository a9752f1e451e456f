#!/usr/bin/env python3
"""Reflect every IPv4 packet that reaches a TUN back to its sender.

    python examples/reflector.py --address 10.8.0.1/24
    # a UDP datagram sent to 10.8.0.9:7 comes back from 10.8.0.9:7

Swapping the source and destination addresses (and UDP/TCP ports) keeps every
checksum valid, so the reflected packet needs no other change.  Built on the
awaitable API: ``async for packet in tun`` and ``await tun.write()``.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import aiouring

PORTS = (6, 17)  # TCP and UDP carry ports in their first four bytes


def reflect(packet: bytes) -> bytes | None:
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    out = bytearray(packet)
    out[12:16], out[16:20] = packet[16:20], packet[12:16]
    if packet[9] in PORTS and len(packet) >= ihl + 4:
        out[ihl : ihl + 2], out[ihl + 2 : ihl + 4] = packet[ihl + 2 : ihl + 4], packet[ihl : ihl + 2]
    return bytes(out)


async def run(address: str, backend: aiouring.Backend, duration: float | None) -> int:
    reflected = 0
    async with await aiouring.open_tun(addresses=[address], backend=backend) as tun:
        print(f"ready: reflecting packets for {address} on {tun.name} (backend={tun.get_extra_info('backend')})", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, tun.close)
        if duration is not None:
            loop.call_later(duration, tun.close)
        async for packet in tun:
            reply = reflect(packet)
            if reply is not None:
                await tun.write(reply)
                reflected += 1
    print(f"reflected {reflected} packets", flush=True)
    return reflected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default="10.8.0.1/24")
    parser.add_argument("--backend", default="auto", choices=aiouring.BACKENDS)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--duration", type=float, default=None)
    args = parser.parse_args(argv)
    coro = run(args.address, args.backend, args.duration)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
