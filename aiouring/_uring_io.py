"""Packet I/O on io_uring: multishot reads and recvmsg on buffer rings, and
write batches (see ``aiouring.packet_io`` for the contract)."""
from __future__ import annotations

import errno
from array import array
from typing import Any

from ._engine import UringEngine
from ._native import BR_GRO, BR_RECVMSG, BR_VNET, F_MORE, KIND_DATAGRAM, POLLOUT
from .errors import ClosedError, oserror
from .packet_io import FATAL_RECEIVE_ERRNOS, REARM_ERRNOS, OnDatagrams, OnError, OnPackets, OnProgress, OnStopped, SinkBase
from .sockaddr import from_sockaddr

__all__ = ["UringDatagramSource", "UringPacketSource", "UringSink"]


class UringPacketSource:
    """A multishot read on a buffer ring (``"multishot"``), or one plain read
    re-armed on each completion (``"single"``)."""

    datagrams = False
    _overhead = 0  # buffer bytes beyond the packet itself

    def __init__(self, engine: UringEngine, fd: int, bufsize: int, on_packets: OnPackets | OnDatagrams, on_stopped: OnStopped, mode: str, buffers: int, on_error: OnError | None = None, split: bool = False) -> None:
        """``split``: a TUN read starts with a virtio header (super-packets
        are split into their segments); a datagram carries a UDP_GRO segment
        size (split by it)."""
        self._engine = engine
        self.fd = fd
        self.mode = mode
        self._bufsize = bufsize
        self._on_packets = on_packets
        self._on_stopped = on_stopped
        self._on_error = on_error
        self._batch: list[Any] = []
        self._ud: int | None = None
        self._cancelling = False
        self._stopped = False
        self._stop_exc: BaseException | None = None
        self._stop_pending = False
        self._buf: bytearray | None = None
        self._bgid = -1
        self._reads_before_stop = 0
        self._single_reads = 0
        if mode != "single":
            kind = (BR_RECVMSG | (BR_GRO if split else 0)) if self.datagrams else (BR_VNET if split else 0)
            self._bgid = engine.alloc_group()
            try:
                engine.kernel.add_buffer_group(self._bgid, buffers, bufsize + self._overhead, kind)
            except BaseException:
                engine.free_group(self._bgid)
                raise
        self._arm()

    @property
    def active(self) -> bool:
        return not self._stopped and not self._cancelling

    @property
    def reads(self) -> int:
        """Reads that carried data (fewer than packets when super-packets or
        GRO'd datagrams were split)."""
        if self._bgid >= 0:
            self._reads_before_stop = self._engine.kernel.group_counts(self._bgid)[0]
        return self._reads_before_stop + self._single_reads

    def _arm(self) -> None:
        engine = self._engine
        ud = engine.new_id()
        if self.mode == "single":
            self._buf = bytearray(self._bufsize)
            keep = engine.kernel.prep_read(self.fd, self._buf, -1, ud)
            engine.register(ud, self._on_cqe, (self, keep))
        else:
            ud = engine.group_ud(ud, self._bgid)
            if self.datagrams:
                engine.kernel.prep_recvmsg_multishot(self.fd, self._bgid, ud)
            else:
                engine.kernel.prep_read_multishot(self.fd, self._bgid, ud)
            engine.register(ud, self._on_cqe, self)
        self._ud = ud

    def absorb(self, pk: list[int], arena: Any, i: int, stop: int) -> int:
        """Take the run of packets for this source starting at ``pk[i]``."""
        ud = pk[i]
        append = self._batch.append
        while i < stop and pk[i] == ud:
            off = pk[i + 1]
            append(arena[off : off + pk[i + 2]])
            i += 3
        return i

    def _take_final(self, size: int, arena: Any, off: int) -> None:
        assert self._buf is not None  # a single read: the bytes are in its own buffer
        self._single_reads += 1
        self._batch.append(bytes(memoryview(self._buf)[:size]))

    @staticmethod
    def _on_cqe(ctx: Any, res: int, flags: int, arena: Any, off: int) -> None:
        self: UringPacketSource = ctx if isinstance(ctx, UringPacketSource) else ctx[0]
        if res > 0:
            if off != -2:  # -2: its packets came through absorb() already
                self._take_final(res, arena, off)
            self._engine.touch(self)
        elif res < 0 and self._on_error is not None and -res not in FATAL_RECEIVE_ERRNOS and -res not in REARM_ERRNOS and res != -errno.ECANCELED:
            # one datagram's error (ICMP, truncation): reported in its place
            # among the datagrams, and receiving goes on
            if self._batch:
                batch, self._batch = self._batch, []
                self._on_packets(batch)
            try:
                self._on_error(oserror(res, f"receive on fd {self.fd}"))
            except Exception as exc:
                self._engine.report(exc, "exception in a receive error callback")
            res = -errno.EAGAIN  # re-arm below if the shot ended
        if flags & F_MORE:
            return
        self._ud = None
        if self._cancelling:
            self._stop(None)
        elif res > 0 or -res in REARM_ERRNOS:
            self._arm()
        elif res == 0:
            self._stop(EOFError(f"end of file on fd {self.fd}"))
        elif res == -errno.ECANCELED:
            if self._engine.closing:
                self._stop(ClosedError("ring closed"))
            else:
                self._arm()  # a cancel nobody here asked for
        else:
            self._stop(oserror(res, f"read on fd {self.fd}"))

    def _stop(self, exc: BaseException | None) -> None:
        if self._bgid >= 0:
            self._reads_before_stop = self._engine.kernel.group_counts(self._bgid)[0]
            try:
                self._engine.kernel.remove_buffer_group(self._bgid)
            finally:
                self._engine.free_group(self._bgid)
                self._bgid = -1
        self._stopped = True
        self._stop_exc = exc
        self._stop_pending = True
        self._engine.touch(self)

    def deliver(self) -> None:
        batch = self._batch
        if batch:
            self._batch = []
            self._on_packets(batch)
        if self._stop_pending:
            self._stop_pending = False
            self._on_stopped(self._stop_exc)

    def cancel(self) -> None:
        if self._stopped or self._cancelling:
            return
        self._cancelling = True
        if self._ud is not None:
            self._engine.cancel(self._ud)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "cancelling" if self._cancelling else "armed"
        return f"<{type(self).__name__} fd={self.fd} mode={self.mode} {state}>"


