"""ReadinessRing: the op interface of ``Ring`` on readiness (epoll) instead of io_uring.

Used where io_uring is unavailable (``kernel.io_uring_disabled``, a seccomp
filter, an old kernel) or when asked for with ``backend="epoll"``.  Ops wait
for readiness with ``loop.add_reader``/``add_writer`` and then make the
syscall, so nothing is consumed from a file before the caller can take it:
cancelling an awaiting task never loses data here, and there are no late
results.  Packet readers drain up to ``drain_limit`` packets per wake-up (the
"bounded drain" recipe); packet writers queue up to ``write_slots`` packets,
written in one ``call_soon`` flush per loop iteration, mirroring the uring
backend's batching and its write pool.
"""
from __future__ import annotations

import asyncio
import errno
import os
import stat
import warnings
from typing import Any, Callable, Sequence

from ._native import SyscallBatch
from .errors import ClosedError, oserror
from .ring import OnPackets, OnStopped, PacketReader, RingBase, _check_bytes_like, _check_fd, _writable

__all__ = ["ReadinessRing"]


class _ReadinessPacketReader(PacketReader):
    mode = "readiness"

    def __init__(self, ring: "ReadinessRing", fd: int, bufsize: int, on_packets: OnPackets, on_stopped: OnStopped, drain_limit: int) -> None:
        self._ring = ring
        self.fd = fd
        self._bufsize = bufsize
        self._on_packets = on_packets
        self._on_stopped = on_stopped
        self._limit = drain_limit
        self._stopped = False
        ring._loop.add_reader(fd, self._drain)
        ring._readers.add(self)

    @property
    def active(self) -> bool:
        return not self._stopped

    def _drain(self) -> None:
        batch, err = self._ring._batch.read(self.fd, self._bufsize, self._limit)
        exc: BaseException | None = None
        if err == -errno.ENODATA:
            exc = EOFError(f"end of file on fd {self.fd}")
        elif err:
            exc = oserror(err, f"read on fd {self.fd}")
        if batch:
            self._ring._done += len(batch)
            self._on_packets(batch)
        if exc is not None and not self._stopped:
            self._stop()
            self._on_stopped(exc)

    def _stop(self) -> None:
        self._stopped = True
        self._ring._readers.discard(self)
        try:
            self._ring._loop.remove_reader(self.fd)
        except (RuntimeError, ValueError, OSError):
            pass

    def cancel(self) -> None:
        if self._stopped:
            return
        self._stop()
        self._ring._loop.call_soon(self._on_stopped, None)

    def __repr__(self) -> str:
        return f"<PacketReader fd={self.fd} mode=readiness {'stopped' if self._stopped else 'armed'}>"


class _ReadinessWriter:
    """``PacketWriter``'s interface: packets wait in a list until the ring's flush."""

    def __init__(self, ring: "ReadinessRing", fd: int, on_error: Callable[[int], None], on_space: Callable[[], None]) -> None:
        self._ring = ring
        self._fd = fd
        self._on_error = on_error
        self._on_space = on_space
        self._pending: list[bytes] = []
        self._blocked = False
        self._drained_cb: Callable[[], None] | None = None

    def write(self, data: bytes) -> bool:
        pending = self._pending
        if self._blocked or len(pending) >= self._ring._write_slots:
            ring = self._ring
            if ring._closed:
                raise ClosedError("the ring is closed")
            if self not in ring._space_waiters:
                ring._space_waiters.append(self)
            return False
        if not pending:
            ring = self._ring
            if ring._closed:
                raise ClosedError("the ring is closed")
            ring._dirty.append(self)
            if ring._flush_handle is None:
                ring._flush_handle = ring._loop.call_soon(ring._flush)
        pending.append(data)
        return True

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def when_drained(self, callback: Callable[[], None]) -> None:
        if not self._pending:
            callback()
        else:
            self._drained_cb = callback

    def close(self) -> None:
        pass


class _ReadinessDatagramReader(_ReadinessPacketReader):
    """Drains a datagram socket with recvfrom on each wake-up."""

    mode = "readiness"

    def __init__(self, ring: "ReadinessRing", sock: Any, bufsize: int, on_datagrams: OnPackets, on_stopped: OnStopped, on_error: Callable[[BaseException], None], drain_limit: int) -> None:
        self._sock = sock
        self._on_error = on_error
        super().__init__(ring, sock.fileno(), bufsize, on_datagrams, on_stopped, drain_limit)

    def _drain(self) -> None:
        recvfrom = self._sock.recvfrom
        size = self._bufsize
        batch = []
        try:
            for _ in range(self._limit):
                batch.append(recvfrom(size))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:  # an ICMP error reported on this socket: not fatal
            if batch:
                self._on_packets(batch)
                batch = []
            self._on_error(exc)
        if batch:
            self._ring._done += len(batch)
            self._on_packets(batch)


