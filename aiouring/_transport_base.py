"""What the TUN and UDP transports share: one state machine, flow control,
delivery, every protocol callback, teardown.

The transport decides, the ring performs: it keeps one source armed on its
fd and hands what it writes to one sink (``aiouring.packet_io``), and reacts
to what they report.  It never makes a syscall and never asks which backend
it runs on, which is what lets the fake ring run this same code.

State (``State``), and its only transitions (``_set_state`` enforces them)::

    STARTING --connection_made--> OPEN --close()--> CLOSING --flushed--> CLOSED
        |                          |                  |                    ^
        +----------close()/abort()/fatal error--------+--> ABORTING --kernel let go

* STARTING: created; ``connection_made`` is scheduled.
* OPEN: the protocol gets what is read (unless it paused reading) and may write.
* CLOSING (``close()``): nothing more is delivered; what was written still
  goes out; the source is being stopped.
* ABORTING (``abort()`` or a fatal error): what waits to be written is
  dropped; the transport only waits for the kernel to let go of its fd.
* CLOSED: ``connection_lost`` is scheduled (once, through ``call_soon``); the
  fd is closed after it.

Beside the state: ``_read_paused`` (the protocol called ``pause_reading``)
and ``_protocol_paused`` (``pause_writing`` was called); what is read while
delivery is paused waits in ``_backlog``.  Every protocol callback goes
through ``_call``: an exception is reported to the loop's exception handler
and the transport goes on, as asyncio's datagram transport does.
"""
from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import warnings
from typing import Any, Callable

from .backends import AnyRing
from .errors import ClosedError

__all__ = ["RingTransportBase", "State", "TransportStats"]

logger = logging.getLogger("aiouring")


class State(enum.Enum):
    STARTING = "starting"
    OPEN = "open"
    CLOSING = "closing"
    ABORTING = "aborting"
    CLOSED = "closed"


_TRANSITIONS: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.OPEN, State.CLOSING, State.ABORTING}),
    State.OPEN: frozenset({State.CLOSING, State.ABORTING}),
    State.CLOSING: frozenset({State.ABORTING, State.CLOSED}),
    State.ABORTING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


@dataclasses.dataclass(frozen=True)
class TransportStats:
    """What a transport has moved so far (``get_extra_info("stats")``, a
    snapshot).  Packets are what the protocol sees (IP packets, datagrams),
    whatever offloads made of them on the way; ``reads``/``writes`` count
    the kernel's reads and writes, fewer than packets when offloads or
    batches merge them.  The kernel's own counters for a TUN device (packets
    it dropped because the application read too slowly: ``tx_dropped``) are
    ``await get_extra_info("device").kernel_counters()``: a netlink request,
    which a synchronous call must not make."""

    packets_received: int
    """Packets (datagrams) read from the kernel."""
    bytes_received: int
    packets_sent: int
    """Packets (datagrams) the kernel took; ``send_errors`` are not in it."""
    bytes_sent: int
    send_errors: int
    """Packets refused, by the kernel or before (an address that does not
    resolve); each went to ``error_received``."""
    receive_errors: int
    """Receive errors reported to ``error_received`` (ICMP errors, datagrams too long)."""
    dropped: int
    """Packets read but not delivered (the transport was closing), written
    but discarded by ``abort()`` or a fatal error, or sent after ``close()``."""
    reads: int
    writes: int


