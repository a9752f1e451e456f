"""gso_split and gro_coalesce as pure functions: round trips, the coalescing
rules, hand-built super-packets, refusals, and fuzzing.

Packets are built and checked by tests/support/inet.py, whose checksum is
written independently of the C code under test."""
from __future__ import annotations

import random
import struct
from typing import AbstractSet, Any, Callable

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from aiouring._native import offload as native
from aiouring.offload import (
    MAX_SEGMENTS,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4,
    VirtioNetHeader,
    gro_coalesce,
    gso_split,
)
from support.inet import (
    ACK, CWR, DSTOPTS, ECE, FIN, HOPOPTS, PSH, ROUTING, RST, SYN, TCP, UDP, URG,
    Flow, addr, checksums_valid, ext_header, ones_sum, parse, pseudo_sum, routing_header, vnet,
)

ZERO_HDR = bytes(10)
MAX_IP = 65535


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


# -- strategies -------------------------------------------------------------

v4_addr = st.builds(lambda a: "10.%d.%d.%d" % a, st.tuples(*[st.integers(0, 255)] * 3))
v6_addr = st.builds(lambda a: "fd00::%x:%x" % a, st.tuples(st.integers(0, 0xFFFF), st.integers(1, 0xFFFF)))
ports = st.integers(1, 65535)
tcp_options = st.integers(0, 10).flatmap(lambda k: st.binary(min_size=4 * k, max_size=4 * k))


@st.composite
def flows(draw: st.DrawFn, v6: bool | None = None) -> Flow:
    if v6 is None:
        v6 = draw(st.booleans())
    a = v6_addr if v6 else v4_addr
    return Flow(
        src=draw(a), dst=draw(a), sport=draw(ports), dport=draw(ports),
        ttl=draw(st.integers(1, 255)), tos=draw(st.integers(0, 255)),
        ident=draw(st.integers(0, 0xFFFF)), flow_label=draw(st.integers(0, 0xFFFFF)) if v6 else 0,
        df=draw(st.booleans()),
    )


def tcp_segments(flow: Flow, sizes: list[int], seq0: int, ack: int, *, options: bytes = b"", window: int = 502,
                 psh: AbstractSet[int] = frozenset(), seed: int = 0) -> list[bytes]:
    out, seq = [], seq0
    for i, size in enumerate(sizes):
        out.append(flow.tcp(seq, ack, payload(size, seed + i), flags=ACK | (PSH if i in psh else 0), options=options,
                            window=window, ident=(flow.ident + i) & 0xFFFF))
        seq += size
    return out


def udp_datagrams(flow: Flow, sizes: list[int], seed: int = 0) -> list[bytes]:
    return [flow.udp(payload(size, seed + i), ident=(flow.ident + i) & 0xFFFF) for i, size in enumerate(sizes)]


@st.composite
def segment_sizes(draw: st.DrawFn, max_n: int = 80) -> list[int]:
    gso = draw(st.integers(1, 1400))
    n = draw(st.integers(1, max_n))
    last = draw(st.integers(1, gso))
    return [gso] * (n - 1) + [last]


def expected_groups(packets: list[bytes], sizes: list[int], psh: AbstractSet[int] = frozenset()) -> list[list[int]]:
    """The grouping the rules imply for one in-order flow: a group ends after
    MAX_SEGMENTS packets, before 65535 bytes of IP packet would be exceeded,
    after a PSH or after a shorter segment."""
    groups: list[list[int]] = []
    total = 0
    for i, pkt in enumerate(packets):
        g = groups[-1] if groups else None
        if (g and len(g) < MAX_SEGMENTS and total + sizes[i] <= MAX_IP and g[-1] not in psh
                and sizes[g[-1]] == sizes[g[0]] and sizes[i] <= sizes[g[0]]):
            g.append(i)
            total += sizes[i]
        else:
            groups.append([i])
            total = len(pkt)
    return groups


