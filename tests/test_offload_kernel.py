"""The kernel agrees with gso_split and gro_coalesce.

Each test gets a network namespace (IPv6 on, forwarding on) and a TUN opened
here with IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4|TSO6|USO4|USO6).  The
remote end of every connection is faked by hand through the TUN; the local
end is a real socket.  Waits have deadlines; nothing sleeps for a fixed time.
"""
from __future__ import annotations

import asyncio
import errno
import random
import socket
import struct

import pytest

from aiouring.offload import (
    TUN_F_USO4,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4,
    VirtioNetHeader,
    gro_coalesce,
    gso_split,
)
from support.inet import ACK, FIN, PSH, SYN, TCP, UDP, Flow, checksums_valid, parse, pseudo_sum, syn_options, tcp_option
from support.netns import network_namespace, sysctl
from support.vnet import VnetTun, csum_errors, offload_all, vnet_header_size
from typing import Iterator

ZERO_HDR = bytes(10)
UDP_SEGMENT = 103
MTU = 1420
ADDR = {
    4: ("10.9.0.1", "10.9.0.2"),
    6: ("fd00:9::1", "fd00:9::2"),
}
PLAIN = {4: ("10.8.0.1", "10.8.0.2"), 6: ("fd00:8::1", "fd00:8::2")}

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ns() -> Iterator[str]:
    """A namespace with IPv6 on (a TUN then emits its own RS/MLD packets,
    which the readers skip) and forwarding on for the plain-TUN checks."""
    with network_namespace(ipv6=True, forwarding=True) as name:
        sysctl("net/ipv6/conf/all/forwarding", "1")
        yield name


@pytest.fixture
def tun(ns: str) -> Iterator[VnetTun]:
    t = VnetTun("aiouv0", offload=offload_all())
    t.configure(["10.9.0.1/24", "fd00:9::1/64"], mtu=MTU)
    yield t
    t.close()


@pytest.fixture
def plain_tun(ns: str) -> Iterator[VnetTun]:
    """A second TUN without vnet header or offloads: what the kernel forwards
    to it, it must segment and checksum in software first."""
    t = VnetTun("aiouplain0", vnet=False)
    t.configure(["10.8.0.1/24", "fd00:8::1/64"], mtu=MTU)
    yield t
    t.close()


def family(v: int) -> socket.AddressFamily:
    return socket.AF_INET if v == 4 else socket.AF_INET6


def is_l4(data: bytes, proto: int, *, vnet: bool = True, sport: int | None = None, dport: int | None = None,
          flags: int | None = None) -> bool:
    pkt = data[10:] if vnet else data
    if len(pkt) < 20 or pkt[0] >> 4 not in (4, 6):
        return False
    p = parse(pkt)
    return (p.proto == proto and (sport is None or p.sport == sport) and (dport is None or p.dport == dport)
            and (flags is None or p.flags & flags == flags))


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


# -- (a) the kernel's TSO super-packets split into the byte stream ---------------

# a destination-options header (8 bytes: one PadN option) the kernel puts in
# every packet of the connection: csum_start is then 48, not 40
DSTOPTS_HDR = bytes([0, 0, 1, 4, 0, 0, 0, 0])


