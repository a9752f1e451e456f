"""The awaitable Tun API, on uring, epoll and fake rings and both loops, and real-device specifics."""
from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import random
import socket
import struct

import pytest

import aiouring
from aiouring import ClosedError, Tun
from aiouring.testing import fake_tun
from packets import udp_payload
from support.harness import LOCAL, SO_RCVBUFFORCE
from support.cancel import read_or_cancel
from support.netns import interface_names
from support.traffic import is_own, read_own
from support.wait import wait_for_condition
from aiouring import Backend
from support.harness import FakeHarness, Harness
from typing import Any, Callable


async def test_read_returns_packets_in_order(harness: Harness) -> None:
    tun = await harness.open_tun()
    harness.send_inbound([b"a", b"bb", b"ccc"])
    got = [harness.unwrap(await read_own(tun)) for _ in range(3)]
    assert got == [b"a", b"bb", b"ccc"]
    await tun.aclose()


async def test_async_for_ends_when_closed(harness: Harness) -> None:
    tun = await harness.open_tun()
    harness.send_inbound([b"1", b"2"])
    seen = []
    async for packet in tun:
        if not is_own(packet):
            continue  # the kernel's own IPv6 packets
        seen.append(harness.unwrap(packet))
        if len(seen) == 2:
            tun.close()
    assert seen == [b"1", b"2"]
    await tun.wait_closed()


async def test_buffered_packet_is_returned_without_suspending(harness: Harness) -> None:
    tun = await harness.open_tun()
    harness.send_inbound([b"ready"])
    await asyncio.wait_for(_until(lambda: any(is_own(p) for p in tun._protocol.queue)), 5)
    while not is_own(tun._protocol.queue[0]):
        tun.read_nowait()  # the kernel's own IPv6 packets, queued ahead of ours
    coro = tun.read()
    with pytest.raises(StopIteration) as done:
        coro.send(None)  # completes on the first step: no suspension
    assert harness.unwrap(done.value.value) == b"ready"
    await tun.aclose()


async def test_cancelled_reads_never_lose_a_packet(harness: Harness) -> None:
    """A storm of wait_for(read(), tiny timeout) while packets stream in."""
    tun = await harness.open_tun()
    total = 4000
    payloads = [b"storm %05d" % i for i in range(total)]
    got: list[bytes | None] = []
    timeouts = 0

    async def produce() -> None:
        for i in range(0, total, 8):
            harness.send_inbound(payloads[i : i + 8])
            await asyncio.sleep(0.0002)

    producer = asyncio.ensure_future(produce())
    rng = random.Random(7)
    while len(got) < total:
        packet = await read_or_cancel(tun, rng)
        if packet is None:
            timeouts += 1
        elif is_own(packet):
            got.append(harness.unwrap(packet))
    await producer
    assert got == payloads
    print(f"{timeouts} reads cancelled while {total} packets arrived")
    assert timeouts > 300
    await tun.aclose()


async def test_woken_reader_cancelled_before_resuming_leaves_packet_for_next() -> None:
    """The second window: the packet is in the queue and the reader was woken,
    but the task is cancelled before it runs again."""
    pair = await fake_tun()
    first = asyncio.ensure_future(pair.tun.read())
    second = asyncio.ensure_future(pair.tun.read())
    proto = pair.tun._protocol
    await wait_for_condition(lambda: len(proto.waiters) == 2)
    woken = proto.waiters[0]  # the first reader's wake-up
    pair.peer.send(b"\x45only one")
    while not woken.done():
        await asyncio.sleep(0)
    assert not first.done(), "the test missed the window: the first reader already ran"
    assert list(proto.queue) == [b"\x45only one"]
    first.cancel()  # before `first` gets to run
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 5) == b"\x45only one"
    await pair.tun.aclose()


async def test_two_readers_are_served_in_order(harness: Harness) -> None:
    tun = await harness.open_tun()
    readers = [asyncio.ensure_future(tun.read()) for _ in range(3)]
    await asyncio.sleep(0)
    harness.send_inbound([b"r1", b"r2", b"r3"])
    got = await asyncio.wait_for(asyncio.gather(*readers), 5)
    while sum(map(is_own, got)) < 3:  # the kernel's IPv6 packets took some turns
        got.append(await read_own(tun))
    own = [p for p in got if is_own(p)]
    assert [harness.unwrap(p) for p in own] == [b"r1", b"r2", b"r3"]
    await tun.aclose()