def check_merged_header(out: bytes, members: list[bytes], proto: int) -> None:
    """The vnet header and IP/L4 header fields of a merged output, against
    an independent computation."""
    h = VirtioNetHeader.parse(out)
    first = parse(members[0])
    ip = out[10:]
    l3 = first.l3
    l4 = first.thl if proto == TCP else 8
    assert h.flags == VIRTIO_NET_HDR_F_NEEDS_CSUM
    want_type = VIRTIO_NET_HDR_GSO_UDP_L4 if proto == UDP else (
        VIRTIO_NET_HDR_GSO_TCPV6 if first.version == 6 else VIRTIO_NET_HDR_GSO_TCPV4)
    assert h.gso_type == want_type
    assert (h.hdr_len, h.csum_start, h.csum_offset) == (l3 + l4, l3, 16 if proto == TCP else 6)
    assert h.gso_size == len(members[0]) - l3 - l4
    assert len(ip) == l3 + l4 + sum(len(m) - l3 - l4 for m in members) <= MAX_IP
    if first.version == 4:
        assert struct.unpack_from("!H", ip, 2)[0] == len(ip)
        assert ones_sum(ip[:20]) == 0xFFFF
    else:
        assert struct.unpack_from("!H", ip, 4)[0] == len(ip) - 40
    if proto == UDP:
        assert struct.unpack_from("!H", ip, l3 + 4)[0] == len(ip) - l3
    seed = struct.unpack_from("!H", ip, l3 + h.csum_offset)[0]
    assert seed == pseudo_sum(first.src, first.dst, proto, len(ip) - l3)


# -- round trips --------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(flow=flows(), sizes=segment_sizes(), seq0=st.integers(0, 2**32 - 1), ack=st.integers(0, 2**32 - 1),
       options=tcp_options, psh=st.sets(st.integers(0, 79), max_size=3), seed=st.integers(0, 1000))
def test_split_of_coalesced_tcp_flow_is_the_flow(flow: Flow, sizes: list[int], seq0: int, ack: int, options: bytes, psh: set[int], seed: int) -> None:
    packets = tcp_segments(flow, sizes, seq0, ack, options=options, psh=psh, seed=seed)
    assert all(checksums_valid(p) for p in packets)
    out = gro_coalesce(packets)
    groups = expected_groups(packets, sizes, psh)
    assert [native.coalesce_plan(packets, native.GRO_TCP)[i][1] for i in range(len(groups))] == groups
    assert len(out) == len(groups)
    again = []
    for o, g in zip(out, groups):
        if len(g) == 1:
            assert o == ZERO_HDR + packets[g[0]]
        else:
            check_merged_header(o, [packets[i] for i in g], TCP)
            if any(i in psh for i in g):
                assert parse(o[10:]).flags & PSH
        segs = gso_split(o)
        assert all(checksums_valid(s) for s in segs)
        again += segs
    assert again == packets


@settings(max_examples=300, deadline=None)
@given(flow=flows(), sizes=segment_sizes(), seed=st.integers(0, 1000))
def test_split_of_coalesced_udp_flow_is_the_flow(flow: Flow, sizes: list[int], seed: int) -> None:
    packets = udp_datagrams(flow, sizes, seed)
    out = gro_coalesce(packets, udp=True)
    groups = expected_groups(packets, sizes)
    assert len(out) == len(groups)
    again = []
    for o, g in zip(out, groups):
        if len(g) > 1:
            check_merged_header(o, [packets[i] for i in g], UDP)
        segs = gso_split(o)
        assert all(checksums_valid(s) for s in segs)
        again += segs
    assert again == packets


def test_udp_is_merged_only_when_asked() -> None:
    packets = udp_datagrams(Flow(), [500] * 4)
    assert gro_coalesce(packets) == [ZERO_HDR + p for p in packets]
    assert len(gro_coalesce(packets, udp=True)) == 1


def test_tcp_merging_can_be_turned_off() -> None:
    packets = tcp_segments(Flow(), [500] * 4, 1, 1)
    assert gro_coalesce(packets, tcp=False) == [ZERO_HDR + p for p in packets]


def test_merged_packet_carries_the_pseudo_header_sum_and_a_trailing_psh() -> None:
    flow = Flow(src="fd00::1", dst="fd00::2")
    packets = tcp_segments(flow, [1000, 1000, 400], 7, 9, psh={2})
    [out] = gro_coalesce(packets)
    check_merged_header(out, packets, TCP)
    assert parse(out[10:]).flags == ACK | PSH
    assert gso_split(out) == packets


def test_plan_emit_and_iov_agree() -> None:
    f1, f2 = Flow(), Flow(src="fd00::1", dst="fd00::2", sport=5)
    packets = []
    for i in range(6):
        packets.append(f1.tcp(1000 * i, 1, payload(1000, i), ident=f1.ident + i))
        packets.append(f2.udp(payload(300, i), ident=i))
        packets.append(b"\x45not an ip packet")
    flags = native.GRO_TCP | native.GRO_UDP
    emitted = native.coalesce(packets, flags)
    pieces = native.coalesce_iov(packets, flags)
    assert [b"".join(p) for p in pieces] == emitted
    plan = native.coalesce_plan(packets, flags)
    assert [size for size, _ in plan] == [len(o) for o in emitted]
    assert [m for _, m in plan][:2] == [[0, 3, 6, 9, 12, 15], [1, 4, 7, 10, 13, 16]]
    assert len(pieces[0]) == 7 and len(pieces[0][0]) == 10 + 40  # header block, then six payloads


