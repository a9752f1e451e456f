"""Awaitable one-off ops (``read``, ``readinto``, ``readv``, ``write``,
``writev``, ``nop``) on either engine, with the same arguments, the same
checks and the same errors.

Cancellation, op by op, on io_uring: when the awaiting task is cancelled,
``CancelledError`` is raised at once and an ``IORING_OP_ASYNC_CANCEL`` is
submitted for the op.  The buffer stays referenced until the op's own CQE.
If that CQE reports success anyway (the cancel lost the race: the bytes were
read or written), the result goes to the op's ``on_late`` callback; without
one, a late *read* is reported to the loop's exception handler with its size
(the data was consumed from the file) and a late write is dropped (its bytes
did reach the file).  On the readiness engine an op waits for readiness and
only then makes its syscall, so a cancelled op consumed nothing and
``on_late`` is never called.
"""
from __future__ import annotations

import asyncio
import errno
import os
import stat
from typing import Any, Callable, Sequence, TypeVar, cast

from . import _validate as check
from ._engine import UringEngine
from ._readiness import ReadinessEngine
from .errors import ClosedError, oserror

__all__ = ["ReadinessOps", "UringOps"]

OnLate = Callable[[Any], Any]
T = TypeVar("T")


class _Op:
    """One awaitable op in flight: its future, and what the kernel may touch."""

    __slots__ = ("ops", "fut", "kind", "fd", "buffer", "keep", "on_late", "ud")

    def __init__(self, ops: "UringOps", kind: str, fd: int, buffer: Any, on_late: OnLate | None) -> None:
        self.ops = ops
        self.fut: asyncio.Future[Any] = ops.engine.loop.create_future()
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
    def complete(op: "_Op", res: int, flags: int, arena: Any, offset: int) -> None:
        fut = op.fut
        if fut.done():
            if res >= 0:
                op.ops.late_result(op, res)
            return
        if res < 0:
            if res == -errno.ECANCELED and op.ops.engine.closing:
                fut.set_exception(ClosedError(f"ring closed while a {op.kind} on fd {op.fd} was in flight"))
            else:
                fut.set_exception(oserror(res, f"{op.kind} on fd {op.fd}"))
        else:
            fut.set_result(op.value(res))


class UringOps:
    """The ops on io_uring (see the module docstring for cancellation)."""

    def __init__(self, engine: UringEngine) -> None:
        self.engine = engine

    async def nop(self) -> int:
        return cast(int, await self._wait(self._submit("nop", -1, None, None, self.engine.kernel.prep_nop)))

    async def read(self, fd: int, nbytes: int, offset: int = -1, *, on_late: OnLate | None = None) -> bytes:
        check.fd(fd)
        check.nbytes(nbytes)
        check.offset(offset)
        buf = bytearray(nbytes)
        return cast(bytes, await self._wait(self._submit("read", fd, buf, on_late, self.engine.kernel.prep_read, fd, buf, offset)))

    async def readinto(self, fd: int, buffer: Any, offset: int = -1, *, on_late: OnLate | None = None) -> int:
        check.fd(fd)
        check.writable(buffer)
        check.offset(offset)
        return cast(int, await self._wait(self._submit("readinto", fd, buffer, on_late, self.engine.kernel.prep_read, fd, buffer, offset)))

    async def readv(self, fd: int, buffers: Sequence[Any], offset: int = -1, *, on_late: OnLate | None = None) -> int:
        check.fd(fd)
        buffers = [check.writable(b) for b in buffers]
        check.offset(offset)
        return cast(int, await self._wait(self._submit("readv", fd, buffers, on_late, self.engine.kernel.prep_readv, fd, buffers, offset)))

    async def write(self, fd: int, data: Any, offset: int = -1, *, on_late: OnLate | None = None) -> int:
        check.fd(fd)
        check.bytes_like(data)
        check.offset(offset)
        return cast(int, await self._wait(self._submit("write", fd, data, on_late, self.engine.kernel.prep_write, fd, data, offset)))

    async def writev(self, fd: int, buffers: Sequence[Any], offset: int = -1, *, on_late: OnLate | None = None) -> int:
        check.fd(fd)
        buffers = list(buffers)
        for b in buffers:
            check.bytes_like(b)
        check.offset(offset)
        return cast(int, await self._wait(self._submit("writev", fd, buffers, on_late, self.engine.kernel.prep_writev, fd, buffers, offset)))

    def _submit(self, kind: str, fd: int, buffer: Any, on_late: OnLate | None, prep: Callable[..., Any], *args: Any) -> _Op:
        """Prepare one SQE and register its op; nothing is registered if preparing fails."""
        engine = self.engine
        engine.check_open()
        op = _Op(self, kind, fd, buffer, on_late)
        op.ud = engine.new_id()
        op.keep = prep(*args, op.ud)
        engine.register(op.ud, _Op.complete, op)
        return op

    async def _wait(self, op: _Op) -> Any:
        try:
            return await op.fut
        except asyncio.CancelledError:
            engine = self.engine
            if op.fut.cancelled() and engine.owns(op.ud) and not engine.closed:
                engine.cancel(op.ud)
            raise

    def late_result(self, op: _Op, res: int) -> None:
        value = op.value(res)
        if op.on_late is not None:
            op.on_late(value)
        elif op.kind in ("read", "readinto", "readv") and res > 0:
            self.engine.loop.call_exception_handler(
                {
                    "message": f"aiouring: a {op.kind} on fd {op.fd} read {res} bytes after its "
                    "task was cancelled; pass on_late= to receive them",
                    "ring": self.engine,
                }
            )