async def test_close_wakes_pending_reads_and_later_calls_raise(harness: Harness) -> None:
    tun = await harness.open_tun()
    pending = [asyncio.ensure_future(tun.read()) for _ in range(5)]
    await asyncio.sleep(0.01)
    tun.close()
    results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 5)
    # readers that got the kernel's own IPv6 packets before close returned them
    assert all(isinstance(r, ClosedError) or (isinstance(r, bytes) and not is_own(r)) for r in results), results
    assert any(isinstance(r, ClosedError) for r in results)
    await asyncio.wait_for(tun.wait_closed(), 5)
    with pytest.raises(ClosedError, match="closed"):
        await tun.read()
    with pytest.raises(ClosedError):
        await tun.write(harness.packet(b"x"))
    with pytest.raises(ClosedError):
        tun.fileno()
    tun.close()  # idempotent


async def test_write_reaches_the_network(harness: Harness) -> None:
    tun = await harness.open_tun()
    for i in range(50):
        await tun.write(harness.packet(b"w%d" % i))
    assert await harness.outbound(50) == [b"w%d" % i for i in range(50)]
    await tun.aclose()


async def test_refused_packet_is_raised_by_the_next_write_which_still_writes(harness: Harness) -> None:
    tun = await harness.open_tun()
    if isinstance(harness, FakeHarness):
        harness.device.fail_writes(errno.EINVAL)
    refused = b"\x00" * 20  # IP version 0: the TUN driver answers EINVAL
    await tun.write(refused)
    await wait_for_condition(lambda: tun._protocol.write_errors)
    with pytest.raises(OSError) as info:
        await tun.write(harness.packet(b"written all the same"))
    assert info.value.errno == errno.EINVAL
    assert info.value.packet == refused  # type: ignore[attr-defined]  # the refused packet aiouring attaches to the OSError; which packet it was
    assert any("earlier" in note for note in info.value.__notes__)
    await tun.write(harness.packet(b"and this one"))
    assert await harness.outbound(2) == [b"written all the same", b"and this one"]
    await tun.aclose()


async def test_drain_raises_a_refused_packet_once(harness: Harness) -> None:
    tun = await harness.open_tun()
    if isinstance(harness, FakeHarness):
        harness.device.fail_writes(errno.EINVAL)
    await tun.write(b"\x00" * 20)
    await wait_for_condition(lambda: tun._protocol.write_errors)
    with pytest.raises(OSError) as info:
        await tun.drain()
    assert info.value.errno == errno.EINVAL
    await tun.drain()  # reported once
    await tun.aclose()


async def test_write_validates_its_argument(harness: Harness) -> None:
    tun = await harness.open_tun()
    with pytest.raises(ValueError):
        await tun.write(b"")
    with pytest.raises(ValueError):
        await tun.write(b"\x45" * (tun.mtu + 1))
    with pytest.raises(TypeError):
        await tun.write(["not", "bytes"])  # type: ignore[arg-type]  # the wrong type on purpose
    await tun.aclose()


async def test_ten_thousand_packets_each_way_with_contents_checked(backend: Backend, netns: str) -> None:
    tun = await aiouring.open_tun(addresses=[f"{LOCAL}/24"], backend=backend)
    from support.harness import KernelHarness

    h = KernelHarness(backend)
    h._bind()
    assert h._receiver is not None
    h._receiver.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)  # root: past rmem_max
    n = 10_000
    inbound = [os.urandom(8) + b"in %05d" % i for i in range(n)]
    got: list[bytes | None] = []
    for i in range(0, n, 250):  # in bursts below the TUN's queue length
        h.send_inbound(inbound[i : i + 250])
        while len(got) < i + 250:
            got.append(udp_payload(await read_own(tun)))
    assert got == inbound
    outbound = [os.urandom(8) + b"out %05d" % i for i in range(n)]
    received = []
    for i in range(0, n, 250):
        for p in outbound[i : i + 250]:
            await tun.write(h.packet(p))
        received = await h.outbound(i + 250)
    assert received == outbound
    h.close()
    await tun.aclose()


