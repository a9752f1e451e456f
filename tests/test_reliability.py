"""Faults, teardown and leaks, on the real kernel where it can produce them."""
from __future__ import annotations

import asyncio
import errno
import gc
import os
import resource
import subprocess
import sys
import textwrap

import pytest

import aiouring
from aiouring import Ring
from aiouring.testing import fake_tun
from support.harness import RecordingProtocol
from support.netns import interface_names, open_fds
from support.wait import wait_for_condition
from aiouring import Backend

HERE = os.path.dirname(__file__)


async def test_overflowing_completion_queue_loses_nothing() -> None:
    """1000 ops through a 4-entry SQ and an 8-entry CQ: the SQ fills (submitted
    early), the CQ overflows (the kernel keeps the CQEs), every op completes."""
    async with Ring(4, cq_entries=8) as ring:
        results = await asyncio.gather(*[ring.nop() for _ in range(1000)])
        assert results == [0] * 1000
        assert ring.overflows > 0
        submitted, reaped = ring.counters
        assert submitted == reaped == 1000


async def test_writing_to_a_tun_whose_link_is_down_reports_eio(backend: Backend, netns: str) -> None:
    transport, protocol = await aiouring.create_tun_connection(RecordingProtocol, up=False, backend=backend)
    transport.write(b"\x45" + bytes(27))
    for _ in range(200):
        if protocol.errors:
            break
        await asyncio.sleep(0.001)
    assert [e.errno for e in protocol.errors] == [errno.EIO]
    assert not transport.is_closing()
    transport.close()
    await protocol.lost


async def test_awaitable_write_to_a_down_link_raises_eio_on_the_next_write(backend: Backend, netns: str) -> None:
    tun = await aiouring.open_tun(up=False, backend=backend)
    await tun.write(b"\x45" + bytes(27))
    await wait_for_condition(lambda: tun._protocol.write_errors)
    with pytest.raises(OSError) as info:
        await tun.write(b"\x45" + bytes(27))
    assert info.value.errno == errno.EIO
    await tun.aclose()


@pytest.mark.parametrize("err", [errno.ECANCELED, errno.EIO, errno.EAGAIN])
async def test_write_failures_from_the_kernel_go_to_error_received(err: int) -> None:
    pair = await fake_tun()
    pair.peer.fail_writes(err)
    await pair.tun.write(b"\x45one")
    await wait_for_condition(lambda: pair.tun._protocol.write_errors)
    with pytest.raises(OSError) as info:
        await pair.tun.write(b"\x45two")  # raises the refusal of "one", and writes "two"
    assert info.value.errno == err and info.value.packet == b"\x45one"  # type: ignore[attr-defined]  # the refused packet aiouring attaches to the OSError
    await pair.tun.write(b"\x45three")
    assert [await pair.peer.receive(), await pair.peer.receive()] == [b"\x45two", b"\x45three"]
    await pair.tun.aclose()


async def test_thousand_open_close_cycles_leak_no_fd_or_memory(backend: Backend, netns: str) -> None:
    async def cycle() -> None:
        tun = await aiouring.open_tun(backend=backend, up=False)  # no netlink round trip: 1000 cycles stay quick
        for _ in range(3):
            tun.write(b"\x45" + bytes(27))  # queued writes (the link is down: they fail with EIO)
        reader = asyncio.ensure_future(tun.read())  # an armed read, and a reader waiting
        await asyncio.sleep(0)
        tun.close()
        with pytest.raises(aiouring.ClosedError):
            await reader
        await tun.wait_closed()

    ring = aiouring.get_ring(backend)  # held: every cycle runs on this default ring
    for _ in range(50):  # warm up caches and pyroute2's imports
        await cycle()
    gc.collect()
    fds_before = open_fds()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(1000):
        await cycle()
    gc.collect()
    assert open_fds() == fds_before
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kib < 8 * 1024, f"peak RSS grew by {grown_kib} KiB over 1000 cycles"
    assert ring.in_flight == 0
    assert [n for n in interface_names() if n.startswith("tun")] == []


LOOP_CLOSED_WITH_DEVICE_OPEN = textwrap.dedent(
    """
    import asyncio, sys, warnings
    import aiouring
    warnings.simplefilter("default")
    kept = []
    async def main():
        tun = await aiouring.open_tun(addresses=["10.12.0.1/24"], backend=sys.argv[2])
        await tun.write(bytes([0x45]) + bytes(27))
        kept.append(tun)  # never closed
        asyncio.ensure_future(tun.read())  # a reader still waiting
    if sys.argv[1] == "uvloop":
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
    kept.clear()
    print("exited cleanly")
    """
)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_closing_the_loop_with_a_device_open_neither_crashes_nor_hangs(loop: str, backend: Backend, netns: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LOOP_CLOSED_WITH_DEVICE_OPEN, loop, backend],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "exited cleanly" in proc.stdout
    assert "ResourceWarning" in proc.stderr  # the leak is reported, not hidden


async def test_a_tun_dropped_without_close_warns(netns: str) -> None:
    tun = await aiouring.open_tun()
    name = tun.name
    with pytest.warns(ResourceWarning, match=f"unclosed <Tun {name}"):
        del tun
        gc.collect()
    await asyncio.sleep(0.05)
    assert name not in interface_names()  # aborted: the device went away
