"""Test doubles: a fake kernel under the real ``Ring``, and a fake TUN device.

``FakeRing`` is the production ``Ring`` (its batching, dispatch, cancellation
and close logic) over ``FakeKernel``, which answers in the kernel's language:
CQEs with ``-errno`` results, ``IORING_CQE_F_MORE`` on multishot reads,
``-ENOBUFS`` when a buffer group runs dry, cancel results ``0``,
``-ENOENT`` or ``-EALREADY``.  Completions are posted to a fake CQ and a real
eventfd is signalled, so the loop wakes the ring exactly as the kernel would.

A test drives it in two ways:

* scripted: ``ring.pending()`` lists the ops the fake kernel holds;
  ``ring.complete(op, res, data=...)`` and ``ring.fail(op, errno)`` post their
  CQEs (in any order, several before the loop runs to make one batch);
  ``ring.cancel_policy`` decides what an ``ASYNC_CANCEL`` does.
* as a device: ``ring.add_device(fd)`` makes an fd behave like a TUN: packets
  given to ``device.inject()`` complete the armed read (or wait for one), and
  writes complete at once and are collected in ``device.written``.

``fake_tun()`` gives a ``Tun`` on a ``FakeRing`` plus a ``FakePeer`` to talk to
it; the pytest plugin ``aiouring.pytest_plugin`` offers it as fixtures.
"""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import socket
import weakref
from collections import deque
from typing import Any, NamedTuple, Sequence

from ._native import F_BUFFER, F_MORE, GROUP_SHIFT, MAX_WRITERS, POOL_GROUP
from .device import TunDevice
from .protocol import PacketQueueProtocol
from .sockaddr import from_sockaddr, to_sockaddr
from .ring import PacketReader, Ring
from .transport import TunTransport
from .tun import Tun

__all__ = ["UseAfterFree", "FakeKernel", "FakeOp", "FakeRing", "FakeDevice", "FakePeer", "FakeTun", "fake_tun", "fake_datagram_endpoint"]

BUFFER_SHIFT = 16


@dataclasses.dataclass(eq=False)
class FakeOp:
    """One op the fake kernel holds: what was asked (``kind``, ``fd``, ``data``
    for writes, ``size`` for reads) and whether it is still pending."""

    kind: str
    fd: int
    ud: int
    size: int = 0
    data: bytes | None = None
    target: int | None = None
    bgid: int = -1
    buffer: Any = None
    pending: bool = True
    writer: int = -1  # pooled writes: the writer's tag

    @property
    def multishot(self) -> bool:
        return self.kind in ("read_multishot", "recvmsg_multishot")


class UseAfterFree(AssertionError):
    """The fake kernel was asked to write into a buffer the application had freed."""


def _weak(buf: Any) -> Any:
    try:
        return weakref.ref(buf)
    except TypeError:  # bytearray itself takes no weak references: hold it
        return buf


def _deref(op: FakeOp) -> Any:
    target = op.buffer() if isinstance(op.buffer, weakref.ref) else op.buffer
    if target is None:
        raise UseAfterFree(f"{op.kind} op {op.ud} completed into a buffer that was already freed")
    return target


class FakeDevice:
    """A packet device on a fake kernel: ``inject`` packets for the
    application to read, find what it wrote in ``written``; ``fail_writes``
    makes the next writes fail with an errno."""

    def __init__(self, kernel: "FakeKernel", fd: int) -> None:
        self._kernel = kernel
        self.fd = fd
        self.inbound: deque[bytes] = deque()
        self.written: list[bytes] = []
        self.sent: list[tuple[bytes, Any]] = []  # datagrams: (data, destination or None)
        self.write_errors: deque[int] = deque()
        self.write_event = asyncio.Event()

    def inject(self, *packets: bytes) -> None:
        """Packets arriving from the network side, read in order."""
        self.inbound.extend(bytes(p) for p in packets)
        self._kernel._feed(self)

    def inject_datagram(self, data: bytes, addr: tuple, family: int = socket.AF_INET) -> None:
        """A datagram from ``addr`` for the endpoint on this fd (as a recvmsg record)."""
        raw = to_sockaddr(addr, family)
        self.inbound.append(bytes([len(raw)]) + raw + bytes(data))
        self._kernel._feed(self)

    def fail_writes(self, err: int, count: int = 1) -> None:
        """The next ``count`` writes complete with ``-err``."""
        self.write_errors.extend([err] * count)


