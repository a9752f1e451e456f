"""Traffic through a real TUN for a while, with random cancellations: nothing lost, nothing leaked.

The long soak is opt-in:  sh scripts/test.sh -m soak  (AIOURING_SOAK_SECONDS, default 600, per
backend and loop).  A short version (5 s per backend and loop, about 20 s) runs in the default suite.
"""
from __future__ import annotations

import asyncio
import os
import random
import resource
import socket
import struct
import time

import pytest

import aiouring
from packets import udp, udp_payload
from support.cancel import read_or_cancel
from support.harness import SO_RCVBUFFORCE
from support.netns import open_fds
from support.traffic import is_own
from aiouring import Backend
from typing import Callable
from typing import Any

LOCAL, REMOTE = "10.13.0.1", "10.13.0.2"


async def soak(seconds: float, backend: Backend) -> dict[str, Any]:
    ring = aiouring.get_ring(backend)  # held for the whole soak: the loop's ring is not part of the count
    fds_start = len(open_fds())
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tun = await aiouring.open_tun(addresses=[f"{LOCAL}/24"], backend=backend)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    receiver.bind((LOCAL, 7000))
    receiver.setblocking(False)
    rng = random.Random(1234)
    sent = received = echoed = echo_seen = cancelled = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        burst = rng.randint(1, 200)  # below the TUN's queue length: the kernel drops nothing
        for _ in range(burst):
            sender.sendto(struct.pack("!Q", sent), (REMOTE, 9))
            sent += 1
        while received < sent:
            packet = await read_or_cancel(tun, rng)
            if packet is None:
                cancelled += 1
                continue
            if not is_own(packet):
                continue  # the kernel's own IPv6 packets
            payload = udp_payload(packet)
            assert payload is not None
            (seq,) = struct.unpack("!Q", payload)
            assert seq == received, f"expected packet {received}, got {seq}"
            received += 1
            await tun.write(udp(REMOTE, LOCAL, 9, 7000, payload))
            echoed += 1
        while echo_seen < echoed:
            try:
                (seq,) = struct.unpack("!Q", receiver.recv(64))
                assert seq == echo_seen
                echo_seen += 1
            except BlockingIOError:
                await asyncio.sleep(0.0005)
    await tun.aclose()
    sender.close()
    receiver.close()
    return {
        "seconds": seconds, "backend": backend, "packets_in": received, "packets_out": echo_seen,
        "lost": (sent - received) + (echoed - echo_seen), "reads_cancelled": cancelled,
        "fds_start": fds_start, "fds_end": len(open_fds()),
        "peak_rss_kib_start": rss_start, "peak_rss_kib_end": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "ring_in_flight_end": ring.in_flight,
    }


def check(report: dict[str, Any], record_property: Callable[[str, object], None]) -> None:
    print(f"\nsoak: {report}")
    for key, value in report.items():
        record_property(key, value)
    assert report["lost"] == 0
    assert report["packets_in"] > 0 and report["packets_out"] == report["packets_in"]
    assert report["reads_cancelled"] > 0
    assert report["fds_end"] == report["fds_start"]


async def test_short_soak(backend: Backend, netns: str, record_property: Callable[[str, object], None]) -> None:
    check(await soak(5.0, backend), record_property)


@pytest.mark.soak
@pytest.mark.timeout(0)
async def test_soak(backend: Backend, netns: str, record_property: Callable[[str, object], None]) -> None:
    seconds = float(os.environ.get("AIOURING_SOAK_SECONDS", "600"))
    report = await soak(seconds, backend)
    check(report, record_property)
    grown = report["peak_rss_kib_end"] - report["peak_rss_kib_start"]
    assert grown < 16 * 1024, f"peak RSS grew by {grown} KiB"
