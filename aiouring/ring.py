"""Rings: ``Ring`` (io_uring) and ``ReadinessRing`` (epoll), one interface.

A ring belongs to one event loop and is what transports and awaitable ops
run on.  Each is a thin face over three layers: a completion engine
(``aiouring._engine``, ``aiouring._readiness``), the awaitable ops
(``aiouring._ops``) and packet I/O (``aiouring.packet_io`` and its two
backends).  ``RingBase`` is what both share, including the packet I/O
factories transports use; they take the same arguments and give objects
with the same contract on both backends.

Lifecycle: ``close()`` (or ``async with``) cancels what is in flight and
frees the ring; awaiting callers get ``ClosedError``.  A ring collected while
open is closed then (with a ``ResourceWarning`` unless it is a loop's default
ring from ``get_ring()``), also after its loop has closed.

A ring is not thread-safe: use it from its loop's thread only; other loops
get their own (``aiouring.get_ring()``).
"""
from __future__ import annotations

import asyncio
import socket
import warnings
import weakref
from typing import Any, Callable, ClassVar, Literal, Self, Sequence

from . import _validate as check
from ._engine import EngineBase, UringEngine, loop_for
from ._native import EMIT_GRO_TCP, EMIT_GRO_UDP, EMIT_GSO, EMIT_VNET, KIND_DATAGRAM, KIND_PACKET, NativeRing, SyscallBatch
from ._ops import OnLate, ReadinessOps, UringOps
from ._readiness import ReadinessEngine
from ._readiness_io import ReadinessDatagramSource, ReadinessPacketSource, ReadinessSink
from ._typing import Buffer
from ._uring_io import UringDatagramSource, UringPacketSource, UringSink
from .packet_io import DatagramSink, OnDatagrams, OnError, OnPackets, OnProgress, OnStopped, PacketSink, PacketSource, SinkBase

__all__ = ["ReadinessRing", "Ring", "RingBase", "ReadMode", "SetupMode", "live_rings"]

ReadMode = Literal["auto", "multishot", "single", "readiness"]
SetupMode = Literal["auto", "coop", "defer", "plain", "sqpoll"]


_LIVE: "weakref.WeakSet[RingBase]" = weakref.WeakSet()


def live_rings() -> list["RingBase"]:
    """Every ring of this process that is not closed (for test fixtures that
    check a test left nothing in flight)."""
    return [ring for ring in list(_LIVE) if hasattr(ring, "_engine") and not ring.closed]


