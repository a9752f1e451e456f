"""The fake kernel: ``FakeKernel`` answers the ``NativeRing`` interface the
way the kernel does, for ``FakeRing``; ``FakeDevice`` is a TUN or datagram
socket on it.  See ``aiouring.testing`` for how tests use them.

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
import struct
import weakref
from collections import deque
from typing import Any, Sequence

from .. import _validate as check
from .._native import BR_VNET, EMIT_GRO_TCP, EMIT_GRO_UDP, EMIT_VNET, F_BUFFER, F_MORE, GROUP_SHIFT, TAG_BATCH, TAG_EVENT
from .._native import offload as native_offload
from ..sockaddr import from_sockaddr, to_sockaddr

__all__ = ["FakeDevice", "FakeKernel", "FakeOp", "UseAfterFree"]

VNET_HDR = struct.Struct("=BBHHHH")  # struct virtio_net_hdr
_ZERO_VNET = bytes(VNET_HDR.size)


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
    ``sent`` with destinations); ``fail_writes`` makes the next writes fail.

    ``vnet``: a TUN with a virtio header, as ``IFF_VNET_HDR`` makes it:
    ``inject`` prefixes ordinary packets with an empty header and
    ``inject_super`` passes a super-packet (header included) as the kernel
    hands one over; what the application writes is checked as the kernel
    checks it (a bad header is refused with ``EINVAL``), ``writes`` holds
    each write as made (merged super-packets included) and ``written`` the
    packets they stand for.  ``refuse_merged`` models the kernels that take
    ``IFF_VNET_HDR`` and then refuse merged writes with ``EINVAL``."""

    def __init__(self, kernel: "FakeKernel", fd: int, max_packet: int = 65535 + 22, *, vnet: bool = False) -> None:
        self._kernel = kernel
        self.fd = fd
        self.max_packet = max_packet
        self.vnet = vnet
        self.refuse_merged = False
        self.inbound: deque[tuple[bytes, bytes]] = deque()  # (raw source address, payload)
        self.written: list[bytes] = []
        self.writes: list[bytes] = []  # vnet: each write as made, header included
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
        prefix = _ZERO_VNET if self.vnet else b""
        self.inbound.extend((b"", prefix + bytes(p)) for p in packets)
        self._kernel.feed(self)

    def inject_super(self, *super_packets: bytes) -> None:
        """Reads as a vnet TUN hands them over: each a virtio header and a
        packet (a super-packet with a GSO header, say)."""
        if not self.vnet:
            raise ValueError("this device has no virtio header: use inject()")
        for p in super_packets:
            check.bytes_like(p, "super_packet")
            if len(p) <= VNET_HDR.size:
                raise ValueError("a super-packet is a virtio header and a packet")
        self.inbound.extend((b"", bytes(p)) for p in super_packets)
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
        self.members: dict[int, list[tuple[list[int], bool]]] = {}  # slot -> per output: (packets, merged)
        self.split_errors = 0
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

    def add_buffer_group(self, bgid: int, entries: int, bufsize: int, kind: int = 0) -> None:
        if bgid in self.groups:
            raise FileExistsError(errno.EEXIST, "buffer group exists")
        self.groups[bgid] = [self._group_limit or entries, 0, bufsize, kind, 0, 0]  # ..., reads, records

    def remove_buffer_group(self, bgid: int) -> None:
        self.groups.pop(bgid, None)

    def group_counts(self, bgid: int) -> tuple[int, int]:
        """(reads that carried data, packets they made) of a buffer group."""
        group = self.groups.get(bgid)
        if group is None:
            raise FileNotFoundError(errno.ENOENT, f"no buffer group {bgid}")
        return group[4], group[5]

    def emit(self, fd: int, kind: int, flags: int, gso_max: int, data: bytes, lens: Any, n: int, addrs: bytes, addrlens: Any) -> tuple[int, int, int]:
        """A write batch, as aiou_emit: one op per output (a packet, or with
        EMIT_GRO_* the super-packets the same C coalescer makes), reported
        only if it fails."""
        if self.closed:
            raise OSError(errno.EBADF, "fake ring is closed")
        slot = self._next_slot
        self._next_slot += 1
        packets, dests, off, aoff = [], [], 0, 0
        for i in range(n):
            packets.append(data[off : off + lens[i]])
            off += lens[i]
            if addrlens is not None:
                dests.append(addrs[aoff : aoff + addrlens[i]])
                aoff += addrlens[i]
        if addrlens is None and flags & (EMIT_GRO_TCP | EMIT_GRO_UDP):
            gro = (native_offload.GRO_TCP if flags & EMIT_GRO_TCP else 0) | (native_offload.GRO_UDP if flags & EMIT_GRO_UDP else 0)
            outputs = native_offload.coalesce_members(packets, gro)
        else:
            prefix = _ZERO_VNET if flags & EMIT_VNET else b""
            outputs = [(prefix + p, [i]) for i, p in enumerate(packets)]
        self.batches[slot] = [len(outputs)]
        self.members[slot] = [(m, len(m) > 1) for _, m in outputs]
        for index, (out, members) in enumerate(outputs):
            ud = (TAG_BATCH << GROUP_SHIFT) | (slot << 16) | index
            addr = dests[members[0]] if dests else b""
            self._prep(FakeOp("sendto" if addrlens is not None else "write", fd, ud, size=len(out), data=out, addr=addr, batch=slot))
        return len(outputs), len(outputs), slot

    def batch_members(self, slot: int, index: int) -> tuple[list[int], bool, int]:
        members, merged = self.members[slot][index]
        return list(members), merged, 0

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
            group = None
            if payload is not None:
                off = len(arena)
                arena += payload
                group = self.groups.get(((ud >> GROUP_SHIFT) & 0xFFFF) - 1)
                if group is not None:
                    group[1] -= 1  # the buffer is recycled once copied out
            if payload is not None:  # (off >= 0)
                # packets from a buffer ring: handed over in pk, as aiou_reap does
                # (a vnet TUN's read split into the packets it stands for)
                if group is not None and group[3] & BR_VNET:
                    del arena[off:]
                    try:
                        parts = native_offload.split(payload)
                    except ValueError:
                        parts = []
                        self.split_errors += 1
                    for part in parts:
                        pk += (ud, len(arena), len(part))
                        arena += part
                    if not parts:
                        res = -errno.EAGAIN  # nothing to deliver; a final CQE re-arms
                else:
                    parts = [payload]
                    pk += (ud, off, res)
                if group is not None and parts:
                    group[4] += 1
                    group[5] += len(parts)
                if not flags & F_MORE:
                    out += (ud, res, flags, -2 if res > 0 else -1, len(pk) // 3)  # the shot ended: its handler hears of it
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

    forget = close  # after fork: the fake kernel is this process's own

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
        data = op.data or b""
        if op.kind == "sendto":
            device.sent.append((data, from_sockaddr(op.addr) if op.addr else None))
        if device.vnet:
            refusal = _vnet_refusal(data, device.refuse_merged)
            if refusal:
                self.finish(op, -refusal)
                return
            device.writes.append(data)
            device.written.extend(native_offload.split(data))
        else:
            device.written.append(data)
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


def _vnet_refusal(data: bytes, refuse_merged: bool) -> int:
    """The errno a vnet TUN answers a write with (0: taken), by the rules of
    the kernel's __virtio_net_hdr_to_skb."""
    if len(data) <= VNET_HDR.size:
        return errno.EINVAL
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(data)
    kind = gso_type & ~native_offload.GSO_ECN
    if kind not in (native_offload.GSO_NONE, native_offload.GSO_TCPV4, native_offload.GSO_TCPV6, native_offload.GSO_UDP_L4):
        return errno.EINVAL
    if flags & native_offload.F_NEEDS_CSUM and csum_start + csum_offset + 2 > len(data) - VNET_HDR.size:
        return errno.EINVAL
    if kind != native_offload.GSO_NONE:
        if not gso_size or refuse_merged:
            return errno.EINVAL
        if kind in (native_offload.GSO_TCPV4, native_offload.GSO_TCPV6) and flags & native_offload.F_NEEDS_CSUM and csum_offset != 16:
            return errno.EINVAL
        if kind == native_offload.GSO_UDP_L4 and (not flags & native_offload.F_NEEDS_CSUM or csum_offset != 6):
            return errno.EINVAL
    return 0
