"""The native io_uring: the only Python module that holds cffi pointers.

``NativeRing`` wraps one ``struct aiou_ring`` (an io_uring, its registered
eventfd and its provided-buffer rings).  It speaks in Python terms: ops are
prepared with an integer ``user_data`` and a Python object to keep alive, and
``reap`` returns completions as a flat list of ints plus an arena of packet
bytes.  ``aiouring.testing.FakeKernel`` implements the same methods.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import UnsupportedError, check

try:
    from ._uring import ffi, lib
except ImportError as exc:  # not built here, or liburing.so.2 missing: say what fixes it
    from ._unbuilt import explain

    raise ImportError(explain(exc), name="aiouring._native._uring") from exc
if TYPE_CHECKING:
    from ._uring import Ring as _CRing

__all__ = ["NativeRing", "SETUP_MODES", "SyscallBatch", "probe_opcodes", "ffi", "lib"]

F_BUFFER = lib.IORING_CQE_F_BUFFER
F_MORE = lib.IORING_CQE_F_MORE
OP_READ_MULTISHOT = lib.AIOU_OP_READ_MULTISHOT
GROUP_SHIFT = lib.AIOU_UD_ID_BITS
ID_MASK = (1 << GROUP_SHIFT) - 1
MAX_GROUPS = lib.AIOU_MAX_GROUPS
TAG_BATCH = lib.AIOU_TAG_BATCH
TAG_EVENT = lib.AIOU_TAG_EVENT
MAX_BATCH = lib.AIOU_MAX_BATCH
KIND_PACKET = lib.AIOU_KIND_PACKET
KIND_DATAGRAM = lib.AIOU_KIND_DATAGRAM
EMIT_VNET = lib.AIOU_EMIT_VNET
EMIT_GRO_TCP = lib.AIOU_EMIT_GRO_TCP
EMIT_GRO_UDP = lib.AIOU_EMIT_GRO_UDP
EMIT_GSO = lib.AIOU_EMIT_GSO
BR_RECVMSG = lib.AIOU_BR_RECVMSG
BR_VNET = lib.AIOU_BR_VNET
BR_GRO = lib.AIOU_BR_GRO
EV_GRO_REFUSED = lib.AIOU_EV_GRO_REFUSED
EV_GSO_REFUSED = lib.AIOU_EV_GSO_REFUSED
EV_GSO_TOO_BIG = lib.AIOU_EV_GSO_TOO_BIG
POLLOUT = 0x004

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

    def __init__(self, entries: int = 256, cq_entries: int = 0, setup: str = "auto") -> None:
        modes = AUTO_ORDER if setup == "auto" else (setup,)
        if setup != "auto" and setup not in SETUP_MODES:
            raise ValueError(f"setup must be 'auto' or one of {sorted(SETUP_MODES)}, not {setup!r}")
        out = ffi.new("struct aiou_ring **")
        res = -errno.EINVAL
        mode = modes[0]
        for mode in modes:
            res = lib.aiou_ring_open(out, entries, cq_entries, SETUP_MODES[mode])
            if res == 0:
                self.setup = mode
                break
            if res != -errno.EINVAL:
                break
        if res < 0:
            if res in (-errno.EMFILE, -errno.ENFILE):
                # Out of file descriptors is not "io_uring is unavailable".
                check(res, "open an io_uring and its eventfd")
            raise _setup_error(-res, mode)
        self._r: _CRing | None = out[0]
        self.eventfd: int = self._r.eventfd
        self.sq_entries: int = self._r.sq_entries
        self.cq_entries: int = self._r.cq_entries
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
        self._slot = ffi.new("uint32_t *")
        self._planned = ffi.new("unsigned *")
        self._members = ffi.new("uint32_t[]", MAX_BATCH)
        self._coalesced = ffi.new("int *")
        self._seg = ffi.new("uint32_t *")

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

    def prep_poll(self, fd: int, events: int, ud: int) -> None:
        check(lib.aiou_prep_poll(self._r, fd, events, ud), "prep poll")

    def prep_cancel(self, target: int, ud: int) -> None:
        check(lib.aiou_prep_cancel(self._r, target, ud), "prep cancel")

    def prep_cancel_all(self, ud: int) -> None:
        check(lib.aiou_prep_cancel_all(self._r, ud), "prep cancel all")

    def prep_read_multishot(self, fd: int, bgid: int, ud: int) -> None:
        check(lib.aiou_prep_read_multishot(self._r, fd, bgid, ud), "prep multishot read")

    def prep_recvmsg_multishot(self, fd: int, bgid: int, ud: int) -> None:
        check(lib.aiou_prep_recvmsg_multishot(self._r, fd, bgid, ud), "prep multishot recvmsg")

    # -- buffer rings ---------------------------------------------------

    def add_buffer_group(self, bgid: int, entries: int, bufsize: int, kind: int = 0) -> None:
        """Register a provided-buffer ring of ``entries`` buffers of ``bufsize``
        bytes.  ``kind`` (``BR_*``): ``BR_RECVMSG`` lays its buffers out for
        multishot recvmsg (each datagram then reaches Python as source
        address then payload), with ``BR_GRO`` split by their UDP_GRO segment
        size; ``BR_VNET`` splits each TUN read at its virtio header."""
        if bufsize > self._arena_size // 2:
            raise ValueError(f"buffer size {bufsize} is larger than the reap arena allows")
        check(lib.aiou_bufring_add(self._r, bgid, entries, bufsize, kind), "register buffer ring")

    def remove_buffer_group(self, bgid: int) -> None:
        check(lib.aiou_bufring_remove(self._r, bgid), "unregister buffer ring")

    def group_counts(self, bgid: int) -> tuple[int, int]:
        """(reads that carried data, packets they made) of a buffer group."""
        counts = ffi.new("unsigned long long[2]")
        check(lib.aiou_bufring_counts(self._r, bgid, counts, counts + 1), "buffer ring counts")
        return counts[0], counts[1]

    # -- write batches ----------------------------------------------------

    def emit(self, fd: int, kind: int, flags: int, gso_max: int, data: bytes, lens: Any, n: int, addrs: bytes, addrlens: Any) -> tuple[int, int, int]:
        """Queue a batch's writes, one SQE per output (see ``aiou_emit``):
        returns (outputs queued, outputs planned, batch slot); queued <
        planned only if the SQ could not be drained (``batch_members`` says
        whose packets were left out).  ``data`` and ``addrs`` must stay
        referenced until ``reap`` reports the slot done."""
        queued = lib.aiou_emit(
            self._r, fd, kind, flags, gso_max, data, ffi.from_buffer("uint32_t[]", lens), n,
            addrs, ffi.from_buffer("uint16_t[]", addrlens) if addrlens is not None else ffi.NULL,
            self._slot, self._planned,
        )
        if queued < 0:
            if queued == -errno.EBUSY:
                return 0, 0, -1
            check(queued, "queue a write batch")
        return queued, self._planned[0], self._slot[0]

    def batch_members(self, slot: int, index: int) -> tuple[list[int], bool, int]:
        """(input packet indices, coalesced?, GSO segment size) of output
        ``index`` of batch ``slot``."""
        n = check(lib.aiou_batch_members(self._r, slot, index, self._members, MAX_BATCH, self._coalesced, self._seg), "batch output")
        return list(self._members[0:n]), bool(self._coalesced[0]), self._seg[0]

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
          every CQE but packets (``arena_offset`` -1 when it carried no data;
          when it did, ``res`` is the packet's length field), failed writes
          of a batch, and batch-done events (``ud`` tagged ``TAG_EVENT``);
        * ``pk``: ``[ud, arena_offset, length] * m``, one per packet of a
          multishot read or recvmsg (for recvmsg ``length`` is
          ``address_length << 32 | payload_length``, the address first);

        and the arena the offsets point into."""
        n = check(
            lib.aiou_reap(self._r, self._out, self._max_batch, self._arena, self._arena_size, self._pk, self._max_packets, self._npk),
            "reap",
        )
        return self._out_view[: 5 * n].tolist(), self._pk_view[: 3 * self._npk[0]].tolist(), self._arena_buf

    @property
    def supports_multishot(self) -> bool:
        """Whether TUN reads can use a multishot read on a buffer ring here
        (``aiouring.probe()``'s finding, asked once)."""
        from ..probe import probe

        info = probe()
        return info.multishot_read and info.buffer_rings

    @property
    def live_batches(self) -> int:
        """Write batches the kernel has not finished."""
        return lib.aiou_live_batches(self._r)

    @property
    def batch_limit(self) -> int:
        return self._max_batch

    @property
    def counters(self) -> tuple[int, int]:
        """(SQEs submitted, CQEs reaped) over the ring's life (kept after close)."""
        r = self._r if self._r is not None else self._final
        return r.submitted, r.reaped

    @property
    def overflows(self) -> int:
        """Times a reap found the CQ overflowed (the kernel kept the CQEs; they were flushed)."""
        return (self._r if self._r is not None else self._final).overflows

    @property
    def split_errors(self) -> int:
        """Reads dropped because their virtio header or GRO control message
        made no sense (never seen from a sane kernel)."""
        return (self._r if self._r is not None else self._final).split_errors

    @property
    def submit_calls(self) -> int:
        """``io_uring_enter`` calls made to submit, over the ring's life."""
        return (self._r if self._r is not None else self._final).submit_calls

    def close(self) -> None:
        if self._r is not None:
            r = self._r
            self._final = _Final(r.submitted, r.reaped, r.submit_calls, r.overflows, r.split_errors)
            self._r = None
            lib.aiou_ring_close(r)

    def forget(self) -> None:
        """In a child after fork(): free this process's copy, leaving the
        ring (still the parent's) untouched."""
        if self._r is not None:
            r = self._r
            self._final = _Final(r.submitted, r.reaped, r.submit_calls, r.overflows, r.split_errors)
            self._r = None
            lib.aiou_ring_forget(r)