@pytest.mark.parametrize("v,ext", [(4, False), (6, False), (6, True)], ids=["ipv4", "ipv6", "ipv6-dstopts"])
async def test_tcp_super_packets_from_a_local_sender_split_into_its_stream(tun: VnetTun, v: int, ext: bool) -> None:
    local, remote = ADDR[v]
    loop = asyncio.get_running_loop()
    sock = socket.socket(family(v), socket.SOCK_STREAM)
    sock.setblocking(False)
    if ext:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, DSTOPTS_HDR)
    try:
        connect = asyncio.ensure_future(loop.sock_connect(sock, (remote, 5201)))
        syn_raw = await tun.read_until(lambda d: is_l4(d, TCP, dport=5201, flags=SYN))
        h = VirtioNetHeader.parse(syn_raw)
        # the SYN carries a partial checksum, not a GSO type: split must complete it
        assert (h.flags, h.gso_type, h.csum_offset) == (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 16)
        assert not checksums_valid(syn_raw[10:])
        [syn] = gso_split(syn_raw)
        assert checksums_valid(syn)
        s = parse(syn)
        peer = Flow(src=remote, dst=local, sport=5201, dport=s.sport)
        iss = 0x70000000
        tun.write(ZERO_HDR + peer.tcp(iss, s.seq + 1, flags=SYN | ACK, options=syn_options(1380, 7), window=65535))
        await asyncio.wait_for(connect, 5)

        data = payload(3 << 20, v)
        start = s.seq + 1
        stream = bytearray()
        pending: dict[int, bytes] = {}
        fin_at = None
        reads = gso_reads = max_segments = 0
        seen_types: set[tuple[int, int]] = set()
        headers: set[VirtioNetHeader] = set()

        async def send() -> None:
            await loop.sock_sendall(sock, data)
            sock.shutdown(socket.SHUT_WR)

        sender = asyncio.ensure_future(send())
        async with asyncio.timeout(30):
            while fin_at is None or len(stream) < fin_at:
                raw = await tun.read(10)
                if not is_l4(raw, TCP, sport=s.sport, dport=5201):
                    continue
                h = VirtioNetHeader.parse(raw)
                segs = gso_split(raw)
                reads += 1
                if h.gso_type != VIRTIO_NET_HDR_GSO_NONE:
                    gso_reads += 1
                    seen_types.add((h.gso_type, h.gso_size))
                    headers.add(h._replace(gso_size=0))
                max_segments = max(max_segments, len(segs))
                for i, seg in enumerate(segs):
                    assert checksums_valid(seg)
                    q = parse(seg)
                    if i + 1 < len(segs):
                        assert not q.flags & (FIN | PSH), "FIN/PSH before the last segment"
                    off = (q.seq - start) & 0xFFFFFFFF
                    if q.payload:
                        pending[off] = q.payload
                    if q.flags & FIN:
                        fin_at = off + len(q.payload)
                while True:  # reassemble what is contiguous
                    chunk = pending.pop(len(stream), None)
                    if chunk is None:
                        break
                    stream += chunk
                for off in [o for o in pending if o + len(pending[o]) <= len(stream)]:
                    del pending[off]  # retransmissions of what we have
                ack = start + len(stream) + (1 if fin_at is not None and len(stream) >= fin_at else 0)
                tun.write(ZERO_HDR + peer.tcp(iss + 1, ack, flags=ACK, window=0xFFFF))
        await sender
        assert bytes(stream) == data
        want_type = VIRTIO_NET_HDR_GSO_TCPV4 if v == 4 else VIRTIO_NET_HDR_GSO_TCPV6
        assert gso_reads > 0 and max_segments > 1, "the kernel never handed over a super-packet"
        assert {t for t, _ in seen_types} == {want_type}
        if ext:
            assert {h.csum_start for h in headers} == {48}
        print(f"\nIPv{v}{' dstopts' if ext else ''} TCP: {reads} reads, {gso_reads} GSO, max {max_segments} "
              f"segments/read, (gso_type, gso_size) {sorted(seen_types)}; SYN {VirtioNetHeader.parse(syn_raw)}; "
              f"GSO headers (gso_size aside) {sorted(headers)}")
    finally:
        sock.close()


# -- (b) the kernel's USO super-packets split into the datagrams -------------------