async def test_open_tun_names_and_configures_the_interface(backend: Backend, netns: str) -> None:
    tun = await aiouring.open_tun("aiou-test0", mtu=1400, addresses=["10.4.0.1/24"], backend=backend)
    assert tun.name == "aiou-test0" and tun.mtu == 1400
    assert "aiou-test0" in interface_names()
    with pytest.raises(ValueError):
        await tun.write(b"\x45" * 1401)
    await tun.aclose()
    assert "aiou-test0" not in interface_names()


async def test_tap_mode_reads_ethernet_frames(backend: Backend, netns: str) -> None:
    tap = await aiouring.open_tun(mode="tap", addresses=["10.5.0.1/24"], backend=backend)
    assert tap.mode == "tap" and tap.name.startswith("tap")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sendto(b"who has", ("10.5.0.2", 9))  # the kernel asks ARP first
    frame = await read_own(tap, frames=True)
    sock.close()
    assert struct.unpack_from("!H", frame, 12)[0] == 0x0806  # an ARP frame, Ethernet header included
    await tap.write(frame)  # a whole frame is accepted back
    await tap.aclose()


async def test_from_fd_adopts_an_open_tun(backend: Backend, netns: str) -> None:
    fd = os.open("/dev/net/tun", os.O_RDWR)  # blocking, as another library might hand it over
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", b"adopted0", 0x0001 | 0x1000))
    tun = await Tun.from_fd(fd, backend=backend)
    assert tun.name == "adopted0" and tun.fileno() == fd
    assert not os.get_blocking(fd)
    await aiouring.TunDevice(-1, "adopted0").configure(addresses=["10.6.0.1/24"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sendto(b"adopted", ("10.6.0.2", 9))
    assert udp_payload(await read_own(tun)) == b"adopted"
    sock.close()
    await tun.aclose()
    with pytest.raises(OSError):
        os.fstat(fd)  # the Tun owned it and closed it


async def test_from_fd_takes_a_file_object(netns: str) -> None:
    f = open("/dev/net/tun", "r+b", buffering=0)
    fcntl.ioctl(f.fileno(), 0x400454CA, struct.pack("16sH22x", b"adopted1", 0x0001 | 0x1000))
    tun = await Tun.from_fd(f)
    assert f.closed and tun.name == "adopted1"
    await tun.aclose()


async def test_from_fd_refuses_what_is_not_a_tun(netns: str) -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match="not a TUN"):
            await Tun.from_fd(r)
        with pytest.raises(TypeError):
            await Tun.from_fd("fd")  # type: ignore[arg-type]  # the wrong type on purpose
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize(
    "name, error",
    [
        ("x" * 16, ValueError),
        ("bad/name", ValueError),
        ("has space", ValueError),
        ("", ValueError),
        ("..", ValueError),
        (42, TypeError),
        ("lo", FileExistsError),
    ],
)
async def test_bad_names_are_refused_clearly(name: Any, error: type[Exception], netns: str) -> None:
    with pytest.raises(error):
        await aiouring.open_tun(name)


async def test_opening_a_name_in_use_says_so(netns: str) -> None:
    tun = await aiouring.open_tun("busy0")
    with pytest.raises(FileExistsError, match="busy0"):
        await aiouring.open_tun("busy0")
    await tun.aclose()


async def test_bad_addresses_and_mtu_are_refused(netns: str) -> None:
    with pytest.raises(ValueError, match="address"):
        await aiouring.open_tun(addresses=["10.0.0.300/24"])
    with pytest.raises(ValueError, match="mtu"):
        await aiouring.open_tun(mtu=20)
    with pytest.raises(ValueError, match="mode"):
        await aiouring.open_tun(mode="tin")  # type: ignore[arg-type]  # the wrong type on purpose
    assert [n for n in interface_names() if n.startswith("tun")] == []  # nothing left behind


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.0005)


