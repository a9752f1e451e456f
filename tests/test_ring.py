"""Ring against the real kernel io_uring: pipes, socketpairs, eventfd, files, TUN."""
from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket
import tempfile
import time
import weakref

import pytest

import aiouring
from aiouring import ClosedError, Ring
from support.netns import open_fds
from support.wait import wait_for_condition
from typing import Iterator
from aiouring.ring import SetupMode


class Buffer(bytearray):
    """A bytearray that can be watched with a weakref."""


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


async def test_nop_completes_with_zero() -> None:
    async with Ring() as ring:
        assert await ring.nop() == 0


async def test_pipe_read_waits_for_data_then_returns_it(pipe: tuple[int, int]) -> None:
    r, w = pipe
    async with Ring() as ring:
        reader = asyncio.ensure_future(ring.read(r, 100))
        await wait_for_condition(lambda: ring.counters[0] == 1)  # the read is in the kernel
        for _ in range(3):
            await asyncio.sleep(0)  # a read that did not wait would have completed by now
        assert not reader.done()
        assert await ring.write(w, b"hello") == 5
        assert await reader == b"hello"


async def test_thousand_concurrent_ops_complete_with_their_own_results() -> None:
    async with Ring() as ring:
        socks = [socket.socketpair() for _ in range(250)]
        try:
            reads = [ring.read(b.fileno(), 64) for _, b in socks for _ in range(2)]
            readers = [asyncio.ensure_future(op) for op in reads]
            await asyncio.sleep(0)
            payloads = [f"msg-{i}".encode() for i in range(len(socks))]
            writes = await asyncio.gather(*[ring.write(a.fileno(), p) for (a, _), p in zip(socks, payloads)])
            assert writes == [len(p) for p in payloads]
            # each socket got one message: one of its two reads has it, the other still waits
            deadline = time.monotonic() + 5
            while sum(r.done() for r in readers) < len(socks) and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            assert sum(r.done() for r in readers) == len(socks)
            for (a, _), p in zip(socks, payloads):
                a.send(p + b"!")
            got = await asyncio.gather(*readers)
            for i, p in enumerate(payloads):
                assert sorted(got[2 * i : 2 * i + 2]) == sorted([p, p + b"!"])
            nops = await asyncio.gather(*[ring.nop() for _ in range(1000)])
            assert nops == [0] * 1000
            assert ring.in_flight == 0  # the ring is open: nothing of the ops is left
            submitted, reaped = ring.counters
            assert submitted == reaped == 500 + 250 + 1000
        finally:
            for a, b in socks:
                a.close()
                b.close()


async def test_readv_and_writev_scatter_and_gather(pipe: tuple[int, int]) -> None:
    r, w = pipe
    async with Ring() as ring:
        assert await ring.writev(w, [b"abc", bytearray(b"defg"), memoryview(b"hij")]) == 10
        first, second = bytearray(4), bytearray(6)
        assert await ring.readv(r, [first, second]) == 10
        assert (bytes(first), bytes(second)) == (b"abcd", b"efghij")


async def test_regular_file_reads_at_offsets() -> None:
    with tempfile.TemporaryFile() as f:
        f.write(b"0123456789")
        f.flush()
        async with Ring() as ring:
            assert await ring.read(f.fileno(), 4, 3) == b"3456"
            buf = bytearray(3)
            assert await ring.readinto(f.fileno(), buf, 7) == 3
            assert buf == b"789"
            assert await ring.write(f.fileno(), b"XY", 0) == 2
            assert await ring.read(f.fileno(), 4, 0) == b"XY23"


async def test_eventfd_read_returns_its_counter() -> None:
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        async with Ring() as ring:
            reader = asyncio.ensure_future(ring.read(efd, 8))
            await wait_for_condition(lambda: ring.counters[0] == 1)  # armed in the kernel before the write
            os.eventfd_write(efd, 42)
            assert int.from_bytes(await reader, "little") == 42
    finally:
        os.close(efd)


async def test_kernel_errno_surfaces_as_matching_oserror_subclass(pipe: tuple[int, int]) -> None:
    r, w = pipe
    async with Ring() as ring:
        with pytest.raises(OSError) as info:
            await ring.read(w, 10)  # the write end of a pipe
        assert info.value.errno == errno.EBADF
        os.close(r)
        with pytest.raises(BrokenPipeError):
            await ring.write(w, b"x")
        dirfd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(IsADirectoryError):
                await ring.read(dirfd, 10, 0)
        finally:
            os.close(dirfd)


async def test_bad_arguments_raise_before_anything_is_submitted() -> None:
    async with Ring() as ring:
        before = ring.counters
        with pytest.raises(TypeError):
            await ring.write(1, "text is not bytes")  # type: ignore[arg-type]  # the wrong type on purpose
        with pytest.raises(TypeError):
            await ring.read("3", 10)  # type: ignore[arg-type]  # the wrong type on purpose
        with pytest.raises(ValueError):
            await ring.read(-1, 10)
        with pytest.raises(ValueError):
            await ring.read(0, -5)
        with pytest.raises(TypeError):
            await ring.readinto(0, b"read-only")
        await asyncio.sleep(0)
        assert ring.counters == before and ring.in_flight == 0