class RingBase:
    """What both ring kinds offer (see the module docstring)."""

    backend: ClassVar[str]
    _engine: EngineBase
    _ops: UringOps | ReadinessOps

    def __init__(self, warn_unclosed: bool) -> None:
        self._warn_on_gc = warn_unclosed
        _LIVE.add(self)

    # -- properties ------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._engine.loop

    @property
    def closed(self) -> bool:
        return self._engine.closed

    @property
    def in_flight(self) -> int:
        """Ops, armed reads and write batches the kernel (or the loop) still holds."""
        return 0 if self._engine.closed else self._engine.in_flight

    # -- awaitable ops (see aiouring._ops for cancellation) ------------------------

    async def nop(self) -> int:
        """A no-op round trip; returns 0."""
        return await self._ops.nop()

    async def read(self, fd: int, nbytes: int, offset: int = -1, *, on_late: OnLate | None = None) -> bytes:
        """Read at most ``nbytes`` (0 to 2**31-4096) from ``fd`` (like ``os.read``;
        ``offset`` -1 means the file position).  Returns ``b""`` at end of
        file; raises the ``OSError`` subclass of the kernel's errno.  Data
        read despite a cancellation goes to ``on_late``."""
        return await self._ops.read(fd, nbytes, offset, on_late=on_late)

    async def readinto(self, fd: int, buffer: Buffer, offset: int = -1, *, on_late: OnLate | None = None) -> int:
        """Read into a writable bytes-like ``buffer``; returns the byte count.
        The buffer belongs to the kernel until the op completes, even if the
        awaiting task is cancelled: do not reuse it before ``on_late`` or a
        later op tells you it is done."""
        return await self._ops.readinto(fd, buffer, offset, on_late=on_late)

    async def readv(self, fd: int, buffers: Sequence[Buffer], offset: int = -1, *, on_late: OnLate | None = None) -> int:
        """Scatter-read into writable buffers (like ``os.readv``); returns the byte count."""
        return await self._ops.readv(fd, buffers, offset, on_late=on_late)

    async def write(self, fd: int, data: Buffer, offset: int = -1, *, on_late: OnLate | None = None) -> int:
        """Write a bytes-like ``data`` (like ``os.write``); returns the byte
        count, which for a stream may be short."""
        return await self._ops.write(fd, data, offset, on_late=on_late)

    async def writev(self, fd: int, buffers: Sequence[Buffer], offset: int = -1, *, on_late: OnLate | None = None) -> int:
        """Gather-write bytes-like buffers (like ``os.writev``); returns the byte count."""
        return await self._ops.writev(fd, buffers, offset, on_late=on_late)

    # -- packet I/O (see aiouring.packet_io) ---------------------------------------------

    def packet_source(
        self, fd: int, bufsize: int, on_packets: OnPackets, on_stopped: OnStopped, *,
        mode: ReadMode = "auto", buffers: int = 256, vnet: bool = False,
    ) -> PacketSource:
        """Keep a read armed on a packet device's ``fd``; ``on_packets(list)``
        gets each batch of whole packets (each read at most ``bufsize``
        bytes).  ``mode``: ``"auto"`` (the best this backend and kernel
        offer), ``"multishot"`` or ``"single"`` (io_uring), ``"readiness"``
        (epoll).  ``buffers`` sizes io_uring's buffer ring (a power of two).
        ``vnet``: each read starts with a virtio header (``IFF_VNET_HDR``);
        super-packets are split into the packets they stand for, in C, so
        ``on_packets`` sees ordinary packets either way."""
        self._engine.check_caller()
        check.fd(fd)
        check.int_in_range("bufsize", bufsize, 1, 1 << 20)
        self._check_buffers(buffers)
        return self._packet_source(fd, bufsize, on_packets, on_stopped, self._read_mode(mode), buffers, vnet)

    def datagram_source(
        self, sock: socket.socket, bufsize: int, on_datagrams: OnDatagrams, on_stopped: OnStopped, on_error: OnError, *,
        buffers: int = 64, gro: bool = False,
    ) -> PacketSource:
        """Keep a receive armed on a datagram socket; ``on_datagrams(list)``
        gets each batch as (payload, source address) pairs; errors of single
        datagrams go to ``on_error`` and receiving goes on.  ``gro``: the
        socket has ``UDP_GRO`` on; a coalesced datagram is split by its
        segment size, so ``on_datagrams`` sees the datagrams that were sent."""
        self._engine.check_caller()
        check.int_in_range("bufsize", bufsize, 1, 1 << 20)
        self._check_buffers(buffers)
        return self._datagram_source(sock.fileno(), bufsize, on_datagrams, on_stopped, on_error, buffers, gro)

    def packet_sink(
        self, fd: int, on_error: OnError, on_progress: OnProgress, *,
        vnet: bool = False, coalesce_tcp: bool = False, coalesce_udp: bool = False,
    ) -> PacketSink:
        """Whole packets to ``fd``, one write each, at the next flush.
        ``vnet``: a virtio header before each (an ``IFF_VNET_HDR`` device);
        then ``coalesce_tcp``/``coalesce_udp`` merge segments of one flow into
        one super-packet write, as the device's TSO/USO offloads accept."""
        self._engine.check_caller()
        check.fd(fd)
        if (coalesce_tcp or coalesce_udp) and not vnet:
            raise ValueError("coalescing needs a device with a virtio header (vnet=True)")
        flags = (EMIT_VNET if vnet else 0) | (EMIT_GRO_TCP if coalesce_tcp else 0) | (EMIT_GRO_UDP if coalesce_udp else 0)
        return self._sink(fd, KIND_PACKET, on_error, on_progress, flags)

    def datagram_sink(self, sock: socket.socket, on_error: OnError, on_progress: OnProgress, *, gso: bool = False) -> DatagramSink:
        """Datagrams to a socket (``sendto(data, raw_sockaddr)``), one sendmsg
        each; ``gso``: runs of equal-sized datagrams to one address leave as
        one ``UDP_SEGMENT`` send."""
        self._engine.check_caller()
        return self._sink(sock.fileno(), KIND_DATAGRAM, on_error, on_progress, EMIT_GSO if gso else 0)

    @staticmethod
    def _check_buffers(buffers: int) -> None:
        check.int_in_range("buffers", buffers, 1, 32768)
        if buffers & (buffers - 1):
            raise ValueError(f"buffers must be a power of two, not {buffers}")

    def read_mode(self, mode: ReadMode = "auto") -> str:
        """The mode ``packet_source(mode=...)`` would read in here.  Raises
        ``ValueError`` for a mode this backend does not have, ``ClosedError``
        if the ring is closed and ``RuntimeError`` if it belongs to another
        loop or thread (transports check this before opening anything)."""
        self._engine.check_caller()
        return self._read_mode(mode)

    def submit_now(self) -> None:
        """Submit (or write) what is queued now instead of at the end of this loop iteration."""
        self._engine.flush_now()

    def _read_mode(self, mode: Any) -> str:
        raise NotImplementedError

    def _packet_source(self, fd: int, bufsize: int, on_packets: OnPackets, on_stopped: OnStopped, mode: str, buffers: int, vnet: bool) -> PacketSource:
        raise NotImplementedError

    def _datagram_source(self, fd: int, bufsize: int, on_datagrams: OnDatagrams, on_stopped: OnStopped, on_error: OnError, buffers: int, gro: bool) -> PacketSource:
        raise NotImplementedError

    def _sink(self, fd: int, kind: int, on_error: OnError, on_progress: OnProgress, flags: int) -> SinkBase:
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Cancel everything in flight and free the ring; awaiting callers
        get ``ClosedError``.  Idempotent; never hangs."""
        self._engine.close()

    async def aclose(self) -> None:
        """``close()``, then let the callbacks it scheduled run."""
        self.close()
        await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        engine = getattr(self, "_engine", None)
        if engine is None or engine.closed:
            return  # never opened, or closed
        if self._warn_on_gc and not engine.forked:  # a child of fork() lets go of its copy quietly
            _warn(f"unclosed {self!r}", ResourceWarning, source=self)
        engine.close()

    def __repr__(self) -> str:
        engine = getattr(self, "_engine", None)
        state = "unopened" if engine is None else "closed" if engine.closed else "closing" if engine.closing else "open"
        return f"<{type(self).__name__} {state} backend={self.backend} in_flight={self.in_flight if engine else 0}>"


class Ring(RingBase):
    """One io_uring plus an eventfd, driven by an asyncio loop.

    ``entries`` sizes the submission queue (the completion queue gets 4x, or
    ``cq_entries``).  ``setup`` picks the kernel setup flags: ``"auto"``
    (``COOP_TASKRUN|TASKRUN_FLAG``, falling back to none on older kernels),
    ``"coop"``, ``"defer"`` (``SINGLE_ISSUER|DEFER_TASKRUN``), ``"plain"`` or
    ``"sqpoll"``.  Needs a running loop (or ``loop=``).  ``warn_unclosed``:
    a ``ResourceWarning`` if the ring is collected while open (it is closed
    then either way).  ``kernel`` replaces the kernel ring (the test doubles
    in ``aiouring.testing`` use it).

    Raises ``aiouring.UnsupportedError`` (an ``OSError``) naming the reason
    when io_uring cannot be set up here; ``aiouring.open_ring(backend="auto")``
    falls back to the readiness backend instead.  Running out of file
    descriptors raises ``OSError(EMFILE)`` like any other open.
    """

    backend: ClassVar[str] = "uring"
    _engine: UringEngine

    def __init__(
        self,
        entries: int = 256,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        setup: SetupMode = "auto",
        cq_entries: int | None = None,
        warn_unclosed: bool = True,
        kernel: Any = None,
    ) -> None:
        super().__init__(warn_unclosed)
        check.int_in_range("entries", entries, 1, 32768)
        if cq_entries is not None:
            check.int_in_range("cq_entries", cq_entries, entries, 1 << 20)
        loop = loop_for(loop, "Ring()")
        if kernel is None:
            kernel = NativeRing(entries, cq_entries or 4 * entries, setup)
        self._engine = UringEngine(loop, kernel)
        self._ops = UringOps(self._engine)

    @property
    def counters(self) -> tuple[int, int]:
        """(SQEs submitted, CQEs reaped) over the ring's life."""
        counters: tuple[int, int] = self._engine.kernel.counters
        return counters

    @property
    def submit_calls(self) -> int:
        """``io_uring_enter`` calls made to submit, over the ring's life (one
        per loop iteration that had something to submit)."""
        submit_calls: int = self._engine.kernel.submit_calls
        return submit_calls

    @property
    def setup(self) -> str:
        setup: str = self._engine.kernel.setup
        return setup

    @property
    def overflows(self) -> int:
        """Times the completion queue was found overflowed (no CQE is lost:
        the kernel keeps them and the next reap flushes them)."""
        overflows: int = self._engine.kernel.overflows
        return overflows

    def _read_mode(self, mode: Any) -> str:
        check.choice("read_mode", mode, ("auto", "multishot", "single"))
        if mode == "auto":
            return "multishot" if self._engine.kernel.supports_multishot else "single"
        return str(mode)

    def _packet_source(self, fd: int, bufsize: int, on_packets: OnPackets, on_stopped: OnStopped, mode: str, buffers: int, vnet: bool) -> PacketSource:
        if vnet and mode == "single":
            raise ValueError("reads with a virtio header need the multishot mode (its buffers hold a whole super-packet)")
        return UringPacketSource(self._engine, fd, bufsize, on_packets, on_stopped, mode, buffers, split=vnet)

    def _datagram_source(self, fd: int, bufsize: int, on_datagrams: OnDatagrams, on_stopped: OnStopped, on_error: OnError, buffers: int, gro: bool) -> PacketSource:
        return UringDatagramSource(self._engine, fd, bufsize, on_datagrams, on_stopped, "multishot", buffers, on_error, split=gro)

    def _sink(self, fd: int, kind: int, on_error: OnError, on_progress: OnProgress, flags: int) -> SinkBase:
        return UringSink(self._engine, fd, kind, on_error, on_progress, flags)


