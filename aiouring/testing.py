"""Test doubles: a fake kernel under the production ``Ring``, fake TUN devices
and datagram sockets, and helpers that build the production transports on
them through the public factories.

``FakeRing`` is the production ``Ring`` (its batching, flush, reap, dispatch,
cancellation and close) over ``FakeKernel``, which answers in the kernel's
language: CQEs with ``-errno`` results, ``IORING_CQE_F_MORE`` on multishot
reads, ``-ENOBUFS`` when a buffer group runs dry, cancel results ``0``,
``-ENOENT`` or ``-EALREADY``, write batches that report only their failures
and their end.  Completions are posted to a fake CQ and a real eventfd is
signalled, so the loop wakes the ring exactly as the kernel would.

A test drives it in two ways:

* scripted: ``ring.pending()`` lists the ops the fake kernel holds;
  ``ring.complete(op, data=...)`` and ``ring.fail(op, errno)`` post their
  CQEs (in any order, several before the loop runs to make one batch);
  ``ring.cancel_policy`` decides what an ``ASYNC_CANCEL`` does.
* as a device: ``ring.add_device(fd)`` makes an fd behave like a TUN or a
  datagram socket: packets given to ``device.inject()`` complete the armed
  read (or wait for one), and writes complete at once and are collected in
  ``device.written`` (``device.sent`` for datagrams, with addresses).

``fake_tun()`` gives a ``Tun`` on a ``FakeRing`` plus a ``FakePeer`` to talk to
it; ``fake_datagram_endpoint()`` a UDP endpoint; the pytest plugin
``aiouring.pytest_plugin`` offers them as fixtures.
"""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import socket
import weakref
from collections import deque
from typing import Any, Callable, NamedTuple, Sequence

from . import _validate as check
from ._native import F_BUFFER, F_MORE, GROUP_SHIFT, TAG_BATCH, TAG_EVENT
from .device import TunDevice, validate_ifname
from .protocol import PacketQueueProtocol
from .ring import Ring
from .sockaddr import from_sockaddr, to_sockaddr
from .transport import create_tun_connection
from .tun import Tun

__all__ = [
    "FakeDevice",
    "FakeKernel",
    "FakeOp",
    "FakePeer",
    "FakeRing",
    "FakeTun",
    "UseAfterFree",
    "fake_datagram_endpoint",
    "fake_tun",
]


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
    addr: bytes = b""
    pending: bool = True
    batch: int = -1  # writes of a batch: its slot

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


def _errno(err: Any) -> int:
    """A positive errno number, refused clearly otherwise."""
    check.int_in_range("errno", err, 1, 4095)
    return int(err)


class FakeDevice:
    """A packet device or datagram socket on a fake kernel: ``inject`` packets
    for the application to read, find what it wrote in ``written`` (and
    ``sent`` with destinations); ``fail_writes`` makes the next writes fail."""

    def __init__(self, kernel: "FakeKernel", fd: int, max_packet: int = 65535 + 22) -> None:
        self._kernel = kernel
        self.fd = fd
        self.max_packet = max_packet
        self.inbound: deque[tuple[bytes, bytes]] = deque()  # (raw source address, payload)
        self.written: list[bytes] = []
        self.sent: list[tuple[bytes, Any]] = []  # datagrams: (data, destination or None)
        self.write_errors: deque[int] = deque()
        self.write_event = asyncio.Event()

    def inject(self, *packets: bytes) -> None:
        """Packets arriving from the network side, read in order."""
        for p in packets:
            check.bytes_like(p, "packet")
            if not len(p):
                raise ValueError("a packet is never empty")
            if len(p) > self.max_packet:
                raise ValueError(f"packet of {len(p)} bytes is larger than the device's limit of {self.max_packet}")
        self.inbound.extend((b"", bytes(p)) for p in packets)
        self._kernel.feed(self)

    def inject_datagram(self, data: bytes, addr: Any, family: int = socket.AF_INET) -> None:
        """A datagram from ``addr`` for the endpoint on this fd."""
        check.bytes_like(data)
        self.inbound.append((to_sockaddr(addr, family), bytes(data)))
        self._kernel.feed(self)

    def fail_writes(self, err: int, count: int = 1) -> None:
        """The next ``count`` writes complete with ``-err`` (a positive errno)."""
        err = _errno(err)
        check.int_in_range("count", count, 1)
        self.write_errors.extend([err] * count)