class FakeKernel:
    """The ``NativeRing`` interface with no kernel behind it (see module doc)."""

    backend = "fake"
    setup = "fake"

    def __init__(self, *, batch_limit: int = 256, group_sizes: int | None = None, write_slots: int = 1024, slot_size: int = 2048) -> None:
        self.eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.sq: list[FakeOp] = []
        self.ops: dict[int, FakeOp] = {}
        self.cq: deque[tuple[int, int, int, bytes | None]] = deque()
        self.devices: dict[int, FakeDevice] = {}
        self.groups: dict[int, list[int]] = {}  # bgid -> [entries, in use]
        self.cancel_policy = "cancel"
        self.submitted = 0
        self.reaped = 0
        self.overflows = 0
        self.submit_calls = 0
        self._batch_limit = batch_limit
        self._group_limit = group_sizes
        self.write_slots = write_slots
        self.slot_size = slot_size
        self.pool_free = write_slots
        self._writer_counts: dict[int, int] = {}
        self.closed = False

    # -- the NativeRing interface -----------------------------------------------

    @property
    def counters(self) -> tuple[int, int]:
        return self.submitted, self.reaped

    @property
    def batch_limit(self) -> int:
        return self._batch_limit

    def _prep(self, op: FakeOp) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "fake ring is closed")
        self.sq.append(op)

    def prep_nop(self, ud: int) -> None:
        self._prep(FakeOp("nop", -1, ud))

    def prep_read(self, fd: int, buf: Any, offset: int, ud: int) -> Any:
        # Like the kernel, hold the buffer only by "address" (a weak reference
        # where the type allows one): keeping it alive is the Ring's job, and
        # writing into a buffer that was freed raises UseAfterFree.
        self._prep(FakeOp("read", fd, ud, size=len(memoryview(buf)), buffer=_weak(buf)))
        return None

    def prep_write(self, fd: int, data: Any, offset: int, ud: int) -> Any:
        self._prep(FakeOp("write", fd, ud, size=len(memoryview(data)), data=bytes(data)))
        return data

    def write_copy(self, fd: int, data: bytes, n: int, writer: int) -> int:
        """A pooled write, as aiou_write_copy: 0, or -ENOBUFS/-EMSGSIZE/-EBADF."""
        if self.closed:
            return -errno.EBADF
        if n > self.slot_size:
            return -errno.EMSGSIZE
        if writer >= MAX_WRITERS:
            return -errno.EINVAL
        if not self.pool_free:
            return -errno.ENOBUFS
        self.pool_free -= 1
        self._writer_counts[writer] = self._writer_counts.get(writer, 0) + 1
        self._next_slot = getattr(self, "_next_slot", 0) + 1
        ud = (POOL_GROUP << GROUP_SHIFT) | (writer << 16) | (self._next_slot & 0xFFFF)
        self._prep(FakeOp("write", fd, ud, size=n, data=bytes(data), writer=writer))
        return 0

    def sendto_copy(self, fd: int, data: bytes, n: int, addr: bytes, addrlen: int, writer: int) -> int:
        """A pooled datagram send, as aiou_sendto_copy (the address is kept on the op)."""
        res = self.write_copy(fd, data, n, writer)
        if res == 0:
            self.sq[-1].kind = "sendto"
            self.sq[-1].buffer = bytes(addr[:addrlen])
        return res

    def writer_in_flight(self, writer: int) -> int:
        return self._writer_counts.get(writer, 0)

    @property
    def pool_in_flight(self) -> int:
        return self.write_slots - self.pool_free

    def prep_readv(self, fd: int, buffers: Sequence[Any], offset: int, ud: int) -> Any:
        self._prep(FakeOp("readv", fd, ud, size=sum(len(memoryview(b)) for b in buffers), buffer=list(buffers)))
        return buffers

    def prep_writev(self, fd: int, buffers: Sequence[Any], offset: int, ud: int) -> Any:
        data = b"".join(bytes(b) for b in buffers)
        self._prep(FakeOp("writev", fd, ud, size=len(data), data=data))
        return buffers

    def prep_cancel(self, target: int, ud: int) -> None:
        self._prep(FakeOp("cancel", -1, ud, target=target))

    def prep_cancel_all(self, ud: int) -> None:
        self._prep(FakeOp("cancel_all", -1, ud))

    def group_ud(self, ud: int, bgid: int) -> int:
        return ud | ((bgid + 1) << GROUP_SHIFT)

    def prep_read_multishot(self, fd: int, bgid: int, ud: int) -> None:
        self._prep(FakeOp("read_multishot", fd, ud, bgid=bgid))

    def prep_recvmsg_multishot(self, fd: int, bgid: int, ud: int) -> None:
        self._prep(FakeOp("recvmsg_multishot", fd, ud, bgid=bgid))

    def add_buffer_group(self, bgid: int, entries: int, bufsize: int, recvmsg: bool = False) -> None:
        if bgid in self.groups:
            raise FileExistsError(errno.EEXIST, "buffer group exists")
        self.groups[bgid] = [self._group_limit or entries, 0, bufsize]

    def remove_buffer_group(self, bgid: int) -> None:
        self.groups.pop(bgid, None)

    def submit(self) -> int:
        self.submit_calls += 1
        sq, self.sq = self.sq, []
        for op in sq:
            self.submitted += 1
            self._execute(op)
        return len(sq)

    def wait(self, timeout_ms: int) -> None:
        self.submit()

    def reap(self) -> tuple[list[int], list[int], bytes]:
        out: list[int] = []
        pk: list[int] = []
        arena = bytearray()
        n = 0
        while self.cq and n < self._batch_limit:
            ud, res, flags, payload = self.cq.popleft()
            off = -1
            if payload is not None:
                off = len(arena)
                arena += payload
                group = self.groups.get(((ud >> GROUP_SHIFT) & 0xFFFF) - 1)
                if group is not None:
                    group[1] -= 1  # the buffer is recycled once copied out
            if off >= 0 and flags & F_MORE:
                pk += (ud, off, res)
            else:
                out += (ud, res, flags, off, len(pk) // 3)
            n += 1
        self.reaped += n
        if self.cq:
            self._signal()
        return out, pk, bytes(arena)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.eventfd)

    # -- the fake kernel's behaviour -----------------------------------------------------

    def _signal(self) -> None:
        if not self.closed:
            os.eventfd_write(self.eventfd, 1)

    def post(self, ud: int, res: int, flags: int = 0, payload: bytes | None = None) -> None:
        """Post one raw CQE and wake the ring."""
        self.cq.append((ud, res, flags, payload))
        self._signal()

    def _execute(self, op: FakeOp) -> None:
        kind = op.kind
        if kind == "nop":
            self.post(op.ud, 0)
        elif kind in ("cancel", "cancel_all"):
            self._cancel(op)
        else:
            self.ops[op.ud] = op
            device = self.devices.get(op.fd)
            if device is not None:
                if kind in ("write", "writev", "sendto"):
                    self._device_write(device, op)
                elif kind in ("read", "read_multishot", "recvmsg_multishot"):
                    self._feed(device)

    def _cancel(self, op: FakeOp) -> None:
        if op.kind == "cancel":
            targets = [self.ops[op.target]] if op.target in self.ops else []
        else:
            targets = list(self.ops.values())
        if not targets:
            self.post(op.ud, -errno.ENOENT)
            return
        if self.cancel_policy == "ignore":
            self.post(op.ud, -errno.EALREADY)
            return
        for target in targets:
            self.finish(target, -errno.ECANCELED)
        self.post(op.ud, 0 if op.kind == "cancel" else len(targets))

    def finish(self, op: FakeOp, res: int, data: bytes | None = None, more: bool = False) -> None:
        """Complete ``op`` with ``res`` (for reads, ``data`` is what was read;
        ``more`` keeps a multishot read armed)."""
        if not op.pending:
            raise RuntimeError(f"{op} already completed")
        flags = 0
        payload = None
        if op.multishot:
            if data is not None:
                flags |= F_BUFFER
                payload = bytes(data)
                group = self.groups.get(op.bgid)
                if group is not None:
                    group[1] += 1
            if more:
                flags |= F_MORE
        elif op.kind == "read" and data is not None:
            memoryview(_deref(op))[: len(data)] = data
        elif op.kind == "readv" and data is not None:
            rest = memoryview(bytes(data))
            for b in op.buffer:
                view = memoryview(b).cast("B")
                take = min(len(view), len(rest))
                view[:take] = rest[:take]
                rest = rest[take:]
        if not more:
            op.pending = False
            self.ops.pop(op.ud, None)
        if op.writer >= 0:
            self.pool_free += 1
            self._writer_counts[op.writer] -= 1
            if res >= 0:
                self.reaped += 1
                return  # successful pooled writes post nothing Python sees, as in C
        self.post(op.ud, res, flags, payload)

    def _device_write(self, device: FakeDevice, op: FakeOp) -> None:
        if device.write_errors:
            self.finish(op, -device.write_errors.popleft())
            return
        if op.kind == "sendto":
            device.sent.append((op.data or b"", from_sockaddr(op.buffer) if op.buffer else None))
        device.written.append(op.data or b"")
        device.write_event.set()
        self.finish(op, op.size)

    def _feed(self, device: FakeDevice) -> None:
        """Hand queued inbound packets to the reads armed on the device."""
        while device.inbound:
            op = next((o for o in self.ops.values() if o.fd == device.fd and o.kind in ("read", "read_multishot", "recvmsg_multishot")), None)
            if op is None:
                return
            if op.multishot:
                group = self.groups.get(op.bgid)
                if group is not None and group[1] >= group[0]:
                    self.finish(op, -errno.ENOBUFS)  # the ring ran dry: the shot ends
                    continue
                packet = device.inbound.popleft()
                self.finish(op, len(packet), packet, more=True)
            else:
                packet = device.inbound.popleft()[: op.size]
                self.finish(op, len(packet), packet)