def test_more_packets_than_a_batch_are_coalesced_chunk_by_chunk() -> None:
    n = native.MAX_BATCH + 10
    packets = udp_datagrams(Flow(), [100] * n)
    out = gro_coalesce(packets, udp=True)
    assert sum(len(gso_split(o)) for o in out) == n
    with pytest.raises(ValueError):
        native.coalesce_plan(packets, native.GRO_UDP)


# -- what is not merged ----------------------------------------------------------

def _set(pkt: bytes, at: int, value: bytes) -> bytes:
    return pkt[:at] + value + pkt[at + len(value):]


def _mutations(v6: bool) -> dict[str, Callable[[Flow], list[bytes]]]:
    """name -> function(flow) returning two consecutive TCP segments that must not merge."""
    other = "fd00::99" if v6 else "10.99.0.1"

    def pair(f: Flow, **second: Any) -> list[bytes]:
        a = f.tcp(1000, 5, payload(500, 1), ident=f.ident)
        kw: dict[str, Any] = dict(seq=1500, ack=5, data=payload(500, 2), flags=ACK, options=b"", window=502)
        kw.update(second)
        b = f.tcp(kw["seq"], kw["ack"], kw["data"], flags=kw["flags"], options=kw["options"], window=kw["window"],
                  ident=f.ident + 1)
        return [a, b]

    def with_flow(f: Flow, **changes: Any) -> list[bytes]:
        a = f.tcp(1000, 5, payload(500, 1), ident=f.ident)
        g = Flow(**{**f.__dict__, **changes})
        return [a, g.tcp(1500, 5, payload(500, 2), ident=f.ident + 1)]

    m: dict[str, Callable[[Flow], list[bytes]]] = {
        "bad checksum on the second": lambda f: [f.tcp(1000, 5, payload(500, 1)), f.tcp(1500, 5, payload(500, 2), csum="bad")],
        "bad checksum on the first": lambda f: [f.tcp(1000, 5, payload(500, 1), csum="bad"), f.tcp(1500, 5, payload(500, 2))],
        "partial checksum": lambda f: [f.tcp(1000, 5, payload(500, 1), csum="partial"), f.tcp(1500, 5, payload(500, 2), csum="partial")],
        "different ack": lambda f: pair(f, ack=6),
        "PSH on the first": lambda f: [f.tcp(1000, 5, payload(500, 1), flags=ACK | PSH), f.tcp(1500, 5, payload(500, 2))],
        "sequence gap": lambda f: pair(f, seq=1501),
        "sequence overlap": lambda f: pair(f, seq=1499),
        "out of order (the later segment first)": lambda f: list(reversed(pair(f))),
        "different options": lambda f: [f.tcp(1000, 5, payload(500, 1), options=b"\x01\x01\x08\x0a" + bytes(8)),
                                        f.tcp(1500, 5, payload(500, 2), options=b"\x01\x01\x08\x0a" + bytes(7) + b"\1")],
        "different header length": lambda f: pair(f, options=b"\x01\x01\x01\x01"),
        "different window": lambda f: pair(f, window=503),
        "SYN": lambda f: pair(f, flags=ACK | SYN),
        "FIN": lambda f: pair(f, flags=ACK | FIN),
        "RST": lambda f: pair(f, flags=ACK | RST),
        "URG": lambda f: pair(f, flags=ACK | URG),
        "ECE": lambda f: pair(f, flags=ACK | ECE),
        "CWR": lambda f: pair(f, flags=ACK | CWR),
        "no ACK": lambda f: pair(f, flags=PSH),
        "pure ACK": lambda f: [f.tcp(1000, 5, payload(500, 1)), f.tcp(1500, 5, b"")],
        "larger second segment": lambda f: pair(f, data=payload(501, 2)),
        "TTL change": lambda f: with_flow(f, ttl=f.ttl - 1),
        "TOS change": lambda f: with_flow(f, tos=f.tos ^ 4),
        "other destination": lambda f: with_flow(f, dst=other),
        "other port": lambda f: with_flow(f, sport=f.sport + 1),
        "trailing bytes after the IP packet": lambda f: [f.tcp(1000, 5, payload(500, 1)), f.tcp(1500, 5, payload(500, 2)) + b"\0"],
    }
    if v6:
        m["flow label change"] = lambda f: with_flow(f, flow_label=f.flow_label ^ 1)
        m["extension headers"] = lambda f: [Flow(**{**f.__dict__, "ext": [(HOPOPTS, b"")]}).tcp(1000, 5, payload(500, 1)),
                                            Flow(**{**f.__dict__, "ext": [(HOPOPTS, b"")]}).tcp(1500, 5, payload(500, 2))]
    else:
        m["DF change"] = lambda f: with_flow(f, df=not f.df)
        m["bad IPv4 header checksum"] = lambda f: [pair(f)[0], _set(pair(f)[1], 10, bytes([pair(f)[1][10] ^ 1]))]
        m["IP options"] = lambda f: [Flow(**{**f.__dict__, "ip_options": b"\x01\x01\x01\x00"}).tcp(1000, 5, payload(500, 1)),
                                     Flow(**{**f.__dict__, "ip_options": b"\x01\x01\x01\x00"}).tcp(1500, 5, payload(500, 2))]
        m["more fragments"] = lambda f: [_frag(p, 0x2000) for p in pair(f)]
        m["fragment offset"] = lambda f: [_frag(p, 0x0001) for p in pair(f)]
    return m


