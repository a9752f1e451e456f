"""The completion engines: what drives a ring from the event loop.

``EngineBase`` holds what both backends need: the loop and thread a ring
belongs to, the one flush per loop iteration (sinks with packets to write
are emitted, then the backend submits), reporting of callback failures, and
the closing flags.  ``UringEngine`` is the io_uring one:

* One kernel ring plus an eventfd registered with the *plain*
  ``io_uring_register_eventfd`` (the ``_async`` variant never fires for TUN
  reads: they complete through task work, not io-wq workers).  The loop
  watches the eventfd with ``loop.add_reader``, which works the same on
  asyncio's selector loop and on uvloop.
* Submission is batched: ops only fill SQEs and sinks only queue packets; the
  first of a loop iteration schedules one ``call_soon`` flush, and that flush
  is the iteration's one ``io_uring_enter``.  A full SQ is submitted early in C.
* Completion: when the eventfd is readable it is drained *first*, then the CQ
  is reaped (draining after reaping could eat the only signal for CQEs posted
  in between; a signal with nothing ready is normal).  One native call copies
  a batch of CQEs out and advances the CQ once; packets in provided buffers
  are copied out and the buffers recycled in the same call, before Python
  sees them (re-arming a multishot read before its buffers are back storms
  ``-ENOBUFS``).  Successful writes of a batch never reach Python; the batch
  is reported once, when its last CQE is in.  After a few rounds of
  ``batch_limit`` CQEs the rest is left for a ``call_soon``, so one busy ring
  cannot starve the loop.
* Dispatch is by ``user_data``: ``register(ud, handler, ctx)`` and the CQE
  calls ``handler(ctx, res, flags, arena, offset)``.  An entry stays while the
  kernel may still post for it (``IORING_CQE_F_MORE``), and holds what the op
  lends the kernel: nothing the kernel may write into is freed before the
  op's final CQE, whatever happened to the future that asked for it.
* ``close()`` cancels every op in the kernel, waits (bounded, blocking
  briefly) for their CQEs and only then frees native memory; if the kernel
  did not answer in time, the memory is kept for the life of the process
  rather than freed under it.

Engines belong to one event loop and one thread; they are not thread-safe.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
import time
from enum import IntEnum
from typing import Any, Callable, Protocol

from ._native import F_MORE, GROUP_SHIFT, ID_MASK, MAX_GROUPS, TAG_BATCH, TAG_EVENT
from .errors import ClosedError

__all__ = ["EngineBase", "Handler", "Tag", "UringEngine", "loop_for"]

logger = logging.getLogger("aiouring")

Handler = Callable[[Any, int, int, Any, int], None]
"""``handler(ctx, res, flags, arena, offset)``: ``offset`` >= 0 when the CQE
carried a packet, whose bytes start there in ``arena``."""

# Ops whose memory outlived a ring that could not wait for their CQEs.
_GRAVEYARD: list[Any] = []

_MAX_ROUNDS = 4  # reap rounds of batch_limit CQEs before yielding to the loop
_CLOSE_WAIT = 2.0  # seconds close() waits for the CQEs of cancelled ops


class Tag(IntEnum):
    """Reserved ``user_data`` values (op ids start above them)."""

    IGNORE = 1  # the CQE of a cancel request: nobody waits for it
    FIRST_ID = 16


class Emitter(Protocol):
    """A sink with packets to hand to the kernel at the next flush."""

    def emit(self) -> None: ...


class Reader(Protocol):
    """A packet source fed by the reap loop."""

    def absorb(self, pk: list[int], arena: Any, start: int, stop: int) -> int: ...

    def deliver(self) -> None: ...


class BatchOwner(Protocol):
    """A sink whose write batch is in the kernel."""

    def batch_failed(self, batch: Any, index: int, res: int) -> None: ...

    def batch_done(self, batch: Any) -> None: ...


def loop_for(loop: asyncio.AbstractEventLoop | None, what: str) -> asyncio.AbstractEventLoop:
    """``loop``, or the running loop; a ``RuntimeError`` that says what needs one."""
    if loop is not None:
        return loop
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(f"{what} needs a running event loop, or pass loop=") from None


class EngineBase:
    """What both backends share (see the module docstring)."""

    backend = "?"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.get_ident()
        self.pid = os.getpid()
        self.closed = False
        self.closing = False
        self._flush_handle: asyncio.Handle | None = None
        self._dirty: list[Emitter] = []

    @property
    def forked(self) -> bool:
        """This is a child of the process that made the engine: the kernel
        objects and the loop's epoll are shared with the parent, so closing
        may only let go of this process's copies."""
        return os.getpid() != self.pid

    # -- used by ops and packet I/O --------------------------------------------

    def check_open(self) -> None:
        if self.closed or self.closing:
            raise ClosedError("the ring is closed")

    def check_caller(self) -> None:
        """Refuse a caller on another loop or thread: a ring is its loop's alone."""
        self.check_open()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = self.loop  # between runs of its loop, from its thread: fine
        if running is not self.loop or threading.get_ident() != self.thread:
            raise RuntimeError(
                f"this ring belongs to the event loop {self.loop!r} in another thread or task runner; "
                "use aiouring.get_ring() for the running loop's own ring"
            )

    def schedule_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def mark_dirty(self, sink: Emitter) -> None:
        """``sink.emit()`` at this iteration's flush."""
        self._dirty.append(sink)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def flush_now(self) -> None:
        """Submit what is queued now instead of at the end of this loop iteration."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()

    def report(self, exc: BaseException, message: str) -> None:
        """A callback of ours failed: the loop's exception handler hears of it."""
        self.loop.call_exception_handler({"message": f"aiouring: {message}", "exception": exc, "ring": self})

    # -- flushing -----------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_handle = None
        if self.closed:
            return
        if self._dirty:
            dirty, self._dirty = self._dirty, []
            for sink in dirty:
                try:
                    sink.emit()
                except Exception as exc:
                    self.report(exc, "a write batch could not be handed to the kernel")
        self._submit()

    def _submit(self) -> None:
        pass

    @property
    def in_flight(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _drop_dirty(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._dirty.clear()

    def _unwatch(self, fd: int) -> None:
        try:
            self.loop.remove_reader(fd)
        except (RuntimeError, ValueError, OSError):
            pass  # the loop is already closed


class UringEngine(EngineBase):
    """The io_uring completion engine (see the module docstring)."""

    backend = "uring"

    def __init__(self, loop: asyncio.AbstractEventLoop, kernel: Any) -> None:
        super().__init__(loop)
        self.kernel = kernel
        self._ops: dict[int, tuple[Handler, Any]] = {}
        self._batches: dict[int, Any] = {}
        self._next_id = int(Tag.FIRST_ID)
        self._reap_handle: asyncio.Handle | None = None
        self._touched: list[Reader] = []
        self._free_groups: list[int] = []
        self._groups_made = 0
        self._eventfd = kernel.eventfd
        loop.add_reader(self._eventfd, self._on_wakeup)

    # -- used by ops and packet I/O --------------------------------------------

    @property
    def in_flight(self) -> int:
        """Ops and write batches the kernel still owns."""
        return len(self._ops) + len(self._batches)

    def new_id(self) -> int:
        ud = self._next_id
        self._next_id = ud + 1 if ud < ID_MASK else int(Tag.FIRST_ID)
        return ud

    def register(self, ud: int, handler: Handler, ctx: Any) -> None:
        """Call ``handler`` for ``ud``'s CQEs until its final one; ``ctx``
        (and what it holds) stays referenced until then."""
        self._ops[ud] = (handler, ctx)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def owns(self, ud: int) -> bool:
        return ud in self._ops

    def cancel(self, ud: int) -> None:
        """Ask the kernel to cancel ``ud``; its final CQE still comes."""
        self.kernel.prep_cancel(ud, Tag.IGNORE)
        self.schedule_flush()

    def alloc_group(self) -> int:
        if self._free_groups:
            return self._free_groups.pop()
        if self._groups_made >= MAX_GROUPS:
            raise OSError(errno.ENOBUFS, f"all {MAX_GROUPS} buffer groups of this ring are in use")
        self._groups_made += 1
        return self._groups_made - 1

    def free_group(self, bgid: int) -> None:
        self._free_groups.append(bgid)

    def group_ud(self, ud: int, bgid: int) -> int:
        """``ud`` tagged with buffer group ``bgid`` (the reaper needs it)."""
        return ud | ((bgid + 1) << GROUP_SHIFT)

    def add_batch(self, slot: int, batch: Any) -> None:
        """A write batch is in the kernel under ``slot``: ``batch.owner``
        hears of its failures and of its end."""
        self._batches[slot] = batch

    # -- submission ------------------------------------------------------------

    def _submit(self) -> None:
        try:
            self.kernel.submit()
        except OSError as exc:
            self.report(exc, "io_uring_enter failed")
        # The kernel did not signal the eventfd for what it posted during the
        # submit (see aiou_submit): reap it now, saving a trip through epoll.
        self._reap()

    # -- completion -------------------------------------------------------------

    def _on_wakeup(self) -> None:
        try:
            os.read(self._eventfd, 8)  # drain before reaping; see module doc
        except (BlockingIOError, InterruptedError):
            pass
        self._reap()
        # What the callbacks queued in answer (a reply to a ping, say) goes to
        # the kernel now rather than one loop iteration later.
        if self._flush_handle is not None and not self.closed:
            self._flush_handle.cancel()
            self._flush()

    def _reap(self) -> None:
        self._reap_handle = None
        kernel = self.kernel
        ops = self._ops
        for _ in range(_MAX_ROUNDS):
            out, pk, arena = kernel.reap()
            if not out and not pk:
                break
            if self.loop.is_closed():
                self._discard(out)  # nobody is left to call back: only let the kernel go
                continue
            pos = 0
            for i in range(0, len(out), 5):
                mark = out[i + 4]
                if mark > pos:
                    self._absorb(pk, arena, pos, mark)
                    pos = mark
                ud = out[i]
                entry = ops.get(ud)
                if entry is None:
                    self._untracked(ud, out[i + 1])
                    continue
                flags = out[i + 2]
                if not flags & F_MORE:
                    del ops[ud]
                try:
                    entry[0](entry[1], out[i + 1], flags, arena, out[i + 3])
                except Exception as exc:
                    self.report(exc, "exception in a completion callback")
            if 3 * pos < len(pk):
                self._absorb(pk, arena, pos, len(pk) // 3)
            if self._touched:
                touched, self._touched = self._touched, []
                for reader in touched:
                    try:
                        reader.deliver()
                    except Exception as exc:
                        self.report(exc, "exception in a completion callback")
        else:
            if not self.closed and self._reap_handle is None:
                self._reap_handle = self.loop.call_soon(self._reap)

    def _discard(self, out: list[int]) -> None:
        for i in range(0, len(out), 5):
            ud = out[i]
            if ud in self._ops and not out[i + 2] & F_MORE:
                del self._ops[ud]
            elif (ud >> GROUP_SHIFT) & 0xFFFF == TAG_EVENT:
                self._batches.pop(ud & 0xFFFFFFFF, None)

    def _absorb(self, pk: list[int], arena: Any, start: int, end: int) -> None:
        """Hand packets ``pk[start:end]`` to their readers, in order, one call
        per run of packets of the same reader."""
        ops = self._ops
        touched = self._touched
        i, stop = 3 * start, 3 * end
        while i < stop:
            entry = ops.get(pk[i])
            if entry is None:  # cannot happen while the multishot op is armed
                i += 3
                continue
            reader = entry[1]
            if reader not in touched:
                touched.append(reader)
            i = reader.absorb(pk, arena, i, stop)

    def touch(self, reader: Reader) -> None:
        """``reader.deliver()`` after this reap round."""
        if reader not in self._touched:
            self._touched.append(reader)

    def _untracked(self, ud: int, res: int) -> None:
        """A CQE with no op entry: a failed write of a batch, a batch's end,
        or a reserved tag."""
        tag = (ud >> GROUP_SHIFT) & 0xFFFF  # ud comes as a signed int64
        try:
            if tag == TAG_BATCH:
                batch = self._batches.get((ud >> 16) & 0xFFFFFFFF)
                if batch is not None:
                    batch.owner.batch_failed(batch, ud & 0xFFFF, res)
            elif tag == TAG_EVENT:
                batch = self._batches.pop(ud & 0xFFFFFFFF, None)
                if batch is not None:
                    batch.owner.batch_done(batch)
        except Exception as exc:
            self.report(exc, "exception in a write completion callback")

    # -- lifecycle ----------------------------------------------------------------

    def close(self) -> None:
        """Cancel every op in flight, wait briefly for the kernel to release
        their memory, stop watching the eventfd and free the ring.  Works with
        the loop closed too.  Idempotent; never hangs."""
        if self.closed or self.closing:
            return
        if self.forked:
            # cancelling or unregistering would act on the parent's ring, and
            # remove_reader on the parent's epoll: only this copy goes
            self.closed = True
            self.kernel.forget()
            self._ops = {}
            self._batches = {}
            return
        self.closing = True
        try:
            self._drop_dirty()
            if self.in_flight:
                self.kernel.prep_cancel_all(Tag.IGNORE)
                deadline = time.monotonic() + _CLOSE_WAIT
                while self.in_flight and time.monotonic() < deadline:
                    self.kernel.wait(50)
                    self._reap()
            if self.in_flight:
                logger.warning(
                    "aiouring: %d ops did not complete within %.1fs of close(); "
                    "keeping their memory for the life of the process",
                    self.in_flight,
                    _CLOSE_WAIT,
                )
                _GRAVEYARD.append((self._ops, self._batches, self.kernel))
                self.kernel = _LeakedKernel(self.kernel)
        finally:
            self.closed = True
            if self._reap_handle is not None:
                self._reap_handle.cancel()
            self._unwatch(self._eventfd)
            self.kernel.close()
            self._ops = {}
            self._batches = {}


class _LeakedKernel:
    """Stands in for a kernel ring that could not be freed safely at close."""

    def __init__(self, kernel: Any) -> None:
        self.counters = kernel.counters
        self.setup = kernel.setup
        self.overflows = kernel.overflows
        self.submit_calls = kernel.submit_calls
        self.supports_multishot = kernel.supports_multishot

    def close(self) -> None:
        pass
