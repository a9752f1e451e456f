"""TunDevice: a TUN/TAP file descriptor and its network interface. No I/O, no rings.

Opening goes through ``/dev/net/tun`` and the ``TUNSETIFF`` ioctl; interface
set-up (MTU, addresses, link up) goes through netlink with pyroute2.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import ipaddress
import os
import socket
import struct
import threading
import warnings
from typing import Any, Callable, Iterable

from pyroute2 import IPRoute

__all__ = ["TunDevice", "validate_ifname", "IFNAMSIZ"]

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNGETIFF = 0x800454D2
SIOCGIFMTU = 0x8921
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFNAMSIZ = 16
_IFREQ = "16sH22x"  # struct ifreq: name, flags, padding to 40 bytes

MAX_MTU = 65535
PI_HEADER = 4  # struct tun_pi: flags + protocol
ETH_HEADER = 18  # Ethernet header with one VLAN tag

AddressLike = "str | ipaddress.IPv4Interface | ipaddress.IPv6Interface"


def validate_ifname(name: Any) -> str:
    """``name`` if the kernel would accept it as an interface name, else ``ValueError``/``TypeError``."""
    if not isinstance(name, str):
        raise TypeError(f"interface name must be a str, not {type(name).__name__}")
    raw = name.encode("utf-8", "surrogateescape")
    if not raw:
        raise ValueError("interface name must not be empty")
    if len(raw) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} is {len(raw)} bytes; the kernel allows at most {IFNAMSIZ - 1}")
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        raise ValueError(f"interface name {name!r} is invalid: no '/', ':', whitespace, '.' or '..'")
    return name


class TunDevice:
    """An open TUN or TAP device.

    Owns its fd (opened ``O_NONBLOCK | O_CLOEXEC``) and closes it in
    ``close()``; the kernel removes a non-persistent interface when its last
    fd is closed.  ``mode`` is ``"tun"`` (IP packets) or ``"tap"`` (Ethernet
    frames); ``packet_info`` means each packet carries the 4-byte ``tun_pi``
    header.
    """

    def __init__(self, fd: int, name: str, mode: str = "tun", packet_info: bool = False, mtu: int = 1500, vnet_hdr: bool = False) -> None:
        self._fd = fd
        self.name = name
        self.mode = mode
        self.packet_info = packet_info
        self.mtu = mtu
        self.vnet_hdr = vnet_hdr

    # -- opening --------------------------------------------------------------

    @classmethod
    def open(cls, name: str | None = None, *, mode: str = "tun", packet_info: bool = False, multi_queue: bool = False) -> "TunDevice":
        """Create (or attach to a persistent) TUN/TAP interface.

        Raises ``PermissionError`` without CAP_NET_ADMIN, ``FileNotFoundError``
        without ``/dev/net/tun``, ``FileExistsError`` when ``name`` is taken by
        an interface that cannot be attached, ``ValueError`` for a bad name or mode.
        """
        if mode not in ("tun", "tap"):
            raise ValueError(f"mode must be 'tun' or 'tap', not {mode!r}")
        if name is not None:
            validate_ifname(name)
        flags = IFF_TUN if mode == "tun" else IFF_TAP
        if not packet_info:
            flags |= IFF_NO_PI
        if multi_queue:
            flags |= IFF_MULTI_QUEUE
        try:
            fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
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
        try:
            existed = name is not None and "%" not in name and _exists(name)
            ifr = struct.pack(_IFREQ, (name or "").encode(), flags)
            try:
                ifr = fcntl.ioctl(fd, TUNSETIFF, ifr)
            except OSError as exc:
                raise _setiff_error(exc, name, mode, existed) from None
            got = struct.unpack(_IFREQ, ifr)[0].rstrip(b"\0").decode()
            return cls(fd, got, mode, packet_info, _read_mtu(got))
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def adopt(cls, fd_or_file: Any) -> "TunDevice":
        """Take ownership of a TUN/TAP fd that is already open (an ``int`` or an
        object with ``fileno()``, which is closed after its fd is duplicated).
        The fd is switched to non-blocking.  Raises ``ValueError`` if it is not
        an attached TUN/TAP fd."""
        if isinstance(fd_or_file, bool) or not (isinstance(fd_or_file, int) or hasattr(fd_or_file, "fileno")):
            raise TypeError(f"from_fd takes an int fd or a file object, not {type(fd_or_file).__name__}")
        if isinstance(fd_or_file, int):
            fd = fd_or_file
        else:
            fd = os.dup(fd_or_file.fileno())
        try:
            ifr = fcntl.ioctl(fd, TUNGETIFF, struct.pack(_IFREQ, b"", 0))
        except OSError as exc:
            if fd is not fd_or_file:
                os.close(fd)
            raise ValueError(f"fd {fd} is not a TUN/TAP device (TUNGETIFF: {os.strerror(exc.errno or 0)})") from None
        if fd is not fd_or_file:
            fd_or_file.close()
        raw, flags = struct.unpack(_IFREQ, ifr)
        name = raw.rstrip(b"\0").decode()
        os.set_blocking(fd, False)
        mode = "tap" if flags & IFF_TAP else "tun"
        return cls(fd, name, mode, not flags & IFF_NO_PI, _read_mtu(name))

    # -- interface set-up -----------------------------------------------------

    async def configure(self, *, mtu: int | None = None, addresses: Iterable[Any] = (), up: bool = True) -> None:
        """Set the MTU, add addresses (``"10.0.0.1/24"``, ``"fd00::1/64"`` or
        ``ipaddress`` interfaces) and bring the link up, through netlink.

        pyroute2's blocking API refuses to run in a thread with a running loop
        and its asyncio API does not run on uvloop (no AF_NETLINK endpoints),
        so the netlink calls run in a new thread: a new thread starts in its
        creator's network namespace, where a pooled executor thread may not.
        """
        parsed = [_parse_address(a) for a in addresses]
        if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535):
            raise ValueError(f"mtu must be an int from 68 to 65535, not {mtu!r}")
        await _in_new_thread(self._configure, mtu, parsed, up)
        if mtu is not None:
            self.mtu = mtu

    def _configure(self, mtu: int | None, parsed: list[Any], up: bool) -> None:
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=self.name)[0]
            if mtu is not None:
                ipr.link("set", index=index, mtu=mtu)
            for iface in parsed:
                ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            if up:
                ipr.link("set", index=index, state="up")

    # -- what the transport needs -----------------------------------------------

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError(f"TUN device {self.name} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    @property
    def header_size(self) -> int:
        """Bytes a packet carries beyond the MTU (tun_pi header, Ethernet header)."""
        return (PI_HEADER if self.packet_info else 0) + (ETH_HEADER if self.mode == "tap" else 0)

    @property
    def max_packet_size(self) -> int:
        """The largest packet ``write`` accepts: MTU plus headers."""
        return self.mtu + self.header_size

    @property
    def read_size(self) -> int:
        """Read buffer size: room for the largest packet the device can hold
        (MTU 65535), so a packet is never cut short, even after the MTU was
        raised behind our back."""
        return MAX_MTU + self.header_size

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"fd={self._fd}"
        return f"<TunDevice {self.name} {self.mode} {state} mtu={self.mtu}>"

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if self._fd >= 0:
            _warn(f"unclosed {self!r}", ResourceWarning, source=self)
            self.close()


def _exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


def _read_mtu(name: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s.fileno(), SIOCGIFMTU, struct.pack("16si20x", name.encode(), 0))
    return struct.unpack("16si20x", ifr)[1]


async def _in_new_thread(fn: Callable[..., Any], *args: Any) -> Any:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, False, exc)
        else:
            loop.call_soon_threadsafe(settle, True, result)

    thread = threading.Thread(target=run, name="aiouring-netlink", daemon=True)
    thread.start()
    try:
        return await asyncio.shield(fut)
    finally:
        thread.join()


def _setiff_error(exc: OSError, name: str | None, mode: str, existed: bool) -> OSError:
    code = exc.errno or errno.EIO
    if code == errno.EPERM:
        return PermissionError(code, f"creating a {mode.upper()} interface needs CAP_NET_ADMIN (run as root)")
    if existed and code in (errno.EINVAL, errno.EBUSY, errno.EEXIST):
        return FileExistsError(
            code, f"interface {name!r} already exists and is not a free {mode.upper()} device ({os.strerror(code)})"
        )
    return OSError(code, f"TUNSETIFF for {name or 'a new interface'!r} failed: {os.strerror(code)}")


def _parse_address(address: Any) -> "ipaddress.IPv4Interface | ipaddress.IPv6Interface":
    if isinstance(address, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return address
    if not isinstance(address, str):
        raise TypeError(f"address must be a str like '10.0.0.1/24' or an ipaddress interface, not {type(address).__name__}")
    try:
        return ipaddress.ip_interface(address)
    except ValueError as exc:
        raise ValueError(f"invalid interface address {address!r}: {exc}") from None
