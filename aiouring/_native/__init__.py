"""The native io_uring: the only Python module that holds cffi pointers.

``NativeRing`` wraps one ``struct aiou_ring`` (an io_uring, its registered
eventfd and its provided-buffer rings).  It speaks in Python terms: ops are
prepared with an integer ``user_data`` and a Python object to keep alive, and
``reap`` returns completions as a flat list of ints plus an arena of packet
bytes.  ``aiouring.testing.FakeKernel`` implements the same methods.
"""
from __future__ import annotations

import errno
import functools
from typing import Any, Callable, Sequence

from ..errors import UnsupportedError, check

try:
    from ._uring import ffi, lib
except ImportError as exc:  # pragma: no cover - a broken install
    raise ImportError(
        "aiouring's native module is not built; reinstall with liburing-dev present "
        "(apt-get install liburing-dev; pip install .)"
    ) from exc

__all__ = ["NativeRing", "SETUP_MODES", "SyscallBatch", "probe_opcodes", "ffi", "lib"]

F_BUFFER = lib.IORING_CQE_F_BUFFER
F_MORE = lib.IORING_CQE_F_MORE
OP_READ_MULTISHOT = lib.AIOU_OP_READ_MULTISHOT
GROUP_SHIFT = lib.AIOU_UD_ID_BITS
MAX_GROUPS = lib.AIOU_MAX_GROUPS
ID_MASK = (1 << GROUP_SHIFT) - 1
POOL_GROUP = lib.AIOU_POOL_GROUP
MAX_WRITERS = lib.AIOU_MAX_WRITERS

# Setup flag sets, most capable first; "auto" tries them in order and keeps the
# first the kernel accepts (an older kernel answers -EINVAL to unknown flags).
SETUP_MODES: dict[str, int] = {
    "defer": lib.IORING_SETUP_SINGLE_ISSUER
    | lib.IORING_SETUP_DEFER_TASKRUN
    | lib.IORING_SETUP_TASKRUN_FLAG,
    "coop": lib.IORING_SETUP_COOP_TASKRUN | lib.IORING_SETUP_TASKRUN_FLAG,
    "plain": 0,
    "sqpoll": lib.IORING_SETUP_SQPOLL,
}
AUTO_ORDER = ("coop", "plain")

_CAUSES = {
    errno.EPERM: "io_uring is disabled by kernel.io_uring_disabled or a seccomp filter",
    errno.ENOSYS: "this kernel has no io_uring (CONFIG_IO_URING off, or a sandbox like gVisor)",
    errno.ENOMEM: "not enough locked memory for the ring (RLIMIT_MEMLOCK)",
    errno.EINVAL: "the kernel rejected the ring's setup flags",
}


def _setup_error(err: int, mode: str) -> UnsupportedError:
    reason = f"io_uring_setup failed with {errno.errorcode.get(err, err)} ({mode} mode)"
    cause = _CAUSES.get(err)
    if err == errno.EPERM and cause is not None:
        try:
            with open("/proc/sys/kernel/io_uring_disabled") as f:
                cause += f"; kernel.io_uring_disabled={f.read().strip()}"
        except OSError:
            pass
    if cause:
        reason += f": {cause}"
    return UnsupportedError(err, reason)