def _frag(pkt: bytes, bits: int) -> bytes:
    """The packet with fragment bits set and its IPv4 header checksum fixed."""
    pkt = _set(pkt, 6, struct.pack("!H", struct.unpack_from("!H", pkt, 6)[0] | bits))
    pkt = _set(pkt, 10, b"\0\0")
    return _set(pkt, 10, struct.pack("!H", ~ones_sum(pkt[:20]) & 0xFFFF))


@pytest.mark.parametrize("v6,name", [(v6, name) for v6 in (False, True) for name in sorted(_mutations(v6))],
                         ids=lambda x: {False: "ipv4", True: "ipv6"}.get(x, x) if isinstance(x, bool) else x)
def test_non_coalescible_segments_come_back_unchanged(v6: bool, name: str) -> None:
    flow = Flow(src="fd00::1", dst="fd00::2") if v6 else Flow()
    packets = _mutations(v6)[name](flow)
    # the base pair does merge: the mutation alone is what stops it
    assert len(gro_coalesce(tcp_segments(flow, [500, 500], 1000, 5))) == 1
    assert gro_coalesce(packets, udp=True) == [ZERO_HDR + p for p in packets]


@pytest.mark.parametrize("name", ["bad checksum", "zero checksum", "length field", "larger second", "after a short one",
                                  "other port", "fragment"])
def test_non_coalescible_datagrams_come_back_unchanged(name: str) -> None:
    f = Flow()
    a, b, c = udp_datagrams(f, [400, 400, 400])
    packets = {
        "bad checksum": [a, f.udp(payload(400, 9), csum="bad")],
        "zero checksum": [f.udp(payload(400, 1), csum="zero"), f.udp(payload(400, 2), csum="zero")],
        "length field": [a, _set(b, 24, struct.pack("!H", 407))],
        "larger second": [a, f.udp(payload(401, 9))],
        "after a short one": [f.udp(payload(300, 9)), b],
        "other port": [a, Flow(sport=f.sport + 1).udp(payload(400, 3))],
        "fragment": [_frag(a, 0x2000), _frag(b, 0x2000)],
    }[name]
    assert len(gro_coalesce([a, b, c], udp=True)) == 1
    assert gro_coalesce(packets, udp=True) == [ZERO_HDR + p for p in packets]


def test_nothing_is_appended_after_a_short_segment_or_a_psh() -> None:
    f = Flow()
    short = tcp_segments(f, [500, 300, 500], 0, 1)
    short[2] = f.tcp(800, 1, payload(500, 7))
    assert [len(native.coalesce_plan(short, 1)[i][1]) for i in range(2)] == [2, 1]
    psh = tcp_segments(f, [500, 500, 500], 0, 1, psh={1})
    assert [m for _, m in native.coalesce_plan(psh, 1)] == [[0, 1], [2]]