class FakeKernel:
    """The ``NativeRing`` interface with no kernel behind it (see module doc)."""

    backend = "fake"
    setup = "fake"

    def __init__(self, *, batch_limit: int = 256, group_sizes: int | None = None, multishot: bool = True) -> None:
        self.eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.sq: list[FakeOp] = []
        self.ops: dict[int, FakeOp] = {}
        self.cq: deque[tuple[int, int, int, bytes | None]] = deque()
        self.devices: dict[int, FakeDevice] = {}
        self.groups: dict[int, list[Any]] = {}  # bgid -> [entries, in use, bufsize, recvmsg]
        self.batches: dict[int, list[int]] = {}  # slot -> [writes still pending]
        self.cancel_policy = "cancel"
        self.submitted = 0
        self.reaped = 0
        self.overflows = 0
        self.submit_calls = 0
        self.reap_calls = 0  # reaps that returned completions
        self.supports_multishot = multishot
        self._batch_limit = batch_limit
        self._group_limit = group_sizes
        self._next_slot = 0
        self.closed = False

    # -- the NativeRing interface -----------------------------------------------

    @property
    def counters(self) -> tuple[int, int]:
        return self.submitted, self.reaped

    @property
    def batch_limit(self) -> int:
        return self._batch_limit

    @property
    def live_batches(self) -> int:
        return len(self.batches)

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

    def prep_readv(self, fd: int, buffers: Sequence[Any], offset: int, ud: int) -> Any:
        self._prep(FakeOp("readv", fd, ud, size=sum(len(memoryview(b)) for b in buffers), buffer=list(buffers)))
        return buffers

    def prep_writev(self, fd: int, buffers: Sequence[Any], offset: int, ud: int) -> Any:
        data = b"".join(bytes(b) for b in buffers)
        self._prep(FakeOp("writev", fd, ud, size=len(data), data=data))
        return buffers

    def prep_poll(self, fd: int, events: int, ud: int) -> None:
        self._prep(FakeOp("poll", fd, ud, size=events))

    def prep_cancel(self, target: int, ud: int) -> None:
        self._prep(FakeOp("cancel", -1, ud, target=target))

    def prep_cancel_all(self, ud: int) -> None:
        self._prep(FakeOp("cancel_all", -1, ud))

    def prep_read_multishot(self, fd: int, bgid: int, ud: int) -> None:
        self._prep(FakeOp("read_multishot", fd, ud, bgid=bgid))

    def prep_recvmsg_multishot(self, fd: int, bgid: int, ud: int) -> None:
        self._prep(FakeOp("recvmsg_multishot", fd, ud, bgid=bgid))

    def add_buffer_group(self, bgid: int, entries: int, bufsize: int, recvmsg: bool = False) -> None:
        if bgid in self.groups:
            raise FileExistsError(errno.EEXIST, "buffer group exists")
        self.groups[bgid] = [self._group_limit or entries, 0, bufsize, recvmsg]

    def remove_buffer_group(self, bgid: int) -> None:
        self.groups.pop(bgid, None)

    def emit(self, fd: int, kind: int, flags: int, data: bytes, lens: Any, n: int, addrs: bytes, addrlens: Any) -> tuple[int, int]:
        """A write batch, as aiou_emit: one op per packet, reported only if it fails."""
        if self.closed:
            raise OSError(errno.EBADF, "fake ring is closed")
        slot = self._next_slot
        self._next_slot += 1
        self.batches[slot] = [n]
        off = aoff = 0
        for i in range(n):
            size = lens[i]
            addr = b""
            if addrlens is not None:
                addr = addrs[aoff : aoff + addrlens[i]]
                aoff += addrlens[i]
            ud = (TAG_BATCH << GROUP_SHIFT) | (slot << 16) | i
            self._prep(FakeOp("sendto" if addrlens is not None else "write", fd, ud, size=size, data=data[off : off + size], addr=addr, batch=slot))
            off += size
        return n, slot

    def batch_output(self, slot: int, index: int) -> tuple[int, int]:
        return index, 1

    def submit(self) -> int:
        if not self.sq:
            return 0  # nothing queued: no system call, as aiou_submit
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
        if n:
            self.reap_calls += 1
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
            if kind == "poll":
                if device is not None:
                    self.finish(op, op.size)  # a fake device is always writable
            elif device is not None:
                if kind in ("write", "writev", "sendto"):
                    self._device_write(device, op)
                elif kind in ("read", "read_multishot", "recvmsg_multishot"):
                    self.feed(device)

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
        if op.batch >= 0:
            left = self.batches[op.batch]
            left[0] -= 1
            if res < 0:
                self.post(op.ud, res)
            else:
                self.reaped += 1  # a successful write of a batch: consumed, as in C
            if not left[0]:
                del self.batches[op.batch]
                self.post((TAG_EVENT << GROUP_SHIFT) | op.batch, 0)
            return
        self.post(op.ud, res, flags, payload)

    def _device_write(self, device: FakeDevice, op: FakeOp) -> None:
        if device.write_errors:
            self.finish(op, -device.write_errors.popleft())
            return
        if op.kind == "sendto":
            device.sent.append((op.data or b"", from_sockaddr(op.addr) if op.addr else None))
        device.written.append(op.data or b"")
        device.write_event.set()
        self.finish(op, op.size)

    def feed(self, device: FakeDevice) -> None:
        """Hand queued inbound packets to the reads armed on the device."""
        while device.inbound:
            op = next((o for o in self.ops.values() if o.fd == device.fd and o.kind in ("read", "read_multishot", "recvmsg_multishot")), None)
            if op is None:
                return
            raw, payload = device.inbound[0]
            if op.multishot:
                group = self.groups.get(op.bgid)
                if group is not None and group[1] >= group[0]:
                    self.finish(op, -errno.ENOBUFS)  # the ring ran dry: the shot ends
                    continue
                device.inbound.popleft()
                if op.kind == "recvmsg_multishot":
                    if group is not None and len(payload) > group[2]:
                        self.post(op.ud, -errno.EMSGSIZE, F_MORE)  # truncated: reported, as aiou_reap does
                        continue
                    self.finish(op, (len(raw) << 32) | len(payload), raw + payload, more=True)
                else:
                    self.finish(op, len(payload), payload, more=True)
            else:
                device.inbound.popleft()
                packet = payload[: op.size]
                self.finish(op, len(packet), packet)


