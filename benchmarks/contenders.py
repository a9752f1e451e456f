"""The Python contenders of the TUN benchmarks, each run in its own process.

    python contenders.py NAME LOOP MODE SECONDS FD PACKET_HEX

runs contender NAME on event loop LOOP (asyncio or uvloop) against the TUN
already open as FD, for SECONDS, and prints one JSON line:
{"packets": n, "seconds": wall, "cpu": cpu seconds of this process}.

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
import resource
import sys
import time
from typing import Any, Awaitable, Callable

IN_FLIGHT = 64


class Stop(Exception):
    pass


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# -- aiouring: Transport/Protocol -----------------------------------------------


async def aiouring_protocol(fd: int, mode: str, packet: bytes, seconds: float, backend: str = "auto") -> int:
    import aiouring

    asyncio.get_running_loop()

    class Bounce(aiouring.TunProtocol):
        count = 0

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            if mode != "read":
                for _ in range(IN_FLIGHT):
                    transport.write(packet)

        def packets_received(self, packets: list[bytes]) -> None:
            self.count += len(packets)
            if mode == "bounce":
                write = self.transport.write
                for _ in packets:
                    write(packet)

        def resume_writing(self) -> None:
            if mode == "write":
                self._fill()

        def pause_writing(self) -> None:
            self.paused = True

        paused = False

        def _fill(self) -> None:
            self.paused = False
            while not self.paused and not self.transport.is_closing():
                self.transport.write(packet)
                self.count += 1

    transport, protocol = await aiouring.create_tun_connection(Bounce, fd=fd, backend=backend)
    if mode == "write":
        transport.set_write_buffer_limits(high=IN_FLIGHT * (len(packet) + 8))
        protocol._fill()
    await asyncio.sleep(seconds)
    count = protocol.count
    transport.abort()
    return count


async def aiouring_epoll(fd: int, mode: str, packet: bytes, seconds: float) -> int:
    return await aiouring_protocol(fd, mode, packet, seconds, backend="epoll")


# -- aiouring: awaitable Tun ----------------------------------------------------


async def aiouring_tun(fd: int, mode: str, packet: bytes, seconds: float) -> int:
    import aiouring

    tun = await aiouring.Tun.from_fd(fd)
    count = 0
    deadline = time.monotonic() + seconds

    async def body() -> None:
        nonlocal count
        if mode == "bounce":
            for _ in range(IN_FLIGHT):
                await tun.write(packet)
            while True:
                await tun.read()
                await tun.write(packet)
                count += 1
                if not count & 1023 and time.monotonic() >= deadline:
                    return
        elif mode == "read":
            while True:
                await tun.read()
                count += 1
        else:
            while True:
                await tun.write(packet)
                count += 1
                if not count & 1023:
                    await asyncio.sleep(0)
                    if time.monotonic() >= deadline:
                        return

    try:
        await asyncio.wait_for(body(), seconds + 1 if mode != "read" else seconds)
    except asyncio.TimeoutError:
        pass
    tun.close()
    return count


# -- stdlib: connect_read_pipe / connect_write_pipe -----------------------------


async def pipe_transports(fd: int, mode: str, packet: bytes, seconds: float) -> int:
    loop = asyncio.get_running_loop()
    rfile = os.fdopen(fd, "rb", buffering=0, closefd=False)
    wfile = os.fdopen(os.dup(fd), "wb", buffering=0)
    counter = [0]

    class Writer(asyncio.Protocol):
        pass

    wt, _ = await loop.connect_write_pipe(Writer, wfile)

    class Reader(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            counter[0] += 1
            if mode == "bounce":
                wt.write(packet)

    rt, _ = await loop.connect_read_pipe(Reader, rfile)
    if mode == "bounce":
        for _ in range(IN_FLIGHT):
            wt.write(packet)
    elif mode == "write":
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for _ in range(256):
                wt.write(packet)
            counter[0] += 256
            await asyncio.sleep(0)
    await asyncio.sleep(seconds if mode != "write" else 0)
    rt.close()
    wt.close()
    await asyncio.sleep(0)
    return counter[0]


# -- stdlib: add_reader + os.read/os.write (bounded drain) ----------------------


async def drain_recipe(fd: int, mode: str, packet: bytes, seconds: float) -> int:
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    counter = [0]
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
        counter[0] += n

    if mode == "bounce":
        for _ in range(IN_FLIGHT):
            write(fd, packet)
    if mode == "write":
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for _ in range(256):
                write(fd, packet)
            counter[0] += 256
            await asyncio.sleep(0)
        return counter[0]
    loop.add_reader(fd, on_readable)
    await asyncio.sleep(seconds)
    loop.remove_reader(fd)
    return counter[0]


CONTENDERS: dict[str, Callable[..., Awaitable[int]]] = {
    "aiouring-protocol": aiouring_protocol,
    "aiouring-tun": aiouring_tun,
    "aiouring-epoll": aiouring_epoll,
    "pipe-transports": pipe_transports,
    "drain-recipe": drain_recipe,
}


def main() -> None:
    name, loop_name, mode, seconds, fd, packet_hex = sys.argv[1:7]
    contender = CONTENDERS[name]
    packet = bytes.fromhex(packet_hex)

    async def timed() -> dict:
        start, cpu0 = time.monotonic(), cpu_seconds()
        packets = await contender(int(fd), mode, packet, float(seconds))
        return {"packets": packets, "seconds": time.monotonic() - start, "cpu": cpu_seconds() - cpu0}

    if loop_name == "uvloop":
        import uvloop

        result = uvloop.run(timed())
    else:
        result = asyncio.run(timed())
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
