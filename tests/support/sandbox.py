"""Take privileges away from a test subprocess: io_uring refused by seccomp, capabilities dropped.

Usage: python -m support.sandbox LOOP  (runs the snippet on stdin with io_uring refused).
"""
from __future__ import annotations

import ctypes
import errno
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
NR_IO_URING_SETUP = 425  # the same number on x86_64 and aarch64
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def refuse_io_uring() -> None:
    program = [
        (BPF_LD_W_ABS, 0, 0, 0),  # A = seccomp_data.nr
        (BPF_JEQ_K, 0, 1, NR_IO_URING_SETUP),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    raw = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(raw)
    prog = SockFprog(len(program), ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


PR_CAPBSET_DROP = 24
CAP_LAST = 63
LINUX_CAPABILITY_VERSION_3 = 0x20080522


def drop_capabilities() -> None:
    """Leave this process (and what it execs, even as uid 0) with no capabilities."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(CAP_LAST + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last cap: fine
    header = struct.pack("Ii", LINUX_CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # two {effective, permitted, inheritable} sets, all empty
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def unprivileged_no_uring() -> None:
    """preexec_fn for subprocess: no io_uring, no capabilities."""
    refuse_io_uring()
    drop_capabilities()


if __name__ == "__main__":
    refuse_io_uring()
    source = sys.stdin.read()
    exec(compile(source, "<no_uring snippet>", "exec"), {"__name__": "__snippet__", "LOOP": sys.argv[1]})
