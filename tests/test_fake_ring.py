"""Ring logic driven through the fake kernel: scripted completions, races, errors."""
from __future__ import annotations

import asyncio
import errno
import gc
import os
import weakref

import pytest

from aiouring import ClosedError
import aiouring
from aiouring.testing import FakeRing, fake_device, fake_tun
from support.harness import RecordingProtocol
from typing import Any


class Buffer(bytearray):
    pass


async def test_completions_in_any_order_reach_their_own_callers(fake_ring: FakeRing) -> None:
    readers = [asyncio.ensure_future(fake_ring.read(5, 10)) for _ in range(3)]
    await asyncio.sleep(0)
    ops = fake_ring.pending("read")
    assert len(ops) == 3
    fake_ring.complete(ops[2], data=b"third")
    fake_ring.complete(ops[0], data=b"first")
    fake_ring.complete(ops[1], data=b"second")
    assert await asyncio.gather(*readers) == [b"first", b"second", b"third"]


async def test_a_batch_is_reaped_in_one_wakeup() -> None:
    ring = FakeRing(batch_limit=4)
    try:
        readers = [asyncio.ensure_future(ring.read(5, 10)) for _ in range(10)]
        await asyncio.sleep(0)
        for i, op in enumerate(ring.pending("read")):
            ring.complete(op, data=b"%d" % i)
        assert await asyncio.gather(*readers) == [b"%d" % i for i in range(10)]
        submitted, reaped = ring.counters
        assert reaped == 10
    finally:
        ring.close()


async def test_errno_from_the_kernel_raises_its_oserror_subclass(fake_ring: FakeRing) -> None:
    cases = {errno.EAGAIN: BlockingIOError, errno.EPIPE: BrokenPipeError, errno.ENOENT: FileNotFoundError, errno.EIO: OSError}
    for err, cls in cases.items():
        writer = asyncio.ensure_future(fake_ring.write(5, b"x"))
        await asyncio.sleep(0)
        fake_ring.fail(fake_ring.pending("write")[0], err)
        with pytest.raises(cls) as info:
            await writer
        assert info.value.errno == err


async def test_completion_that_races_the_cancel_goes_to_on_late(fake_ring: FakeRing) -> None:
    late: list[Any] = []
    fake_ring.cancel_policy = "ignore"  # the kernel answers -EALREADY: too late to cancel
    buf = Buffer(8)
    alive = weakref.ref(buf)
    reader = asyncio.ensure_future(fake_ring.readinto(5, buf, on_late=late.append))
    del buf
    await asyncio.sleep(0)
    (op,) = fake_ring.pending("readinto") or fake_ring.pending("read")
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await asyncio.sleep(0)
    gc.collect()
    assert alive() is not None  # the kernel still owns it
    fake_ring.complete(op, data=b"raced")
    await asyncio.sleep(0.01)
    assert late == [5]
    gc.collect()
    assert alive() is None


async def test_late_read_without_on_late_is_reported_not_dropped(fake_ring: FakeRing) -> None:
    reported = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx["message"]))
    fake_ring.cancel_policy = "ignore"
    reader = asyncio.ensure_future(fake_ring.read(5, 10))
    await asyncio.sleep(0)
    (op,) = fake_ring.pending("read")
    reader.cancel()
    await asyncio.sleep(0)
    fake_ring.complete(op, data=b"lost?")
    await asyncio.sleep(0.01)
    assert any("read 5 bytes after its task was cancelled" in m for m in reported)


async def test_cancel_that_wins_raises_cancelled_and_frees_the_op(fake_ring: FakeRing) -> None:
    reader = asyncio.ensure_future(fake_ring.read(5, 10))
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await asyncio.sleep(0.01)
    assert fake_ring.in_flight == 0
    assert fake_ring.pending() == []


async def test_multishot_reader_rearms_after_enobufs_without_losing_packets() -> None:
    ring = FakeRing(buffers_per_group=4)
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
        device = ring.add_device(fd)
        got: list[bytes] = []
        stopped: list[BaseException | None] = []
        reader = ring.packet_source(fd, 2048, got.extend, stopped.append)
        assert reader.mode == "multishot"
        await asyncio.sleep(0)
        device.inject(*[b"p%02d" % i for i in range(20)])  # more than the 4 buffers
        for _ in range(100):
            await asyncio.sleep(0)
            if len(got) == 20:
                break
        assert got == [b"p%02d" % i for i in range(20)]
        reader.cancel()
        await asyncio.sleep(0.01)
        assert stopped == [None]
        os.close(fd)
    finally:
        ring.close()


