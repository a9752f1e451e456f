"""Thin cffi wrappers over offload.c (split, coalesce, checksums).

This module keeps the offload cffi objects inside ``_native``: it takes and
returns bytes and ints, and turns the C functions' ``-errno`` results into
exceptions.  ``aiouring.offload`` is the public face.
"""
from __future__ import annotations

import errno
from typing import Sequence

from ._uring import ffi, lib

__all__ = [
    "MAX_BATCH",
    "MAX_SEGMENTS",
    "checksum",
    "coalesce",
    "coalesce_iov",
    "coalesce_members",
    "coalesce_plan",
    "split",
]

MAX_BATCH: int = lib.AIOU_GRO_MAX_IN
MAX_SEGMENTS: int = lib.AIOU_GRO_MAX_SEGS
GRO_TCP: int = lib.AIOU_GRO_TCP
GRO_UDP: int = lib.AIOU_GRO_UDP
_HDR_MAX: int = lib.AIOU_GRO_HDR_MAX
F_NEEDS_CSUM: int = lib.AIOU_VNET_F_NEEDS_CSUM
GSO_NONE: int = lib.AIOU_VNET_GSO_NONE
GSO_TCPV4: int = lib.AIOU_VNET_GSO_TCPV4
GSO_TCPV6: int = lib.AIOU_VNET_GSO_TCPV6
GSO_UDP_L4: int = lib.AIOU_VNET_GSO_UDP_L4
GSO_ECN: int = lib.AIOU_VNET_GSO_ECN


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The internet checksum to store for ``data`` (0 if it already holds one)."""
    buf = ffi.from_buffer("uint8_t[]", data)
    return int(lib.aiou_csum(buf, len(buf)))


def split(super_packet: bytes | bytearray | memoryview) -> list[bytes]:
    """``aiou_tun_split`` sized exactly; ``ValueError`` carries the C reason."""
    src = ffi.from_buffer("uint8_t[]", super_packet)
    npkts = ffi.new("unsigned *")
    nbytes = ffi.new("size_t *")
    why = ffi.new("const char **")
    if lib.aiou_tun_split_size(src, len(src), npkts, nbytes, why) < 0:
        raise ValueError(ffi.string(why[0]).decode())
    n, size = npkts[0], nbytes[0]
    out = ffi.new("uint8_t[]", max(size, 1))
    lens = ffi.new("unsigned[]", n)
    res = lib.aiou_tun_split(src, len(src), out, size, lens, n, why)
    if res < 0:  # pragma: no cover - the sizes came from the same parser
        raise ValueError(ffi.string(why[0]).decode())
    buf = ffi.buffer(out, size)
    packets = []
    at = 0
    for i in range(res):
        packets.append(buf[at : at + lens[i]])
        at += lens[i]
    return packets


class _Batch:
    """One chunk of packets indexed for the C side, with its plan."""

    def __init__(self, packets: Sequence[bytes], flags: int) -> None:
        n = len(packets)
        data = b"".join(packets)
        self.n = n
        self.src = ffi.from_buffer("uint8_t[]", data)
        self.lens = ffi.new("unsigned[]", [len(p) for p in packets]) if n else ffi.NULL
        self.ptrs = ffi.new("const uint8_t *[]", n) if n else ffi.NULL
        if n and lib.aiou_offload_index(self.src, len(data), self.lens, n, self.ptrs) < 0:
            raise AssertionError("offload index overran its own buffer")  # pragma: no cover
        self.plan = ffi.new("struct aiou_gro_plan *")
        res = lib.aiou_tun_coalesce_plan(self.ptrs, self.lens, n, flags, self.plan)
        if res < 0:
            raise OSError(-res, f"coalesce plan: {errno.errorcode.get(-res, res)}")
        self.n_out: int = res

    def outputs(self) -> list[tuple[int, list[int]]]:
        plan = self.plan
        result = []
        for i in range(self.n_out):
            o = plan.out[i]
            result.append((int(o.size), [int(plan.members[o.first + c]) for c in range(o.count)]))
        return result

    def emit_all(self) -> list[bytes]:
        sizes = [int(self.plan.out[i].size) for i in range(self.n_out)]
        total = sum(sizes)
        dst = ffi.new("uint8_t[]", max(total, 1))
        at = 0
        for i, size in enumerate(sizes):
            res = lib.aiou_tun_coalesce_emit(self.ptrs, self.lens, self.plan, i, dst + at, size)
            if res != size:  # pragma: no cover - a plan made a moment ago
                raise AssertionError(f"emit of output {i} returned {res}, planned {size}")
            at += size
        buf = ffi.buffer(dst, total)
        out = []
        at = 0
        for size in sizes:
            out.append(buf[at : at + size])
            at += size
        return out

    def iov_all(self) -> list[list[bytes]]:
        hdr = ffi.new("uint8_t[]", _HDR_MAX)
        iov = ffi.new("struct iovec[]", MAX_SEGMENTS + 1)
        out = []
        for i in range(self.n_out):
            res = lib.aiou_tun_coalesce_iov(self.ptrs, self.lens, self.plan, i, hdr, iov, MAX_SEGMENTS + 1)
            if res < 0:  # pragma: no cover
                raise OSError(-res, "coalesce iov")
            out.append([bytes(ffi.buffer(iov[j].iov_base, iov[j].iov_len)) for j in range(res)])
        return out


def _chunks(packets: Sequence[bytes]) -> list[Sequence[bytes]]:
    return [packets[i : i + MAX_BATCH] for i in range(0, len(packets), MAX_BATCH)]


def coalesce(packets: Sequence[bytes], flags: int) -> list[bytes]:
    """Plan and emit every output, chunk by chunk of ``MAX_BATCH`` packets."""
    out: list[bytes] = []
    for chunk in _chunks(packets):
        out.extend(_Batch(chunk, flags).emit_all())
    return out


def coalesce_plan(packets: Sequence[bytes], flags: int) -> list[tuple[int, list[int]]]:
    """The plan of one batch (at most ``MAX_BATCH`` packets): per output, its
    size and the indices of the packets it carries."""
    if len(packets) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} packets per plan, not {len(packets)}")
    return _Batch(packets, flags).outputs()


def coalesce_iov(packets: Sequence[bytes], flags: int) -> list[list[bytes]]:
    """Every output of one batch as the pieces ``aiou_tun_coalesce_iov``
    points at (header block, then payloads)."""
    if len(packets) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} packets per plan, not {len(packets)}")
    return _Batch(packets, flags).iov_all()


def coalesce_members(packets: Sequence[bytes], flags: int) -> list[tuple[bytes, list[int]]]:
    """Every output (virtio header + packet) with the indices of the input
    packets it carries, chunk by chunk of ``MAX_BATCH`` packets."""
    out: list[tuple[bytes, list[int]]] = []
    for base in range(0, len(packets), MAX_BATCH):
        batch = _Batch(packets[base : base + MAX_BATCH], flags)
        for data, (_, members) in zip(batch.emit_all(), batch.outputs()):
            out.append((data, [base + m for m in members]))
    return out
