"""Offloads in the data path, against the real kernel, on both backends and loops:
TUN super-packets coalesced on write and split on read inside the ring's
sources and sinks, UDP GSO sends and GRO receives, and the kill switches
that resend what the kernel refuses."""
from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest

import aiouring
from aiouring.sockaddr import to_sockaddr
from packets import udp, udp_payload
from support.inet import Flow, checksums_valid, parse
from support.netns import network_namespace, sysctl
from support.vnet import VnetTun, offload_all
from support.wait import wait_for_condition
from aiouring import Backend, DatagramSink, PacketSink, PacketSource, RingBase
from aiouring.packet_io import SinkBase
from typing import Any, Iterator

SO_NO_CHECK = 11  # not exported by the socket module
UDP_GRO = 104


@pytest.fixture
def bounce_tun() -> Iterator[VnetTun]:
    """A vnet TUN with every offload the kernel takes, in a namespace that
    forwards 10.9.0.2 -> 10.9.0.3 straight back out of it."""
    with network_namespace(forwarding=True):
        for scope in ("all", "default"):
            sysctl(f"net/ipv4/conf/{scope}/send_redirects", "0")
            sysctl(f"net/ipv4/conf/{scope}/rp_filter", "0")
        tun = VnetTun("offl0", offload=offload_all())
        tun.configure(["10.9.0.1/24"])
        yield tun
        tun.close()


def own(packets: list[bytes]) -> list[bytes]:
    return [p for p in packets if p[0] >> 4 == 4]


async def open_pair(ring: RingBase, tun: VnetTun, *, coalesce: bool = True) -> tuple[PacketSource, PacketSink, list[bytes], list[OSError], list[BaseException | None]]:
    got: list[bytes] = []
    errors: list[OSError] = []
    stopped: list[BaseException | None] = []
    source = ring.packet_source(tun.fd, 65535 + 50, got.extend, stopped.append, vnet=True)
    sink = ring.packet_sink(tun.fd, errors.append, lambda: None, vnet=True, coalesce_tcp=coalesce, coalesce_udp=coalesce and tun.uso)
    return source, sink, got, errors, stopped


async def close_pair(ring: RingBase, source: PacketSource, sink: PacketSink, stopped: list[BaseException | None]) -> None:
    source.cancel()
    sink.close()
    await wait_for_condition(lambda: stopped)
    await ring.aclose()


async def test_coalesced_udp_writes_come_back_split_whole_and_in_order(bounce_tun: VnetTun, backend: Backend) -> None:
    ring = aiouring.open_ring(backend)
    source, sink, got, errors, stopped = await open_pair(ring, bounce_tun)
    packets = [udp("10.9.0.2", "10.9.0.3", 1000, 2000, b"%06d" % i + bytes([i % 251]) * 194, ident=i) for i in range(2000)]
    for p in packets:
        sink.write(p)
    await wait_for_condition(lambda: len(own(got)) >= len(packets))
    back = own(got)
    assert [udp_payload(p) for p in back] == [udp_payload(p) for p in packets]
    assert all(checksums_valid(p) for p in back)
    assert [parse(p).ident for p in back] == list(range(2000))  # IDs as written: the split recounts them
    assert errors == []
    # it was offloaded both ways: far fewer writes and reads than packets
    assert sink.writes <= len(packets) // 16, sink.writes
    assert source.reads <= len(packets) // 16, source.reads
    await close_pair(ring, source, sink, stopped)


async def test_tcp_segments_of_a_flow_are_coalesced_and_split_back(bounce_tun: VnetTun, backend: Backend) -> None:
    """TCP segments (ACK, contiguous sequence) are merged into TSO super-packets;
    what the kernel forwards back splits into the same segments."""
    ring = aiouring.open_ring(backend)
    source, sink, got, errors, stopped = await open_pair(ring, bounce_tun)
    flow = Flow(src="10.9.0.2", dst="10.9.0.3", sport=40000, dport=80)
    segments = [flow.tcp(1000 + 1000 * i, 7, bytes([i]) * 1000, ident=i) for i in range(200)]
    for s in segments:
        sink.write(s)
    await wait_for_condition(lambda: len(own(got)) >= len(segments))
    back = own(got)
    assert [parse(p).payload for p in back] == [parse(s).payload for s in segments]
    assert [parse(p).seq for p in back] == [parse(s).seq for s in segments]
    assert all(checksums_valid(p) for p in back)
    assert sink.writes < len(segments) // 10 and source.reads < len(segments) // 10
    assert errors == []
    await close_pair(ring, source, sink, stopped)


async def test_without_coalescing_every_packet_is_its_own_write(bounce_tun: VnetTun, backend: Backend) -> None:
    ring = aiouring.open_ring(backend)
    source, sink, got, errors, stopped = await open_pair(ring, bounce_tun, coalesce=False)
    packets = [udp("10.9.0.2", "10.9.0.3", 1000, 2000, b"%04d" % i, ident=i) for i in range(300)]
    for p in packets:
        sink.write(p)
    await wait_for_condition(lambda: len(own(got)) >= len(packets))
    assert [udp_payload(p) for p in own(got)] == [udp_payload(p) for p in packets]
    assert sink.writes == len(packets) and sink.offloads == frozenset()
    await close_pair(ring, source, sink, stopped)


@pytest.fixture
def loopback() -> Iterator[None]:
    with network_namespace():
        yield


