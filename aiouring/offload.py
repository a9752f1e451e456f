"""TUN offloads as pure functions: split TSO/USO super-packets, coalesce packets.

A TUN opened with ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` prefixes every packet
with a 10-byte ``struct virtio_net_hdr`` and may read and write TCP/UDP
"super-packets" of up to 64 KiB that stand for many wire-sized segments.
``gso_split`` turns one read into ordinary IP packets; ``gro_coalesce`` turns
outgoing IP packets into what such a TUN should be written.  Both run in C
(``aiouring/_native/offload.c``, the same code the packet paths call); these
wrappers are for tests, tools and advanced users.
"""
from __future__ import annotations

import struct
from typing import Literal, NamedTuple, Sequence, Union

from ._native import offload as _offload

__all__ = [
    "VNET_HDR_SIZE",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_GSO_NONE",
    "VIRTIO_NET_HDR_GSO_TCPV4",
    "VIRTIO_NET_HDR_GSO_UDP",
    "VIRTIO_NET_HDR_GSO_TCPV6",
    "VIRTIO_NET_HDR_GSO_UDP_L4",
    "VIRTIO_NET_HDR_GSO_ECN",
    "TUN_F_CSUM",
    "TUN_F_TSO4",
    "TUN_F_TSO6",
    "TUN_F_TSO_ECN",
    "TUN_F_UFO",
    "TUN_F_USO4",
    "TUN_F_USO6",
    "MAX_BATCH",
    "MAX_SEGMENTS",
    "DISABLE_ENV",
    "Offload",
    "VirtioNetHeader",
    "disabled",
    "gso_split",
    "gro_coalesce",
]

VNET_HDR_SIZE = 10

# struct virtio_net_hdr (include/uapi/linux/virtio_net.h)
VIRTIO_NET_HDR_F_NEEDS_CSUM = 0x01
VIRTIO_NET_HDR_F_DATA_VALID = 0x02
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80

# TUNSETOFFLOAD bits (include/uapi/linux/if_tun.h); the kernel enables USO
# only when USO4 and USO6 are given together.
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_UFO = 0x10
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

#: Packets one coalescing pass considers together (``gro_coalesce`` works in
#: chunks of this many).
MAX_BATCH: int = _offload.MAX_BATCH
#: Packets merged into one super-packet at most.
MAX_SEGMENTS: int = _offload.MAX_SEGMENTS

_HDR = struct.Struct("=BBHHHH")  # host byte order, as a TUN without TUNSETVNETLE/BE uses


class VirtioNetHeader(NamedTuple):
    """The 10-byte ``struct virtio_net_hdr`` in front of every vnet-header TUN packet."""

    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> "VirtioNetHeader":
        """The header at the start of ``data``; ``ValueError`` if ``data`` is
        shorter than 10 bytes."""
        if len(data) < VNET_HDR_SIZE:
            raise ValueError(f"a virtio_net_hdr is {VNET_HDR_SIZE} bytes; got {len(data)}")
        return cls(*_HDR.unpack_from(data))

    def pack(self) -> bytes:
        """The header's 10 bytes; ``struct.error`` if a field is out of range."""
        return _HDR.pack(*self)


def gso_split(super_packet: bytes | bytearray | memoryview) -> list[bytes]:
    """Split one vnet-header TUN read (10-byte header + IP packet) into IP packets.

    Returns the packets, each with valid IP and L4 checksums when the header
    asked for checksum work: a ``GSO_NONE`` packet is returned as is (its
    partial checksum completed if ``NEEDS_CSUM`` is set); a TCPV4/TCPV6 (ECN
    bit allowed) or UDP_L4 super-packet becomes one packet per ``gso_size``
    bytes of payload, with lengths, IPv4 IDs, TCP sequence numbers and flags
    (FIN/PSH on the last segment, CWR on the first) as the kernel's own
    segmentation would write them.  ``hdr_len`` is not trusted.

    Raises ``ValueError`` naming the inconsistency for anything malformed:
    too short, unknown or UFO gso_type, gso_type not matching the IP version,
    ``gso_size`` 0, ``csum_start``/``csum_offset`` not at the L4 checksum, an
    L4 header past the end, an IPv4 fragment, IPv6 extension headers that do
    not end at ``csum_start``.
    """
    return _offload.split(super_packet)


def gro_coalesce(packets: Sequence[bytes], *, tcp: bool = True, udp: bool = False) -> list[bytes]:
    """Turn outgoing IP packets into vnet-header TUN writes, merging what can be merged.

    Each returned item starts with its 10-byte ``virtio_net_hdr``.  A packet
    that was not merged gets an all-zero header and is otherwise unchanged.
    Merged packets (TCP when ``tcp``, UDP only when ``udp``, which needs a TUN
    that accepted USO4|USO6) are consecutive segments of one flow with valid
    checksums, same IP/TCP header fields and sizes (research/offloads.md §1.4
    lists the rules); they become one super-packet with ``NEEDS_CSUM`` and a
    GSO type.  Outputs come in the order of their first packet, and packets of
    one flow keep their order.  Packets are considered ``MAX_BATCH`` at a
    time; nothing is merged across chunks.  Never raises for packet content.
    """
    flags = (_offload.GRO_TCP if tcp else 0) | (_offload.GRO_UDP if udp else 0)
    return _offload.coalesce(packets, flags)


DISABLE_ENV = "AIOURING_DISABLE_OFFLOADS"
"""The environment variable that turns offloads off, for when a kernel
misbehaves with them: a comma-separated list of ``tun`` (TUN super-packets
both ways), ``gso`` (UDP segmentation on send), ``gro`` (UDP receive
coalescing), or ``all`` (also ``1``).  Read when an endpoint is opened."""

_KINDS = frozenset({"tun", "gso", "gro"})

Offload = Union[Literal["auto"], bool]
"""What the factories' ``offload``/``gso``/``gro`` arguments take: ``"auto"``
(on when the kernel takes it), ``True`` (on, or ``ValueError``), ``False``."""


def disabled() -> frozenset[str]:
    """The offloads ``AIOURING_DISABLE_OFFLOADS`` turns off (see ``DISABLE_ENV``)."""
    import os

    raw = os.environ.get(DISABLE_ENV, "")
    words = {w.strip().lower() for w in raw.split(",") if w.strip()}
    if words & {"all", "1", "yes", "true"}:
        return _KINDS
    return frozenset(words & _KINDS)
