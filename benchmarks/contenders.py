"""The Python contenders of the TUN benchmarks, each run in its own process.

    python contenders.py NAME LOOP MODE SECONDS FD PACKET_HEX

runs contender NAME on event loop LOOP (asyncio or uvloop) against the TUN
already open as FD and prints one JSON line:
{"packets": n, "seconds": wall, "cpu": cpu seconds of this process}, all
three measured inside the window only, or {"skipped": reason} for a
contender this build of aiouring cannot run.  The Transport contenders add
the kernel calls they made inside the window (``reads``, ``writes``,
``packets_received``, ``packets_sent`` from ``get_extra_info("stats")``, and
``reads_per_packet``/``writes_per_packet``), and ``kernel``: the device's
own rx/tx packet counts (``TunDevice.kernel_counters()``) over the whole run,
set-up included, against the packets the transport moved in the same span.

The window: everything a contender needs (imports, the ring, the transport,
the first 64 writes of a bounce) is set up before it.  It opens when the
first packet is read back (bounce, read) or the first one is written
(write), and closes SECONDS later; packets and CPU time
(``time.process_time``, all threads) are the differences between the two
edges, so set-up and teardown never count.

"aiouring-offload" is the Transport with TUN offloads (``offload=True``) on
a device opened with ``IFF_VNET_HDR`` and TSO/USO on (run.py hands it its
own device and its own addresses): the equal-size UDP packets of one flow
written in one loop iteration leave as one USO super-packet, the kernel
forwards it unsegmented, and the read brings it back whole, split by the
library; ``count`` is in packets (segments), as the protocol sees them.

MODE "bounce": keep 64 packets in flight; every packet read back is answered
with one fresh write of PACKET (the kernel forwards it back out the TUN).
"read": count packets read (a sender elsewhere fills the TUN).  "write":
write PACKET as fast as the contender allows (with at most 64 not yet
accepted, for those that queue).
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any, Awaitable, Callable

IN_FLIGHT = 64
FIRST_PACKET_TIMEOUT = 10.0  # seconds to wait for the window to open before calling the run failed


class Skip(Exception):
    """This contender cannot run on this build (reported, not failed)."""


class Window:
    """The measured window.  Contenders add to ``count`` as they go and call
    ``open()`` on their first packet (cheap to call again); the window closes
    itself ``seconds`` later through the loop, and ``closed`` is set."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.count = 0
        self.is_open = False
        self.t0 = self.cpu0 = 0.0
        self.result: dict | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._count0 = 0
        self.stats: Callable[[], Any] | None = None  # a transport's get_extra_info("stats"), snapshot at the edges
        self._stats0: Any = None

    def open(self) -> None:
        if self.is_open or self.result is not None:
            return
        self.is_open = True
        self._count0 = self.count
        self.t0, self.cpu0 = time.monotonic(), time.process_time()
        self._stats0 = self.stats() if self.stats is not None else None
        asyncio.get_running_loop().call_later(self.seconds, self.close)

    def close(self) -> None:
        if not self.is_open:
            return
        self.is_open = False
        self.result = {"packets": self.count - self._count0, "seconds": time.monotonic() - self.t0, "cpu": time.process_time() - self.cpu0}
        if self._stats0 is not None and self.stats is not None:
            self.result.update(calls_per_packet(self._stats0, self.stats()))
        if not self.closed.done():
            self.closed.set_result(None)

    async def wait(self) -> None:
        """Until the window has closed; fails if it never opened."""
        deadline = time.monotonic() + FIRST_PACKET_TIMEOUT
        while not self.is_open and self.result is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no first packet within {FIRST_PACKET_TIMEOUT:g} s")
            await asyncio.sleep(0.01)
        await self.closed


def calls_per_packet(before: Any, after: Any) -> dict:
    """Kernel reads and writes per packet between two ``TransportStats``."""
    d = {k: getattr(after, k) - getattr(before, k) for k in ("reads", "writes", "packets_received", "packets_sent")}
    d["reads_per_packet"] = d["reads"] / d["packets_received"] if d["packets_received"] else None
    d["writes_per_packet"] = d["writes"] / d["packets_sent"] if d["packets_sent"] else None
    return d


async def kernel_span(transport: Any) -> tuple[Any, Any] | str:
    """The device's kernel counters and the transport's stats, taken
    together, or why the counters could not be read (a side measurement:
    it never fails the run)."""
    try:
        counters = await transport.get_extra_info("device").kernel_counters()
    except OSError as exc:
        return f"kernel_counters: {exc}"
    return counters, transport.get_extra_info("stats")