class ReadinessRing(RingBase):
    """The ring interface on ``loop.add_reader``/``add_writer`` (epoll).

    Sources drain up to ``drain_limit`` packets per wake-up with one native
    call; sinks write a whole batch with one native call at the flush."""

    backend: ClassVar[str] = "epoll"
    setup = None
    _engine: ReadinessEngine

    def __init__(self, *, loop: asyncio.AbstractEventLoop | None = None, drain_limit: int = 64, warn_unclosed: bool = True) -> None:
        super().__init__(warn_unclosed)
        check.int_in_range("drain_limit", drain_limit, 1, 4096)
        self._engine = ReadinessEngine(loop_for(loop, "ReadinessRing()"))
        self._ops = ReadinessOps(self._engine)
        self._syscalls = SyscallBatch()
        self._drain_limit = drain_limit

    @property
    def counters(self) -> tuple[int, int]:
        """(ops started, ops and packets completed)."""
        return self._engine.started, self._engine.done

    def _read_mode(self, mode: Any) -> str:
        check.choice("read_mode", mode, ("auto", "readiness"))
        return "readiness"

    def _packet_source(self, fd: int, bufsize: int, on_packets: OnPackets, on_stopped: OnStopped, mode: str, buffers: int, vnet: bool) -> PacketSource:
        self._engine.started += 1
        return ReadinessPacketSource(self._engine, self._syscalls, fd, bufsize, on_packets, on_stopped, self._drain_limit, vnet)

    def _datagram_source(self, fd: int, bufsize: int, on_datagrams: OnDatagrams, on_stopped: OnStopped, on_error: OnError, buffers: int, gro: bool) -> PacketSource:
        self._engine.started += 1
        return ReadinessDatagramSource(self._engine, self._syscalls, fd, bufsize, on_datagrams, on_stopped, on_error, self._drain_limit, gro)

    def _sink(self, fd: int, kind: int, on_error: OnError, on_progress: OnProgress, flags: int) -> SinkBase:
        return ReadinessSink(self._engine, self._syscalls, fd, kind, on_error, on_progress, flags)