def test_a_flow_keeps_its_order_around_packets_that_do_not_merge() -> None:
    f = Flow()
    a, b, c = tcp_segments(f, [500, 500, 500], 0, 1)
    pure_ack = f.tcp(1000, 1)
    # c could extend [a, b], but the pure ACK of the same flow lies between them
    assert [m for _, m in native.coalesce_plan([a, b, pure_ack, c], 1)] == [[0, 1], [2], [3]]
    other = Flow(sport=9).tcp(0, 0)
    # a packet of another flow does not stop the merge (and ends up after it)
    assert [m for _, m in native.coalesce_plan([a, b, other, c], 1)] == [[0, 1, 3], [2]]


@settings(max_examples=200, deadline=None)
@given(data=st.data(), nflows=st.integers(1, 4), n=st.integers(1, 120))
def test_interleaved_flows_keep_per_flow_order(data: st.DataObject, nflows: int, n: int) -> None:
    flows_ = [data.draw(flows()) for _ in range(nflows)]
    state = [[0, 0] for _ in flows_]  # next seq, next ident
    packets: list[bytes] = []
    owner: list[tuple[int, bool]] = []  # (flow, protocol), what the C code calls a flow
    for _ in range(n):
        k = data.draw(st.integers(0, nflows - 1))
        f, s = flows_[k], state[k]
        kind = data.draw(st.sampled_from(["data", "data", "data", "short", "psh", "ack", "udp", "bad"]))
        size = {"short": 100, "ack": 0}.get(kind, 700)
        ident = s[1] & 0xFFFF
        if kind == "udp":
            pkt = f.udp(payload(size, len(packets)), ident=ident)
        else:
            pkt = f.tcp(s[0], 1, payload(size, len(packets)), flags=ACK | (PSH if kind == "psh" else 0), ident=ident,
                        csum="bad" if kind == "bad" else "full")
            s[0] += size
        s[1] += 1
        packets.append(pkt)
        owner.append((k, kind == "udp"))
    plan = native.coalesce_plan(packets, native.GRO_TCP | native.GRO_UDP)
    order = [m for _, ms in plan for m in ms]
    assert sorted(order) == list(range(n))
    firsts = [ms[0] for _, ms in plan]
    assert firsts == sorted(firsts)
    for key in set(owner):
        mine = [i for i in order if owner[i] == key]
        assert mine == sorted(mine)
    out = native.coalesce(packets, native.GRO_TCP | native.GRO_UDP)
    for o, (_, ms) in zip(out, plan):
        segs = gso_split(o)
        assert len(segs) == len(ms)
        for seg, i in zip(segs, ms):
            assert _normalize(seg) == _normalize(packets[i])


def _normalize(pkt: bytes) -> bytes:
    """The packet without its IPv4 ID and header checksum (a merge renumbers
    IDs from the first segment, as the kernel's segmentation does)."""
    if pkt and pkt[0] >> 4 == 4 and len(pkt) >= 20:
        return pkt[:4] + b"\0\0" + pkt[6:10] + b"\0\0" + pkt[12:]
    return pkt


# -- split of hand-built super-packets -------------------------------------------

def super_tcp(flow: Flow, data: bytes, gso: int, *, seq: int = 1000, ack: int = 1, flags: int = ACK | PSH,
              options: bytes = b"", ecn: bool = False, hdr_len: int | None = None) -> tuple[bytes, list[bytes]]:
    """A TSO super-packet as the kernel hands it over (partial checksum seed,
    total length of the whole), and the segments the kernel would cut it into."""
    big = flow.tcp(seq, ack, data, flags=flags, options=options, csum="partial")
    p = parse(big)
    gso_type = (VIRTIO_NET_HDR_GSO_TCPV6 if flow.v6 else VIRTIO_NET_HDR_GSO_TCPV4) | (VIRTIO_NET_HDR_GSO_ECN if ecn else 0)
    hdr = vnet(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, p.l3 + p.thl if hdr_len is None else hdr_len, gso, p.l3, 16)
    chunks = [data[i : i + gso] for i in range(0, len(data), gso)] or [b""]
    segs = []
    for i, chunk in enumerate(chunks):
        fl = flags
        if i + 1 < len(chunks):
            fl &= ~(FIN | PSH)
        if i > 0:
            fl &= ~CWR
        segs.append(flow.tcp(seq + i * gso, ack, chunk, flags=fl, options=options, ident=(flow.ident + i) & 0xFFFF))
    return hdr + big, segs


def super_udp(flow: Flow, data: bytes, gso: int) -> tuple[bytes, list[bytes]]:
    big = flow.udp(data, csum="partial")
    p = parse(big)
    hdr = vnet(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP_L4, p.l3 + 8, gso, p.l3, 6)
    chunks = [data[i : i + gso] for i in range(0, len(data), gso)] or [b""]
    return hdr + big, [flow.udp(c, ident=(flow.ident + i) & 0xFFFF) for i, c in enumerate(chunks)]