@pytest.mark.parametrize("options", [{"setup": "defer"}, {"setup": "plain"}, {"setup": "coop"}])
async def test_ring_options_move_packets_both_ways(options: dict[str, Any], netns: str) -> None:
    from support.harness import KernelHarness

    async with aiouring.Ring(**options) as ring:
        h = KernelHarness("uring")
        tun = await aiouring.open_tun(addresses=[f"{LOCAL}/24"], ring=ring)
        h._bind()
        h.send_inbound([b"in-%d" % i for i in range(100)])
        assert [udp_payload(await read_own(tun)) for _ in range(100)] == [b"in-%d" % i for i in range(100)]
        for i in range(100):
            await tun.write(h.packet(b"out-%d" % i))
        assert await h.outbound(100) == [b"out-%d" % i for i in range(100)]
        await tun.aclose()
        h.close()


def test_missing_dev_net_tun_is_named_in_the_error() -> None:
    """/dev/net/tun hidden by an empty tmpfs in a private mount namespace."""
    import subprocess
    import sys

    script = (
        "import aiouring\n"
        "try:\n"
        "    aiouring.TunDevice.open()\n"
        "except FileNotFoundError as exc:\n"
        "    print('FileNotFoundError:', exc)\n"
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs none /dev/net && exec {sys.executable} -c \"$0\"", script],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "FileNotFoundError:" in proc.stdout
    assert "/dev/net/tun does not exist" in proc.stdout and "modprobe tun" in proc.stdout


async def test_read_batch_takes_what_is_queued_and_waits_only_when_nothing_is(harness: Harness) -> None:
    tun = await harness.open_tun()
    waiting = asyncio.ensure_future(tun.read_batch(8))
    await asyncio.sleep(0)
    if harness.kind == "fake":  # a real TUN may have the kernel's IPv6 packets queued already
        assert not waiting.done()  # nothing queued: it waits
    harness.send_inbound([b"b%02d" % i for i in range(20)])
    first = await asyncio.wait_for(waiting, 5)
    assert 1 <= len(first) <= 8
    got = [p for p in first if is_own(p)]
    while len(got) < 20:
        batch = await asyncio.wait_for(tun.read_batch(8), 5)
        assert 1 <= len(batch) <= 8
        got += [p for p in batch if is_own(p)]
    assert [harness.unwrap(p) for p in got] == [b"b%02d" % i for i in range(20)]
    with pytest.raises(ValueError, match="max_packets"):
        await tun.read_batch(0)
    await tun.aclose()


async def test_write_batch_checks_every_packet_first_then_writes_them_in_order(harness: Harness) -> None:
    tun = await harness.open_tun()
    with pytest.raises(ValueError, match="empty"):
        await tun.write_batch([harness.packet(b"never"), b""])
    await tun.write_batch(harness.packet(b"w%02d" % i) for i in range(30))
    assert await harness.outbound(30) == [b"w%02d" % i for i in range(30)]  # and not "never"
    await tun.aclose()


async def test_batches_iterates_until_closed(harness: Harness) -> None:
    tun = await harness.open_tun()
    harness.send_inbound([b"i%d" % i for i in range(5)])
    seen: list[bytes | None] = []
    async for batch in tun.batches(64):
        seen += [harness.unwrap(p) for p in batch if is_own(p)]
        if len(seen) == 5:
            tun.close()
    assert seen == [b"i%d" % i for i in range(5)]
    await tun.wait_closed()


async def test_open_tun_works_with_async_with_without_await(netns: str) -> None:
    async with aiouring.open_tun(addresses=["10.21.0.1/24"]) as tun:
        assert isinstance(tun, aiouring.Tun) and not tun.closed
        name = tun.name
        assert name in interface_names()
    assert tun.closed and name not in interface_names()
    tun2 = await aiouring.open_tun()  # awaiting keeps working
    await tun2.aclose()


async def test_open_tun_refuses_a_bad_queue_limit_at_the_call() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_queued"):
            aiouring.open_tun(max_queued=bad)  # type: ignore[arg-type]  # the wrong type on purpose
