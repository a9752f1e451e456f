"""Regression tests for the library findings of the hardening issue (11)
that have no home in a more specific file: items 7, 9, 12, 13, 14, 18, 21,
22-24 and ``Ring()`` outside a loop.  (UDP items: test_udp_*.py; the tunnel:
test_tunnel.py; devices: test_device*.py; item 8: test_reliability.py.)"""
from __future__ import annotations

import asyncio
import gc
import os
import socket
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

import aiouring
from aiouring.backends import Backend
from aiouring.ring import live_rings
from aiouring.testing import fake_tun
from support.netns import open_fds
from support.traffic import is_own
from support.udp import Recorder
from support.wait import wait_for_condition


def test_repeated_asyncio_run_with_a_tun_leaks_no_ring_and_no_fd(netns: str) -> None:
    """Item 7: the per-loop default ring is held weakly; 20 runs that open
    and close a TUN leave no fd and no ring behind."""

    async def once() -> None:
        tun = await aiouring.open_tun(backend="uring", up=False)
        await tun.aclose()

    asyncio.run(once())  # first-use costs (the probe) are not a leak
    gc.collect()
    fds, rings = len(open_fds()), len(live_rings())
    for _ in range(20):
        asyncio.run(once())
    gc.collect()  # a ring and its loop refer to each other: freed by the collector, as the loop itself is
    assert len(open_fds()) == fds
    assert len(live_rings()) == rings


async def test_a_hundred_endpoints_on_one_ring_all_receive() -> None:
    """Item 9: past the ring's buffer groups an endpoint still works (its own
    group or single reads); none fails with an undocumented RuntimeError."""
    ring = aiouring.get_ring("uring")
    pairs = [await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), ring=ring, receive_buffers=4)
             for _ in range(100)]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for i, (transport, _) in enumerate(pairs):
                tx.sendto(b"%d" % i, transport.get_extra_info("sockname"))
            await wait_for_condition(lambda: all(p.datagrams for _, p in pairs))
        assert [p.datagrams[0][0] for _, p in pairs] == [b"%d" % i for i in range(100)]
    finally:
        for transport, protocol in pairs:
            transport.close()
        for transport, protocol in pairs:
            assert await protocol.lost is None


async def test_a_ring_of_another_threads_loop_is_refused_before_anything_opens(netns: str) -> None:
    """Item 12: RuntimeError, and no socket or device is left open."""
    made: dict[str, Any] = {}

    def other_thread() -> None:
        loop = asyncio.new_event_loop()

        async def make() -> None:
            made["ring"] = aiouring.Ring()

        loop.run_until_complete(make())
        made["loop"] = loop

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    fds = open_fds()
    try:
        with pytest.raises(RuntimeError, match="another thread"):
            await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), ring=made["ring"])
        with pytest.raises(RuntimeError, match="another thread"):
            await aiouring.create_tun_connection(aiouring.TunProtocol, ring=made["ring"])
        assert open_fds() == fds
    finally:
        made["ring"].close()
        made["loop"].close()


def test_auto_at_the_fd_limit_is_emfile_and_no_lasting_downgrade() -> None:
    """Item 13: out of fds, the "auto" ring raises OSError(EMFILE) instead of
    calling io_uring unavailable and falling back to epoll for good."""
    script = textwrap.dedent("""
        import asyncio, errno, os, resource, aiouring
        async def main():
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
            hog = []
            try:
                while True:
                    hog.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                pass
            try:
                aiouring.get_ring("auto")
            except OSError as exc:
                print("refused", errno.errorcode.get(exc.errno))
            for fd in hog:
                os.close(fd)
            ring = aiouring.get_ring("auto")
            print("then", ring.backend)
            ring.close()
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["refused EMFILE", "then uring"], out.stdout + out.stderr


async def test_a_packet_above_an_mtu_raised_outside_the_library_is_read_whole(netns: str, backend: Backend) -> None:
    """Item 14: reads are sized for the largest packet the device can hold,
    so `ip link set mtu` behind the library's back cuts nothing short."""
    tun = await aiouring.open_tun(addresses=["10.31.0.1/24"], mtu=1400, backend=backend, offload=False)
    subprocess.run(["ip", "link", "set", "dev", tun.name, "mtu", "9000"], check=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"z" * 8000, ("10.31.0.2", 9))
        packet = b""
        while not is_own(packet) or len(packet) < 1500:
            packet = await asyncio.wait_for(tun.read(), 5)
    assert len(packet) == 20 + 8 + 8000 and packet.endswith(b"z" * 8000)
    await tun.aclose()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="x"), "come from the adopted device"),
        (dict(mode="tap"), "come from the adopted device"),
        (dict(persist=True), "come from the adopted device"),
    ],
)
async def test_options_that_an_adopted_fd_would_ignore_are_refused(kwargs: dict[str, Any], match: str, netns: str) -> None:
    """Item 18: fd= with name/mode/... raises instead of ignoring them."""
    device = aiouring.TunDevice.open()
    try:
        with pytest.raises(ValueError, match=match):
            await aiouring.open_tun(fd=device.fileno(), **kwargs)
    finally:
        device.close()


