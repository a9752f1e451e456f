#!/usr/bin/env python3
"""Answer pings on every queue of a multi-queue TUN, one event loop per core.

    python examples/multiqueue.py --address 10.9.0.1/24            # one queue per core
    ping 10.9.0.5; ping 10.9.0.6; ...                             # answered through the TUN

One interface opened with ``IFF_MULTI_QUEUE`` has several fds, its queues
(``TunDevice.open_queues``).  The kernel spreads the packets it sends into
the interface across the queues by flow hash: every packet between one pair
of addresses goes to the same queue, so it takes several flows to use them
all.  Each queue gets a thread of its own, pinned to a core, running an
event loop of its own (and so a ring of its own) that reads echo requests
and writes the replies on that queue.  A reply may leave by any queue; using
the one the request came in on also teaches the kernel where the flow lives.

(Python's GIL lets only one thread run Python code at a time, so this shows
the structure, not a speed-up; the kernel's share of the work does run on
every core.)

Ctrl-C or SIGTERM stops it; it prints what each queue answered.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from typing import Any, Callable, Coroutine

import aiouring
from packets import echo_reply


class Responder(aiouring.TunProtocol):
    def __init__(self) -> None:
        self.answered = 0
        self.transport: aiouring.TunTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: aiouring.TunTransport) -> None:  # type: ignore[override]  # asyncio types it BaseTransport; a TUN protocol is given a TunTransport
        self.transport = transport

    def packets_received(self, packets: list[bytes]) -> None:
        for packet in packets:
            reply = echo_reply(packet)
            if reply is not None:
                self.transport.write(reply)  # type: ignore[union-attr]  # set by connection_made, which comes first
                self.answered += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)


class Worker:
    """One queue, one thread, one event loop."""

    def __init__(self, index: int, queue: aiouring.TunDevice, backend: aiouring.Backend, core: int | None) -> None:
        self.index = index
        self.queue = queue
        self.backend = backend
        self.core = core
        self.answered = 0
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Future[None] | None = None
        self.thread = threading.Thread(target=self.run, name=f"queue-{index}")

    def run(self) -> None:
        if self.core is not None:
            os.sched_setaffinity(0, {self.core})  # 0: this thread
        try:
            RUN(self.serve())
        except BaseException as exc:
            self.error = exc
        finally:
            self.ready.set()

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = self.loop.create_future()
        transport, responder = await aiouring.create_tun_connection(Responder, device=self.queue, backend=self.backend)
        self.ready.set()
        try:
            await self.stop
        finally:
            transport.close()
            await responder.closed
            self.answered = responder.answered

    def request_stop(self) -> None:
        loop, stop = self.loop, self.stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: None if stop.done() else stop.set_result(None))


RUN: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run


def main(argv: list[str] | None = None) -> int:
    global RUN
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default="10.9.0.1/24", help="the TUN's own address and the subnet to answer for")
    parser.add_argument("--name", default=None, help="interface name (default: the kernel picks tunN)")
    cores = sorted(os.sched_getaffinity(0))
    parser.add_argument("--queues", type=int, default=len(cores), help="queues, threads and loops (default: one per core)")
    parser.add_argument("--backend", default="auto", choices=aiouring.BACKENDS)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        RUN = uvloop.run

    # Block the stop signals before any thread starts (threads inherit the
    # mask), so that they reach the main thread's sigwait and no other.
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    queues = aiouring.TunDevice.open_queues(args.name, args.queues)
    try:
        RUN(queues[0].configure(addresses=[args.address]))  # the interface is shared: configure it once
    except BaseException:
        for queue in queues:
            queue.close()
        raise
    workers = [Worker(i, queue, args.backend, cores[i % len(cores)]) for i, queue in enumerate(queues)]
    for worker in workers:
        worker.thread.start()
    for worker in workers:
        worker.ready.wait()
    failed = [w for w in workers if w.error is not None]
    if not failed:
        print(f"ready: answering pings for {args.address} on {queues[0].name}, {len(queues)} queues, "
              f"one {args.loop} loop each (backend={args.backend})", flush=True)
        if args.duration is None:
            signal.sigwait(stop_signals)
        else:
            signal.sigtimedwait(stop_signals, args.duration)
    for worker in workers:
        worker.request_stop()
    for worker in workers:
        worker.thread.join()
        if worker.error is None:
            print(f"queue {worker.index} answered {worker.answered} echo requests", flush=True)
        else:
            print(f"queue {worker.index} failed: {worker.error!r}", file=sys.stderr, flush=True)
    for queue in queues:
        queue.close()  # those whose worker never took them over
    total = sum(w.answered for w in workers)
    print(f"answered {total} echo requests on {sum(1 for w in workers if w.answered)} of {len(workers)} queues", flush=True)
    return 1 if any(w.error is not None for w in workers) else 0


if __name__ == "__main__":
    sys.exit(main())