def kernel_per_packet(start: tuple[Any, Any] | str, end: tuple[Any, Any] | str) -> dict:
    """What the kernel counted on the device against what the transport
    moved: rx is what the application wrote, tx what it read.  Offloads make
    one kernel packet carry many of the transport's."""
    if isinstance(start, str) or isinstance(end, str):
        return {"error": start if isinstance(start, str) else end}
    (k0, s0), (k1, s1) = start, end
    rx, tx = k1.rx_packets - k0.rx_packets, k1.tx_packets - k0.tx_packets
    sent, received = s1.packets_sent - s0.packets_sent, s1.packets_received - s0.packets_received
    return {
        "rx_packets": rx, "tx_packets": tx, "packets_sent": sent, "packets_received": received,
        "rx_per_packet_sent": rx / sent if sent else None, "tx_per_packet_received": tx / received if received else None,
    }


# -- aiouring: Transport/Protocol -----------------------------------------------


async def aiouring_protocol(fd: int, mode: str, packet: bytes, w: Window, backend: str = "auto", offload: Any = "auto") -> dict:
    import aiouring

    class Bounce(aiouring.TunProtocol):
        paused = False

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            # here, not after create_tun_connection returns: in read mode a packet can open the window first
            w.stats = lambda: transport.get_extra_info("stats")

        def packets_received(self, packets: list[bytes]) -> None:
            w.open()
            w.count += len(packets)
            if mode == "bounce":
                write = self.transport.write
                for _ in packets:
                    write(packet)

        def pause_writing(self) -> None:
            self.paused = True

        def resume_writing(self) -> None:
            if mode == "write":
                self.fill()

        def fill(self) -> None:
            self.paused = False
            w.open()
            while not self.paused and not self.transport.is_closing() and w.result is None:
                self.transport.write(packet)
                w.count += 1

    transport, protocol = await aiouring.create_tun_connection(Bounce, fd=fd, backend=backend, offload=offload)
    if offload is True and "coalesce-udp" not in transport.get_extra_info("offload"):
        transport.abort()
        raise RuntimeError(f"offload=True but UDP writes are not coalesced: {sorted(transport.get_extra_info('offload'))}")
    start = await kernel_span(transport)
    if mode == "bounce":
        for _ in range(IN_FLIGHT):  # primed: the window opens on the first one read back
            transport.write(packet)
    elif mode == "write":
        transport.set_write_buffer_limits(high=IN_FLIGHT * (len(packet) + 8))
        protocol.fill()
    try:
        await w.wait()
        return {"kernel": kernel_per_packet(start, await kernel_span(transport))}
    finally:
        transport.abort()


async def aiouring_epoll(fd: int, mode: str, packet: bytes, w: Window) -> dict:
    return await aiouring_protocol(fd, mode, packet, w, backend="epoll")


async def aiouring_offload(fd: int, mode: str, packet: bytes, w: Window) -> dict:
    return await aiouring_protocol(fd, mode, packet, w, offload=True)


# -- aiouring: awaitable Tun ----------------------------------------------------


async def aiouring_tun(fd: int, mode: str, packet: bytes, w: Window) -> None:
    import aiouring

    tun = await aiouring.Tun.from_fd(fd)

    async def body() -> None:
        if mode == "bounce":
            for _ in range(IN_FLIGHT):
                await tun.write(packet)
            await tun.read()
            await tun.write(packet)
            w.open()
            while w.result is None:
                await tun.read()
                await tun.write(packet)
                w.count += 1
                if not w.count & 1023:
                    await asyncio.sleep(0)  # let the window's timer run even if reads never wait
        elif mode == "read":
            await tun.read()
            w.open()
            while w.result is None:
                await tun.read()
                w.count += 1
                if not w.count & 1023:
                    await asyncio.sleep(0)
        else:
            w.open()
            while w.result is None:
                await tun.write(packet)
                w.count += 1
                if not w.count & 1023:
                    await asyncio.sleep(0)

    task = asyncio.ensure_future(body())
    try:
        await w.wait()
    finally:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, aiouring.ClosedError):
            pass
        tun.close()