async def test_read_mode_that_the_epoll_backend_cannot_honour_is_refused(netns: str) -> None:
    """Item 18: read_mode="single"/"multishot" on epoll is a ValueError."""
    for mode in ("single", "multishot"):
        with pytest.raises(ValueError, match="read_mode must be one of"):
            await aiouring.open_tun(backend="epoll", read_mode=mode)


@pytest.mark.parametrize("backend", ["uring", "epoll"])
async def test_ring_read_validates_before_allocating_and_alike_on_both_backends(backend: Backend) -> None:
    """Item 21: an 8 GiB read is refused before any allocation; a negative
    offset is the same ValueError on both backends."""
    ring = aiouring.open_ring(backend)
    rd, wr = os.pipe()
    try:
        with pytest.raises(ValueError, match="nbytes must be from 0 to"):
            await ring.read(rd, 2**33)
        with pytest.raises(ValueError, match="offset must be at least -1"):
            await ring.read(rd, 10, -5)
        assert ring.in_flight == 0
    finally:
        await ring.aclose()
        os.close(rd)
        os.close(wr)


async def test_fakes_validate_like_the_real_thing() -> None:
    """Items 22-24: the fakes refuse what open_tun, the kernel or an errno
    would refuse, at the call, and close never hangs."""
    for kwargs, error in ((dict(mtu=0), ValueError), (dict(mode="bogus"), ValueError), (dict(name="x" * 40), ValueError)):
        with pytest.raises(error):
            await fake_tun(**kwargs)
    ft = await fake_tun()
    with pytest.raises(ValueError, match="never empty"):
        ft.peer.send(b"")
    with pytest.raises(TypeError, match="bytes-like"):
        ft.peer.send(5)  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(ValueError, match="larger than the device's limit"):
        ft.peer.send(b"x" * 5000)
    with pytest.raises(TypeError, match="errno must be an int"):
        ft.peer.fail_writes("EIO")  # type: ignore[arg-type]  # item 22: used to hang aclose()
    for bad in (-5, 0):
        with pytest.raises(ValueError, match="errno must be from 1"):
            ft.peer.fail_writes(bad)  # item 23: used to make a packet vanish
    await asyncio.wait_for(ft.tun.aclose(), 5)


async def test_fake_ring_fail_and_complete_are_validated(fake_ring: Any) -> None:
    """Item 23: fail(op, -5)/fail(op, 0) and completions larger than the
    op's buffer are refused with a message, not turned into success."""
    rd, wr = os.pipe()
    try:
        task = asyncio.ensure_future(fake_ring.read(rd, 10))
        await wait_for_condition(lambda: fake_ring.pending())
        [op] = fake_ring.pending()
        for bad in (-5, 0):
            with pytest.raises(ValueError):
                fake_ring.fail(op, bad)
        with pytest.raises(ValueError, match="do not fit"):
            fake_ring.complete(op, data=b"x" * 11)
        fake_ring.complete(op, data=b"ok")
        assert await task == b"ok"
    finally:
        os.close(rd)
        os.close(wr)


def test_ring_outside_a_running_loop_raises_only_the_runtime_error() -> None:
    """Also in the issue: Ring() with no loop raised RuntimeError and then
    printed an AttributeError from __del__ (the unraisable-exception hook
    of pytest, configured as an error, would fail this test)."""
    with pytest.raises(RuntimeError, match="needs a running event loop"):
        aiouring.Ring()
    import gc

    gc.collect()



@pytest.mark.timeout(30)
async def test_a_protocol_refilling_in_resume_writing_leaves_the_loop_running(netns: str, backend: Backend) -> None:
    """Found by the write benchmark: on epoll the hand-over is synchronous, so
    resume_writing() came from inside the flush, the protocol wrote more,
    and the flush kept going with the new packets: the loop never ran again.
    A flush now hands over only what was queued when it started."""

    class Filler(aiouring.TunProtocol):
        def __init__(self) -> None:
            self.paused = False
            self.written = 0
            self.resumed = 0

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def pause_writing(self) -> None:
            self.paused = True

        def resume_writing(self) -> None:
            self.resumed += 1
            self.fill()

        def fill(self) -> None:
            self.paused = False
            packet = bytes.fromhex("4500001c0000400040110000") + bytes([10, 32, 0, 1, 10, 32, 0, 9]) + bytes(8)
            while not self.paused and not self.transport.is_closing():
                self.transport.write(packet)
                self.written += 1

    transport, protocol = await aiouring.create_tun_connection(
        Filler, addresses=["10.32.0.1/24"], backend=backend, offload=False
    )
    transport.set_write_buffer_limits(high=64 * 40)
    protocol.fill()
    ticks = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    while loop.time() < deadline:
        await asyncio.sleep(0.01)  # the loop must keep coming back here
        ticks += 1
    assert ticks >= 10
    assert protocol.resumed >= 10 and protocol.written > 640
    transport.abort()
    await transport.wait_closed()