class NativeRing:
    """One kernel io_uring with a registered eventfd (see module docstring)."""

    backend = "uring"

    def __init__(
        self,
        entries: int = 256,
        cq_entries: int = 0,
        setup: str = "auto",
        write_slots: int = 1024,
        slot_size: int = 2048,
        register_pool: bool = False,
    ) -> None:
        modes = AUTO_ORDER if setup == "auto" else (setup,)
        if setup != "auto" and setup not in SETUP_MODES:
            raise ValueError(f"setup must be 'auto' or one of {sorted(SETUP_MODES)}, not {setup!r}")
        out = ffi.new("struct aiou_ring **")
        res = -errno.EINVAL
        for mode in modes:
            res = lib.aiou_ring_open(out, entries, cq_entries, SETUP_MODES[mode])
            if res == 0:
                self.setup = mode
                break
            if res != -errno.EINVAL:
                break
        if res < 0:
            raise _setup_error(-res, mode)
        self._r = out[0]
        self.eventfd: int = self._r.eventfd
        self.sq_entries: int = self._r.sq_entries
        self.cq_entries: int = self._r.cq_entries
        self.defer_taskrun = bool(self._r.setup_flags & lib.IORING_SETUP_DEFER_TASKRUN)
        self._max_batch = 256
        self._out = ffi.new("int64_t[]", 5 * self._max_batch)
        self._out_view = memoryview(ffi.buffer(self._out)).cast("q")
        self._max_packets = 1024
        self._pk = ffi.new("int64_t[]", 3 * self._max_packets)
        self._pk_view = memoryview(ffi.buffer(self._pk)).cast("q")
        self._npk = ffi.new("unsigned *")
        self._arena_size = 1 << 21
        self._arena = ffi.new("unsigned char[]", self._arena_size)
        self._arena_buf = ffi.buffer(self._arena)
        res = lib.aiou_pool_init(self._r, write_slots, slot_size, int(register_pool))
        if res < 0:
            lib.aiou_ring_close(self._r)
            self._r = None
            check(res, "allocate the write pool")
        self.write_slots = write_slots
        self.slot_size = slot_size
        # one cffi call per pooled write: (fd, data, len, writer) -> 0 or -errno
        self.write_copy: Callable[[int, Any, int, int], int] = functools.partial(lib.aiou_write_copy, self._r)
        # (fd, data, len, sockaddr bytes, sockaddr len, writer) -> 0 or -errno
        self.sendto_copy: Callable[[int, Any, int, Any, int, int], int] = functools.partial(lib.aiou_sendto_copy, self._r)

    # -- ops ------------------------------------------------------------
    # Each prep_* queues one SQE (submitting first if the SQ is full) and
    # returns what must stay referenced until the op's final CQE.

    def prep_nop(self, ud: int) -> None:
        check(lib.aiou_prep_nop(self._r, ud), "prep nop")

    def prep_read(self, fd: int, buf: bytearray | memoryview, offset: int, ud: int) -> Any:
        cbuf = ffi.from_buffer(buf, require_writable=True)
        check(lib.aiou_prep_read(self._r, fd, cbuf, len(cbuf), offset, ud), "prep read")
        return cbuf

    def prep_write(self, fd: int, data: Any, offset: int, ud: int) -> Any:
        if type(data) is not bytes:
            data = ffi.from_buffer(data)
        check(lib.aiou_prep_write(self._r, fd, data, len(data), offset, ud), "prep write")
        return data

    def _iovecs(self, buffers: Sequence[Any], writable: bool) -> tuple[Any, list[Any]]:
        iov = ffi.new("struct iovec[]", len(buffers))
        keep = []
        for i, b in enumerate(buffers):
            cb = ffi.from_buffer(b, require_writable=writable)
            keep.append(cb)
            iov[i].iov_base = cb
            iov[i].iov_len = len(cb)
        return iov, keep

    def prep_readv(self, fd: int, buffers: Sequence[Any], offset: int, ud: int) -> Any:
        iov, keep = self._iovecs(buffers, True)
        check(lib.aiou_prep_readv(self._r, fd, iov, len(buffers), offset, ud), "prep readv")
        return (iov, keep)

    def prep_writev(self, fd: int, buffers: Sequence[Any], offset: int, ud: int) -> Any:
        iov, keep = self._iovecs(buffers, False)
        check(lib.aiou_prep_writev(self._r, fd, iov, len(buffers), offset, ud), "prep writev")
        return (iov, keep)

    def prep_cancel(self, target: int, ud: int) -> None:
        check(lib.aiou_prep_cancel(self._r, target, ud), "prep cancel")

    def prep_cancel_all(self, ud: int) -> None:
        check(lib.aiou_prep_cancel_all(self._r, ud), "prep cancel all")

    def group_ud(self, ud: int, bgid: int) -> int:
        """``ud`` tagged with buffer group ``bgid`` (the reaper needs it)."""
        return ud | ((bgid + 1) << GROUP_SHIFT)

    def prep_read_multishot(self, fd: int, bgid: int, ud: int) -> None:
        check(lib.aiou_prep_read_multishot(self._r, fd, bgid, ud), "prep multishot read")

    def prep_recvmsg_multishot(self, fd: int, bgid: int, ud: int) -> None:
        check(lib.aiou_prep_recvmsg_multishot(self._r, fd, bgid, ud), "prep multishot recvmsg")

    # -- buffer rings ---------------------------------------------------

    def add_buffer_group(self, bgid: int, entries: int, bufsize: int, recvmsg: bool = False) -> None:
        """Register a provided-buffer ring; ``recvmsg`` lays its buffers out for
        multishot recvmsg (each packet then reaches Python as a record:
        name length byte, source address, payload)."""
        if bufsize > self._arena_size:
            raise ValueError(f"buffer size {bufsize} is larger than the reap arena")
        check(lib.aiou_bufring_add(self._r, bgid, entries, bufsize), "register buffer ring")
        if recvmsg:
            check(lib.aiou_bufring_recvmsg(self._r, bgid), "set up a recvmsg buffer ring")

    def remove_buffer_group(self, bgid: int) -> None:
        check(lib.aiou_bufring_remove(self._r, bgid), "unregister buffer ring")

    # -- submission and completion ---------------------------------------

    def submit(self) -> int:
        res = lib.aiou_submit(self._r)
        if res < 0 and res not in (-errno.EBUSY, -errno.EAGAIN, -errno.EINTR):
            check(res, "io_uring_enter")
        return max(res, 0)

    def wait(self, timeout_ms: int) -> None:
        """Submit, then block until a CQE is ready or ``timeout_ms`` passes."""
        res = lib.aiou_wait(self._r, timeout_ms)
        if res < 0 and res not in (-errno.EINTR, -errno.EAGAIN, -errno.EBUSY):
            check(res, "io_uring_enter")

    def reap(self) -> tuple[list[int], list[int], Any]:
        """Ready completions, in two lists that replay in CQ order:

        * ``out``: ``[ud, res, flags, arena_offset, packets_before] * n`` for
          every CQE but packets (``arena_offset`` -1 when it carried no data);
        * ``pk``: ``[ud, arena_offset, length] * m``, one per packet of a
          multishot read (``packets_before`` of an ``out`` entry says how many
          ``pk`` entries came before it in the CQ);

        and the arena whose ``[off:off + length]`` slice is a packet's bytes.
        Successful pooled writes are consumed in C and appear in neither."""
        n = check(
            lib.aiou_reap(self._r, self._out, self._max_batch, self._arena, self._arena_size, self._pk, self._max_packets, self._npk),
            "reap",
        )
        return self._out_view[: 5 * n].tolist(), self._pk_view[: 3 * self._npk[0]].tolist(), self._arena_buf

    def writer_in_flight(self, writer: int) -> int:
        """Pooled writes of ``writer`` the kernel has not completed."""
        return lib.aiou_writer_inflight(self._r, writer)

    @property
    def pool_free(self) -> int:
        """Free write slots in the pool."""
        return self._r.pool_free

    @property
    def pool_in_flight(self) -> int:
        return self.write_slots - self._r.pool_free

    @property
    def batch_limit(self) -> int:
        return self._max_batch

    @property
    def counters(self) -> tuple[int, int]:
        """(SQEs submitted, CQEs reaped) over the ring's life."""
        return self._r.submitted, self._r.reaped

    @property
    def overflows(self) -> int:
        """Times a reap found the CQ overflowed (the kernel kept the CQEs; they were flushed)."""
        return self._r.overflows

    def close(self) -> None:
        if self._r is not None:
            self.write_copy = _closed_write
            self.sendto_copy = _closed_sendto
            lib.aiou_ring_close(self._r)
            self._r = None


