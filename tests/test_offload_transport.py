"""TUN offloads through the public API: open_tun/create_tun_connection with
offload on, off and refused, on the real kernel (both backends and loops) and
on the fakes users test with."""
from __future__ import annotations

import asyncio
import errno
import logging

import pytest

import aiouring
from aiouring import offload as offload_fns
from aiouring.testing import fake_tun, fake_tun_connection
from packets import udp, udp_payload
from support.harness import RecordingProtocol
from support.inet import Flow, checksums_valid, parse
from support.netns import network_namespace, sysctl
from support.traffic import is_own
from support.wait import wait_for_condition
from aiouring import Backend
from typing import Iterator


async def test_open_tun_uses_offloads_and_the_application_sees_ordinary_packets(forwarding: None, backend: Backend) -> None:
    tun = await aiouring.open_tun(addresses=["10.9.0.1/24"], backend=backend, txqueuelen=4096)
    assert {"tso4", "tso6", "coalesce-tcp"} <= tun.get_extra_info("offload")
    assert tun.device.vnet_hdr
    packets = [udp("10.9.0.2", "10.9.0.3", 1000, 2000, b"%05d" % i + b"z" * 195, ident=i) for i in range(1000)]
    await tun.write_batch(packets)
    got: list[bytes] = []
    while len(got) < len(packets):
        got += [p for p in await asyncio.wait_for(tun.read_batch(256), 5) if is_own(p)]
    assert [udp_payload(p) for p in got] == [udp_payload(p) for p in packets]
    assert all(checksums_valid(p) for p in got)
    sink_writes = tun.transport._sink.writes  # white box: the merging happened
    assert sink_writes < len(packets) // 8, sink_writes
    await tun.aclose()


