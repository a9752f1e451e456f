"""TunProtocol, the callbacks of a TUN transport, and the queue protocol behind ``Tun``."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from .errors import ClosedError

__all__ = ["TunProtocol", "PacketQueueProtocol"]


class TunProtocol(asyncio.BaseProtocol):
    """Callbacks for a TUN/TAP transport (``create_tun_connection``).

    Legal call order: ``connection_made``, then any number of
    ``packet_received``/``packets_received``/``error_received`` and
    ``pause_writing``/``resume_writing``, then ``connection_lost`` exactly once.
    """

    def packet_received(self, packet: bytes) -> None:
        """One packet (an IP packet, or an Ethernet frame on TAP) was read."""

    def packets_received(self, packets: list[bytes]) -> None:
        """A batch of packets was read, in order.  Override it to take whole
        batches at once; the default calls ``packet_received`` for each."""
        for packet in packets:
            self.packet_received(packet)

    def error_received(self, exc: OSError) -> None:
        """A write of one packet failed (``exc`` is the ``OSError``); the
        transport stays open."""


class PacketQueueProtocol(TunProtocol):
    """Keeps received packets in a queue for ``Tun.read()``.

    A packet leaves the queue only when a reader takes it after resuming, so
    a reader cancelled at any point leaves the packet for the next one.
    Reading is paused on the transport (the kernel queues, then drops, as a
    TUN does) while more than ``max_queued`` packets wait.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, max_queued: int = 4096) -> None:
        self._loop = loop
        self.transport: Any = None
        self.queue: deque[bytes] = deque()
        self.waiters: deque[asyncio.Future[None]] = deque()
        self._max_queued = max_queued
        self._resume_at = max_queued // 2
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.write_errors: deque[OSError] = deque()
        self.lost = False
        self.lost_exc: BaseException | None = None
        self.closed_fut: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def packets_received(self, packets: list[bytes]) -> None:
        self.queue.extend(packets)
        self._wake(len(packets))
        if len(self.queue) > self._max_queued and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def packet_received(self, packet: bytes) -> None:
        self.packets_received([packet])

    def _wake(self, n: int) -> None:
        waiters = self.waiters
        while n and waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1

    def wake_next(self) -> None:
        """Pass a wake-up on (a woken reader was cancelled before taking its packet)."""
        if self.queue or self.lost:
            self._wake(1)

    def took(self) -> None:
        """A reader took a packet: resume reading once the queue has drained."""
        if self._reading_paused and len(self.queue) <= self._resume_at and not self.lost:
            self._reading_paused = False
            self.transport.resume_reading()

    def error_received(self, exc: OSError) -> None:
        self.write_errors.append(exc)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self._drain_waiters.clear()

    async def drain(self) -> None:
        if self._writing_paused and not self.lost:
            fut = self._loop.create_future()
            self._drain_waiters.append(fut)
            await fut

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.lost_exc = exc
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_exception(exc or ClosedError("the TUN device was closed"))
        self._drain_waiters.clear()
        if not self.closed_fut.done():
            self.closed_fut.set_result(None)