class _ReadinessDatagramWriter(_ReadinessWriter):
    """Datagrams wait as (data, addr) until the ring's flush sends them."""

    def __init__(self, ring: "ReadinessRing", sock: Any, on_error: Callable[[int], None], on_space: Callable[[], None]) -> None:
        super().__init__(ring, sock.fileno(), on_error, on_space)
        self._sock = sock

    def sendto(self, data: bytes, addr: Any, sockaddr: bytes) -> bool:
        return self.write((data, addr))  # type: ignore[arg-type]

    def _send_batch(self, items: list) -> tuple[int, list[tuple[int, int]]]:
        sock = self._sock
        refused: list[tuple[int, int]] = []
        for i, (data, addr) in enumerate(items):
            try:
                if addr is None:
                    sock.send(data)
                else:
                    sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return i, refused
            except OSError as exc:
                refused.append((i, -(exc.errno or errno.EIO)))
        return len(items), refused


class ReadinessRing(RingBase):
    """The ``Ring`` interface over ``loop.add_reader``/``add_writer`` (see module doc)."""

    backend = "epoll"
    setup = None

    def __init__(self, *, loop: asyncio.AbstractEventLoop | None = None, drain_limit: int = 64, write_slots: int = 1024) -> None:
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError("ReadinessRing() needs a running event loop, or pass loop=") from None
        self._loop = loop
        self._drain_limit = drain_limit
        self._closed = False
        self._warn_on_gc = True
        self._started = 0
        self._done = 0
        self._waiting: dict[tuple[str, int], list[asyncio.Future]] = {}
        self._write_slots = write_slots
        self._batch = SyscallBatch()
        self._dirty: list[_ReadinessWriter] = []
        self._blocked: set[_ReadinessWriter] = set()
        self._space_waiters: list[_ReadinessWriter] = []
        self._flush_handle: asyncio.Handle | None = None
        self._readers: set[_ReadinessPacketReader] = set()

    @property
    def in_flight(self) -> int:
        return sum(len(v) for v in self._waiting.values()) + sum(len(w._pending) for w in (*self._dirty, *self._blocked)) + len(self._readers)

    @property
    def counters(self) -> tuple[int, int]:
        """(ops started, ops completed); packets read count as completed ops."""
        return self._started, self._done

    def __repr__(self) -> str:
        return f"<ReadinessRing {'closed' if self._closed else 'open'} in_flight={self.in_flight}>"

    # -- awaitable ops ---------------------------------------------------------

    async def nop(self) -> int:
        self._check_open()
        await asyncio.sleep(0)
        return 0

    async def read(self, fd: int, nbytes: int, offset: int = -1, *, on_late: Any = None) -> bytes:
        _check_fd(fd)
        if not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"nbytes must be a non-negative int, not {nbytes!r}")
        if offset >= 0:
            return await self._io("r", fd, os.pread, fd, nbytes, offset)
        return await self._io("r", fd, os.read, fd, nbytes)

    async def readinto(self, fd: int, buffer: Any, offset: int = -1, *, on_late: Any = None) -> int:
        _check_fd(fd)
        return await self.readv(fd, [buffer], offset)

    async def readv(self, fd: int, buffers: Sequence[Any], offset: int = -1, *, on_late: Any = None) -> int:
        _check_fd(fd)
        buffers = [_writable(b) for b in buffers]
        if offset >= 0:
            return await self._io("r", fd, os.preadv, fd, buffers, offset)
        return await self._io("r", fd, os.readv, fd, buffers)

    async def write(self, fd: int, data: Any, offset: int = -1, *, on_late: Any = None) -> int:
        _check_fd(fd)
        _check_bytes_like(data)
        if offset >= 0:
            return await self._io("w", fd, os.pwrite, fd, data, offset)
        return await self._io("w", fd, os.write, fd, data)

    async def writev(self, fd: int, buffers: Sequence[Any], offset: int = -1, *, on_late: Any = None) -> int:
        _check_fd(fd)
        buffers = list(buffers)
        for b in buffers:
            _check_bytes_like(b)
        if offset >= 0:
            return await self._io("w", fd, os.pwritev, fd, buffers, offset)
        return await self._io("w", fd, os.writev, fd, buffers)

    async def _io(self, direction: str, fd: int, call: Callable[..., Any], *args: Any) -> Any:
        self._check_open()
        self._started += 1
        pollable = _pollable(fd)
        # A blocking fd is only touched once it is ready, so the loop never blocks on it.
        if pollable and os.get_blocking(fd):
            await self._ready(direction, fd)
        while True:
            try:
                result = call(*args)
                self._done += 1
                return result
            except (BlockingIOError, InterruptedError):
                await self._ready(direction, fd)

    async def _ready(self, direction: str, fd: int) -> None:
        self._check_open()
        key = (direction, fd)
        fut = self._loop.create_future()
        waiters = self._waiting.get(key)
        if waiters is None:
            waiters = self._waiting[key] = []
            add = self._loop.add_reader if direction == "r" else self._loop.add_writer
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
                self._unwatch(key)

    def _wake(self, key: tuple[str, int]) -> None:
        for fut in self._waiting.get(key, ()):
            if not fut.done():
                fut.set_result(None)

    def _unwatch(self, key: tuple[str, int]) -> None:
        del self._waiting[key]
        direction, fd = key
        remove = self._loop.remove_reader if direction == "r" else self._loop.remove_writer
        try:
            remove(fd)
        except (RuntimeError, ValueError, OSError):
            pass

    # -- ops for transports -------------------------------------------------------

    def start_packet_reader(self, fd: int, bufsize: int, on_packets: OnPackets, on_stopped: OnStopped, *, mode: str = "auto", buffers: int = 0) -> PacketReader:
        """Watch ``fd`` and drain packets on each wake-up; see ``Ring.start_packet_reader``."""
        self._check_open()
        _check_fd(fd)
        if mode not in ("auto", "readiness"):
            raise ValueError(f"the epoll backend reads in 'readiness' mode, not {mode!r}")
        self._started += 1
        return _ReadinessPacketReader(self, fd, bufsize, on_packets, on_stopped, self._drain_limit)

    def start_datagram_reader(self, sock: Any, bufsize: int, on_datagrams: OnPackets, on_stopped: OnStopped, on_error: Callable[[BaseException], None], *, buffers: int = 0) -> PacketReader:
        """Drain a datagram socket on each wake-up; batches are lists of (data, addr)."""
        self._check_open()
        self._started += 1
        return _ReadinessDatagramReader(self, sock, bufsize, on_datagrams, on_stopped, on_error, self._drain_limit)

    def open_datagram_writer(self, sock: Any, on_error: Callable[[int], None], on_space: Callable[[], None]) -> _ReadinessWriter:
        self._check_open()
        return _ReadinessDatagramWriter(self, sock, on_error, on_space)

    def open_writer(self, fd: int, on_error: Callable[[int], None], on_space: Callable[[], None]) -> _ReadinessWriter:
        """A packet writer for ``fd``; see ``aiouring.ring.PacketWriter``."""
        self._check_open()
        _check_fd(fd)
        return _ReadinessWriter(self, fd, on_error, on_space)

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        batch = self._batch
        limit = batch.max_packets
        for writer in dirty:
            pending = writer._pending
            while pending:
                run = pending[:limit]
                if isinstance(writer, _ReadinessDatagramWriter):
                    done, refused = writer._send_batch(run)
                else:
                    done, refused = batch.write(writer._fd, run)
                del pending[:done]
                self._done += done
                for _, res in refused:
                    self._call(writer._on_error, res)
                if done < len(run):
                    # The fd is full: wait until it is writable, keeping order.
                    writer._blocked = True
                    self._blocked.add(writer)
                    self._loop.add_writer(writer._fd, self._unblock, writer)
                    break
            if not pending and writer._drained_cb is not None:
                callback, writer._drained_cb = writer._drained_cb, None
                self._call(callback)
        if self._space_waiters:
            waiters, self._space_waiters = self._space_waiters, []
            for writer in waiters:
                if writer._blocked:
                    self._space_waiters.append(writer)
                else:
                    self._call(writer._on_space)

    def submit_now(self) -> None:
        """Write what is queued now instead of at the end of this loop iteration."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self._loop.call_exception_handler(
                {"message": "aiouring: exception in a write callback", "exception": exc, "ring": self}
            )

    def _unblock(self, writer: _ReadinessWriter) -> None:
        self._loop.remove_writer(writer._fd)
        writer._blocked = False
        self._blocked.discard(writer)
        if writer._pending and writer not in self._dirty:
            self._dirty.append(writer)
        self._flush()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the ring is closed")

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """Stop watching every fd and wake every waiter with ``ClosedError``.
        Queued packets not yet written are dropped.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        for writer in self._blocked:
            try:
                self._loop.remove_writer(writer._fd)
            except (RuntimeError, ValueError, OSError):
                pass
            writer._pending.clear()
        self._blocked.clear()
        for key, waiters in list(self._waiting.items()):
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(ClosedError("ring closed while an op was waiting"))
            self._unwatch(key)
        for reader in list(self._readers):
            reader._stop()
            reader._on_stopped(ClosedError("ring closed"))
        for writer in self._dirty:
            writer._pending.clear()
        self._dirty.clear()
        self._space_waiters.clear()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not self._closed and self._warn_on_gc:
            _warn(f"unclosed {self!r}", ResourceWarning, source=self)


def _pollable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
