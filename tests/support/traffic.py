"""Telling a test's own packets from the kernel's.

With IPv6 on, as on real hosts, a TUN or TAP emits packets nobody asked for
from the moment it is up: router solicitations and MLD reports (IPv6), and on
TAP their Ethernet frames.  The tests send IPv4 (and ARP on TAP), so they read
past everything else and keep it for inspection.
"""
from __future__ import annotations

import asyncio

import aiouring

ETH_P_IPV6 = 0x86DD


def is_own(packet: bytes) -> bool:
    """An IPv4 packet: the tests' own traffic (the kernel's unsolicited packets are IPv6)."""
    return bool(packet) and packet[0] >> 4 == 4


def is_own_frame(frame: bytes) -> bool:
    """A TAP frame that is not IPv6 (ARP or IPv4)."""
    return len(frame) >= 14 and int.from_bytes(frame[12:14], "big") != ETH_P_IPV6


async def read_own(tun: aiouring.Tun, *, timeout: float = 5, frames: bool = False) -> bytes:
    """The next packet of the test's own traffic from ``tun.read()``, skipping
    the kernel's IPv6 packets (``frames``: TAP frames, skipping IPv6 frames)."""
    keep = is_own_frame if frames else is_own

    async def next_own() -> bytes:
        while True:
            packet = await tun.read()
            if keep(packet):
                return packet

    return await asyncio.wait_for(next_own(), timeout)
