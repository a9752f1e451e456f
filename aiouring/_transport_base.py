"""What the TUN and UDP transports share: flow control, stopping the reader, teardown.

State: ``_closing`` (close() or abort() was called), ``_finished`` (the
teardown is scheduled), ``_protocol_paused`` (``pause_writing`` was called).
``_queue`` holds what waits for room in the ring's write pool, counted in
``_buffer_size`` by ``_queued_size``.  The teardown waits until the reader has
stopped and the writer has nothing in the kernel, then calls
``_call_connection_lost`` once, through ``call_soon``.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from .backends import AnyRing
from .errors import ClosedError


class RingTransportBase:
    _loop: asyncio.AbstractEventLoop
    _ring: AnyRing
    _protocol: Any
    _writer: Any

    def _init_base(self, loop: asyncio.AbstractEventLoop, ring: AnyRing, protocol: Any) -> None:
        self._loop = loop
        self._ring = ring
        self._protocol = protocol
        self._closing = False
        self._finished = False
        self._started = False
        self._paused = False  # reading paused by the protocol
        self._protocol_paused = False
        self._queue: deque[Any] = deque()
        self._buffer_size = 0
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024
        self._reader: Any = None
        self._stopping_readers = 0
        self._draining = False
        self._lost_exc: BaseException | None = None

    def _queued_size(self, item: Any) -> int:
        raise NotImplementedError

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def _arm_reader(self) -> None:
        raise NotImplementedError

    def _start(self, waiter: asyncio.Future | None) -> None:
        """``connection_made``, then reading unless the protocol paused it
        there; ``waiter`` learns how it went.  Scheduled by ``__init__``."""
        self._started = True
        if self._closing:
            if waiter is not None and not waiter.done():
                waiter.set_exception(ClosedError("the transport was closed before it started"))
            self._maybe_finish()
            return
        try:
            self._protocol.connection_made(self)
            if not self._paused and not self._closing:
                self._arm_reader()
        except BaseException as exc:
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
            self._force_close(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- asyncio's transport surface -------------------------------------------------------

    def get_protocol(self) -> Any:
        return self._protocol

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        """Bytes queued here, not yet taken by the ring."""
        return self._buffer_size

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

    def abort(self) -> None:
        """Close at once, dropping what is queued."""
        self._force_close(None)

    # -- flow control --------------------------------------------------------------------

    def _maybe_pause_protocol(self) -> None:
        if self._buffer_size <= self._high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        self._call_protocol("pause_writing")

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self._buffer_size <= self._low_water:
            self._protocol_paused = False
            self._call_protocol("resume_writing")

    def _call_protocol(self, name: str) -> None:
        try:
            getattr(self._protocol, name)()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {"message": f"protocol.{name}() failed", "exception": exc, "transport": self, "protocol": self._protocol}
            )

    # -- reader and teardown ------------------------------------------------------------------

    def _stop_reader(self) -> None:
        """Cancel the reader; its ``on_stopped`` is still to come (counted)."""
        reader = self._reader
        if reader is not None:
            self._stopping_readers += 1
            self._reader = None
            if reader.active:
                reader.cancel()

    def _reader_stopped(self) -> None:
        if self._stopping_readers:
            self._stopping_readers -= 1
        else:
            self._reader = None

    def _force_close(self, exc: BaseException | None) -> None:
        if self._finished:
            return
        self._lost_exc = exc
        self._closing = True
        self._queue.clear()
        self._buffer_size = 0
        if self._started:
            self._stop_reader()
        self._maybe_finish(force=True)

    def _maybe_finish(self, force: bool = False) -> None:
        """Schedule the teardown once nothing of ours is left in the kernel."""
        if self._finished or not self._closing:
            return
        if not self._ring.closed:
            if self._queue and not force:
                return
            if self._reader is not None or self._stopping_readers:
                return
            if self._writer.in_flight:
                if not self._draining:
                    self._draining = True
                    self._writer.when_drained(self._drained)
                return
        self._finished = True
        self._loop.call_soon(self._call_connection_lost, self._lost_exc)

    def _drained(self) -> None:
        self._draining = False
        self._maybe_finish()
