"""get_extra_info("stats") (issue 13, item 8): what a transport moved, what it
refused and dropped, and the kernel's counters for the device, on a real TUN
and on the fakes.  (UDP endpoints: tests/test_udp_offload.py.)"""
from __future__ import annotations

import asyncio

import pytest

import aiouring
from aiouring.testing import fake_tun_connection
from packets import udp, udp_payload
from support.harness import RecordingProtocol
from support.traffic import is_own
from support.wait import wait_for_condition
from aiouring import Backend


@pytest.mark.parametrize("offload", [True, False])
async def test_a_tun_counts_packets_bytes_reads_and_writes(forwarding: None, backend: Backend, offload: bool) -> None:
    tun = await aiouring.open_tun(addresses=["10.9.0.1/24"], backend=backend, offload=offload, txqueuelen=4096)
    packets = [udp("10.9.0.2", "10.9.0.3", 1000, 2000, b"%05d" % i + b"z" * 295, ident=i) for i in range(500)]
    await tun.write_batch(packets)
    got: list[bytes] = []
    others = 0
    while len(got) < len(packets):
        batch = await asyncio.wait_for(tun.read_batch(256), 5)
        got += [p for p in batch if is_own(p)]
        others += sum(not is_own(p) for p in batch)
    assert [udp_payload(p) for p in got] == [udp_payload(p) for p in packets]
    stats = tun.stats
    assert stats == tun.transport.get_extra_info("stats")
    assert (stats.packets_sent, stats.bytes_sent) == (500, sum(map(len, packets)))
    assert stats.packets_received == 500 + others
    assert stats.bytes_received >= sum(map(len, got))
    assert (stats.send_errors, stats.receive_errors, stats.dropped) == (0, 0, 0)
    if offload:
        assert stats.writes < 500 // 8  # merged into super-packets
        assert stats.reads < stats.packets_received  # super-packets split
    else:
        assert stats.writes == 500 and stats.reads == stats.packets_received
    counters = await tun.device.kernel_counters()
    # the kernel counts its own side: what it was written (super-packets,
    # and with offloads the start-up probe of one merged write) and what it
    # handed over to be read
    assert counters.rx_packets == stats.writes + (1 if offload else 0)
    assert counters.tx_packets == stats.reads
    await tun.aclose()


async def test_refused_writes_and_what_abort_drops_are_counted(forwarding: None, backend: Backend) -> None:
    tun = await aiouring.open_tun(addresses=["10.9.0.1/24"], backend=backend, offload=False)
    refused = b"\x00" * 20  # IP version 0: the TUN driver answers EINVAL
    await tun.write(refused)
    await wait_for_condition(lambda: tun.stats.send_errors == 1)
    with pytest.raises(OSError) as info:
        await tun.drain()
    assert info.value.packet == refused  # type: ignore[attr-defined]  # the refused packet aiouring attaches to the OSError
    assert tun.stats.packets_sent == 0
    transport = tun.transport
    for i in range(10):  # queued until this iteration's flush, which abort() comes before
        transport.write(udp("10.9.0.2", "10.9.0.3", 1, 2, b"%d" % i))
    transport.abort()
    await transport.wait_closed()
    assert tun.stats.dropped == 10 and tun.stats.packets_sent == 0
    await tun.aclose()


async def test_the_fakes_count_as_the_real_thing() -> None:
    transport, protocol, peer = await fake_tun_connection(RecordingProtocol)
    packet = udp("10.0.0.2", "10.0.0.1", 1, 2, b"hello")
    peer.send(packet)
    await wait_for_condition(lambda: protocol.packets)
    transport.write(packet)
    assert await asyncio.wait_for(peer.receive(), 5) == packet
    stats = transport.get_extra_info("stats")
    assert (stats.packets_received, stats.bytes_received) == (1, len(packet))
    assert (stats.packets_sent, stats.bytes_sent) == (1, len(packet))
    transport.close()
    await transport.wait_closed()