class ReadinessOps:
    """The same ops on readiness: wait until the fd is ready, then the syscall."""

    def __init__(self, engine: ReadinessEngine) -> None:
        self.engine = engine

    async def nop(self) -> int:
        self.engine.check_open()
        await asyncio.sleep(0)
        return 0

    async def read(self, fd: int, nbytes: int, offset: int = -1, *, on_late: OnLate | None = None) -> bytes:
        check.fd(fd)
        check.nbytes(nbytes)
        check.offset(offset)
        if offset >= 0:
            return await self._io("r", fd, os.pread, fd, nbytes, offset)
        return await self._io("r", fd, os.read, fd, nbytes)

    async def readinto(self, fd: int, buffer: Any, offset: int = -1, *, on_late: OnLate | None = None) -> int:
        return await self.readv(fd, [buffer], offset)

    async def readv(self, fd: int, buffers: Sequence[Any], offset: int = -1, *, on_late: OnLate | None = None) -> int:
        check.fd(fd)
        buffers = [check.writable(b) for b in buffers]
        check.offset(offset)
        if offset >= 0:
            return await self._io("r", fd, os.preadv, fd, buffers, offset)
        return await self._io("r", fd, os.readv, fd, buffers)

    async def write(self, fd: int, data: Any, offset: int = -1, *, on_late: OnLate | None = None) -> int:
        check.fd(fd)
        check.bytes_like(data)
        check.offset(offset)
        if offset >= 0:
            return await self._io("w", fd, os.pwrite, fd, data, offset)
        return await self._io("w", fd, os.write, fd, data)

    async def writev(self, fd: int, buffers: Sequence[Any], offset: int = -1, *, on_late: OnLate | None = None) -> int:
        check.fd(fd)
        buffers = list(buffers)
        for b in buffers:
            check.bytes_like(b)
        check.offset(offset)
        if offset >= 0:
            return await self._io("w", fd, os.pwritev, fd, buffers, offset)
        return await self._io("w", fd, os.writev, fd, buffers)

    async def _io(self, direction: str, fd: int, call: Callable[..., T], *args: Any) -> T:
        engine = self.engine
        engine.check_open()
        engine.started += 1
        # A blocking fd is only touched once it is ready, so the loop never blocks on it.
        if _pollable(fd) and os.get_blocking(fd):
            await engine.ready(direction, fd)
        while True:
            try:
                result = call(*args)
                engine.done += 1
                return result
            except (BlockingIOError, InterruptedError):
                await engine.ready(direction, fd)


def _pollable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