async def test_single_mode_reader_reads_one_at_a_time() -> None:
    ring = FakeRing(read_mode="single")
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
        device = ring.add_device(fd)
        got: list[bytes] = []
        stopped: list[BaseException | None] = []
        reader = ring.packet_source(fd, 2048, got.extend, stopped.append)
        assert reader.mode == "single"
        await asyncio.sleep(0)
        assert len(ring.pending("read", fd)) == 1
        device.inject(b"one", b"two", b"three")
        for _ in range(50):
            await asyncio.sleep(0)
        assert got == [b"one", b"two", b"three"]
        reader.cancel()
        await asyncio.sleep(0.01)
        assert stopped == [None]
        os.close(fd)
    finally:
        ring.close()


async def test_read_errors_stop_the_reader_and_eagain_rearms() -> None:
    ring = FakeRing()
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
        ring.add_device(fd)
        stopped: list[BaseException | None] = []
        ring.packet_source(fd, 2048, lambda p: None, stopped.append)
        await asyncio.sleep(0)
        ring.fail(ring.pending("read_multishot")[0], errno.EAGAIN)
        await asyncio.sleep(0.01)
        assert stopped == [] and len(ring.pending("read_multishot")) == 1  # re-armed
        ring.fail(ring.pending("read_multishot")[0], errno.EBADFD)
        await asyncio.sleep(0.01)
        assert len(stopped) == 1 and isinstance(stopped[0], OSError) and stopped[0].errno == errno.EBADFD
        os.close(fd)
    finally:
        ring.close()


async def test_transport_read_error_is_fatal_with_connection_lost_exc() -> None:
    pair = await fake_tun()
    protocol = pair.tun._protocol
    pair.ring.fail(pair.ring.pending("read_multishot")[0], errno.EIO)
    await asyncio.wait_for(protocol.closed_fut, 5)
    assert isinstance(protocol.lost_exc, OSError) and protocol.lost_exc.errno == errno.EIO
    with pytest.raises(OSError):
        await pair.tun.read()
    pair.tun.close()


async def test_ring_closed_under_a_transport_loses_the_connection() -> None:
    pair = await fake_tun()
    pair.ring.close()
    await asyncio.wait_for(pair.tun._protocol.closed_fut, 5)
    assert isinstance(pair.tun._protocol.lost_exc, ClosedError)
    pair.tun.close()


async def test_ops_after_close_raise_closed_error(fake_ring: FakeRing) -> None:
    fake_ring.close()
    with pytest.raises(ClosedError):
        await fake_ring.nop()
    with pytest.raises(ClosedError):
        fake_ring.packet_sink(5, lambda exc: None, lambda: None)
    fake_ring.close()


async def test_one_flush_per_iteration_submits_every_queued_op(fake_ring: FakeRing) -> None:
    calls_before = fake_ring.kernel.submit_calls
    writers = [asyncio.ensure_future(fake_ring.nop()) for _ in range(50)]
    await asyncio.gather(*writers)
    assert fake_ring.kernel.submit_calls - calls_before == 1


async def test_paused_transport_keeps_packets_delivered_during_the_cancel() -> None:
    """Packets the kernel completed between pause_reading and the cancel's
    effect are handed over on resume, in order."""
    ring = FakeRing()
    device, _ = fake_device(ring)
    transport, protocol = await aiouring.create_tun_connection(RecordingProtocol, device=device, ring=ring)
    (op,) = ring.pending("read_multishot")
    ring.cancel_policy = "ignore"
    transport.pause_reading()
    ring.submit_now()
    ring.complete(op, data=b"\x45in flight 1", more=True)
    ring.complete(op, data=b"\x45in flight 2")
    await asyncio.sleep(0.01)
    assert protocol.packets == []
    ring.cancel_policy = "cancel"
    transport.resume_reading()
    await protocol.wait_packets(2)
    assert protocol.packets == [b"\x45in flight 1", b"\x45in flight 2"]
    transport.close()
    await protocol.lost
    ring.close()