EXT_CHAINS: dict[str, list[tuple[int, bytes | Callable[[int], bytes]]]] = {
    "none": [],
    "hop-by-hop": [(HOPOPTS, b"")],
    "hop-by-hop + destination options": [(HOPOPTS, b""), (DSTOPTS, b"\x01\x0c" + bytes(12))],
}


@pytest.mark.parametrize("ext", sorted(EXT_CHAINS))
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_split_ipv6_with_extension_headers(ext: str, proto: str) -> None:
    flow = Flow(src="fd00::1", dst="fd00::2", ext=EXT_CHAINS[ext])
    data = payload(5000, 3)
    sp, want = super_tcp(flow, data, 1200) if proto == "tcp" else super_udp(flow, data, 1200)
    got = gso_split(sp)
    assert got == want
    for g in got:
        assert checksums_valid(g)
        # the payload length counts the extension headers (wireguard-go's gsoSplit does not)
        assert struct.unpack_from("!H", g, 4)[0] == len(g) - 40


@pytest.mark.parametrize("rtype", [2, 4])
def test_split_ipv6_routing_header_uses_the_final_destination(rtype: int) -> None:
    final = "fd00::f1"
    rh = lambda nxt: routing_header(nxt, rtype, 1, [final])  # noqa: E731
    flow = Flow(src="fd00::1", dst="fd00::2", ext=[(ROUTING, rh)], final_dst=final)
    sp, want = super_tcp(flow, payload(3000, 4), 1000)
    got = gso_split(sp)
    assert got == want and all(checksums_valid(g) for g in got)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("size,gso", [(4000, 1000), (4001, 1000), (3999, 1000), (1, 1000), (1000, 1000), (0, 100),
                                      (65535 - 80, 1380), (200, 1)])
def test_split_tcp_sizes(v6: bool, size: int, gso: int) -> None:
    flow = Flow(src="fd00::1", dst="fd00::2") if v6 else Flow()
    sp, want = super_tcp(flow, payload(size, size), gso, options=b"\x01\x01\x08\x0a" + bytes(8))
    got = gso_split(sp)
    assert got == want
    assert all(checksums_valid(g) for g in got)
    assert b"".join(parse(g).payload for g in got) == payload(size, size)


def test_split_puts_fin_and_psh_on_the_last_segment_and_cwr_on_the_first() -> None:
    sp, want = super_tcp(Flow(), payload(3500, 5), 1000, flags=ACK | PSH | FIN | CWR | ECE, ecn=True)
    got = gso_split(sp)
    assert got == want
    flags = [parse(g).flags for g in got]
    assert flags == [ACK | CWR | ECE, ACK | ECE, ACK | ECE, ACK | ECE | PSH | FIN]


@pytest.mark.parametrize("hdr_len", [0, 1, 20, 39, 41, 1500, 65535])
def test_split_ignores_a_lying_hdr_len(hdr_len: int) -> None:
    sp, want = super_tcp(Flow(), payload(3000, 6), 1000, hdr_len=hdr_len)
    assert gso_split(sp) == want


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_split_udp_short_last_datagram(v6: bool) -> None:
    flow = Flow(src="fd00::1", dst="fd00::2") if v6 else Flow()
    sp, want = super_udp(flow, payload(10 * 1200 + 77, 8), 1200)
    got = gso_split(sp)
    assert got == want and len(got) == 11 and len(parse(got[-1]).payload) == 77