async def gso_pair(ring: RingBase, *, gro: bool = True) -> tuple[socket.socket, socket.socket, PacketSource, DatagramSink, list[tuple[bytes, Any]], list[OSError], list[BaseException | None]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    if gro:
        rx.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setblocking(False)
    got: list[tuple[bytes, Any]] = []
    errors: list[OSError] = []
    stopped: list[BaseException | None] = []
    source = ring.datagram_source(rx, 65535, got.extend, stopped.append, errors.append, gro=gro)
    sink = ring.datagram_sink(tx, errors.append, lambda: None, gso=True)
    return rx, tx, source, sink, got, errors, stopped


async def test_udp_gso_sends_and_gro_receives_hand_over_ordinary_datagrams(loopback: None, backend: Backend) -> None:
    ring = aiouring.open_ring(backend)
    rx, tx, source, sink, got, errors, stopped = await gso_pair(ring)
    dst = to_sockaddr(rx.getsockname(), socket.AF_INET)
    sizes = [1200] * 700 + [300] + [1200] * 5 + [1500] * 3 + [17]  # runs, a shorter tail, a longer one
    sent = [b"%06d" % i + bytes([i % 256]) * (n - 6) for i, n in enumerate(sizes)]
    for d in sent:
        sink.sendto(d, dst)
    await wait_for_condition(lambda: len(got) >= len(sent))
    assert [d for d, _ in got] == sent
    assert {a for _, a in got} == {("127.0.0.1", tx.getsockname()[1])}
    assert errors == []
    assert sink.writes <= len(sent) // 10 and source.reads <= len(sent) // 10
    source.cancel()
    sink.close()
    await wait_for_condition(lambda: stopped)
    await ring.aclose()
    rx.close()
    tx.close()


async def test_datagrams_to_different_addresses_are_never_merged(loopback: None, backend: Backend) -> None:
    ring = aiouring.open_ring(backend)
    rx, tx, source, sink, got, errors, stopped = await gso_pair(ring)
    rx2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx2.bind(("127.0.0.1", 0))
    for i in range(40):
        sink.sendto(b"a%02d" % i, to_sockaddr(rx.getsockname(), socket.AF_INET))
        sink.sendto(b"b%02d" % i, to_sockaddr(rx2.getsockname(), socket.AF_INET))
    await wait_for_condition(lambda: len(got) >= 40)
    assert [d for d, _ in got] == [b"a%02d" % i for i in range(40)]
    assert sorted(rx2.recv(100) for _ in range(40)) == [b"b%02d" % i for i in range(40)]
    assert sink.writes == 80
    source.cancel()
    sink.close()
    await wait_for_condition(lambda: stopped)
    await ring.aclose()
    for s in (rx, rx2, tx):
        s.close()


async def test_a_refused_gso_send_is_resent_plainly_and_gso_stays_off(loopback: None, backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    """SO_NO_CHECK makes the kernel refuse UDP_SEGMENT sends (EINVAL): the
    datagrams still arrive, once each, and the sink stops coalescing."""
    ring = aiouring.open_ring(backend)
    rx, tx, source, sink, got, errors, stopped = await gso_pair(ring, gro=False)
    tx.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    dst = to_sockaddr(rx.getsockname(), socket.AF_INET)
    with caplog.at_level(logging.WARNING, logger="aiouring"):
        for i in range(100):
            sink.sendto(b"%04d" % i * 100, dst)
        await wait_for_condition(lambda: len(got) >= 100)
    assert [d for d, _ in got] == [b"%04d" % i * 100 for i in range(100)]
    assert errors == []
    assert "gso" not in sink.offloads
    assert sum("UDP GSO is off" in r.getMessage() for r in caplog.records) == 1
    for i in range(10):
        sink.sendto(b"again %d" % i, dst)
    await wait_for_condition(lambda: len(got) >= 110)
    assert [d for d, _ in got[100:]] == [b"again %d" % i for i in range(10)]
    source.cancel()
    sink.close()
    await wait_for_condition(lambda: stopped)
    await ring.aclose()
    rx.close()
    tx.close()


@pytest.fixture
def small_mtu_route() -> Iterator[None]:
    """A namespace whose 10.77.0.0/24 goes out of a veth end of MTU 1280."""
    from pyroute2 import IPRoute

    with network_namespace():
        with IPRoute() as ipr:
            ipr.link("add", ifname="small0", kind="veth", peer={"ifname": "small1"})
            for name in ("small0", "small1"):
                index = ipr.link_lookup(ifname=name)[0]
                ipr.link("set", index=index, mtu=1280, state="up")
            ipr.addr("add", index=ipr.link_lookup(ifname="small0")[0], address="10.77.0.1", prefixlen=24)
        yield


async def test_gso_segments_too_big_for_the_route_are_resent_and_the_limit_learned(small_mtu_route: None, backend: Backend) -> None:
    """Segments larger than the route's MTU make EMSGSIZE: those datagrams go
    out one by one (fragmented as any datagram would be); smaller runs still
    use GSO."""
    ring = aiouring.open_ring(backend)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setblocking(False)
    errors: list[OSError] = []
    sink = ring.datagram_sink(tx, errors.append, lambda: None, gso=True)
    assert isinstance(sink, SinkBase)  # its gso_max and writes, which the protocol does not show
    dst = to_sockaddr(("10.77.0.2", 9), socket.AF_INET)  # out of the veth, to nobody
    for _ in range(20):
        sink.sendto(b"x" * 1400, dst)
    await wait_for_condition(lambda: sink.buffered == 0)
    assert errors == []
    assert sink.gso_max < 1400
    writes = sink.writes
    for _ in range(20):
        sink.sendto(b"y" * 1000, dst)
    await wait_for_condition(lambda: sink.buffered == 0)
    assert sink.writes - writes == 1  # 1000-byte segments fit: one GSO send
    sink.close()
    await ring.aclose()
    tx.close()
