"""Write the corpus offload_fuzz.c mutates: valid TUN reads (kind 0) and
valid batches of outgoing packets (kind 1), built with tests/support/inet.py.

Format, host byte order: per entry u32 kind, u32 count, then count times
(u32 length, bytes).  Usage: python offload_corpus.py OUT
"""
from __future__ import annotations

import os
import random
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from support.inet import ACK, CWR, DSTOPTS, ECE, FIN, HOPOPTS, PSH, ROUTING, SYN, Flow, parse, routing_header, vnet  # noqa: E402


def data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def tso(flow: Flow, size: int, gso: int, *, flags: int = ACK | PSH, options: bytes = b"", ecn: bool = False) -> bytes:
    big = flow.tcp(1000, 1, data(size, size), flags=flags, options=options, csum="partial")
    p = parse(big)
    gso_type = (4 if flow.v6 else 1) | (0x80 if ecn else 0)
    return vnet(1, gso_type, p.l3 + p.thl, gso, p.l3, 16) + big


def uso(flow: Flow, size: int, gso: int) -> bytes:
    big = flow.udp(data(size, size), csum="partial")
    l3 = parse(big).l3
    return vnet(1, 5, l3 + 8, gso, l3, 6) + big


def reads() -> list[bytes]:
    v4, v6 = Flow(), Flow(src="fd00::1", dst="fd00::2")
    ext = Flow(src="fd00::1", dst="fd00::2", ext=[(HOPOPTS, b""), (DSTOPTS, b"")])
    rh = Flow(src="fd00::1", dst="fd00::2", ext=[(ROUTING, lambda nxt: routing_header(nxt, 2, 1, ["fd00::9"]))],
              final_dst="fd00::9")
    ts = b"\x01\x01\x08\x0a" + bytes(8)
    out = [
        tso(v4, 62100, 1380), tso(v4, 3000, 1000, options=ts), tso(v6, 5000, 1360, flags=ACK | PSH | FIN | CWR | ECE, ecn=True),
        tso(ext, 4000, 1000), tso(rh, 2500, 1000), tso(v4, 500, 1000), tso(v4, 300, 1),
        uso(v4, 20 * 1200 + 45, 1200), uso(v6, 4000, 1000), uso(ext, 3000, 700),
        vnet(1, 0, 0, 0, 20, 16) + v4.tcp(1, 0, flags=SYN, csum="partial"),
        vnet(1, 0, 0, 0, 40, 6) + v6.udp(data(100, 1), csum="partial"),
        vnet() + v4.tcp(1, 2, b"plain"),
    ]
    return out


def batches() -> list[list[bytes]]:
    v4, v6 = Flow(), Flow(src="fd00::1", dst="fd00::2", sport=9)
    tcp4 = [v4.tcp(1000 + 1380 * i, 7, data(1380, i), ident=i) for i in range(45)]
    tcp6 = [v6.tcp(5 + 1000 * i, 7, data(1000, i), flags=ACK | (PSH if i == 29 else 0)) for i in range(30)]
    udp4 = [v4.udp(data(1200, i), ident=i) for i in range(40)] + [v4.udp(data(10, 99))]
    udp6 = [v6.udp(data(500, i)) for i in range(256)]
    mixed = []
    for i in range(60):
        mixed += [tcp4[i % 45], udp4[i % 41], tcp6[i % 30], b"\x45garbage" * (i % 3)]
    return [tcp4, tcp6, udp4, udp6, mixed[:256], [v4.tcp(1, 2)] * 5, []]


def main(path: str) -> None:
    with open(path, "wb") as f:
        for r in reads():
            f.write(struct.pack("=III", 0, 1, len(r)) + r)
        for b in batches():
            f.write(struct.pack("=II", 1, len(b)))
            for p in b:
                f.write(struct.pack("=I", len(p)) + p)


if __name__ == "__main__":
    main(sys.argv[1])