class FakeRing(Ring):
    """The production ``Ring`` over a ``FakeKernel``: no root, no io_uring."""

    backend = "fake"  # type: ignore[assignment]

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        read_mode: str = "multishot",
        batch_limit: int = 256,
        buffers_per_group: int | None = None,
    ) -> None:
        """``read_mode`` is what ``packet_source(mode="auto")`` reads in
        (``"multishot"`` or ``"single"``); ``buffers_per_group`` caps multishot
        buffer groups (to provoke ``-ENOBUFS``); ``batch_limit`` is the most
        CQEs one reap returns."""
        check.choice("read_mode", read_mode, ("multishot", "single"))
        check.int_in_range("batch_limit", batch_limit, 1)
        if buffers_per_group is not None:
            check.int_in_range("buffers_per_group", buffers_per_group, 1)
        kernel = FakeKernel(batch_limit=batch_limit, group_sizes=buffers_per_group, multishot=read_mode == "multishot")
        super().__init__(loop=loop, kernel=kernel)

    @property
    def kernel(self) -> FakeKernel:
        return self._engine.kernel  # type: ignore[no-any-return]

    @property
    def cancel_policy(self) -> str:
        """``"cancel"``: a cancelled op completes with ``-ECANCELED`` (the
        default); ``"ignore"``: the cancel answers ``-EALREADY`` and the op
        stays pending for the test to complete."""
        return self.kernel.cancel_policy

    @cancel_policy.setter
    def cancel_policy(self, value: str) -> None:
        self.kernel.cancel_policy = check.choice("cancel_policy", value, ("cancel", "ignore"))

    def pending(self, kind: str | None = None, fd: int | None = None) -> list[FakeOp]:
        """Ops submitted to the fake kernel and not completed, oldest first
        (what is queued is submitted first, by the ring's own flush)."""
        self.submit_now()
        return [o for o in self.kernel.ops.values() if (kind is None or o.kind == kind) and (fd is None or o.fd == fd)]

    def complete(self, op: FakeOp, res: int | None = None, data: bytes | None = None, more: bool = False) -> None:
        """Complete ``op``: for reads ``res`` defaults to ``len(data)`` and may
        not exceed the buffer; for writes it defaults to the byte count."""
        if not isinstance(op, FakeOp):
            raise TypeError(f"op must be a FakeOp from pending(), not {type(op).__name__}")
        if data is not None:
            check.bytes_like(data)
            if op.kind in ("read", "readv") and len(data) > op.size:
                raise ValueError(f"{len(data)} bytes of data do not fit the op's {op.size}-byte buffer")
        if res is None:
            res = len(data) if data is not None else op.size
        check.int_in_range("res", res, 0)
        if op.kind in ("read", "readv") and res > op.size:
            raise ValueError(f"res {res} is larger than the op's {op.size}-byte buffer")
        if data is not None and res != len(data) and op.kind in ("read", "readv", "read_multishot"):
            raise ValueError(f"res {res} does not match the {len(data)} bytes of data")
        self.kernel.finish(op, res, data, more)

    def fail(self, op: FakeOp, err: int) -> None:
        """Complete ``op`` with ``-err`` (``err`` a positive errno, e.g. ``errno.EIO``)."""
        if not isinstance(op, FakeOp):
            raise TypeError(f"op must be a FakeOp from pending(), not {type(op).__name__}")
        self.kernel.finish(op, -_errno(err))

    def add_device(self, fd: int, *, max_packet: int = 65535 + 22) -> FakeDevice:
        """Make ``fd`` a fake device of this ring (its reads and writes are
        answered by the fake kernel)."""
        check.fd(fd)
        device = FakeDevice(self.kernel, fd, max_packet)
        self.kernel.devices[fd] = device
        return device