async def aiouring_tun_batch(fd: int, mode: str, packet: bytes, w: Window) -> None:
    """The awaitable Tun moving whole batches: ``read_batch`` / ``write_batch``
    (skipped on builds whose Tun does not have them yet)."""
    import aiouring

    if not (hasattr(aiouring.Tun, "read_batch") and hasattr(aiouring.Tun, "write_batch")):
        raise Skip("aiouring.Tun has no read_batch/write_batch in this build")
    tun = await aiouring.Tun.from_fd(fd)

    async def body() -> None:
        if mode == "bounce":
            await tun.write_batch([packet] * IN_FLIGHT)
            first = await tun.read_batch(IN_FLIGHT)
            w.open()
            await tun.write_batch([packet] * len(first))
            while w.result is None:
                batch = await tun.read_batch(IN_FLIGHT)
                await tun.write_batch([packet] * len(batch))
                w.count += len(batch)
                await asyncio.sleep(0)
        elif mode == "read":
            await tun.read_batch(IN_FLIGHT)
            w.open()
            while w.result is None:
                w.count += len(await tun.read_batch(IN_FLIGHT))
        else:
            batch = [packet] * IN_FLIGHT
            w.open()
            while w.result is None:
                await tun.write_batch(batch)
                w.count += len(batch)
                await asyncio.sleep(0)

    task = asyncio.ensure_future(body())
    try:
        await w.wait()
    finally:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, aiouring.ClosedError):
            pass
        tun.close()


# -- stdlib: connect_read_pipe / connect_write_pipe -----------------------------


async def pipe_transports(fd: int, mode: str, packet: bytes, w: Window) -> None:
    loop = asyncio.get_running_loop()
    rfile = os.fdopen(fd, "rb", buffering=0, closefd=False)
    wfile = os.fdopen(os.dup(fd), "wb", buffering=0)
    wt, _ = await loop.connect_write_pipe(asyncio.Protocol, wfile)

    class Reader(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            w.open()
            w.count += 1
            if mode == "bounce":
                wt.write(packet)

    rt, _ = await loop.connect_read_pipe(Reader, rfile)
    try:
        if mode == "bounce":
            for _ in range(IN_FLIGHT):
                wt.write(packet)
        elif mode == "write":
            w.open()
            while w.result is None:
                for _ in range(256):
                    wt.write(packet)
                w.count += 256
                await asyncio.sleep(0)
        await w.wait()
    finally:
        rt.close()
        wt.close()
        await asyncio.sleep(0)


# -- stdlib: add_reader + os.read/os.write (bounded drain) ----------------------


async def drain_recipe(fd: int, mode: str, packet: bytes, w: Window) -> None:
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    read, write = os.read, os.write

    def on_readable() -> None:
        n = 0
        try:
            for _ in range(64):
                read(fd, 65536)
                n += 1
                if mode == "bounce":
                    write(fd, packet)
        except BlockingIOError:
            pass
        if n:
            w.open()
            w.count += n

    if mode == "bounce":
        for _ in range(IN_FLIGHT):
            write(fd, packet)
    if mode == "write":
        w.open()
        while w.result is None:
            for _ in range(256):
                write(fd, packet)
            w.count += 256
            await asyncio.sleep(0)
        return
    loop.add_reader(fd, on_readable)
    try:
        await w.wait()
    finally:
        loop.remove_reader(fd)


CONTENDERS: dict[str, Callable[..., Awaitable[None]]] = {
    "aiouring-protocol": aiouring_protocol,
    "aiouring-tun": aiouring_tun,
    "aiouring-tun-batch": aiouring_tun_batch,
    "aiouring-epoll": aiouring_epoll,
    "aiouring-offload": aiouring_offload,
    "pipe-transports": pipe_transports,
    "drain-recipe": drain_recipe,
}


def main() -> None:
    name, loop_name, mode, seconds, fd, packet_hex = sys.argv[1:7]
    contender = CONTENDERS[name]
    packet = bytes.fromhex(packet_hex)
    if name.startswith("aiouring"):
        import aiouring  # noqa: F401  (imported before the window, not inside it)

    async def measured() -> dict:
        w = Window(float(seconds))
        try:
            extra = await contender(int(fd), mode, packet, w)
        except Skip as exc:
            return {"skipped": str(exc)}
        w.close()  # contenders that return on their own (drain's write mode) close it here
        assert w.result is not None
        return {**w.result, **(extra or {})}

    if loop_name == "uvloop":
        import uvloop

        result = uvloop.run(measured())
    else:
        result = asyncio.run(measured())
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