class UringDatagramSource(UringPacketSource):
    """A multishot recvmsg: records are (payload, source address)."""

    datagrams = True
    # the kernel lays out each buffer as struct io_uring_recvmsg_out (16
    # bytes), room for the source address (a sockaddr_storage), then the payload
    _overhead = 16 + 128

    def absorb(self, pk: list[int], arena: Any, i: int, stop: int) -> int:
        ud = pk[i]
        append = self._batch.append
        while i < stop and pk[i] == ud:
            off, v = pk[i + 1], pk[i + 2]
            alen = v >> 32
            append((arena[off + alen : off + alen + (v & 0xFFFFFFFF)], from_sockaddr(arena[off : off + alen])))
            i += 3
        return i


class _Batch:
    """One emit's packets while the kernel works on them."""

    __slots__ = ("owner", "slot", "data", "joined", "raw_addrs", "addrs", "nbytes", "again", "full")

    def __init__(self, owner: "UringSink", slot: int, data: list[bytes], joined: bytes, addrs: list[bytes], raw_addrs: bytes, nbytes: int) -> None:
        self.owner = owner
        self.slot = slot
        self.data = data  # the packets, for a retry
        # what the kernel reads from (payloads, destination addresses): alive until the batch is done
        self.joined = joined
        self.raw_addrs = raw_addrs
        self.addrs = addrs
        self.nbytes = nbytes
        self.again: list[int] = []  # packets to send again: the socket was full (EAGAIN), or an offload was refused
        self.full = False  # ... and the socket was full: wait until it is writable