class FakeRing(Ring):
    """The real ``Ring`` over a ``FakeKernel``: no root, no io_uring."""

    backend = "fake"

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        read_mode: str = "multishot",
        batch_limit: int = 256,
        buffers_per_group: int | None = None,
        write_slots: int = 1024,
    ) -> None:
        """``write_slots`` sizes the write pool (to make transports queue);
        ``read_mode`` is what ``start_packet_reader(mode="auto")`` uses;
        ``buffers_per_group`` caps multishot buffer groups (to provoke
        ``-ENOBUFS``); ``batch_limit`` is the most CQEs one reap returns."""
        if read_mode not in ("multishot", "single"):
            raise ValueError(f"read_mode must be 'multishot' or 'single', not {read_mode!r}")
        self.read_mode = read_mode
        super().__init__(
            loop=loop,
            kernel=FakeKernel(batch_limit=batch_limit, group_sizes=buffers_per_group, write_slots=write_slots),
        )

    def start_packet_reader(self, fd: int, bufsize: int, on_packets: Any, on_stopped: Any, *, mode: str = "auto", buffers: int = 256) -> PacketReader:
        return super().start_packet_reader(
            fd, bufsize, on_packets, on_stopped, mode=self.read_mode if mode == "auto" else mode, buffers=buffers
        )

    @property
    def kernel(self) -> FakeKernel:
        return self._kernel

    @property
    def cancel_policy(self) -> str:
        """``"cancel"``: a cancelled op completes with ``-ECANCELED`` (the
        default); ``"ignore"``: the cancel answers ``-EALREADY`` and the op
        stays pending for the test to complete."""
        return self._kernel.cancel_policy

    @cancel_policy.setter
    def cancel_policy(self, value: str) -> None:
        if value not in ("cancel", "ignore"):
            raise ValueError(f"cancel_policy must be 'cancel' or 'ignore', not {value!r}")
        self._kernel.cancel_policy = value

    def submit_now(self) -> None:
        """Submit what is queued without waiting for the loop's flush."""
        self._kernel.submit()

    def pending(self, kind: str | None = None, fd: int | None = None) -> list[FakeOp]:
        """Ops submitted to the fake kernel and not completed, oldest first
        (queued SQEs are submitted first)."""
        self.submit_now()
        return [o for o in self._kernel.ops.values() if (kind is None or o.kind == kind) and (fd is None or o.fd == fd)]

    def complete(self, op: FakeOp, res: int | None = None, data: bytes | None = None, more: bool = False) -> None:
        """Complete ``op``: for reads ``res`` defaults to ``len(data)``, for
        writes to the byte count."""
        if res is None:
            res = len(data) if data is not None else op.size
        self._kernel.finish(op, res, data, more)

    def fail(self, op: FakeOp, err: int) -> None:
        """Complete ``op`` with ``-err``."""
        self._kernel.finish(op, -err)

    def add_device(self, fd: int) -> FakeDevice:
        device = FakeDevice(self._kernel, fd)
        self._kernel.devices[fd] = device
        return device