@pytest.mark.parametrize("v", [4, 6], ids=["ipv4", "ipv6"])
async def test_udp_gso_super_packet_from_a_local_sender_splits_into_its_datagrams(tun: VnetTun, v: int) -> None:
    if not tun.offload & TUN_F_USO4:
        pytest.skip("this kernel refused TUNSETOFFLOAD USO4|USO6 (before 6.2)")
    local, remote = ADDR[v]
    gso = 1200
    data = payload(20 * gso + 345, 20 + v)
    with socket.socket(family(v), socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_UDP, UDP_SEGMENT, gso)
        sock.bind((local, 7002))
        sock.sendto(data, (remote, 7001))
        raw = await tun.read_until(lambda d: is_l4(d, UDP, dport=7001))
    h = VirtioNetHeader.parse(raw)
    assert (h.flags, h.gso_type, h.gso_size, h.csum_offset) == (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP_L4,
                                                                 gso, 6)
    segs = gso_split(raw)
    assert len(segs) == 21
    assert all(checksums_valid(s) for s in segs)
    assert [parse(s).payload for s in segs] == [data[i : i + gso] for i in range(0, len(data), gso)]


# -- (c) coalesced writes reach real sockets intact ----------------------------------

@pytest.mark.parametrize("v", [4, 6], ids=["ipv4", "ipv6"])
async def test_coalesced_udp_write_reaches_a_local_socket_byte_identical(tun: VnetTun, v: int) -> None:
    if not tun.offload & TUN_F_USO4:
        pytest.skip("this kernel refused TUNSETOFFLOAD USO4|USO6 (before 6.2)")
    local, remote = ADDR[v]
    loop = asyncio.get_running_loop()
    peer = Flow(src=remote, dst=local, sport=7001, dport=7000)
    datagrams = [peer.udp(payload(1200, i), ident=i) for i in range(40)] + [peer.udp(payload(300, 99), ident=40)]
    out = gro_coalesce(datagrams, udp=True)
    assert len(out) == 1 and VirtioNetHeader.parse(out[0]).gso_type == VIRTIO_NET_HDR_GSO_UDP_L4
    before = csum_errors()
    with socket.socket(family(v), socket.SOCK_DGRAM) as rx:
        rx.bind((local, 7000))
        rx.setblocking(False)
        assert tun.write(out[0]) == len(out[0])
        async with asyncio.timeout(5):
            got = [await loop.sock_recv(rx, 65535) for _ in datagrams]
    assert got == [parse(d).payload for d in datagrams]
    assert csum_errors() == before