class RingTransportBase:
    """See the module docstring.  Subclasses provide ``_open_source``,
    ``_release`` (close their fd) and the per-item delivery hook."""

    _item_hook_name: str  # the protocol's per-record callback
    _batch_hook_name: str  # its optional whole-batch callback

    def _init_base(self, loop: asyncio.AbstractEventLoop, ring: AnyRing, protocol: Any, sink: Any, waiter: asyncio.Future[None] | None) -> None:
        self._loop = loop
        self._ring = ring
        self._sink = sink
        self._state = State.STARTING
        self._made = False  # connection_made was called
        self._lost_exc: BaseException | None = None
        self._source: Any = None
        self._stopping: set[Any] = set()
        self._read_paused = False
        self._protocol_paused = False
        self._backlog: list[Any] = []
        self._rx_packets = 0
        self._rx_bytes = 0
        self._rx_errors = 0
        self._rx_dropped = 0  # read while closing, or held in the backlog at close
        self._tx_dropped = 0  # written after close
        self._tx_errors = 0  # refused before the kernel saw them (an address that does not resolve)
        self._reads_done = 0  # reads of the sources stopped so far
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024
        self._closed_fut: asyncio.Future[None] = loop.create_future()
        self._set_protocol(protocol)
        loop.call_soon(self._start, waiter)

    # -- the state machine ----------------------------------------------------------

    def _set_state(self, new: State) -> None:
        if new not in _TRANSITIONS[self._state]:
            raise AssertionError(f"{self!r}: no transition from {self._state.name} to {new.name}")
        self._state = new

    def _start(self, waiter: asyncio.Future[None] | None) -> None:
        """``connection_made``, then reading unless the protocol paused it there."""
        if self._state is State.STARTING:
            self._set_state(State.OPEN)
            self._made = True
            self._call(self._protocol.connection_made, self)
            if self._state is State.OPEN and not self._read_paused:  # type: ignore[comparison-overlap]  # connection_made() may have closed it; mypy keeps the narrowing from above
                self._arm()
        if waiter is not None and not waiter.done():
            if self._made:
                waiter.set_result(None)
            else:
                waiter.set_exception(ClosedError("the transport was closed before it started"))
        self._maybe_finish()

    def _arm(self) -> None:
        try:
            self._source = self._open_source()
        except Exception as exc:
            self._fatal_error(exc, "Fatal error: the transport could not start reading")

    def _open_source(self) -> Any:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    # -- asyncio's transport surface -------------------------------------------------

    def get_protocol(self) -> Any:
        return self._protocol

    def _stats(self) -> TransportStats:
        sink = self._sink
        source = self._source
        return TransportStats(
            packets_received=self._rx_packets,
            bytes_received=self._rx_bytes,
            packets_sent=sink.packets - sink.errors,
            bytes_sent=sink.bytes,
            send_errors=sink.errors + self._tx_errors,
            receive_errors=self._rx_errors,
            dropped=self._rx_dropped + self._tx_dropped + sink.dropped,
            reads=self._reads_done + (source.reads if source is not None else 0) + sum(s.reads for s in self._stopping),
            writes=sink.writes,
        )

    @staticmethod
    def _record_bytes(records: list[Any]) -> int:
        return sum(map(len, records))

    def set_protocol(self, protocol: Any) -> None:
        self._set_protocol(protocol)

    def _set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol
        # A protocol that overrides the batch callback takes whole batches;
        # otherwise the transport calls the per-record one itself, so that
        # pause_reading() from inside it takes effect at the next record.
        batch = getattr(protocol, self._batch_hook_name, None)
        default = getattr(self._default_protocol_class(), self._batch_hook_name, None)
        if batch is not None and getattr(batch, "__func__", None) is not default:
            self._batch_hook: Callable[[list[Any]], None] | None = batch
        else:
            self._batch_hook = None

    def _default_protocol_class(self) -> type:
        raise NotImplementedError

    def is_closing(self) -> bool:
        return self._state is not State.OPEN and self._state is not State.STARTING

    def is_reading(self) -> bool:
        return self._state is State.OPEN and not self._read_paused

    def get_write_buffer_size(self) -> int:
        """Bytes written and not yet completed by the kernel."""
        return self._sink.buffered  # type: ignore[no-any-return]  # _sink: a PacketSink or DatagramSink, typed Any

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low_water, self._high_water

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low
        self._maybe_pause_protocol()

    def pause_reading(self) -> None:
        """Deliver nothing more until ``resume_reading()``: the source is
        stopped in the kernel, so packets wait in the device or socket; what
        the kernel had already read is kept and delivered on resume."""
        if self._state is not State.OPEN and self._state is not State.STARTING or self._read_paused:
            return
        self._read_paused = True
        self._stop_source()

    def resume_reading(self) -> None:
        if self._state is not State.OPEN and self._state is not State.STARTING or not self._read_paused:
            return
        self._read_paused = False
        if self._state is State.OPEN:
            if self._backlog:
                self._loop.call_soon(self._deliver_backlog)
            self._arm()

    def close(self) -> None:
        """Stop reading, send what was written, then close and call
        ``connection_lost(None)``.  Idempotent."""
        if self._state is not State.OPEN and self._state is not State.STARTING:
            return
        self._set_state(State.CLOSING)
        self._rx_dropped += len(self._backlog)
        self._backlog.clear()
        self._stop_source()
        self._maybe_finish()

    def abort(self) -> None:
        """Close at once, dropping what waits to be written."""
        self._force_close(None)

    async def wait_closed(self) -> None:
        """Wait until ``connection_lost`` has been called and the fd closed
        (after ``close()``, ``abort()`` or a fatal error)."""
        await asyncio.shield(self._closed_fut)

    # -- delivery ------------------------------------------------------------------------

    def _on_records(self, records: list[Any]) -> None:
        self._rx_packets += len(records)
        self._rx_bytes += self._record_bytes(records)
        if self._state is not State.OPEN:
            self._rx_dropped += len(records)
            return  # the application asked to stop receiving
        if self._read_paused or self._backlog:
            self._backlog.extend(records)  # keep order: what was held goes first
            return
        self._deliver(records)

    def _deliver(self, records: list[Any]) -> None:
        if self._batch_hook is not None:
            self._call(self._batch_hook, records)
            return
        hook = getattr(self._protocol, self._item_hook_name)
        for i, record in enumerate(records):
            if self._read_paused or self._state is not State.OPEN:
                if self._state is State.OPEN:
                    self._backlog[:0] = records[i:]
                return
            self._call_item(hook, record)

    def _call_item(self, hook: Callable[..., None], record: Any) -> None:
        raise NotImplementedError

    def _deliver_backlog(self) -> None:
        if self._backlog and not self._read_paused and self._state is State.OPEN:
            backlog, self._backlog = self._backlog, []
            self._deliver(backlog)

    def _on_source_stopped(self, source: Any, exc: BaseException | None) -> None:
        self._stopping.discard(source)
        self._reads_done += source.reads
        if source is self._source:
            self._source = None
        if exc is not None and self._state is State.OPEN:
            if isinstance(exc, ClosedError):
                self._force_close(exc)
            else:
                self._fatal_error(exc, "Fatal read error")
            return
        self._maybe_finish()

    def _stop_source(self) -> None:
        source, self._source = self._source, None
        if source is not None and source.active:
            self._stopping.add(source)
            source.cancel()

    # -- writing and flow control -----------------------------------------------------------

    def _written(self) -> None:
        """After a write: pause the protocol above the high-water mark."""
        if not self._protocol_paused and self._sink.buffered > self._high_water:
            self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if self._sink.buffered <= self._high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        self._call(self._protocol.pause_writing)

    def _on_sink_progress(self) -> None:
        if self._protocol_paused and self._sink.buffered <= self._low_water:
            self._protocol_paused = False
            self._call(self._protocol.resume_writing)
        if self._state is State.CLOSING or self._state is State.ABORTING:
            self._maybe_finish()

    def _on_sink_error(self, exc: OSError) -> None:
        if self._state is not State.CLOSED and self._protocol is not None:
            self._call(self._protocol.error_received, exc)

    # -- protocol callbacks -------------------------------------------------------------------

    def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        try:
            callback(*args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            name = getattr(callback, "__name__", repr(callback))
            self._loop.call_exception_handler(
                {"message": f"protocol.{name}() call failed", "exception": exc, "transport": self, "protocol": self._protocol}
            )

    # -- teardown ---------------------------------------------------------------------------------

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        """As asyncio's transports: an ``OSError`` is expected (logged at debug
        level when the loop is in debug mode), anything else goes to the
        loop's exception handler; then the transport is aborted with ``exc``."""
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {"message": message, "exception": exc, "transport": self, "protocol": self._protocol}
            )
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._state is State.ABORTING or self._state is State.CLOSED:
            return
        self._set_state(State.ABORTING)
        self._lost_exc = exc
        self._rx_dropped += len(self._backlog)
        self._backlog.clear()
        self._sink.close()
        self._stop_source()
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        """CLOSING or ABORTING -> CLOSED once nothing of ours is left in the kernel."""
        state = self._state
        if state is not State.CLOSING and state is not State.ABORTING:
            return
        if not self._ring.closed:
            if self._source is not None or self._stopping:
                return
            if self._sink.in_kernel or (state is State.CLOSING and self._sink.buffered):
                return
        self._set_state(State.CLOSED)
        self._loop.call_soon(self._call_connection_lost, self._lost_exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            if self._made:
                self._call(self._protocol.connection_lost, exc)
        finally:
            self._sink.close()
            self._release()
            self._protocol = None
            if not self._closed_fut.done():
                self._closed_fut.set_result(None)

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_state", State.CLOSED) is not State.CLOSED:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._release()
