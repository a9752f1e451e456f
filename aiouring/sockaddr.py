"""Socket addresses between Python objects and raw ``struct sockaddr`` bytes.

``to_sockaddr`` accepts what ``socket.sendto`` accepts for the family, and
refuses the rest with the exception ``socket.sendto`` raises: it follows
CPython's ``getsockaddrarg`` (``TypeError`` for the wrong shape or type, or a
host with a NUL or that IDNA cannot encode; ``OverflowError`` for a port or
flowinfo out of range; flowinfo and scope id taken modulo 2**32 first, as the
``"I"`` format does) and ``setipaddr`` (``""`` is the wildcard address,
``"<broadcast>"`` the broadcast one and ``OSError`` outside AF_INET, numeric
hosts are parsed, anything else goes to ``getaddrinfo``, whose
``socket.gaierror`` is raised as is).  ``from_sockaddr`` gives what
``socket.recvfrom`` gives.

Caches: conversions of numeric addresses are kept per family (a name may
resolve differently in each) in a bounded table; names are resolved at each
call, as ``socket.sendto`` resolves them, so a changed resolution is seen.
"""
from __future__ import annotations

import operator
import os
import socket
import struct
from typing import Any, Union

from ._typing import Buffer

__all__ = ["Address", "HostPort", "from_sockaddr", "to_sockaddr"]

# A destination for sendto: (host, port), (host, port, flowinfo, scope_id)
# for AF_INET6, or an AF_UNIX path (str, or bytes-like for the abstract
# namespace); what socket.sendto takes.
Address = Union[tuple[Any, ...], str, Buffer]
# An endpoint's local or remote address before resolution: (host, port) as
# loop.getaddrinfo takes them (host None: the wildcard), or an AF_UNIX path.
HostPort = Union[tuple[Union[str, bytes, None], Union[int, str, bytes, None]], str]

_FAMILY = struct.Struct("=H")
_IN6_TAIL = struct.Struct("=I")
_CACHE_LIMIT = 4096
_to_cache: dict[tuple[int, Any], bytes] = {}
_from_cache: dict[bytes, Any] = {}
_UNIX_PATH_MAX = 108  # sizeof(sun_path)
_U32 = 0xFFFFFFFF


def to_sockaddr(addr: Any, family: int) -> bytes:
    """Raw sockaddr bytes for ``addr`` in address family ``family``."""
    key = _cache_key(addr, family)
    if key is not None:
        raw = _to_cache.get(key)
        if raw is not None:
            return raw
    if family == socket.AF_INET:
        raw, literal = _inet(addr)
    elif family == socket.AF_INET6:
        raw, literal = _inet6(addr)
    elif family == socket.AF_UNIX:
        raw, literal = _unix(addr), True
    else:
        raise OSError(f"address family {family} is not supported")
    if literal and key is not None:
        if len(_to_cache) >= _CACHE_LIMIT:
            _to_cache.clear()
        _to_cache[key] = raw
    return raw


def _cache_key(addr: Any, family: int) -> tuple[int, Any] | None:
    """The cache key for ``addr``, or None when it must not be cached.

    Only exact ``str``/``bytes``/``int`` parts are keys: ``5.0 == 5`` and
    hashes alike, but ``socket.sendto`` refuses a float port."""
    t = type(addr)
    if t is tuple:
        if not 2 <= len(addr) <= 4 or type(addr[0]) not in (str, bytes):
            return None
        for part in addr[1:]:
            if type(part) is not int:
                return None
        return (family, addr)
    if t is str or t is bytes:
        return (family, addr)
    return None


def _port(port: Any) -> int:
    """The port as parsed, before the host is resolved: int-like (no float)
    and within a C int, else the errors CPython's parser raises."""
    index = operator.index(port)
    if not -(1 << 31) <= index < (1 << 31):
        raise OverflowError("sendto(): port must be 0-65535.")
    return index


def _check_port(port: int) -> None:
    """The range check, after the host was resolved (an unknown name is
    reported first, as socket.sendto does)."""
    if not 0 <= port <= 0xFFFF:
        raise OverflowError("sendto(): port must be 0-65535.")


def _host(host: Any) -> bytes:
    """The host as C ``char *`` bytes, as CPython's ``idna_converter`` makes them."""
    if isinstance(host, (bytes, bytearray)):
        name = bytes(host)
    elif isinstance(host, str):
        if host.isascii():
            name = host.encode("ascii")
        else:
            try:
                name = host.encode("idna")
            except UnicodeError:
                raise TypeError("encoding of hostname failed") from None
    else:
        raise TypeError(f"str, bytes or bytearray expected, not {type(host).__name__}")
    if b"\0" in name:
        raise TypeError("host name must not contain null character")
    return name