@pytest.mark.parametrize("v", [4, 6], ids=["ipv4", "ipv6"])
async def test_coalesced_tcp_writes_reach_a_local_socket_as_its_stream(tun: VnetTun, v: int) -> None:
    local, remote = ADDR[v]
    loop = asyncio.get_running_loop()
    mss = MTU - (40 if v == 4 else 60)
    data = payload(2 << 20, 40 + v)
    srv = socket.socket(family(v), socket.SOCK_STREAM)
    srv.bind((local, 5300))
    srv.listen()
    srv.setblocking(False)
    conn = None
    try:
        accept = asyncio.ensure_future(loop.sock_accept(srv))
        peer = Flow(src=remote, dst=local, sport=40000, dport=5300)
        isn = 0xFFFFF000  # the sequence space wraps during the transfer
        tun.write(ZERO_HDR + peer.tcp(isn, 0, flags=SYN, options=syn_options(mss, 7), window=65535))
        synack_raw = await tun.read_until(lambda d: is_l4(d, TCP, sport=5300, flags=SYN | ACK))
        [synack] = gso_split(synack_raw)
        assert checksums_valid(synack)
        sa = parse(synack)
        wscale = (tcp_option(synack, 3) or b"\0")[0]
        their_seq = sa.seq + 1
        window = struct.unpack_from("!H", synack, sa.l3 + 14)[0]  # not scaled in a SYN-ACK
        tun.write(ZERO_HDR + peer.tcp(isn + 1, their_seq, flags=ACK, window=65535))
        conn, _ = await asyncio.wait_for(accept, 5)
        conn.setblocking(False)

        received = bytearray()

        async def receive() -> None:
            while len(received) < len(data):
                chunk = await loop.sock_recv(conn, 1 << 20)
                assert chunk, "the connection ended early"
                received.extend(chunk)

        receiver = asyncio.ensure_future(receive())
        before = csum_errors()
        sent = acked = merged_writes = 0
        async with asyncio.timeout(30):
            while acked < len(data):
                batch: list[bytes] = []
                while sent < len(data) and len(batch) < 45:
                    size = min(mss, len(data) - sent)
                    if sent + size > acked + window:
                        break
                    batch.append(peer.tcp(isn + 1 + sent, their_seq, data[sent : sent + size], ident=sent // mss))
                    sent += size
                for out in gro_coalesce(batch):
                    merged_writes += VirtioNetHeader.parse(out).gso_type != 0
                    assert tun.write(out) == len(out)
                # then wait for the window to move; go back to the first
                # unacknowledged byte after three duplicate ACKs or a quiet
                # second (a receiver short of memory drops segments)
                dups = 0
                while True:
                    try:
                        raw = await tun.read_until(lambda d: is_l4(d, TCP, sport=5300, dport=40000, flags=ACK), 1.0)
                    except TimeoutError:
                        sent = acked
                        break
                    [a] = gso_split(raw)
                    assert checksums_valid(a)
                    q = parse(a)
                    got = (q.ack - isn - 1) & 0xFFFFFFFF
                    dups = dups + 1 if got == acked and got < sent else 0
                    acked = max(acked, got)
                    window = struct.unpack_from("!H", a, q.l3 + 14)[0] << wscale
                    if dups >= 3:
                        sent = acked
                        break
                    if acked == sent or sent < acked + window - mss:
                        break
            await receiver
        assert bytes(received) == data
        assert merged_writes > 0
        assert csum_errors() == before
    finally:
        if conn is not None:
            conn.close()
        srv.close()


async def test_a_bad_checksum_is_counted_so_the_counters_mean_something(tun: VnetTun) -> None:
    """The control for the csum-error assertions above: a datagram with a
    bad checksum, written plainly, is dropped and counted.  UDP verifies
    lazily, when the socket reads, so the read of a good datagram written
    after it is what drops and counts it."""
    local, remote = ADDR[4]
    loop = asyncio.get_running_loop()
    peer = Flow(src=remote, dst=local, sport=7001, dport=7000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind((local, 7000))
        rx.setblocking(False)
        before = csum_errors()
        tun.write(ZERO_HDR + peer.udp(b"x" * 100, csum="bad"))
        tun.write(ZERO_HDR + peer.udp(b"y" * 100))
        assert await asyncio.wait_for(loop.sock_recv(rx, 2048), 5) == b"y" * 100
    after = csum_errors()
    assert after["Udp.InCsumErrors"] == before["Udp.InCsumErrors"] + 1
    assert after["Tcp.InCsumErrors"] == before["Tcp.InCsumErrors"]
    # TCP verifies on receive, socket or not
    tun.write(ZERO_HDR + Flow(src=remote, dst=local, sport=40000, dport=5300).tcp(1, 1, b"z" * 100, csum="bad"))
    async with asyncio.timeout(5):
        while csum_errors()["Tcp.InCsumErrors"] == before["Tcp.InCsumErrors"]:
            await asyncio.sleep(0.01)
    assert csum_errors()["Tcp.InCsumErrors"] == before["Tcp.InCsumErrors"] + 1


@pytest.mark.parametrize("v", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("proto", [TCP, UDP], ids=["tcp", "udp"])
async def test_kernel_segments_a_coalesced_write_into_valid_packets(tun: VnetTun, plain_tun: VnetTun, v: int, proto: int) -> None:
    """Forwarded to a TUN without offloads, a coalesced super-packet is cut
    and checksummed by the kernel's software GSO from the seed in its L4
    checksum field, so this checks the seed convention itself: the folded
    pseudo-header sum over the whole L4 length.  A seed for one segment's
    length gives bad checksums, which shows the check can fail."""
    if proto == UDP and not tun.offload & TUN_F_USO4:
        pytest.skip("this kernel refused TUNSETOFFLOAD USO4|USO6 (before 6.2)")
    plain = plain_tun
    if True:
        peer = Flow(src=ADDR[v][1], dst=PLAIN[v][1], sport=1111, dport=2222)
        if proto == TCP:
            packets = [peer.tcp(5000 + 1000 * i, 9, payload(1000, i), ident=i) for i in range(12)]
        else:
            packets = [peer.udp(payload(1000, i), ident=i) for i in range(12)]
        [out] = gro_coalesce(packets, udp=True)
        h = VirtioNetHeader.parse(out)
        assert h.gso_type != 0
        at = 10 + h.csum_start + h.csum_offset
        first = parse(packets[0])
        one_segment = out[:at] + struct.pack("!H", pseudo_sum(first.src, first.dst, proto, h.hdr_len - h.csum_start + 1000)) + out[at + 2:]

        for variant, data, want_valid in (("whole", out, True), ("one segment", one_segment, False)):
            tun.write(data)
            got: list[bytes] = []
            async with asyncio.timeout(5):
                while len(got) < len(packets):
                    pkt = await plain.read_until(lambda d: is_l4(d, proto, vnet=False, dport=2222))
                    got.append(pkt)
            assert [checksums_valid(g) for g in got] == [want_valid] * len(packets), variant
            assert [parse(g).payload for g in got] == [parse(p).payload for p in packets]


# -- (d) what the kernel refuses ------------------------------------------------------

def _refused() -> dict[str, bytes]:
    f = Flow(src=ADDR[4][1], dst=ADDR[4][0], sport=1, dport=9)
    [tcp] = gro_coalesce([f.tcp(1000 * i, 1, payload(1000, i), ident=i) for i in range(2)])
    [udp] = gro_coalesce([f.udp(payload(1000, i)) for i in range(2)], udp=True)
    t, u = VirtioNetHeader.parse(tcp), VirtioNetHeader.parse(udp)
    return {
        "gso_size 0 with a GSO type": t._replace(gso_size=0).pack() + tcp[10:],
        "TCP with csum_offset 6": t._replace(csum_offset=6).pack() + tcp[10:],
        "UDP_L4 without NEEDS_CSUM": u._replace(flags=0).pack() + udp[10:],
        "UDP_L4 with csum_offset 16": u._replace(csum_offset=16).pack() + udp[10:],
        "TCPV6 on an IPv4 packet": t._replace(gso_type=VIRTIO_NET_HDR_GSO_TCPV6).pack() + tcp[10:],
        "csum_start beyond the packet": t._replace(csum_start=3000).pack() + tcp[10:],
    }


@pytest.mark.parametrize("name", sorted(_refused()))
def test_kernel_refuses_what_split_refuses(tun: VnetTun, name: str) -> None:
    data = _refused()[name]
    with pytest.raises(OSError) as refused:
        tun.write(data)
    assert refused.value.errno == errno.EINVAL
    with pytest.raises(ValueError):
        gso_split(data)


def test_kernel_accepts_the_coalesced_super_packets_unmodified(tun: VnetTun) -> None:
    assert vnet_header_size(tun.fd) == 10
    f = Flow(src=ADDR[4][1], dst=ADDR[4][0], sport=1, dport=9)
    [tcp] = gro_coalesce([f.tcp(1000 * i, 1, payload(1000, i), ident=i) for i in range(2)])
    assert tun.write(tcp) == len(tcp)
    if tun.offload & TUN_F_USO4:
        [udp] = gro_coalesce([f.udp(payload(1000, i)) for i in range(2)], udp=True)
        assert tun.write(udp) == len(udp)
