"""The ``/dev/net/tun`` side of a device: opening it, its ioctls, and their errors."""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

from . import _netlink as nl

__all__ = [
    "TUN_PATH", "TUNSETIFF", "TUNSETPERSIST", "TUNSETOWNER", "TUNSETGROUP", "TUNSETOFFLOAD", "TUNGETIFF",
    "TUNGETVNETHDRSZ", "IFF_TUN", "IFF_TAP", "IFF_MULTI_QUEUE", "IFF_PERSIST", "IFF_NO_PI", "IFF_VNET_HDR",
    "IFREQ", "open_tun_path", "ioctl", "setiff_error", "packet_info", "exists", "read_mtu",
]

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
TUNSETOFFLOAD = 0x400454D0
TUNGETIFF = 0x800454D2
TUNGETVNETHDRSZ = 0x800454D7
SIOCGIFMTU = 0x8921
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_PERSIST = 0x0800
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFREQ = "16sH22x"  # struct ifreq: name, flags, padding to 40 bytes


def open_tun_path() -> int:
    try:
        return os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT,
            f"{TUN_PATH} does not exist: load the tun kernel module (modprobe tun), "
            "or pass the device into the container (--device /dev/net/tun)",
            TUN_PATH,
        ) from None
    except PermissionError:
        raise PermissionError(
            errno.EACCES, f"cannot open {TUN_PATH}: run as root or give this user access to it", TUN_PATH
        ) from None


def ioctl(fd: int, request: int, value: int, what: str) -> None:
    if value >= 1 << 31:
        value -= 1 << 32  # fcntl passes a C int; the kernel reads the same 32 bits as an unsigned id
    try:
        fcntl.ioctl(fd, request, value)
    except OSError as exc:
        code = exc.errno or errno.EIO
        message = f"{what} failed: {os.strerror(code)}"
        if code == errno.EPERM:
            message += "; the caller needs CAP_NET_ADMIN or to own the device"
        raise OSError(code, message) from None


def packet_info(name: str, flags: int) -> bool:
    """Whether the device adds ``tun_pi``.  ``TUNGETIFF`` cannot say: the
    kernel ORs ``IFF_NOFILTER`` (no socket filter attached) into its answer,
    and that is the same bit as ``IFF_NO_PI``; netlink's ``IFLA_TUN_PI`` can.
    If netlink cannot find the device here, the bit is taken at face value."""
    try:
        sock = nl.RtSocket()
        try:
            info = sock.link(name).tun
        finally:
            sock.close()
    except OSError:
        info = None
    if info is not None and "pi" in info:
        return bool(info["pi"])
    return not flags & IFF_NO_PI


def exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


def read_mtu(name: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s.fileno(), SIOCGIFMTU, struct.pack("16si20x", name.encode(), 0))
    mtu: int = struct.unpack("16si20x", ifr)[1]
    return mtu


def setiff_error(exc: OSError, name: str | None, mode: str, existed: bool) -> OSError:
    code = exc.errno or errno.EIO
    if code == errno.EPERM:
        if existed:
            return PermissionError(code, f"attaching to {name} needs CAP_NET_ADMIN, or to be its owner or group (TUNSETOWNER/TUNSETGROUP)")
        return PermissionError(code, f"creating a {mode.upper()} interface needs CAP_NET_ADMIN (run as root)")
    if existed and code in (errno.EINVAL, errno.EBUSY, errno.EEXIST):
        return FileExistsError(
            code, f"interface {name!r} already exists and is not a free {mode.upper()} device with these flags "
                  f"(mode, multi_queue must match) ({os.strerror(code)})"
        )
    return OSError(code, f"TUNSETIFF for {name or 'a new interface'!r} failed: {os.strerror(code)}")