@pytest.mark.parametrize("src,dst", [("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
                                     ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::"),
                                     ("255.255.255.255", "255.255.255.255"), ("0.0.0.0", "0.0.0.0")])
def test_checksums_with_extreme_addresses(src: str, dst: str) -> None:
    """All-ones addresses take a 64-bit running sum to its top, where a lost
    carry would go unnoticed with everyday addresses."""
    flow = Flow(src=src, dst=dst)
    for proto in ("tcp", "udp"):
        sp, want = super_tcp(flow, payload(3000, 1), 1000) if proto == "tcp" else super_udp(flow, payload(3000, 1), 1000)
        assert gso_split(sp) == want
        [out] = gro_coalesce(want, udp=True)
        check_merged_header(out, want, TCP if proto == "tcp" else UDP)


def test_split_never_writes_a_zero_udp_checksum() -> None:
    flow = Flow()
    base = bytearray(payload(200, 11))
    # choose the last two payload bytes so that the checksum computes to zero
    base[-2:] = b"\0\0"
    s = ones_sum(bytes(base), pseudo_sum(addr(flow.src), addr(flow.dst), UDP, 208))
    s = ones_sum(struct.pack("!HHH", flow.sport, flow.dport, 208), s)
    base[-2:] = struct.pack("!H", ~s & 0xFFFF)
    assert ones_sum(bytes(base), ones_sum(struct.pack("!HHH", flow.sport, flow.dport, 208),
                                          pseudo_sum(addr(flow.src), addr(flow.dst), UDP, 208))) == 0xFFFF
    big = flow.udp(bytes(base), csum="partial")
    sp = vnet(1, VIRTIO_NET_HDR_GSO_UDP_L4, 28, 1000, 20, 6) + big
    [got] = gso_split(sp)
    assert got[26:28] == b"\xff\xff" and checksums_valid(got)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_split_completes_a_partial_checksum_without_gso(v6: bool, proto: str) -> None:
    flow = Flow(src="fd00::1", dst="fd00::2") if v6 else Flow()
    make: Callable[[str], bytes] = (lambda c: flow.tcp(5, 6, payload(333, 1), flags=SYN, csum=c)) if proto == "tcp" else (
        lambda c: flow.udp(payload(333, 1), csum=c))
    partial, full = make("partial"), make("full")
    l3 = parse(full).l3
    [got] = gso_split(vnet(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, l3, 16 if proto == "tcp" else 6) + partial)
    assert got == full


def test_split_copies_a_plain_packet_as_is() -> None:
    for pkt in (Flow().tcp(1, 2, b"x", csum="bad"), b"\x60" + bytes(7), b"\x99"):
        assert gso_split(ZERO_HDR + pkt) == [pkt]
        assert gso_split(vnet(2) + pkt) == [pkt]  # DATA_VALID changes nothing


def _refusals() -> dict[str, tuple[bytes, str]]:
    f4, f6 = Flow(), Flow(src="fd00::1", dst="fd00::2")
    t4 = f4.tcp(1, 1, payload(3000), csum="partial")
    t6 = f6.tcp(1, 1, payload(3000), csum="partial")
    u4 = f4.udp(payload(3000), csum="partial")
    ok4 = vnet(1, 1, 40, 1000, 20, 16)
    return {
        "short header": (b"\1\1\0", "10-byte"),
        "no packet": (ok4, "no packet"),
        "gso_size 0": (vnet(1, 1, 40, 0, 20, 16) + t4, "gso_size is 0"),
        "UFO": (vnet(1, 3, 28, 1000, 20, 6) + u4, "not TCPV4, TCPV6 or UDP_L4"),
        "unknown type": (vnet(1, 2, 40, 1000, 20, 16) + t4, "not TCPV4"),
        "unknown bit": (vnet(1, 0x11, 40, 1000, 20, 16) + t4, "not TCPV4"),
        "ECN on UDP": (vnet(1, 0x85, 28, 1000, 20, 6) + u4, "ECN"),
        "no NEEDS_CSUM": (vnet(0, 1, 40, 1000, 20, 16) + t4, "without NEEDS_CSUM"),
        "TCPV6 on IPv4": (vnet(1, 4, 40, 1000, 20, 16) + t4, "TCPV6 on an IPv4"),
        "TCPV4 on IPv6": (vnet(1, 1, 60, 1000, 40, 16) + t6, "TCPV4 on an IPv6"),
        "UDP_L4 on TCP": (vnet(1, 5, 28, 1000, 20, 6) + t4, "protocol does not match"),
        "TCP csum_offset 6": (vnet(1, 1, 40, 1000, 20, 6) + t4, "csum_offset"),
        "csum_start not the IHL": (vnet(1, 1, 40, 1000, 24, 16) + t4, "IPv4 header length"),
        "csum_start beyond": (vnet(1, 4, 60, 1000, 4000, 16) + t6, "beyond the packet"),
        "csum_start inside IPv6": (vnet(1, 4, 60, 1000, 20, 16) + t6, "inside the IPv6 header"),
        "IPv6 chain does not reach csum_start": (vnet(1, 4, 60, 1000, 48, 16) + t6, "IPv6 header other than"),
        "TCP header cut": (ok4 + t4[:30], "TCP header lies beyond"),
        "TCP data offset cut": (ok4 + t4[:32] + b"\xf0" + t4[33:45], "TCP header lies beyond"),
        "TCP data offset < 5": (ok4 + t4[:32] + b"\x40" + t4[33:], "below 5"),
        "UDP header cut": (vnet(1, 5, 28, 1000, 20, 6) + u4[:25], "UDP header lies beyond"),
        "fragment": (ok4 + _frag(t4, 0x2000), "fragment"),
        "not IP": (ok4 + b"\x50" + t4[1:], "neither IPv4 nor IPv6"),
        "too long": (ok4 + t4 + bytes(65536 - len(t4)), "longer than"),
        "short IPv4": (ok4 + t4[:12], "shorter than an IPv4"),
        "NONE csum beyond": (vnet(1, 0, 0, 0, 20, 3019) + t4, "beyond the packet"),
        "NONE odd csum_offset": (vnet(1, 0, 0, 0, 20, 15) + t4, "odd"),
    }


@pytest.mark.parametrize("name", sorted(_refusals()))
def test_split_refuses_what_is_inconsistent(name: str) -> None:
    data, reason = _refusals()[name]
    with pytest.raises(ValueError, match=reason):
        gso_split(data)


# -- fuzzing --------------------------------------------------------------------

def _valid_super_packets() -> list[bytes]:
    out = []
    for flow in (Flow(), Flow(src="fd00::1", dst="fd00::2", ext=[(HOPOPTS, b"")])):
        out.append(super_tcp(flow, payload(4000, 1), 1000, options=b"\x01\x01\x08\x0a" + bytes(8))[0])
        out.append(super_udp(flow, payload(2500, 2), 700)[0])
    out.append(vnet(1, 0, 0, 0, 20, 16) + Flow().tcp(1, 1, b"abc", csum="partial"))
    return out


VALID = _valid_super_packets()


def _mutate(rnd: random.Random, base: bytes) -> bytes:
    """A few random edits: bit flips, byte sets, truncation, growth, and
    virtio header fields set to boundary values."""
    b = bytearray(base)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.choice(["flip", "byte", "cut", "grow", "hdr"])
        if op == "flip" and b:
            b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
        elif op == "byte" and b:
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        elif op == "cut":
            del b[rnd.randint(0, len(b)):]
        elif op == "grow":
            b += rnd.randbytes(rnd.randint(0, 64))
        elif op == "hdr" and len(b) >= 10:
            at = rnd.choice([2, 4, 6, 8])
            b[at : at + 2] = struct.pack("=H", rnd.choice([0, 1, 8, 19, 20, 39, 40, 60, 65535, len(b) & 0xFFFF]))
    return bytes(b)


def _split_is_sane(data: bytes) -> None:
    try:
        segs = gso_split(data)
    except ValueError:
        return
    assert segs and all(isinstance(s, bytes) and s for s in segs)
    h = VirtioNetHeader.parse(data)
    if h.gso_type != 0:
        assert all(checksums_valid(s) for s in segs)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
@example(b"")
def test_fuzz_split_random_bytes(data: bytes) -> None:
    _split_is_sane(data)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rnd=st.randoms(use_true_random=False), base=st.sampled_from(VALID))