async def test_cancelled_read_keeps_its_buffer_until_the_kernel_lets_go(pipe: tuple[int, int]) -> None:
    r, w = pipe
    async with Ring() as ring:
        buf = Buffer(16)
        alive = weakref.ref(buf)
        task = asyncio.ensure_future(ring.readinto(r, buf))
        del buf
        await wait_for_condition(lambda: ring.in_flight == 1)
        task.cancel()
        await asyncio.wait([task])  # not re-raised here: its traceback would hold the frames
        assert task.cancelled()
        del task
        gc.collect()
        # the task is gone; the read was cancelled in the kernel, whose answer
        # may not be reaped yet: until it is, the ring holds the buffer
        assert alive() is not None or ring.in_flight == 0
        await wait_for_condition(lambda: ring.in_flight == 0)
        gc.collect()
        assert alive() is None
        # the pipe is intact: nothing was consumed by the cancelled read
        os.write(w, b"after")
        assert await ring.read(r, 10) == b"after"


async def test_close_with_hundred_reads_in_flight_is_prompt_and_leaks_no_fd(pipe: tuple[int, int]) -> None:
    r, w = pipe
    fds_before = open_fds()
    ring = Ring()
    readers = [asyncio.ensure_future(ring.read(r, 10)) for _ in range(100)]
    await wait_for_condition(lambda: ring.counters[0] == 100)
    assert ring.in_flight == 100
    started = time.monotonic()
    await ring.aclose()
    elapsed = time.monotonic() - started
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(res, ClosedError) for res in results)
    submitted, reaped = ring.counters
    assert submitted == reaped  # every SQE (reads and the cancel) had its CQE before the ring was freed
    assert open_fds() == fds_before
    assert elapsed < 2.0, f"close took {elapsed:.2f}s"  # bounded by the close timeout, not a benchmark
    with pytest.raises(ClosedError):
        await ring.nop()


async def test_ring_collected_while_open_warns_and_is_closed() -> None:
    fds_before = open_fds()
    ring = Ring()
    assert open_fds() != fds_before
    with pytest.warns(ResourceWarning, match="unclosed <Ring open"):
        del ring
        gc.collect()
    assert open_fds() == fds_before  # closed when collected: the ring and its eventfd are gone


async def test_default_ring_is_one_per_loop() -> None:
    first = aiouring.get_ring()
    assert aiouring.get_ring() is first
    assert first.backend == "uring"
    assert aiouring.get_ring("epoll").backend == "epoll"
    first.close()
    second = aiouring.get_ring()
    assert second is not first and not second.closed


async def test_ops_submitted_in_one_iteration_share_one_submit_call() -> None:
    async with Ring() as ring:
        submitted_before, _ = ring.counters
        calls_before = ring.submit_calls
        await asyncio.gather(*[ring.nop() for _ in range(64)])
        submitted, reaped = ring.counters
        assert submitted - submitted_before == 64
        assert ring.submit_calls - calls_before == 1  # one io_uring_enter for the 64


async def test_read_on_a_tun_fd(netns: str) -> None:
    from packets import udp, udp_payload

    device = aiouring.TunDevice.open()
    try:
        await device.configure(addresses=["10.1.0.1/24"])
        async with Ring() as ring:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.sendto(b"through the ring", ("10.1.0.2", 4000))
            packet = await asyncio.wait_for(ring.read(device.fileno(), 2048), 5)
            while packet[0] >> 4 != 4:  # the kernel's own IPv6 packets come first
                packet = await asyncio.wait_for(ring.read(device.fileno(), 2048), 5)
            sock.close()
            assert udp_payload(packet) == b"through the ring"
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("10.1.0.1", 4001))
            written = await ring.write(device.fileno(), udp("10.1.0.2", "10.1.0.1", 5000, 4001, b"back"))
            assert written == 28 + 4
            assert sock.recv(100) == b"back"
            sock.close()
    finally:
        device.close()


@pytest.mark.parametrize("setup", ["coop", "plain", "defer"])
async def test_every_setup_mode_completes_ops(setup: SetupMode, pipe: tuple[int, int]) -> None:
    r, w = pipe
    async with Ring(setup=setup) as ring:
        assert ring.setup == setup
        reader = asyncio.ensure_future(ring.read(r, 10))
        await wait_for_condition(lambda: ring.counters[0] == 1)
        os.write(w, b"ping")
        assert await asyncio.wait_for(reader, 5) == b"ping"
        assert await asyncio.gather(*[ring.nop() for _ in range(100)]) == [0] * 100
