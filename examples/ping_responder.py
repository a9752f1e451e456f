#!/usr/bin/env python3
"""Answer ICMP echo requests for every address behind a TUN device.

    python examples/ping_responder.py --address 10.7.0.1/24
    ping 10.7.0.5          # answered by this program, through the TUN

The kernel routes the /24 to the TUN; each echo request read from it is
answered with an echo reply written back into it.  Built on the
Transport/Protocol API (the fast path).  Ctrl-C or SIGTERM stops it and
prints its counters.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import aiouring
from packets import echo_reply


class PingResponder(aiouring.TunProtocol):
    def __init__(self) -> None:
        self.answered = 0
        self.ignored = 0
        self.transport: aiouring.TunTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: aiouring.TunTransport) -> None:  # type: ignore[override]  # asyncio types it BaseTransport; a TUN protocol is given a TunTransport
        self.transport = transport

    def packets_received(self, packets: list[bytes]) -> None:
        for packet in packets:
            reply = echo_reply(packet)
            if reply is None:
                self.ignored += 1
            else:
                self.transport.write(reply)  # type: ignore[union-attr]  # set by connection_made, which comes first
                self.answered += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)


async def serve(address: str, name: str | None, backend: aiouring.Backend, duration: float | None) -> PingResponder:
    transport, responder = await aiouring.create_tun_connection(
        PingResponder, name, addresses=[address], backend=backend
    )
    print(
        f"ready: answering pings for {address} on {transport.get_extra_info('name')} "
        f"(backend={transport.get_extra_info('backend')}, reads={transport.get_extra_info('read_mode')})",
        flush=True,
    )
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: None if stop.done() else stop.set_result(None))
    try:
        await asyncio.wait_for(asyncio.shield(stop), duration)
    except asyncio.TimeoutError:
        pass
    transport.close()
    await responder.closed
    print(f"answered {responder.answered} echo requests, ignored {responder.ignored} other packets", flush=True)
    return responder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default="10.7.0.1/24", help="the TUN's own address and the subnet to answer for")
    parser.add_argument("--name", default=None, help="interface name (default: the kernel picks tunN)")
    parser.add_argument("--backend", default="auto", choices=aiouring.BACKENDS)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    args = parser.parse_args(argv)
    coro = serve(args.address, args.name, args.backend, args.duration)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