def test_fuzz_split_mutated_super_packets(rnd: random.Random, base: bytes) -> None:
    _split_is_sane(_mutate(rnd, base))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(f=flows(), rnd=st.randoms(use_true_random=False), n=st.integers(0, 40), udp=st.booleans(),
       junk=st.lists(st.binary(max_size=80), max_size=5))
def test_fuzz_coalesce_mutated_flows(f: Flow, rnd: random.Random, n: int, udp: bool, junk: list[bytes]) -> None:
    base = tcp_segments(f, [600] * n, 1, 1) + udp_datagrams(f, [300] * (n // 2))
    packets = [_mutate(rnd, p) if rnd.random() < 0.3 else p for p in base] + junk
    flags = native.GRO_TCP | (native.GRO_UDP if udp else 0)
    plan = native.coalesce_plan(packets, flags)
    out = native.coalesce(packets, flags)
    assert [len(o) for o in out] == [size for size, _ in plan]
    assert sorted(i for _, ms in plan for i in ms) == list(range(len(packets)))
    for o, (_, ms) in zip(out, plan):
        if len(ms) == 1:
            assert o == ZERO_HDR + packets[ms[0]]
            continue
        # every merged output is something split accepts, and gives back its members
        segs = gso_split(o)
        assert [_normalize(s) for s in segs] == [_normalize(packets[i]) for i in ms]
        assert all(checksums_valid(s) for s in segs)
