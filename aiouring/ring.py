"""Ring: one io_uring driven by the running asyncio event loop.

How it works, and the kernel behaviours it relies on
-----------------------------------------------------
* One kernel ring per ``Ring``, with an eventfd registered through the *plain*
  ``io_uring_register_eventfd`` (the ``_async`` variant never fires for TUN
  reads: they complete through task work, not io-wq workers).  The loop
  watches the eventfd with ``loop.add_reader``, which works the same on
  asyncio's selector loop and on uvloop.
* Submission is batched: every op only fills an SQE; the first op of a loop
  iteration schedules one ``call_soon`` flush, and that flush is the one
  ``io_uring_enter`` of the iteration.  A full SQ is submitted early in C.
* Completion: when the eventfd is readable we drain it *first*, then reap.
  Draining after reaping could eat the only signal for CQEs posted in
  between.  The eventfd is a hint: several CQEs can make one signal and a
  signal can come with none ready, both normal.  One native call copies up to
  a batch of CQEs out and advances the CQ once; packets that landed in
  provided buffers are copied out and their buffers recycled in the same
  call, before any Python sees them (re-arming a multishot read before its
  buffers are back storms ``-ENOBUFS``).  After ``batch_limit`` CQEs a few
  times over, the rest is left for a ``call_soon`` so one busy ring cannot
  starve the loop.
* Dispatch is by ``user_data``: ``self._ops`` maps it to ``(handler, ctx)``
  and the CQE calls ``handler(ctx, res, flags, payload)``.  An entry stays
  while the kernel may still post for it (``IORING_CQE_F_MORE``), and holds
  the op's buffer: nothing the kernel may write into is freed before the
  op's final CQE, whatever happened to the future that asked for it.
  Reserved ``user_data`` values (``Tag``) mark CQEs nobody waits for.

Cancellation, op by op
----------------------
* ``read``/``readinto``/``readv``/``write``/``writev``/``nop``: when the
  awaiting task is cancelled, ``CancelledError`` is raised at once and an
  ``IORING_OP_ASYNC_CANCEL`` is submitted for the op.  The buffer stays
  referenced until the op's own CQE.  If that CQE reports success anyway (the
  cancel lost the race: the bytes were read or written), the result is passed
  to the op's ``on_late`` callback; without one, a late *read* is reported to
  the loop's exception handler with its size (the data was consumed from the
  file), and a late write is dropped (its bytes did reach the file).
* Packet readers (``start_packet_reader``): ``cancel()`` submits a cancel;
  packets that complete before the cancel takes effect are still delivered,
  then ``on_stopped(None)`` is called once.
* ``close()``: cancels every op in the kernel, waits (bounded, blocking
  briefly) for their CQEs, and only then frees native memory.  Awaiting
  callers get ``ClosedError``.  If the kernel did not answer in time the
  buffers are kept for the life of the process rather than freed under it.

A ``Ring`` belongs to one event loop and one thread; it is not thread-safe.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
import warnings
from enum import IntEnum
from typing import Any, Callable, Sequence

from ._native import F_MORE, GROUP_SHIFT, ID_MASK, MAX_GROUPS, MAX_WRITERS, POOL_GROUP, NativeRing
from .errors import ClosedError, oserror

__all__ = ["Ring", "RingBase", "PacketReader", "PacketWriter", "Tag"]

logger = logging.getLogger("aiouring")

Handler = Callable[[Any, int, int, Any], None]
OnPackets = Callable[[list], None]
OnStopped = Callable[["BaseException | None"], None]

# Ops whose buffers outlived a ring that could not wait for their CQEs.
_GRAVEYARD: list[Any] = []

_MAX_ROUNDS = 4  # reap rounds of batch_limit CQEs before yielding to the loop
_CLOSE_WAIT = 2.0  # seconds close() waits for the CQEs of cancelled ops
_REARM_ERRNOS = frozenset({-errno.EAGAIN, -errno.EINTR, -errno.ENOBUFS})
_FATAL_DATAGRAM_ERRNOS = frozenset({-errno.EBADF, -errno.ENOTSOCK, -errno.EINVAL, -errno.EFAULT, -errno.EBADFD})


class Tag(IntEnum):
    """Reserved ``user_data`` values (op ids start above them)."""

    IGNORE = 1  # the CQE of a cancel request: nobody waits for it
    FIRST_ID = 16


class _Op:
    """One awaitable op in flight: its future, and what the kernel may touch."""

    __slots__ = ("ring", "fut", "kind", "fd", "buffer", "keep", "on_late", "ud")

    def __init__(self, ring: "Ring", kind: str, fd: int, buffer: Any, on_late: Any) -> None:
        self.ring = ring
        self.fut: asyncio.Future = ring._loop.create_future()
        self.kind = kind
        self.fd = fd
        self.buffer = buffer
        self.keep: Any = None
        self.on_late = on_late
        self.ud = 0

    def value(self, res: int) -> Any:
        if self.kind == "read":
            return bytes(memoryview(self.buffer)[:res])
        return res

    @staticmethod
    def complete(op: "_Op", res: int, flags: int, payload: Any) -> None:
        fut = op.fut
        if fut.done():
            if res >= 0:
                op.ring._late_result(op, res)
            return
        if res < 0:
            if res == -errno.ECANCELED and op.ring._closing:
                fut.set_exception(ClosedError(f"ring closed while a {op.kind} on fd {op.fd} was in flight"))
            else:
                fut.set_exception(oserror(res, f"{op.kind} on fd {op.fd}"))
        else:
            fut.set_result(op.value(res))


class PacketReader:
    """A read kept armed on one fd, handing over packets in batches.

    ``mode`` is ``"multishot"`` (one multishot read drawing from a provided
    buffer ring), ``"single"`` (one plain read, re-armed on each completion),
    or ``"readiness"`` (the epoll backend).  ``-EAGAIN``, ``-EINTR`` and
    ``-ENOBUFS`` re-arm; any other error stops the reader with
    ``on_stopped(exc)``; ``cancel()`` stops it with ``on_stopped(None)`` after
    delivering every packet the kernel had already read.
    """

    mode: str
    fd: int

    @property
    def active(self) -> bool:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError


class _UringPacketReader(PacketReader):
    def __init__(
        self,
        ring: "Ring",
        fd: int,
        bufsize: int,
        on_packets: OnPackets,
        on_stopped: OnStopped,
        mode: str,
        buffers: int,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._ring = ring
        self.fd = fd
        self.mode = mode
        self._on_error = on_error
        self._bufsize = bufsize
        self._on_packets = on_packets
        self._on_stopped = on_stopped
        self._batch: list[bytes] = []
        self._ud: int | None = None
        self._cancelling = False
        self._stopped = False
        self._stop_exc: BaseException | None = None
        self._stop_pending = False
        self._buf: bytearray | None = None
        self._bgid = -1
        if mode in ("multishot", "recvmsg"):
            self._bgid = ring._alloc_group()
            try:
                ring._kernel.add_buffer_group(self._bgid, buffers, bufsize, mode == "recvmsg")
            except BaseException:
                ring._free_group(self._bgid)
                raise
        self._arm()

    @property
    def active(self) -> bool:
        return not self._stopped and not self._cancelling

    def _arm(self) -> None:
        ring = self._ring
        ud = ring._new_id()
        if self.mode == "multishot":
            ud = ring._kernel.group_ud(ud, self._bgid)
            ring._kernel.prep_read_multishot(self.fd, self._bgid, ud)
            ring._ops[ud] = (_UringPacketReader._on_cqe, self)
        elif self.mode == "recvmsg":
            ud = ring._kernel.group_ud(ud, self._bgid)
            ring._kernel.prep_recvmsg_multishot(self.fd, self._bgid, ud)
            ring._ops[ud] = (_UringPacketReader._on_cqe, self)
        else:
            self._buf = bytearray(self._bufsize)
            keep = ring._kernel.prep_read(self.fd, self._buf, -1, ud)
            ring._ops[ud] = (_UringPacketReader._on_cqe, (self, keep))
        self._ud = ud
        ring._queued()

    @staticmethod
    def _on_cqe(ctx: Any, res: int, flags: int, payload: Any) -> None:
        self: _UringPacketReader = ctx if type(ctx) is _UringPacketReader else ctx[0]
        if res > 0:
            if payload is None:
                payload = bytes(memoryview(self._buf)[:res])  # type: ignore[arg-type]
            if not self._batch:
                self._ring._touched.append(self)
            self._batch.append(payload)
        elif (
            res < 0
            and self._on_error is not None
            and res not in _FATAL_DATAGRAM_ERRNOS
            and res not in _REARM_ERRNOS
            and res != -errno.ECANCELED
        ):
            # datagram sockets: an ICMP error or a truncated datagram is not fatal
            self._on_error(oserror(res, f"receive on fd {self.fd}"))
            if not flags & F_MORE and not self._cancelling:
                self._ud = None
                self._arm()
                return
        if flags & F_MORE:
            return
        self._ud = None
        if self._cancelling:
            self._stop(None)
        elif res > 0 or res in _REARM_ERRNOS:
            self._arm()
        elif res == 0:
            self._stop(EOFError(f"end of file on fd {self.fd}"))
        elif res == -errno.ECANCELED:
            if self._ring._closing:
                self._stop(ClosedError("ring closed"))
            else:
                self._arm()
        else:
            self._stop(oserror(res, f"read on fd {self.fd}"))

    def _stop(self, exc: BaseException | None) -> None:
        if self._bgid >= 0:
            try:
                self._ring._kernel.remove_buffer_group(self._bgid)
            finally:
                self._ring._free_group(self._bgid)
                self._bgid = -1
        self._stopped = True
        self._stop_exc = exc
        self._stop_pending = True
        if not self._batch:
            self._ring._touched.append(self)

    def _deliver(self) -> None:
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
            self._ring._cancel_ud(self._ud)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "cancelling" if self._cancelling else "armed"
        return f"<PacketReader fd={self.fd} mode={self.mode} {state}>"


class PacketWriter:
    """Writes whole packets to one fd with no future or callback per packet.

    ``write(data)`` copies the packet into the ring's write pool and queues
    the write for this iteration's submit; it returns ``False`` (and takes
    nothing) when the pool or the SQ is full, and ``on_space()`` is called
    once there is room again.  A write the kernel refuses calls
    ``on_error(-errno)``; successful ones are never reported.  Packets larger
    than a pool slot are written from the caller's bytes object, which the
    ring keeps until the kernel's completion.  ``in_flight`` counts writes
    the kernel has not completed; ``when_drained(cb)`` calls ``cb()`` once it
    is zero.
    """

    __slots__ = ("_ring", "_fd", "_tag", "_copy", "_sendto", "_on_error", "_on_space", "_big", "_drained_cb", "__weakref__")

    def __init__(self, ring: "Ring", fd: int, on_error: Callable[[int], None], on_space: Callable[[], None]) -> None:
        self._ring = ring
        self._fd = fd
        self._on_error = on_error
        self._on_space = on_space
        self._big = 0
        self._drained_cb: Callable[[], None] | None = None
        self._tag = ring._alloc_writer(self)
        self._copy = ring._kernel.write_copy
        self._sendto = ring._kernel.sendto_copy

    def write(self, data: bytes) -> bool:
        res = self._copy(self._fd, data, len(data), self._tag)
        if res == 0:
            ring = self._ring
            if ring._flush_handle is None:
                ring._flush_handle = ring._loop.call_soon(ring._flush)
            return True
        return self._refused(data, res)

    def sendto(self, data: bytes, addr: Any, sockaddr: bytes) -> bool:
        """A datagram to ``addr``, given as raw ``struct sockaddr`` bytes in
        ``sockaddr`` (empty: the connected peer; ``addr`` is for backends that
        want the tuple).  Returns False when the pool is full; raises
        ``OSError(EMSGSIZE)`` for a datagram larger than a pool slot allows."""
        res = self._sendto(self._fd, data, len(data), sockaddr, len(sockaddr), self._tag)
        if res == 0:
            ring = self._ring
            if ring._flush_handle is None:
                ring._flush_handle = ring._loop.call_soon(ring._flush)
            return True
        if res == -errno.EMSGSIZE:
            raise oserror(res, f"datagram of {len(data)} bytes is larger than the ring's write slots")
        return self._refused(data, res)

    def _refused(self, data: bytes, res: int) -> bool:
        ring = self._ring
        if res == -errno.EMSGSIZE:
            self._big += 1
            ring.submit_write(self._fd, data, self._big_done)
            return True
        if res in (-errno.ENOBUFS, -errno.EBUSY):
            if self not in ring._space_waiters:
                ring._space_waiters.append(self)
            return False
        if ring._closed or ring._closing or res == -errno.EBADF:
            raise ClosedError("the ring is closed")
        raise oserror(res, f"write to fd {self._fd}")

    def _big_done(self, data: bytes, res: int, flags: int, payload: Any) -> None:
        self._big -= 1
        if res < 0:
            self._on_error(res)

    @property
    def in_flight(self) -> int:
        ring = self._ring
        if ring._closed:
            return 0
        return ring._kernel.writer_in_flight(self._tag) + self._big

    def when_drained(self, callback: Callable[[], None]) -> None:
        if self.in_flight == 0:
            callback()
        else:
            self._drained_cb = callback
            self._ring._drain_waiters.append(self)

    def close(self) -> None:
        """Stop using this writer (writes in flight still complete)."""
        self._ring._free_writer(self)


class RingBase:
    """What both backends share: the loop they belong to and the async close protocol."""

    _loop: asyncio.AbstractEventLoop
    _closed: bool

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """``close()``, then let the callbacks it scheduled run."""
        self.close()
        await asyncio.sleep(0)

    async def __aenter__(self) -> "RingBase":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()


class Ring(RingBase):
    """One io_uring plus an eventfd, driven by an asyncio loop (see module doc).

    ``entries`` sizes the submission queue (the completion queue gets 4x, or
    ``cq_entries``).  ``setup`` picks the kernel setup flags: ``"auto"``
    (``COOP_TASKRUN|TASKRUN_FLAG``, falling back to none on older kernels),
    ``"coop"``, ``"defer"`` (``SINGLE_ISSUER|DEFER_TASKRUN``), ``"plain"`` or
    ``"sqpoll"``.

    Raises ``aiouring.UnsupportedError`` (an ``OSError``) naming the reason
    when io_uring cannot be set up here; ``aiouring.open_ring(backend="auto")``
    falls back to the readiness backend instead.
    """

    backend = "uring"

    def __init__(
        self,
        entries: int = 256,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        setup: str = "auto",
        cq_entries: int | None = None,
        write_slots: int = 1024,
        slot_size: int = 2048,
        register_pool: bool = False,
        kernel: Any = None,
    ) -> None:
        if not isinstance(entries, int) or not 1 <= entries <= 32768:
            raise ValueError(f"entries must be an int from 1 to 32768, not {entries!r}")
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError("Ring() needs a running event loop, or pass loop=") from None
        self._loop = loop
        self._closed = True  # until the kernel ring exists, for __del__
        if kernel is None:
            kernel = NativeRing(entries, cq_entries or 4 * entries, setup, write_slots, slot_size, register_pool)
        self._kernel = kernel
        self._ops: dict[int, tuple[Handler, Any]] = {}
        self._next_id = int(Tag.FIRST_ID)
        self._flush_handle: asyncio.Handle | None = None
        self._reap_handle: asyncio.Handle | None = None
        self._touched: list[_UringPacketReader] = []
        self._free_groups = list(range(MAX_GROUPS - 1, -1, -1))
        self._writers: dict[int, PacketWriter] = {}
        self._free_writers = list(range(MAX_WRITERS - 1, -1, -1))
        self._space_waiters: list[PacketWriter] = []
        self._drain_waiters: list[PacketWriter] = []
        self._closing = False
        self._closed = False
        self._warn_on_gc = True
        self._eventfd = self._kernel.eventfd
        loop.add_reader(self._eventfd, self._on_wakeup)

    # -- properties ----------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Ops the kernel still owns (including kept-armed reads and pooled writes)."""
        if self._closed:
            return 0
        return len(self._ops) + self._kernel.pool_in_flight

    @property
    def counters(self) -> tuple[int, int]:
        """(SQEs submitted, CQEs reaped) over the ring's life."""
        return self._kernel.counters

    @property
    def setup(self) -> str:
        return self._kernel.setup

    @property
    def overflows(self) -> int:
        """Times the completion queue was found overflowed (no CQE is lost:
        the kernel keeps them and the next reap flushes them)."""
        return self._kernel.overflows

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self._closing else "open"
        return f"<Ring {state} backend={self.backend} setup={self._kernel.setup} in_flight={len(self._ops)}>"

    # -- awaitable ops ---------------------------------------------------------

    async def nop(self) -> int:
        """Submit an ``IORING_OP_NOP``; returns its result (0)."""
        return await self._wait(self._submit("nop", -1, None, None, self._kernel.prep_nop))

    async def read(self, fd: int, nbytes: int, offset: int = -1, *, on_late: Callable[[bytes], Any] | None = None) -> bytes:
        """Read at most ``nbytes`` from ``fd`` (like ``os.read``; ``offset`` -1
        means the file position).  Returns ``b""`` at end of file; raises the
        ``OSError`` subclass of the kernel's errno.  On cancellation see the
        module docstring: data read despite the cancel goes to ``on_late``."""
        _check_fd(fd)
        if not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"nbytes must be a non-negative int, not {nbytes!r}")
        buf = bytearray(nbytes)
        return await self._wait(self._submit("read", fd, buf, on_late, self._kernel.prep_read, fd, buf, offset))

    async def readinto(self, fd: int, buffer: Any, offset: int = -1, *, on_late: Callable[[int], Any] | None = None) -> int:
        """Read into a writable bytes-like ``buffer``; returns the byte count.
        The buffer belongs to the kernel until the op's CQE, even if the
        awaiting task is cancelled: do not reuse it before ``on_late`` or a
        later op tells you it is done."""
        _check_fd(fd)
        _writable(buffer)
        return await self._wait(self._submit("readinto", fd, buffer, on_late, self._kernel.prep_read, fd, buffer, offset))

    async def readv(self, fd: int, buffers: Sequence[Any], offset: int = -1, *, on_late: Callable[[int], Any] | None = None) -> int:
        """Scatter-read into writable buffers (like ``os.readv``); returns the byte count."""
        _check_fd(fd)
        buffers = [_writable(b) for b in buffers]
        return await self._wait(self._submit("readv", fd, buffers, on_late, self._kernel.prep_readv, fd, buffers, offset))

    async def write(self, fd: int, data: Any, offset: int = -1, *, on_late: Callable[[int], Any] | None = None) -> int:
        """Write a bytes-like ``data`` to ``fd`` (like ``os.write``); returns
        the byte count, which for a stream may be short."""
        _check_fd(fd)
        _check_bytes_like(data)
        return await self._wait(self._submit("write", fd, data, on_late, self._kernel.prep_write, fd, data, offset))

    async def writev(self, fd: int, buffers: Sequence[Any], offset: int = -1, *, on_late: Callable[[int], Any] | None = None) -> int:
        """Gather-write bytes-like buffers (like ``os.writev``); returns the byte count."""
        _check_fd(fd)
        buffers = list(buffers)
        for b in buffers:
            _check_bytes_like(b)
        return await self._wait(self._submit("writev", fd, buffers, on_late, self._kernel.prep_writev, fd, buffers, offset))

    def _submit(self, kind: str, fd: int, buffer: Any, on_late: Any, prep: Callable[..., Any], *args: Any) -> _Op:
        """Prepare one SQE and register its op; nothing is registered if preparing fails."""
        self._check_open()
        op = _Op(self, kind, fd, buffer, on_late)
        op.ud = self._new_id()
        op.keep = prep(*args, op.ud)
        self._ops[op.ud] = (_Op.complete, op)
        self._queued()
        return op

    async def _wait(self, op: _Op) -> Any:
        try:
            return await op.fut
        except asyncio.CancelledError:
            if op.fut.cancelled() and op.ud in self._ops and not self._closed:
                self._cancel_ud(op.ud)
            raise

    def _late_result(self, op: _Op, res: int) -> None:
        value = op.value(res)
        if op.on_late is not None:
            op.on_late(value)
        elif op.kind in ("read", "readinto", "readv") and res > 0:
            self._loop.call_exception_handler(
                {
                    "message": f"aiouring: a {op.kind} on fd {op.fd} read {res} bytes after its "
                    "task was cancelled; pass on_late= to receive them",
                    "ring": self,
                }
            )

    # -- ops for transports ------------------------------------------------------

    def start_datagram_reader(
        self,
        sock: Any,
        bufsize: int,
        on_records: OnPackets,
        on_stopped: OnStopped,
        on_error: Callable[[BaseException], None],
        *,
        buffers: int = 64,
    ) -> PacketReader:
        """Keep a multishot recvmsg armed on a datagram socket.  Each batch is a
        list of records ``bytes([namelen]) + sockaddr + payload`` (see
        ``aiouring.sockaddr.decode_records``); receive errors (ICMP errors,
        truncation) go to ``on_error`` and the receive is re-armed."""
        self._check_open()
        return _UringPacketReader(self, sock.fileno(), bufsize, on_records, on_stopped, "recvmsg", buffers, on_error)

    def open_datagram_writer(self, sock: Any, on_error: Callable[[int], None], on_space: Callable[[], None]) -> PacketWriter:
        """A ``PacketWriter`` for a datagram socket (use its ``sendto``)."""
        return self.open_writer(sock.fileno(), on_error, on_space)

    def start_packet_reader(
        self,
        fd: int,
        bufsize: int,
        on_packets: OnPackets,
        on_stopped: OnStopped,
        *,
        mode: str = "auto",
        buffers: int = 256,
    ) -> PacketReader:
        """Keep a read armed on ``fd`` (a packet device) and call
        ``on_packets(list_of_bytes)`` with each batch read; see ``PacketReader``.
        ``mode`` is ``"auto"`` (multishot where the kernel has it),
        ``"multishot"`` or ``"single"``; ``buffers`` sizes the buffer ring."""
        self._check_open()
        _check_fd(fd)
        if mode == "auto":
            mode = "multishot" if _multishot_supported() else "single"
        if mode not in ("multishot", "single"):
            raise ValueError(f"mode must be 'auto', 'multishot' or 'single', not {mode!r}")
        return _UringPacketReader(self, fd, bufsize, on_packets, on_stopped, mode, buffers)

    def open_writer(self, fd: int, on_error: Callable[[int], None], on_space: Callable[[], None]) -> PacketWriter:
        """A ``PacketWriter`` for ``fd`` (see its docstring)."""
        self._check_open()
        _check_fd(fd)
        return PacketWriter(self, fd, on_error, on_space)

    def submit_write(self, fd: int, data: bytes, handler: Handler) -> None:
        """Queue one write of ``data`` (bytes) with no future: on its CQE,
        ``handler(data, res, flags, None)`` is called (``res`` is the byte
        count or ``-errno``).  ``data`` stays referenced until then."""
        self._check_open()
        ud = self._new_id()
        self._kernel.prep_write(fd, data, -1, ud)
        self._ops[ud] = (handler, data)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    # -- internals: ids, groups, submission ------------------------------------------

    def submit_now(self) -> None:
        """Submit what is queued now instead of at the end of this loop iteration."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()

    def _new_id(self) -> int:
        ud = self._next_id
        self._next_id = ud + 1 if ud < ID_MASK else int(Tag.FIRST_ID)
        return ud

    def _alloc_writer(self, writer: PacketWriter) -> int:
        if not self._free_writers:
            raise RuntimeError(f"all {MAX_WRITERS} writers of this ring are in use")
        tag = self._free_writers.pop()
        self._writers[tag] = writer
        return tag

    def _free_writer(self, writer: PacketWriter) -> None:
        if self._writers.get(writer._tag) is writer:
            del self._writers[writer._tag]
            self._free_writers.append(writer._tag)

    def _alloc_group(self) -> int:
        if not self._free_groups:
            raise RuntimeError(f"all {MAX_GROUPS} buffer groups of this ring are in use")
        return self._free_groups.pop()

    def _free_group(self, bgid: int) -> None:
        self._free_groups.append(bgid)

    def _cancel_ud(self, ud: int) -> None:
        self._kernel.prep_cancel(ud, Tag.IGNORE)
        self._queued()

    def _queued(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._closed:
            return
        try:
            self._kernel.submit()
        except OSError as exc:
            self._loop.call_exception_handler(
                {"message": "aiouring: io_uring_enter failed", "exception": exc, "ring": self}
            )
        # The kernel did not signal the eventfd for what it posted during the
        # submit (see aiou_submit): reap it now, saving a trip through epoll.
        self._reap()

    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise ClosedError("the ring is closed")

    # -- internals: completion ------------------------------------------------------

    def _on_wakeup(self) -> None:
        try:
            os.read(self._eventfd, 8)  # drain before reaping; see module doc
        except (BlockingIOError, InterruptedError):
            pass
        self._reap()
        # What the callbacks queued in answer (a reply to a ping, say) goes to
        # the kernel now rather than one loop iteration later.
        if self._flush_handle is not None and not self._closed:
            self._flush_handle.cancel()
            self._flush()

    def _reap(self) -> None:
        self._reap_handle = None
        kernel = self._kernel
        ops = self._ops
        for _ in range(_MAX_ROUNDS):
            out, pk, arena = kernel.reap()
            if not out and not pk:
                break
            pos = 0
            for i in range(0, len(out), 5):
                mark = out[i + 4]
                if mark > pos:
                    self._take_packets(pk, arena, pos, mark)
                    pos = mark
                ud = out[i]
                entry = ops.get(ud)
                if entry is None:
                    self._unowned_cqe(ud, out[i + 1])
                    continue
                flags = out[i + 2]
                if not flags & F_MORE:
                    del ops[ud]
                res = out[i + 1]
                off = out[i + 3]
                try:
                    entry[0](entry[1], res, flags, arena[off : off + res] if off >= 0 else None)
                except Exception as exc:
                    self._callback_failed(exc)
            if 3 * pos < len(pk):
                self._take_packets(pk, arena, pos, len(pk) // 3)
            if self._touched:
                touched = self._touched
                self._touched = []
                for reader in touched:
                    try:
                        reader._deliver()
                    except Exception as exc:
                        self._callback_failed(exc)
        else:
            if not self._closed and self._reap_handle is None:
                self._reap_handle = self._loop.call_soon(self._reap)
        if self._space_waiters and kernel.pool_free:
            self._wake_writers()
        if self._drain_waiters:
            self._check_drained()

    def _take_packets(self, pk: list[int], arena: Any, start: int, end: int) -> None:
        """Append packets ``pk[start:end]`` to their readers' batches, in order."""
        ops = self._ops
        touched = self._touched
        i, stop = 3 * start, 3 * end
        while i < stop:
            ud = pk[i]
            entry = ops.get(ud)
            if entry is None:  # cannot happen while the multishot read is armed
                i += 3
                continue
            reader = entry[1]
            batch = reader._batch
            if not batch:
                touched.append(reader)
            append = batch.append
            while i < stop and pk[i] == ud:
                off = pk[i + 1]
                append(arena[off : off + pk[i + 2]])
                i += 3

    def _unowned_cqe(self, ud: int, res: int) -> None:
        """A CQE with no op entry: a failed pooled write, or a reserved tag."""
        if (ud >> GROUP_SHIFT) & 0xFFFF == POOL_GROUP and res < 0:  # ud comes as a signed int64
            writer = self._writers.get((ud >> 16) & 0xFFFFFFFF)
            if writer is not None:
                try:
                    writer._on_error(res)
                except Exception as exc:
                    self._callback_failed(exc)

    def _wake_writers(self) -> None:
        waiters = self._space_waiters
        self._space_waiters = []
        for writer in waiters:
            try:
                writer._on_space()
            except Exception as exc:
                self._callback_failed(exc)

    def _check_drained(self) -> None:
        still = []
        for writer in self._drain_waiters:
            if writer.in_flight:
                still.append(writer)
                continue
            callback, writer._drained_cb = writer._drained_cb, None
            if callback is not None:
                try:
                    callback()
                except Exception as exc:
                    self._callback_failed(exc)
        self._drain_waiters = still

    def _callback_failed(self, exc: Exception) -> None:
        self._loop.call_exception_handler(
            {"message": "aiouring: exception in a completion callback", "exception": exc, "ring": self}
        )

    # -- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Cancel every op in flight, wait briefly for the kernel to release
        their buffers, stop watching the eventfd and free the ring.  Awaiting
        callers get ``ClosedError``.  Idempotent; never hangs."""
        if self._closed or self._closing:
            return
        self._closing = True
        try:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
            for writer in self._writers.values():
                writer._copy = _refuse_write
                writer._sendto = _refuse_sendto
            if self.in_flight:
                self._kernel.prep_cancel_all(Tag.IGNORE)
                deadline = time.monotonic() + _CLOSE_WAIT
                while self.in_flight and time.monotonic() < deadline:
                    self._kernel.wait(50)
                    self._reap()
            if self.in_flight:
                logger.warning(
                    "aiouring: %d ops did not complete within %.1fs of close(); "
                    "keeping their buffers for the life of the process",
                    len(self._ops),
                    _CLOSE_WAIT,
                )
                _GRAVEYARD.append((self._ops, self._kernel))
                self._kernel = _LeakedKernel(self._kernel)
        finally:
            self._closed = True
            if self._reap_handle is not None:
                self._reap_handle.cancel()
            try:
                self._loop.remove_reader(self._eventfd)
            except (RuntimeError, ValueError, OSError):
                pass  # the loop is already closed
            self._kernel.close()
            self._ops = {}

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if self._closed:
            return
        if self._warn_on_gc:
            _warn(f"unclosed {self!r}", ResourceWarning, source=self)
        if not self._ops:
            self._closed = True
            self._kernel.close()
        else:
            _GRAVEYARD.append((self._kernel, self._ops))


def _refuse_write(fd: int, data: Any, n: int, writer: int) -> int:
    return -errno.EBADF


def _refuse_sendto(fd: int, data: Any, n: int, addr: Any, addrlen: int, writer: int) -> int:
    return -errno.EBADF


class _LeakedKernel:
    """Stands in for a kernel ring that could not be freed safely at close."""

    def __init__(self, kernel: Any) -> None:
        self.counters = kernel.counters
        self.setup = kernel.setup
        self.overflows = kernel.overflows

    def close(self) -> None:
        pass


def _check_fd(fd: Any) -> None:
    if not isinstance(fd, int) or isinstance(fd, bool):
        raise TypeError(f"fd must be an int file descriptor, not {type(fd).__name__}")
    if fd < 0:
        raise ValueError(f"fd must be a non-negative file descriptor, not {fd}")


def _check_bytes_like(data: Any) -> None:
    if isinstance(data, (bytes, bytearray)):
        return
    try:
        memoryview(data)
    except TypeError:
        raise TypeError(f"data must be a bytes-like object, not {type(data).__name__}") from None


def _writable(buffer: Any) -> Any:
    try:
        view = memoryview(buffer)
    except TypeError:
        raise TypeError(f"buffer must be a writable bytes-like object, not {type(buffer).__name__}") from None
    if view.readonly:
        raise TypeError(f"buffer must be writable, not a read-only {type(buffer).__name__}")
    return buffer


_MULTISHOT: bool | None = None


def _multishot_supported() -> bool:
    global _MULTISHOT
    if _MULTISHOT is None:
        from .probe import probe

        info = probe()
        _MULTISHOT = info.multishot_read and info.buffer_rings
    return _MULTISHOT
