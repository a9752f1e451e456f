"""Packet I/O: the one contract between transports and rings, whatever the backend.

A transport asks its ring for a *source* (a read kept armed on one fd,
handing over what it reads in batches) and a *sink* (where packets queue and
leave at the ring's next flush, in order), and never asks which backend it
runs on.  Both backends deliver the same record shapes, take the same
arguments and report errors the same way:

* Sources (``Ring.packet_source`` / ``Ring.datagram_source``) call
  ``on_packets(list_of_bytes)`` (whole packets of a TUN/TAP) or
  ``on_datagrams(list_of_(payload, address))`` with each batch.
  ``-EAGAIN``/``-EINTR``/``-ENOBUFS`` are absorbed (the read is re-armed);
  on a datagram source an error of one datagram (an ICMP error queued on the
  socket, a datagram longer than the buffers: ``EMSGSIZE``) goes to
  ``on_error(exc)`` and receiving goes on; any other error stops the source
  with ``on_stopped(exc)``.  ``cancel()`` stops it: what the kernel had
  already read is still delivered, then ``on_stopped(None)``.  ``on_stopped``
  is called exactly once.
* Sinks (``Ring.packet_sink`` / ``Ring.datagram_sink``) take ``write(packet)``
  or ``sendto(data, sockaddr)`` and never refuse: the transport applies its
  water marks to ``buffered`` (every byte accepted and not yet completed by
  the kernel).  A packet the kernel refuses calls ``on_error(exc)`` (the
  packet is ``exc.packet``); later packets go on.  ``on_progress()`` is called when ``buffered`` went down.
  A datagram the socket cannot take now waits (in order) until it can.
  ``close()`` stops accepting and drops what was not handed to the kernel;
  ``in_kernel`` says whether the kernel still holds anything of this sink.
"""
from __future__ import annotations

import errno
import logging
from array import array
from typing import Any, Callable, Protocol

from ._native import EMIT_GRO_TCP, EMIT_GRO_UDP, EMIT_GSO, KIND_DATAGRAM, MAX_BATCH
from .errors import ClosedError

logger = logging.getLogger("aiouring")

_GSO_MAX = 65535  # no limit but the kernel's own (the payload cap per send)

__all__ = [
    "FATAL_RECEIVE_ERRNOS",
    "REARM_ERRNOS",
    "DatagramSink",
    "OnDatagrams",
    "OnError",
    "OnPackets",
    "OnProgress",
    "OnStopped",
    "PacketSink",
    "PacketSource",
    "SinkBase",
]

OnPackets = Callable[[list[bytes]], None]
OnDatagrams = Callable[[list[tuple[bytes, Any]]], None]
OnStopped = Callable[["BaseException | None"], None]
OnError = Callable[[OSError], None]
OnProgress = Callable[[], None]

# Results that only mean "read again"; and the errors that end a datagram
# receive for good (any other error is about one datagram: ICMP, truncation).
REARM_ERRNOS = frozenset({errno.EAGAIN, errno.EINTR, errno.ENOBUFS})
FATAL_RECEIVE_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK, errno.EINVAL, errno.EFAULT, errno.EBADFD})


class PacketSource(Protocol):
    """A read kept armed on one fd (see the module docstring)."""

    fd: int
    mode: str
    """``"multishot"``, ``"single"`` (io_uring) or ``"readiness"`` (epoll)."""

    @property
    def reads(self) -> int:
        """Reads that carried data so far (fewer than packets when offloads split)."""

    @property
    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class PacketSink(Protocol):
    """Whole packets to one fd (see the module docstring)."""

    writes: int
    """Writes handed to the kernel so far (fewer than packets when offloads coalesce)."""

    @property
    def offloads(self) -> frozenset[str]: ...

    @property
    def buffered(self) -> int: ...

    @property
    def in_kernel(self) -> bool: ...

    def write(self, packet: bytes) -> None: ...

    def close(self) -> None: ...