class SyscallBatch:
    """Batches of plain read()/write() syscalls, one cffi call per batch (the
    readiness backend's data path)."""

    def __init__(self, arena_size: int = 1 << 21, max_packets: int = 256) -> None:
        self._arena_size = arena_size
        self._arena = ffi.new("unsigned char[]", arena_size)
        self._arena_buf = ffi.buffer(self._arena)
        self._max = max_packets
        self._out = ffi.new("int64_t[]", 2 * max_packets)
        self._out_view = memoryview(ffi.buffer(self._out)).cast("q")
        self._err = ffi.new("int *")
        self._lens = ffi.new("unsigned[]", max_packets)
        self._errs = ffi.new("int[]", max_packets)
        self._nerr = ffi.new("int *")

    def read(self, fd: int, bufsize: int, limit: int) -> tuple[list[bytes], int]:
        """Up to ``limit`` packets read from non-blocking ``fd`` and the
        ``-errno`` that stopped the batch (0 for EAGAIN; -ENODATA at EOF)."""
        n = lib.aiou_read_batch(fd, self._arena, self._arena_size, bufsize, self._out, min(limit, self._max), self._err)
        vals = self._out_view[: 2 * n].tolist()
        buf = self._arena_buf
        return [buf[vals[i] : vals[i] + vals[i + 1]] for i in range(0, 2 * n, 2)], self._err[0]

    def write(self, fd: int, packets: list[bytes]) -> tuple[int, list[tuple[int, int]]]:
        """Write packets (at most ``max_packets``), one write() each: (how many
        were handled before EAGAIN, [(index, -errno) of refused ones])."""
        n = len(packets)
        self._lens[0:n] = [len(p) for p in packets]
        done = lib.aiou_write_batch(fd, b"".join(packets), self._lens, n, self._errs, self._nerr)
        if not self._nerr[0]:
            return done, []
        return done, [(i, self._errs[i]) for i in range(done) if self._errs[i]]

    @property
    def max_packets(self) -> int:
        return self._max


def _closed_write(fd: int, data: Any, n: int, writer: int) -> int:
    return -errno.EBADF


def _closed_sendto(fd: int, data: Any, n: int, addr: Any, addrlen: int, writer: int) -> int:
    return -errno.EBADF


def probe_opcodes() -> tuple[int, set[int]]:
    """(last opcode the kernel knows, set of supported opcode numbers)."""
    supported = ffi.new("unsigned char[]", 256)
    last = ffi.new("unsigned *")
    res = lib.aiou_probe_opcodes(supported, 256, last)
    if res < 0:
        raise UnsupportedError(-res, "the io_uring probe interface is unavailable")
    return last[0], {i for i in range(256) if supported[i]}