class FakePeer:
    """The network side of a fake TUN: ``send`` packets to the application,
    ``receive`` what it wrote."""

    def __init__(self, device: FakeDevice) -> None:
        self._device = device
        self._taken = 0

    def send(self, *packets: bytes) -> None:
        """Packets the application will read from the TUN, in order."""
        self._device.inject(*packets)

    @property
    def written(self) -> list[bytes]:
        """Every packet the application wrote, in order."""
        return self._device.written

    def fail_writes(self, err: int, count: int = 1) -> None:
        """The application's next ``count`` writes fail with ``err``."""
        self._device.fail_writes(err, count)

    async def receive(self) -> bytes:
        """The next packet the application wrote (waits for it)."""
        while self._taken >= len(self._device.written):
            self._device.write_event.clear()
            await self._device.write_event.wait()
        packet = self._device.written[self._taken]
        self._taken += 1
        return packet


class FakeTun(NamedTuple):
    tun: Tun
    peer: FakePeer
    ring: FakeRing


async def fake_tun(name: str = "faketun0", *, mtu: int = 1500, mode: str = "tun", ring: FakeRing | None = None, max_queued: int = 4096) -> FakeTun:
    """A ``Tun`` on a ``FakeRing`` and the peer that talks to it; no root needed.

    Close the ``Tun`` when done (``async with`` works); the ring is closed with
    it when this call created it.
    """
    loop = asyncio.get_running_loop()
    own_ring = ring is None
    ring = ring or FakeRing()
    fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    device = TunDevice(fd, name, mode, False, mtu)
    fake_device = ring.add_device(fd)
    protocol = PacketQueueProtocol(loop, max_queued)
    waiter = loop.create_future()
    transport = TunTransport(loop, ring, device, protocol, waiter=waiter)
    await waiter
    tun = Tun(transport, protocol)
    if own_ring:
        protocol.closed_fut.add_done_callback(lambda _: ring.close())
    return FakeTun(tun, FakePeer(fake_device), ring)



async def fake_datagram_endpoint(
    protocol_factory: Any, local_addr: tuple = ("127.0.0.1", 0), remote_addr: tuple | None = None, *, ring: FakeRing | None = None
) -> tuple[Any, Any, FakeDevice]:
    """A UDP endpoint whose I/O goes through a ``FakeRing``: ``(transport,
    protocol, device)``.  ``device.inject_datagram(data, addr)`` delivers a
    datagram; ``device.sent`` lists ``(data, addr)`` the endpoint sent (addr
    None on a connected endpoint); ``device.fail_writes(errno)`` refuses sends.
    The socket is real (bound on loopback, never used for I/O): no root needed.
    """
    from .udp import DatagramTransport

    loop = asyncio.get_running_loop()
    ring = ring or FakeRing()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(local_addr)
    if remote_addr is not None:
        sock.connect(remote_addr)
    device = ring.add_device(sock.fileno())
    protocol = protocol_factory()
    waiter = loop.create_future()
    transport = DatagramTransport(loop, ring, sock, protocol, remote_addr, waiter)
    await waiter
    return transport, protocol, device