class UringSink(SinkBase):
    """Packets leave in write batches: one native call and one SQE each per
    flush; successful completions never reach Python."""

    __slots__ = ("_poll_ud", "_batches")

    def __init__(self, engine: UringEngine, fd: int, kind: int, on_error: OnError, on_progress: OnProgress, flags: int = 0) -> None:
        super().__init__(engine, fd, kind, on_error, on_progress, flags)
        self._poll_ud: int | None = None
        self._batches = 0

    @property
    def in_kernel(self) -> bool:
        return self._batches > 0 or self._poll_ud is not None

    def _hand_over(self, data: list[bytes], lens: array[int], addrs: list[bytes], alens: array[int], nbytes: int) -> int:
        engine: UringEngine = self.engine
        kernel = engine.kernel
        joined = b"".join(data)
        datagrams = self.kind == KIND_DATAGRAM
        raw_addrs = b"".join(addrs) if datagrams else b""
        queued, planned, slot = kernel.emit(self.fd, self.kind, self.flags, self.gso_max, joined, lens, len(data), raw_addrs, alens if datagrams else None)
        if not queued:
            return 0
        batch = _Batch(self, slot, data, joined, addrs, raw_addrs, nbytes)
        if queued < planned:
            # the SQ could not be drained: what did not make it goes back,
            # in order, and counts as queued here, not in the kernel
            left = sorted(i for k in range(queued, planned) for i in kernel.batch_members(slot, k)[0])
            batch.nbytes -= sum(lens[i] for i in left)
            self.requeue([data[i] for i in left], [addrs[i] for i in left] if datagrams else [])
        engine.add_batch(slot, batch)
        self._kernel_bytes += batch.nbytes
        self._batches += 1
        self.writes += queued
        return len(data)

    def batch_failed(self, batch: _Batch, index: int, res: int) -> None:
        members, coalesced, seg = self.engine.kernel.batch_members(batch.slot, index)
        datagrams = self.kind == KIND_DATAGRAM
        if coalesced and (res == -errno.EINVAL if not datagrams else res in (-errno.EIO, -errno.EINVAL, -errno.EMSGSIZE)):
            self.refused(res, seg)
            batch.again.extend(members)  # sent again one by one when the batch is done
        elif res == -errno.EAGAIN and datagrams:
            batch.again.extend(members)  # a full send buffer (the sends are MSG_DONTWAIT)
            batch.full = True
        elif res == -errno.ECANCELED and datagrams and not self.closed:
            batch.again.extend(members)  # linked after a send that failed: sent again, in order
        elif not self.closed or res != -errno.ECANCELED:
            for m in members:
                self._error(oserror(res, "sendmsg" if datagrams else f"write to fd {self.fd}"), batch.data[m])

    def batch_done(self, batch: _Batch) -> None:
        self._kernel_bytes -= batch.nbytes
        self._batches -= 1
        if batch.again and not self.closed:
            again = sorted(batch.again)
            if batch.full:
                self._wait_writable()  # first: the requeued datagrams wait for it
            self.requeue([batch.data[i] for i in again], [batch.addrs[i] for i in again] if batch.addrs else [])
        self._progress()

    def _wait_writable(self) -> None:
        if self._poll_ud is not None:
            return
        engine: UringEngine = self.engine
        self._blocked = True
        ud = engine.new_id()
        engine.kernel.prep_poll(self.fd, POLLOUT, ud)
        engine.register(ud, UringSink._writable, self)
        self._poll_ud = ud

    @staticmethod
    def _writable(self: "UringSink", res: int, flags: int, arena: Any, off: int) -> None:
        self._poll_ud = None
        if res < 0 and res != -errno.ECANCELED and not self.closed:
            self._error(oserror(res, f"poll on fd {self.fd}"))
        self.unblocked()
        self._progress()

    def close(self) -> None:
        super().close()
        if self._poll_ud is not None and not self.engine.closed:
            self.engine.cancel(self._poll_ud)
