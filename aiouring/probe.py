"""probe(): what this kernel's io_uring can do here, found by asking it."""
from __future__ import annotations

import dataclasses
import functools
import platform

from ._native import OP_READ_MULTISHOT, NativeRing, probe_opcodes
from .errors import UnsupportedError

__all__ = ["ProbeResult", "probe"]

# Opcode numbers of the kernel ABI (include/uapi/linux/io_uring.h), by name.
_OPCODE_NAMES = [
    "NOP", "READV", "WRITEV", "FSYNC", "READ_FIXED", "WRITE_FIXED", "POLL_ADD", "POLL_REMOVE",
    "SYNC_FILE_RANGE", "SENDMSG", "RECVMSG", "TIMEOUT", "TIMEOUT_REMOVE", "ACCEPT", "ASYNC_CANCEL",
    "LINK_TIMEOUT", "CONNECT", "FALLOCATE", "OPENAT", "CLOSE", "FILES_UPDATE", "STATX", "READ",
    "WRITE", "FADVISE", "MADVISE", "SEND", "RECV", "OPENAT2", "EPOLL_CTL", "SPLICE",
    "PROVIDE_BUFFERS", "REMOVE_BUFFERS", "TEE", "SHUTDOWN", "RENAMEAT", "UNLINKAT", "MKDIRAT",
    "SYMLINKAT", "LINKAT", "MSG_RING", "FSETXATTR", "SETXATTR", "FGETXATTR", "GETXATTR", "SOCKET",
    "URING_CMD", "SEND_ZC", "SENDMSG_ZC", "READ_MULTISHOT", "WAITID", "FUTEX_WAIT", "FUTEX_WAKE",
    "FUTEX_WAITV", "FIXED_FD_INSTALL", "FTRUNCATE", "BIND", "LISTEN", "RECV_ZC", "EPOLL_WAIT",
    "READV_FIXED", "WRITEV_FIXED", "PIPE",
]


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What ``probe()`` found.

    ``io_uring`` is whether a ring can be set up here; if not, ``reason`` says
    why (the errno and its likely cause).  ``setup`` is the flag set ``Ring``
    would use, ``opcodes`` the operations the kernel reports as supported,
    ``multishot_read`` whether ``IORING_OP_READ_MULTISHOT`` exists (6.7+),
    ``buffer_rings`` whether a provided buffer ring could be registered, and
    ``read_mode`` how a TUN is read with the default backend.
    """

    kernel: str
    io_uring: bool
    reason: str | None
    setup: str | None
    opcodes: frozenset[str]
    last_opcode: int
    multishot_read: bool
    buffer_rings: bool
    read_mode: str
    io_uring_disabled_sysctl: str | None

    def __str__(self) -> str:
        if not self.io_uring:
            return (
                f"aiouring probe on Linux {self.kernel}: io_uring unavailable ({self.reason}); "
                f"TUN reads use the readiness (epoll) backend"
            )
        return (
            f"aiouring probe on Linux {self.kernel}: io_uring available (setup={self.setup}), "
            f"{len(self.opcodes)} opcodes up to {self.last_opcode}, "
            f"multishot read {'yes' if self.multishot_read else 'no'}, "
            f"buffer rings {'yes' if self.buffer_rings else 'no'}; TUN reads: {self.read_mode}"
        )


def _sysctl() -> str | None:
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return f.read().strip()
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def probe() -> ProbeResult:
    """Ask the kernel what io_uring supports here (cached; ``probe.cache_clear()``
    to ask again).  Never raises for an unavailable io_uring: it says so."""
    kernel = platform.release()
    sysctl = _sysctl()
    try:
        ring = NativeRing(8, 0, "auto")
    except UnsupportedError as exc:
        return ProbeResult(kernel, False, exc.reason, None, frozenset(), -1, False, False, "readiness", sysctl)
    try:
        setup = ring.setup
        try:
            last, ops = probe_opcodes()
        except UnsupportedError:
            last, ops = -1, set()
        names = frozenset(_OPCODE_NAMES[i] if i < len(_OPCODE_NAMES) else f"OP_{i}" for i in ops)
        try:
            ring.add_buffer_group(0, 2, 64)
            ring.remove_buffer_group(0)
            buffer_rings = True
        except OSError:
            buffer_rings = False
    finally:
        ring.close()
    multishot = OP_READ_MULTISHOT in ops
    mode = "multishot" if multishot and buffer_rings else "single"
    return ProbeResult(kernel, True, None, setup, names, last, multishot, buffer_rings, mode, sysctl)