class _Final:
    """A closed ring's counters."""

    def __init__(self, submitted: int, reaped: int, submit_calls: int, overflows: int, split_errors: int) -> None:
        self.submitted = submitted
        self.reaped = reaped
        self.submit_calls = submit_calls
        self.overflows = overflows
        self.split_errors = split_errors


class SyscallBatch:
    """Batches of plain read()/recvmsg()/write()/sendmsg() syscalls, one cffi
    call per batch (the readiness backend's data path)."""

    def __init__(self, arena_size: int = 1 << 22, max_records: int = 4096) -> None:
        self._arena_size = arena_size
        self._arena = ffi.new("unsigned char[]", arena_size)
        self._arena_buf = ffi.buffer(self._arena)
        self._cap = max_records
        self._out = ffi.new("int64_t[]", 3 * max_records)
        self._out_view = memoryview(ffi.buffer(self._out)).cast("q")
        self._err = ffi.new("int *")
        self._dropped = ffi.new("unsigned *")
        self._reads = ffi.new("unsigned *")
        self._errs = ffi.new("int[]", MAX_BATCH)
        self._nerr = ffi.new("int *")
        self._events = ffi.new("unsigned *")
        self._seg = ffi.new("uint32_t *")
        self._writes = ffi.new("unsigned *")
        self.dropped = 0  # reads whose virtio header or GRO message made no sense

    @property
    def last_reads(self) -> int:
        """Syscalls that returned data in the last ``read``/``recv``."""
        return self._reads[0]

    def read(self, fd: int, bufsize: int, reads: int, kind: int = 0) -> tuple[list[bytes], int]:
        """Packets from at most ``reads`` read()s of non-blocking ``fd``
        (``kind`` ``BR_VNET``: each split at its virtio header) and the
        ``-errno`` that stopped the batch (0 for EAGAIN; -ENODATA at EOF)."""
        n = lib.aiou_read_batch(fd, self._arena, self._arena_size, bufsize, kind, self._out, self._cap, reads, self._err, self._dropped, self._reads)
        self.dropped += self._dropped[0]
        vals = self._out_view[: 2 * n].tolist()
        buf = self._arena_buf
        return [buf[vals[i] : vals[i] + vals[i + 1]] for i in range(0, 2 * n, 2)], self._err[0]

    def recv(self, fd: int, bufsize: int, reads: int, kind: int = 0) -> tuple[list[tuple[bytes, bytes]], int]:
        """Datagrams from at most ``reads`` recvmsg()s, as (raw source
        address, payload) (``kind`` ``BR_GRO``: split by their UDP_GRO
        segment size), and the ``-errno`` that stopped the batch (0 for
        EAGAIN, -EMSGSIZE for a datagram longer than ``bufsize``, which is
        consumed)."""
        n = lib.aiou_recv_batch(fd, self._arena, self._arena_size, bufsize, kind, self._out, self._cap, reads, self._err, self._dropped, self._reads)
        self.dropped += self._dropped[0]
        vals = self._out_view[: 3 * n].tolist()
        buf = self._arena_buf
        got = []
        for i in range(0, 3 * n, 3):
            off, alen = vals[i], vals[i + 1]
            got.append((buf[off : off + alen], buf[off + alen : off + alen + vals[i + 2]]))
        return got, self._err[0]

    def send(self, fd: int, kind: int, flags: int, gso_max: int, data: bytes, lens: Any, n: int, addrs: bytes, addrlens: Any) -> tuple[int, int, list[tuple[int, int]], int, int]:
        """Write ``n`` packets laid out as for ``NativeRing.emit``, one syscall
        per output: (how many were handled before EAGAIN, syscalls made,
        [(index, -errno) of refused ones], ``EV_*`` events, refused GSO
        segment size)."""
        done = lib.aiou_send_batch(
            fd, kind, flags, gso_max, data, ffi.from_buffer("uint32_t[]", lens), n,
            addrs, ffi.from_buffer("uint16_t[]", addrlens) if addrlens is not None else ffi.NULL,
            self._errs, self._nerr, self._events, self._seg, self._writes,
        )
        if done < 0:
            check(done, "write a batch")
        refused = [(i, self._errs[i]) for i in range(done) if self._errs[i]] if self._nerr[0] else []
        return done, self._writes[0], refused, self._events[0], self._seg[0]


def probe_opcodes() -> tuple[int, set[int]]:
    """(last opcode the kernel knows, set of supported opcode numbers)."""
    supported = ffi.new("unsigned char[]", 256)
    last = ffi.new("unsigned *")
    res = lib.aiou_probe_opcodes(supported, 256, last)
    if res < 0:
        raise UnsupportedError(-res, "the io_uring probe interface is unavailable")
    return last[0], {i for i in range(256) if supported[i]}