class DatagramSink(Protocol):
    """Datagrams to one socket (see the module docstring)."""

    writes: int

    @property
    def offloads(self) -> frozenset[str]: ...

    @property
    def buffered(self) -> int: ...

    @property
    def in_kernel(self) -> bool: ...

    def sendto(self, data: bytes, sockaddr: bytes) -> None: ...

    def close(self) -> None: ...


class SinkBase:
    """The queue both backends' sinks share: packets wait in a list until the
    ring's flush calls ``emit``, which hands them over in one native call
    (``_hand_over``, per backend).  Packets are counted in ``buffered`` from
    ``write`` until the kernel completed them."""

    __slots__ = (
        "engine", "fd", "kind", "flags", "gso_max", "closed", "writes", "packets", "bytes", "errors", "dropped",
        "_on_error", "_on_progress",
        "_data", "_lens", "_addrs", "_alens", "_pending_bytes", "_kernel_bytes", "_queued", "_blocked",
    )

    def __init__(self, engine: Any, fd: int, kind: int, on_error: OnError, on_progress: OnProgress, flags: int = 0) -> None:
        self.engine = engine
        self.fd = fd
        self.kind = kind
        self.flags = flags  # EMIT_*: the virtio header, and the offloads still on
        self.gso_max = _GSO_MAX  # the largest GSO segment the route took so far
        self.writes = 0  # writes handed to the kernel: fewer than packets when offloads coalesce
        self.packets = 0  # packets handed to the kernel (refused ones too)
        self.bytes = 0
        self.errors = 0  # packets the kernel refused
        self.dropped = 0  # packets close() discarded before the kernel had them
        self.closed = False
        self._on_error = on_error
        self._on_progress = on_progress
        self._data: list[bytes] = []
        self._lens = array("I")
        self._addrs: list[bytes] = []
        self._alens = array("H")
        self._pending_bytes = 0
        self._kernel_bytes = 0
        self._queued = False  # listed for the ring's next flush
        self._blocked = False  # the fd cannot take more now: wait for it

    @property
    def buffered(self) -> int:
        """Bytes accepted and not yet completed by the kernel."""
        return self._pending_bytes + self._kernel_bytes

    @property
    def in_kernel(self) -> bool:
        return self._kernel_bytes > 0

    def write(self, packet: bytes) -> None:
        """Queue one packet (``bytes``) for the next flush."""
        if self.closed:
            raise ClosedError("the sink is closed")
        self._data.append(packet)
        self._lens.append(len(packet))
        self._pending_bytes += len(packet)
        if not self._queued and not self._blocked:
            self._queued = True
            self.engine.mark_dirty(self)

    def sendto(self, data: bytes, sockaddr: bytes) -> None:
        """Queue one datagram to a raw ``struct sockaddr`` (empty: the connected peer)."""
        if self.closed:
            raise ClosedError("the sink is closed")
        self._data.append(data)
        self._lens.append(len(data))
        self._addrs.append(sockaddr)
        self._alens.append(len(sockaddr))
        self._pending_bytes += len(data)
        if not self._queued and not self._blocked:
            self._queued = True
            self.engine.mark_dirty(self)

    def emit(self) -> None:
        """Hand what is queued to the kernel (called by the ring's flush)."""
        self._queued = False
        # Only what was queued when the flush came: a progress callback may
        # write more (a protocol refilling in resume_writing, called from
        # inside a synchronous hand-over on epoll); that waits for the next
        # flush instead of keeping this one, and the loop, busy for ever.
        todo = len(self._data)
        while todo > 0 and self._data and not self._blocked and not self.closed:
            n = min(todo, len(self._data), MAX_BATCH)
            todo -= n
            if n == len(self._data):
                data, lens, addrs, alens = self._data, self._lens, self._addrs, self._alens
                self._data, self._lens, self._addrs, self._alens = [], array("I"), [], array("H")
            else:
                data, lens, addrs, alens = self._data[:n], self._lens[:n], self._addrs[:n], self._alens[:n]
                del self._data[:n], self._lens[:n], self._addrs[:n], self._alens[:n]
            nbytes = sum(lens)
            self._pending_bytes -= nbytes
            self.packets += n
            self.bytes += nbytes
            taken = self._hand_over(data, lens, addrs, alens, nbytes)
            if taken < n:
                self.requeue(data[taken:], addrs[taken:])
                break

    def requeue(self, data: list[bytes], addrs: list[bytes]) -> None:
        """Put packets back at the head of the queue, in order (the kernel
        could not take them yet)."""
        if not data:
            return
        nbytes = sum(map(len, data))
        self.packets -= len(data)  # counted again when they are handed over
        self.bytes -= nbytes
        self._data[:0] = data
        self._lens[:0] = array("I", map(len, data))
        if self.kind == KIND_DATAGRAM:
            self._addrs[:0] = addrs
            self._alens[:0] = array("H", map(len, addrs))
        self._pending_bytes += nbytes
        if not self._queued and not self._blocked:
            self._queued = True
            self.engine.mark_dirty(self)

    def unblocked(self) -> None:
        """The fd can take more: the queue goes out at the next flush."""
        self._blocked = False
        if self._data and not self._queued and not self.closed:
            self._queued = True
            self.engine.mark_dirty(self)

    def close(self) -> None:
        """Accept nothing more; drop what the kernel has not been handed."""
        self.closed = True
        self.dropped += len(self._data)
        self._data, self._lens, self._addrs, self._alens = [], array("I"), [], array("H")
        self._pending_bytes = 0

    def _hand_over(self, data: list[bytes], lens: array[int], addrs: list[bytes], alens: array[int], nbytes: int) -> int:
        raise NotImplementedError

    @property
    def offloads(self) -> frozenset[str]:
        """What this sink coalesces: ``"tcp"``/``"udp"`` (TUN writes), ``"gso"`` (UDP sends)."""
        on = set()
        if self.flags & EMIT_GRO_TCP:
            on.add("tcp")
        if self.flags & EMIT_GRO_UDP:
            on.add("udp")
        if self.flags & EMIT_GSO:
            on.add("gso")
        return frozenset(on)

    def refused(self, res: int, seg: int) -> None:
        """The kernel refused a coalesced write with ``-res``: switch that
        offload off for this sink (a segment size the route cannot carry
        only lowers the GSO limit), and say so once.  The caller resends the
        packets one by one: no packet is lost to an offload."""
        if self.kind == KIND_DATAGRAM:
            if res == -errno.EMSGSIZE and seg > 1:
                if seg <= self.gso_max:
                    self.gso_max = seg - 1
                    logger.info("aiouring: a UDP GSO send of %d-byte segments was too big for the route on fd %d; "
                                "larger datagrams go out one by one", seg, self.fd)
                return
            if not self.flags & EMIT_GSO:
                return  # said already (several sends of one batch were refused)
            what, self.flags = "UDP GSO", self.flags & ~EMIT_GSO
        else:
            if not self.flags & (EMIT_GRO_TCP | EMIT_GRO_UDP):
                return
            what, self.flags = "TUN write coalescing", self.flags & ~(EMIT_GRO_TCP | EMIT_GRO_UDP)
        logger.warning("aiouring: the kernel refused a coalesced write on fd %d (%s): %s is off for it from now "
                       "on; the packets were resent one by one", self.fd, errno.errorcode.get(-res, res), what)

    def _progress(self) -> None:
        try:
            self._on_progress()
        except Exception as exc:
            self.engine.report(exc, "exception in a sink's progress callback")

    def _error(self, exc: OSError, packet: bytes | None = None) -> None:
        self.errors += 1
        if packet is not None:
            exc.packet = packet  # type: ignore[attr-defined]  # which write was refused
        try:
            self._on_error(exc)
        except Exception as exc2:
            self.engine.report(exc2, "exception in a sink's error callback")

    def __repr__(self) -> str:
        kind = "datagram" if self.kind == KIND_DATAGRAM else "packet"
        state = "closed" if self.closed else "blocked" if self._blocked else "open"
        return f"<{type(self).__name__} {kind} fd={self.fd} {state} buffered={self.buffered}>"
