"""Socket addresses between Python tuples and raw ``struct sockaddr`` bytes (cached)."""
from __future__ import annotations

import socket
import struct
from typing import Any

__all__ = ["to_sockaddr", "from_sockaddr", "decode_records"]

_FAMILY = struct.Struct("=H")
_to_cache: dict[tuple, bytes] = {}
_from_cache: dict[bytes, tuple] = {}
_CACHE_LIMIT = 4096


def to_sockaddr(addr: tuple, family: int) -> bytes:
    """Raw sockaddr for an (host, port[, flowinfo, scope_id]) address; the host
    may be a name, resolved like ``socket.sendto`` does."""
    raw = _to_cache.get(addr)
    if raw is not None:
        return raw
    host, port = str(addr[0]), int(addr[1])
    if family == socket.AF_INET6:
        flowinfo = addr[2] if len(addr) > 2 else 0
        scope_id = addr[3] if len(addr) > 3 else 0
        packed = _pton(socket.AF_INET6, host, port)
        raw = _FAMILY.pack(socket.AF_INET6) + struct.pack("!HI", port, flowinfo) + packed + struct.pack("=I", scope_id)
    else:
        raw = _FAMILY.pack(socket.AF_INET) + struct.pack("!H", port) + _pton(socket.AF_INET, host, port) + bytes(8)
    if len(_to_cache) < _CACHE_LIMIT:
        _to_cache[addr] = raw
    return raw


def _pton(family: int, host: str, port: int) -> bytes:
    try:
        return socket.inet_pton(family, host)
    except OSError:
        info = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
        return socket.inet_pton(family, str(info[0][4][0]))


def from_sockaddr(raw: bytes) -> Any:
    """The Python address tuple for raw sockaddr bytes (None if empty)."""
    addr = _from_cache.get(raw)
    if addr is not None:
        return addr
    if not raw:
        return None
    (family,) = _FAMILY.unpack_from(raw)
    if family == socket.AF_INET6:
        port, flowinfo = struct.unpack_from("!HI", raw, 2)
        (scope_id,) = struct.unpack_from("=I", raw, 24)
        addr = (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope_id)
    else:
        (port,) = struct.unpack_from("!H", raw, 2)
        addr = (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    if len(_from_cache) < _CACHE_LIMIT:
        _from_cache[raw] = addr
    return addr


def decode_records(records: list[bytes]) -> list[tuple[bytes, Any]]:
    """Records from a multishot recvmsg (name length byte, sockaddr, payload)
    as (payload, address) pairs."""
    out = []
    for rec in records:
        n = rec[0]
        raw = rec[1 : 1 + n]
        addr = _from_cache.get(raw)
        if addr is None:
            addr = from_sockaddr(raw)
        out.append((rec[1 + n :], addr))
    return out