async def test_offload_off_and_the_environment_kill_switch(forwarding: None, backend: Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    off = await aiouring.open_tun(addresses=["10.9.0.1/24"], backend=backend, offload=False)
    assert off.get_extra_info("offload") == frozenset() and not off.device.vnet_hdr
    await off.aclose()
    monkeypatch.setenv(offload_fns.DISABLE_ENV, "tun")
    with caplog.at_level(logging.INFO, logger="aiouring"):
        killed = await aiouring.open_tun(addresses=["10.9.1.1/24"], backend=backend)
    assert killed.get_extra_info("offload") == frozenset() and not killed.device.vnet_hdr
    assert any("AIOURING_DISABLE_OFFLOADS" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="AIOURING_DISABLE_OFFLOADS"):
        await aiouring.open_tun(offload=True, backend=backend)
    # and without offloads, traffic is as before
    packets = [udp("10.9.1.2", "10.9.1.3", 1, 2, b"plain %d" % i) for i in range(50)]
    await killed.write_batch(packets)
    await killed.aclose()


async def test_offload_is_refused_where_it_cannot_work(netns: str) -> None:
    with pytest.raises(ValueError, match="TUN mode"):
        await aiouring.open_tun(mode="tap", offload=True)
    with pytest.raises(ValueError, match="offload"):
        await aiouring.open_tun(offload="yes")  # type: ignore[arg-type]
    tap = await aiouring.open_tun(mode="tap")  # "auto": TAP goes without, silently enough
    assert tap.get_extra_info("offload") == frozenset()
    await tap.aclose()


async def test_protocol_code_sees_split_packets_and_its_writes_are_merged_on_the_fakes() -> None:
    """What a user's test suite does: no root, a fake TUN speaking super-packets."""
    transport, protocol, peer = await fake_tun_connection(RecordingProtocol, offload=True)
    flow = Flow(src="10.0.0.2", dst="10.0.0.1", sport=5000, dport=80)
    segments = [flow.tcp(100 + 1000 * i, 1, bytes([65 + i]) * 1000, ident=0x1234 + i) for i in range(10)]
    (merged,) = offload_fns.gro_coalesce(segments, tcp=True)
    peer.send_super(merged)  # one read of the fake TUN
    packets = await protocol.wait_packets(10)
    assert [parse(p).payload for p in packets] == [parse(s).payload for s in segments]
    assert all(checksums_valid(p) for p in packets)
    back = Flow(src="10.0.0.1", dst="10.0.0.2", sport=80, dport=5000)
    replies = [back.tcp(7 + 500 * i, 100, b"r" * 500, ident=0x1234 + i) for i in range(20)]
    transport.writelines(replies)
    await wait_for_condition(lambda: len(peer.written) == 20)
    assert peer.written == replies  # what the merged writes stand for (IDs counting up, as the kernel's TSO)
    assert len(peer.writes) == 1  # one super-packet for the 20 segments
    header = offload_fns.VirtioNetHeader.parse(peer.writes[0])
    assert header.gso_type == offload_fns.VIRTIO_NET_HDR_GSO_TCPV4 and header.gso_size == 500
    transport.close()
    await transport.wait_closed()


async def test_a_kernel_that_refuses_merged_writes_gets_them_one_by_one(caplog: pytest.LogCaptureFixture) -> None:
    """Some vendor kernels take IFF_VNET_HDR, then refuse merged writes with
    EINVAL: the transport stops merging, logs once, and loses nothing."""
    transport, protocol, peer = await fake_tun_connection(RecordingProtocol, offload=True)
    peer.refuse_merged_writes()
    back = Flow(src="10.0.0.1", dst="10.0.0.2", sport=80, dport=5000)
    replies = [back.tcp(7 + 500 * i, 100, b"r" * 500) for i in range(20)]
    with caplog.at_level(logging.WARNING, logger="aiouring"):
        transport.writelines(replies)
        await wait_for_condition(lambda: len(peer.written) == 20)
    assert sorted(peer.written) == sorted(replies)  # every packet, once
    assert protocol.errors == []
    assert "coalesce-tcp" not in transport.get_extra_info("offload")
    assert sum("TUN write coalescing is off" in r.getMessage() for r in caplog.records) == 1
    transport.writelines(replies[:5])
    await wait_for_condition(lambda: len(peer.written) == 25)
    assert peer.written[20:] == replies[:5]  # one by one now, in order
    transport.close()
    await transport.wait_closed()


def _hdr(**fields: int) -> bytes:
    base = dict(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0)
    base.update(fields)
    return offload_fns.VirtioNetHeader(**base).pack()


SEGS = [Flow(src="10.9.0.2", dst="10.9.0.3", sport=1, dport=2).tcp(1 + 100 * i, 1, b"s" * 100) for i in range(2)]
(MERGED,) = offload_fns.gro_coalesce(SEGS, tcp=True)
TCP_SEGMENT = MERGED[10:]
WRITES = {
    "merged, as the library makes it": MERGED,
    "plain packet, zero header": bytes(10) + SEGS[0],
    "gso_size 0 with a GSO type": _hdr(flags=1, gso_type=1, hdr_len=40, gso_size=0, csum_start=20, csum_offset=16) + TCP_SEGMENT,
    "TCP with csum_offset 6": _hdr(flags=1, gso_type=1, hdr_len=40, gso_size=100, csum_start=20, csum_offset=6) + TCP_SEGMENT,
    "UDP_L4 without NEEDS_CSUM": _hdr(flags=0, gso_type=5, hdr_len=28, gso_size=100, csum_start=20, csum_offset=6) + TCP_SEGMENT,
    "unknown GSO type": _hdr(flags=1, gso_type=7, hdr_len=40, gso_size=100, csum_start=20, csum_offset=16) + TCP_SEGMENT,
}


@pytest.mark.parametrize("what", list(WRITES))
async def test_the_fake_kernel_refuses_what_the_real_one_refuses(what: str, forwarding: None) -> None:
    """One raw write with a virtio header, to a real vnet TUN and to the fake:
    the same answer (taken, or EINVAL)."""
    from support.vnet import VnetTun, offload_all

    from aiouring.testing import FakeRing, fake_device

    real = VnetTun("judge0", offload=offload_all())
    await aiouring.TunDevice(-1, real.name).set_up(True)  # a link that is down answers EIO to everything
    answers: list[bool | int | None] = []
    try:
        async with aiouring.Ring() as ring:
            try:
                answers.append(await ring.write(real.fd, WRITES[what]) > 0)
            except OSError as exc:
                answers.append(exc.errno)
        ring = FakeRing()
        device, _ = fake_device(ring, offload=True)
        try:
            answers.append(await ring.write(device.fileno(), WRITES[what]) > 0)
        except OSError as exc:
            answers.append(exc.errno)
        device.close()
        await ring.aclose()
    finally:
        real.close()
    assert answers[0] in (True, errno.EINVAL), answers
    assert answers[1] == answers[0], f"real kernel: {answers[0]}, fake: {answers[1]}"


async def test_fake_tun_with_offload_reads_and_writes_through_the_awaitable_api() -> None:
    pair = await fake_tun(offload=True)
    flow = Flow(src="10.0.0.2", dst="10.0.0.1", sport=1, dport=2)
    datagrams = [flow.udp(b"%03d" % i * 100, ident=0x1234 + i) for i in range(8)]
    (merged,) = offload_fns.gro_coalesce(datagrams, udp=True)
    pair.peer.send_super(merged)
    assert await asyncio.wait_for(pair.tun.read_batch(64), 5) == datagrams
    await pair.tun.aclose()
