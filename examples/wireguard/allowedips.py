"""Cryptokey routing (whitepaper §2): the table from IP prefixes to peers.

Longest-prefix match over IPv4 and IPv6.  An address is looked up by its raw
bytes (4 or 16, as they sit in a packet header); a cache keyed by those bytes
makes the per-packet cost one dict lookup.  Inserting a prefix that another
peer had moves it to the new peer, as ``wg set`` does.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Iterator

_CACHE_LIMIT = 1 << 16
_MISSING = object()


class AllowedIPs:
    def __init__(self) -> None:
        # per address length: {prefix length: {network as int: peer}}, lengths longest first
        self._tables: dict[int, dict[int, dict[int, Any]]] = {4: {}, 16: {}}
        self._lengths: dict[int, list[int]] = {4: [], 16: []}
        self.cache: dict[bytes, Any] = {}

    def insert(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network, peer: Any) -> None:
        size = 4 if network.version == 4 else 16
        table = self._tables[size].setdefault(network.prefixlen, {})
        table[int(network.network_address)] = peer
        self._lengths[size] = sorted(self._tables[size], reverse=True)
        self.cache.clear()

    def remove_peer(self, peer: Any) -> None:
        for tables in self._tables.values():
            for table in tables.values():
                for key in [k for k, v in table.items() if v is peer]:
                    del table[key]
        self.cache.clear()

    def lookup(self, address: bytes) -> Any:
        """The peer owning the longest prefix that holds ``address`` (4 or 16
        raw bytes), or None."""
        peer = self.cache.get(address, _MISSING)
        if peer is not _MISSING:
            return peer
        size = len(address)
        bits = size * 8
        tables = self._tables.get(size)
        peer = None
        if tables is not None:
            value = int.from_bytes(address, "big")
            for length in self._lengths[size]:
                found = tables[length].get(value >> (bits - length) << (bits - length) if length else 0)
                if found is not None:
                    peer = found
                    break
        if len(self.cache) >= _CACHE_LIMIT:
            self.cache.clear()
        self.cache[address] = peer
        return peer

    def entries(self, peer: Any) -> Iterator[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        for size, tables in self._tables.items():
            cls = ipaddress.IPv4Network if size == 4 else ipaddress.IPv6Network
            for length, table in tables.items():
                for value, owner in table.items():
                    if owner is peer:
                        yield cls((value, length))
