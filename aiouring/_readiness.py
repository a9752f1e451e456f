"""The readiness (epoll) engine: the same job as ``UringEngine`` on
``loop.add_reader``/``add_writer`` instead of io_uring.

Used where io_uring is unavailable (``kernel.io_uring_disabled``, a seccomp
filter, an old kernel) or when asked for with ``backend="epoll"``.  Nothing
is consumed from a file before the caller can take it: an op waits for
readiness, then makes the syscall, so a cancelled op never loses data and
there are no late results.  Sinks are emitted at the same one flush per loop
iteration as on io_uring (one C call writes a whole batch); a sink the fd
cannot take more of waits for writability with ``add_writer``.

Sockets are watched through an epoll instance of the engine's own, which the
loop watches in turn (``nested=True``): a socket with an error pending (an
ICMP error on a connected UDP socket) reports ``EPOLLERR``, and uvloop's
``add_reader``/``add_writer`` answer that by closing their watcher for good,
so the socket would never be read again.  The nested epoll absorbs it: the
loop only ever sees the engine's epoll fd readable.
"""
from __future__ import annotations

import asyncio
import select
from typing import Callable, Protocol

from ._engine import EngineBase
from .errors import ClosedError

__all__ = ["ReadinessEngine"]


class Stoppable(Protocol):
    def stop(self, exc: BaseException | None) -> None: ...


class ReadinessEngine(EngineBase):
    """Readiness waits, watched fds and the flush (see the module docstring)."""

    backend = "epoll"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.started = 0
        self.done = 0
        self._waiting: dict[tuple[str, int], list[asyncio.Future[None]]] = {}
        self._members: set[Stoppable] = set()  # sources and blocked sinks
        self._nest: select.epoll | None = None
        self._nested: dict[int, dict[int, Callable[[], None]]] = {}  # fd -> {events: callback}

    @property
    def in_flight(self) -> int:
        return sum(len(v) for v in self._waiting.values()) + len(self._members)

    # -- readiness waits for ops ---------------------------------------------------

    async def ready(self, direction: str, fd: int) -> None:
        """Wait until ``fd`` is readable (``"r"``) or writable (``"w"``)."""
        self.check_open()
        key = (direction, fd)
        fut = self.loop.create_future()
        waiters = self._waiting.get(key)
        if waiters is None:
            waiters = self._waiting[key] = []
            add = self.loop.add_reader if direction == "r" else self.loop.add_writer
            add(fd, self._wake, key)
        waiters.append(fut)
        try:
            await fut
        finally:
            if not fut.done():
                fut.cancel()
            if fut in waiters:
                waiters.remove(fut)
            if not waiters and self._waiting.get(key) is waiters:
                self._stop_waiting(key)

    def _wake(self, key: tuple[str, int]) -> None:
        for fut in self._waiting.get(key, ()):
            if not fut.done():
                fut.set_result(None)

    def _stop_waiting(self, key: tuple[str, int]) -> None:
        del self._waiting[key]
        direction, fd = key
        remove = self.loop.remove_reader if direction == "r" else self.loop.remove_writer
        try:
            remove(fd)
        except (RuntimeError, ValueError, OSError):
            pass

    # -- watched fds for packet I/O -------------------------------------------------

    def watch(self, member: Stoppable, fd: int, callback: Callable[[], None], *, writable: bool = False, nested: bool = False) -> None:
        """Call ``callback`` whenever ``fd`` is ready (also when an error is
        pending on it); ``member.stop(exc)`` if the ring closes first.
        ``nested``: through the engine's own epoll (see the module docstring)."""
        if nested:
            self._watch_nested(fd, select.EPOLLOUT if writable else select.EPOLLIN, callback)
        else:
            (self.loop.add_writer if writable else self.loop.add_reader)(fd, callback)
        self._members.add(member)

    def unwatch(self, member: Stoppable, fd: int, *, writable: bool = False, nested: bool = False) -> None:
        self._members.discard(member)
        if nested:
            self._unwatch_nested(fd, select.EPOLLOUT if writable else select.EPOLLIN)
            return
        try:
            (self.loop.remove_writer if writable else self.loop.remove_reader)(fd)
        except (RuntimeError, ValueError, OSError):
            pass  # the loop is already closed

    def _watch_nested(self, fd: int, events: int, callback: Callable[[], None]) -> None:
        if self._nest is None:
            self._nest = select.epoll()
            self.loop.add_reader(self._nest.fileno(), self._dispatch_nested)
        watchers = self._nested.get(fd)
        if watchers is None:
            watchers = self._nested[fd] = {}
            watchers[events] = callback
            self._nest.register(fd, events)
        else:
            watchers[events] = callback
            self._nest.modify(fd, _mask(watchers))

    def _unwatch_nested(self, fd: int, events: int) -> None:
        watchers = self._nested.get(fd)
        if watchers is None or events not in watchers or self._nest is None:
            return
        del watchers[events]
        try:
            if watchers:
                self._nest.modify(fd, _mask(watchers))
            else:
                del self._nested[fd]
                self._nest.unregister(fd)
        except (OSError, ValueError):
            pass  # the fd was closed already: the kernel dropped it from the epoll

    def _dispatch_nested(self) -> None:
        if self._nest is None:
            return
        for fd, got in self._nest.poll(0, 64):
            watchers = self._nested.get(fd, {})
            for events, callback in list(watchers.items()):
                # an error or hang-up wakes every watcher: its syscall reports it
                if got & (events | select.EPOLLERR | select.EPOLLHUP) and self._nested.get(fd) is watchers and events in watchers:
                    try:
                        callback()
                    except Exception as exc:
                        self.report(exc, "exception in a readiness callback")

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop watching every fd, wake every waiter with ``ClosedError`` and
        tell every source and blocked sink.  Queued packets not yet written
        are dropped.  Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.forked:
            # the loop's epoll is the parent's too: forget, do not unwatch
            if self._nest is not None:
                self._nest.close()
                self._nest = None
            self._waiting.clear()
            self._members = set()
            return
        self._drop_dirty()
        loop_open = not self.loop.is_closed()
        for key, waiters in list(self._waiting.items()):
            for fut in waiters:
                if not fut.done() and loop_open:
                    fut.set_exception(ClosedError("ring closed while an op was waiting"))
            self._stop_waiting(key)
        members, self._members = self._members, set()
        for member in members:
            if not loop_open:
                continue  # nobody is left to call back
            try:
                member.stop(ClosedError("ring closed"))
            except Exception as exc:
                self.report(exc, "exception while closing")
        if self._nest is not None:
            self._unwatch(self._nest.fileno())
            self._nest.close()
            self._nest = None
            self._nested.clear()

    def __repr__(self) -> str:
        return f"<ReadinessEngine {'closed' if self.closed else 'open'} in_flight={self.in_flight}>"


def _mask(watchers: dict[int, Callable[[], None]]) -> int:
    mask = 0
    for events in watchers:
        mask |= events
    return mask