class FakePeer:
    """The network side of a fake TUN: ``send`` packets to the application,
    ``receive`` what it wrote."""

    def __init__(self, device: FakeDevice) -> None:
        self._device = device
        self._taken = 0

    @property
    def device(self) -> FakeDevice:
        return self._device

    def send(self, *packets: bytes) -> None:
        """Packets the application will read from the TUN, in order (each a
        non-empty bytes-like object no larger than the device's MTU plus
        headers)."""
        self._device.inject(*packets)

    @property
    def written(self) -> list[bytes]:
        """Every packet the application wrote, in order."""
        return self._device.written

    def fail_writes(self, err: int, count: int = 1) -> None:
        """The application's next ``count`` writes fail with ``err`` (a
        positive errno such as ``errno.EIO``)."""
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


def fake_device(ring: FakeRing, name: str = "faketun0", *, mtu: int = 1500, mode: str = "tun") -> tuple[TunDevice, FakeDevice]:
    """A ``TunDevice`` whose fd the fake kernel answers for, with the same
    checks as opening a real one."""
    validate_ifname(name)
    check.choice("mode", mode, ("tun", "tap"))
    check.int_in_range("mtu", mtu, 68, 65535)
    fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    device = TunDevice(fd, name, mode, False, mtu)
    return device, ring.add_device(fd, max_packet=device.max_packet_size)


async def fake_tun(name: str = "faketun0", *, mtu: int = 1500, mode: str = "tun", ring: FakeRing | None = None, max_queued: int = 4096) -> FakeTun:
    """A ``Tun`` on a ``FakeRing`` and the peer that talks to it; no root needed.

    Takes the checks of ``open_tun`` (a bad name, mode or MTU raises as it
    would there).  Close the ``Tun`` when done (``async with`` works); the
    ring is closed with it when this call created it.
    """
    check.int_in_range("max_queued", max_queued, 1)
    own_ring = ring is None
    ring = ring or FakeRing()
    device, fake = fake_device(ring, name, mtu=mtu, mode=mode)
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await create_tun_connection(lambda: PacketQueueProtocol(loop, max_queued), device=device, ring=ring)
    except BaseException:
        device.close()
        if own_ring:
            ring.close()
        raise
    tun = Tun(transport, protocol)
    if own_ring:
        protocol.closed_fut.add_done_callback(lambda _: ring.close())  # type: ignore[union-attr]
    return FakeTun(tun, FakePeer(fake), ring)


async def fake_datagram_endpoint(
    protocol_factory: Callable[[], Any], local_addr: tuple[str, int] = ("127.0.0.1", 0), remote_addr: tuple[str, int] | None = None, *, ring: FakeRing | None = None
) -> tuple[Any, Any, FakeDevice]:
    """A UDP endpoint whose I/O goes through a ``FakeRing``: ``(transport,
    protocol, device)``.  ``device.inject_datagram(data, addr)`` delivers a
    datagram; ``device.sent`` lists ``(data, addr)`` the endpoint sent (addr
    None on a connected endpoint); ``device.fail_writes(errno)`` refuses sends.
    The socket is real (bound on loopback, never used for I/O): no root needed.
    """
    from .udp import create_datagram_endpoint

    ring = ring or FakeRing()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(local_addr)
        if remote_addr is not None:
            sock.connect(remote_addr)
        device = ring.add_device(sock.fileno())
        transport, protocol = await create_datagram_endpoint(protocol_factory, sock=sock, ring=ring)
    except BaseException:
        sock.close()
        raise
    return transport, protocol, device