def _inet(addr: Any) -> tuple[bytes, bool]:
    if not isinstance(addr, tuple):
        raise TypeError(f"sendto(): AF_INET address must be tuple, not {type(addr).__name__}")
    if len(addr) != 2:
        raise TypeError("AF_INET address must be a pair (host, port)")
    name, port = _host(addr[0]), _port(addr[1])
    packed, literal = _ip_address(name, socket.AF_INET)
    _check_port(port)
    return _FAMILY.pack(socket.AF_INET) + struct.pack("!H", port) + packed + bytes(8), literal


def _inet6(addr: Any) -> tuple[bytes, bool]:
    if not isinstance(addr, tuple):
        raise TypeError(f"sendto(): AF_INET6 address must be tuple, not {type(addr).__name__}")
    if not 2 <= len(addr) <= 4:
        raise TypeError("AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])")
    name, port = _host(addr[0]), _port(addr[1])
    # the "I" format: any int-like, taken modulo 2**32
    flowinfo = operator.index(addr[2]) & _U32 if len(addr) > 2 else 0
    scope_id = operator.index(addr[3]) & _U32 if len(addr) > 3 else 0
    packed, literal = _ip_address(name, socket.AF_INET6)
    _check_port(port)
    if flowinfo > 0xFFFFF:
        raise OverflowError("sendto(): flowinfo must be 0-1048575.")
    head = _FAMILY.pack(socket.AF_INET6) + struct.pack("!HI", port, flowinfo)
    return head + packed + _IN6_TAIL.pack(scope_id), literal


def _ip_address(name: bytes, family: int) -> tuple[bytes, bool]:
    """The packed address for host ``name``, as CPython's ``setipaddr``
    finds it, and whether it was numeric (then it may be cached)."""
    if not name:
        return bytes(4 if family == socket.AF_INET else 16), True
    if name in (b"<broadcast>", b"255.255.255.255"):
        if family != socket.AF_INET:
            raise OSError("address family mismatched")
        return b"\xff\xff\xff\xff", True
    text = name.decode("latin-1")
    if family == socket.AF_INET or b"%" not in name:
        try:
            return socket.inet_pton(family, text), True
        except OSError:
            pass
    try:
        info = socket.getaddrinfo(name, None, family, 0, 0, socket.AI_NUMERICHOST)
        literal = True
    except socket.gaierror:
        info = socket.getaddrinfo(name, None, family)
        literal = False
    return socket.inet_pton(family, str(info[0][4][0]).split("%")[0]), literal


def _unix(addr: Any) -> bytes:
    if isinstance(addr, str):
        path = os.fsencode(addr)
    else:
        try:
            path = memoryview(addr).tobytes()
        except TypeError:
            raise TypeError(f"a bytes-like object is required, not '{type(addr).__name__}'") from None
    if len(path) > _UNIX_PATH_MAX or (len(path) == _UNIX_PATH_MAX and path[:1] != b"\0"):
        raise OSError("AF_UNIX path too long")
    return _FAMILY.pack(socket.AF_UNIX) + path


def from_sockaddr(raw: bytes) -> Any:
    """The address ``socket.recvfrom`` would give for raw sockaddr bytes
    (``None`` for an empty one: an unnamed sender)."""
    addr = _from_cache.get(raw)
    if addr is not None:
        return addr
    if len(raw) < 2:
        return None
    (family,) = _FAMILY.unpack_from(raw)
    if family == socket.AF_INET:
        (port,) = struct.unpack_from("!H", raw, 2)
        addr = (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    elif family == socket.AF_INET6:
        port, flowinfo = struct.unpack_from("!HI", raw, 2)
        (scope_id,) = _IN6_TAIL.unpack_from(raw, 24)
        host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        if scope_id:  # a link-local peer: its zone, as getnameinfo writes it
            host = socket.getnameinfo((host, port, flowinfo, scope_id), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)[0]
        addr = (host, port, flowinfo, scope_id)
    elif family == socket.AF_UNIX:
        path = raw[2:]
        if path[:1] == b"\0":
            return bytes(path)  # the abstract namespace: bytes, as recvfrom gives
        if not path:
            return None
        addr = os.fsdecode(path.split(b"\0", 1)[0])
    else:
        return (family, bytes(raw[2:]))
    if len(_from_cache) >= _CACHE_LIMIT:
        _from_cache.clear()
    _from_cache[bytes(raw)] = addr
    return addr
