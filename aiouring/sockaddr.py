"""Socket addresses between Python objects and raw ``struct sockaddr`` bytes.

``to_sockaddr`` accepts what ``socket.sendto`` accepts for the family, and
refuses the rest with the exception ``socket.sendto`` raises (``TypeError``
for the wrong shape or type, ``OverflowError`` for a port or flowinfo out of
range, ``socket.gaierror`` for a name that does not resolve); ``""`` means
the wildcard address and ``"<broadcast>"`` the broadcast one, as there.
``from_sockaddr`` gives what ``socket.recvfrom`` gives.  Literal addresses
are cached per family (bounded); names are resolved at each call, as
``socket.sendto`` does.
"""
from __future__ import annotations

import operator
import os
import socket
import struct
from typing import Any

__all__ = ["from_sockaddr", "to_sockaddr"]

_FAMILY = struct.Struct("=H")
_IN6_TAIL = struct.Struct("=I")
_CACHE_LIMIT = 4096
_to_cache: dict[tuple[int, Any], bytes] = {}
_from_cache: dict[bytes, Any] = {}
_UNIX_PATH_MAX = 108


def to_sockaddr(addr: Any, family: int) -> bytes:
    """Raw sockaddr bytes for ``addr`` in address family ``family``."""
    try:
        raw = _to_cache.get((family, addr))
    except TypeError:  # unhashable: a list, say; refused below
        raw = None
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
    if literal:
        if len(_to_cache) >= _CACHE_LIMIT:
            _to_cache.clear()
        _to_cache[(family, addr)] = raw
    return raw


def _port(port: Any) -> int:
    port = operator.index(port)
    if not 0 <= port <= 0xFFFF:
        raise OverflowError("sendto(): port must be 0-65535.")
    return port


def _host(host: Any) -> str:
    if isinstance(host, str):
        return host
    if isinstance(host, (bytes, bytearray)):
        return bytes(host).decode("idna")
    raise TypeError(f"str, bytes or bytearray expected, not {type(host).__name__}")


def _inet(addr: Any) -> tuple[bytes, bool]:
    if not isinstance(addr, tuple):
        raise TypeError(f"sendto(): AF_INET address must be tuple, not {type(addr).__name__}")
    if len(addr) != 2:
        raise TypeError("AF_INET address must be a pair (host, port)")
    host, port = _host(addr[0]), _port(addr[1])
    literal = True
    if host == "":
        packed = bytes(4)
    elif host == "<broadcast>":
        packed = b"\xff\xff\xff\xff"
    else:
        try:
            packed = socket.inet_pton(socket.AF_INET, host)
        except OSError:
            sa, literal = _resolve(host, port, socket.AF_INET)
            packed = socket.inet_pton(socket.AF_INET, str(sa[0]))
    return _FAMILY.pack(socket.AF_INET) + struct.pack("!H", port) + packed + bytes(8), literal


def _inet6(addr: Any) -> tuple[bytes, bool]:
    if not isinstance(addr, tuple):
        raise TypeError(f"sendto(): AF_INET6 address must be tuple, not {type(addr).__name__}")
    if not 2 <= len(addr) <= 4:
        raise TypeError("AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])")
    host, port = _host(addr[0]), _port(addr[1])
    flowinfo = operator.index(addr[2]) if len(addr) > 2 else 0
    if not 0 <= flowinfo <= 0xFFFFF:
        raise OverflowError("sendto(): flowinfo must be 0-1048575.")
    scope_id = operator.index(addr[3]) if len(addr) > 3 else 0
    if not 0 <= scope_id <= 0xFFFFFFFF:
        raise OverflowError("sendto(): scope_id must be 0-4294967295.")
    literal = True
    if host == "":
        packed = bytes(16)
    else:
        try:
            packed = socket.inet_pton(socket.AF_INET6, host)
        except OSError:  # a name, or a literal with a zone ("fe80::1%eth0")
            sa, literal = _resolve(host, port, socket.AF_INET6)
            packed = socket.inet_pton(socket.AF_INET6, str(sa[0]).split("%")[0])
            scope_id = scope_id or int(sa[3])
    head = _FAMILY.pack(socket.AF_INET6) + struct.pack("!HI", port, flowinfo)
    return head + packed + _IN6_TAIL.pack(scope_id), literal


def _resolve(host: str, port: int, family: int) -> tuple[Any, bool]:
    """The first address ``host`` resolves to, as ``socket.sendto`` would
    find it, and whether it was a numeric literal (then it may be cached)."""
    try:
        info = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)
        return info[0][4], True
    except socket.gaierror:
        info = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
        return info[0][4], False


def _unix(addr: Any) -> bytes:
    if isinstance(addr, str):
        path = os.fsencode(addr)
    elif isinstance(addr, (bytes, bytearray, memoryview)):
        path = bytes(addr)
    else:
        raise TypeError(f"a bytes-like object is required, not '{type(addr).__name__}'")
    if len(path) >= _UNIX_PATH_MAX and not (path[:1] == b"\0" and len(path) <= _UNIX_PATH_MAX):
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
