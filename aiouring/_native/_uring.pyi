# Typed face of the cffi-generated module: exactly what aiouring calls of it
# (the C side is declared in cdef.h and cdef_offload.h; keep the three in step).
#
# cffi objects are typed by their C shape: `IntArray` for pointers to and
# arrays of integers, `Ring` for `struct aiou_ring *`, and so on.  A pointer
# argument also takes `None` (cffi passes NULL) and, where C reads bytes
# through it, a `bytes` object (cffi passes its buffer).
from typing import Literal, overload

from _typeshed import ReadableBuffer, WriteableBuffer
from typing_extensions import Self

class CData:
    """A cffi pointer or array, opaque to Python."""

    def __add__(self, offset: int) -> Self: ...

class ByteArray(CData):
    """``char[]``/``uint8_t[]``, e.g. from ``ffi.from_buffer``."""

    def __len__(self) -> int: ...

class IntArray(CData):
    """A pointer to, or an array of, a C integer type."""

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> list[int]: ...
    def __setitem__(self, index: int, value: int) -> None: ...
    def __len__(self) -> int: ...

class CharPtrArray(CData):
    """``const char **``."""

    def __getitem__(self, index: int) -> CData: ...

class Iovec:
    """``struct iovec`` (an element of ``struct iovec[]``)."""

    iov_base: CData
    iov_len: int

class IovecArray(CData):
    def __getitem__(self, index: int) -> Iovec: ...

class Ring(CData):
    """``struct aiou_ring *``: the fields Python reads."""

    eventfd: int
    setup_flags: int
    sq_entries: int
    cq_entries: int
    submitted: int
    reaped: int
    submit_calls: int
    overflows: int
    split_errors: int

class RingOut(CData):
    """``struct aiou_ring **``."""

    def __getitem__(self, index: int) -> Ring: ...

class GroOut:
    """``struct aiou_gro_out``."""

    size: int
    first: int
    count: int
    gso_size: int

class GroOutArray(CData):
    def __getitem__(self, index: int) -> GroOut: ...

class GroPlan(CData):
    """``struct aiou_gro_plan *``."""

    n_out: int
    n_in: int
    out: GroOutArray
    members: IntArray

class Buffer:
    """What ``ffi.buffer`` returns: the C memory as a Python buffer."""

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> bytes: ...
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

_IntType = Literal[
    "int64_t[]", "int[]", "int *", "unsigned[]", "unsigned *", "uint32_t[]", "uint32_t *", "size_t *",
    "unsigned long long[2]", "uint8_t[]", "unsigned char[]", "const uint8_t *[]",
]

class FFI:
    NULL: CData
    @overload
    def new(self, cdecl: Literal["struct aiou_ring **"]) -> RingOut: ...
    @overload
    def new(self, cdecl: Literal["struct aiou_gro_plan *"]) -> GroPlan: ...
    @overload
    def new(self, cdecl: Literal["struct iovec[]"], init: int) -> IovecArray: ...
    @overload
    def new(self, cdecl: Literal["const char **"]) -> CharPtrArray: ...
    @overload
    def new(self, cdecl: _IntType, init: int | list[int] = ...) -> IntArray: ...
    @overload
    def from_buffer(self, python_buffer: ReadableBuffer, /) -> ByteArray: ...
    @overload
    def from_buffer(self, python_buffer: WriteableBuffer, /, require_writable: bool) -> ByteArray: ...
    @overload
    def from_buffer(self, cdecl: Literal["uint8_t[]"], python_buffer: ReadableBuffer, /) -> ByteArray: ...
    @overload
    def from_buffer(self, cdecl: Literal["uint16_t[]", "uint32_t[]"], python_buffer: ReadableBuffer, /) -> IntArray: ...
    def buffer(self, cdata: CData, size: int = ...) -> Buffer: ...
    def string(self, cdata: CData) -> bytes: ...

_Ptr = CData | None
_RingArg = Ring | None  # None (NULL) only after NativeRing.close(), which its callers never pass on
_In = CData | bytes | None  # `const` input bytes

class Lib:
    IORING_SETUP_COOP_TASKRUN: int
    IORING_SETUP_TASKRUN_FLAG: int
    IORING_SETUP_SINGLE_ISSUER: int
    IORING_SETUP_DEFER_TASKRUN: int
    IORING_SETUP_SQPOLL: int
    IORING_CQE_F_BUFFER: int
    IORING_CQE_F_MORE: int
    AIOU_OP_READ_MULTISHOT: int
    AIOU_UD_ID_BITS: int
    AIOU_TAG_BATCH: int
    AIOU_TAG_EVENT: int
    AIOU_MAX_GROUPS: int
    AIOU_MAX_BATCH: int
    AIOU_KIND_PACKET: int
    AIOU_KIND_DATAGRAM: int
    AIOU_EMIT_VNET: int
    AIOU_EMIT_GRO_TCP: int
    AIOU_EMIT_GRO_UDP: int
    AIOU_EMIT_GSO: int
    AIOU_BR_RECVMSG: int
    AIOU_BR_VNET: int
    AIOU_BR_GRO: int
    AIOU_EV_GRO_REFUSED: int
    AIOU_EV_GSO_REFUSED: int
    AIOU_EV_GSO_TOO_BIG: int
    AIOU_VNET_HDR_LEN: int
    AIOU_VNET_F_NEEDS_CSUM: int
    AIOU_VNET_F_DATA_VALID: int
    AIOU_VNET_GSO_NONE: int
    AIOU_VNET_GSO_TCPV4: int
    AIOU_VNET_GSO_UDP: int
    AIOU_VNET_GSO_TCPV6: int
    AIOU_VNET_GSO_UDP_L4: int
    AIOU_VNET_GSO_ECN: int
    AIOU_GRO_MAX_IN: int
    AIOU_GRO_MAX_SEGS: int
    AIOU_GRO_HDR_MAX: int
    AIOU_GRO_TCP: int
    AIOU_GRO_UDP: int

    def aiou_ring_open(self, out: RingOut, entries: int, cq_entries: int, flags: int, /) -> int: ...
    def aiou_ring_close(self, r: _RingArg, /) -> None: ...
    def aiou_ring_forget(self, r: _RingArg, /) -> None: ...
    def aiou_prep_nop(self, r: _RingArg, ud: int, /) -> int: ...
    def aiou_prep_read(self, r: _RingArg, fd: int, buf: _Ptr, nbytes: int, offset: int, ud: int, /) -> int: ...
    def aiou_prep_write(self, r: _RingArg, fd: int, buf: _In, nbytes: int, offset: int, ud: int, /) -> int: ...
    def aiou_prep_readv(self, r: _RingArg, fd: int, iov: _Ptr, nr: int, offset: int, ud: int, /) -> int: ...
    def aiou_prep_writev(self, r: _RingArg, fd: int, iov: _Ptr, nr: int, offset: int, ud: int, /) -> int: ...
    def aiou_prep_poll(self, r: _RingArg, fd: int, events: int, ud: int, /) -> int: ...
    def aiou_prep_cancel(self, r: _RingArg, target: int, ud: int, /) -> int: ...
    def aiou_prep_cancel_all(self, r: _RingArg, ud: int, /) -> int: ...
    def aiou_prep_read_multishot(self, r: _RingArg, fd: int, bgid: int, ud: int, /) -> int: ...
    def aiou_prep_recvmsg_multishot(self, r: _RingArg, fd: int, bgid: int, ud: int, /) -> int: ...
    def aiou_submit(self, r: _RingArg, /) -> int: ...
    def aiou_wait(self, r: _RingArg, timeout_ms: int, /) -> int: ...
    def aiou_reap(
        self, r: _RingArg, out: _Ptr, max: int, arena: _Ptr, arena_size: int, pk: _Ptr, pk_max: int, npk: _Ptr, /
    ) -> int: ...
    def aiou_bufring_add(self, r: _RingArg, bgid: int, entries: int, bufsize: int, kind: int, /) -> int: ...
    def aiou_bufring_remove(self, r: _RingArg, bgid: int, /) -> int: ...
    def aiou_bufring_counts(self, r: _RingArg, bgid: int, reads: _Ptr, records: _Ptr, /) -> int: ...
    def aiou_emit(
        self, r: _RingArg, fd: int, kind: int, flags: int, gso_max: int, data: _In, lens: _Ptr, n: int,
        addrs: _In, addrlens: _Ptr, slot: _Ptr, planned: _Ptr, /,
    ) -> int: ...
    def aiou_batch_members(
        self, r: _RingArg, slot: int, index: int, members: _Ptr, max: int, coalesced: _Ptr, seg: _Ptr, /
    ) -> int: ...
    def aiou_live_batches(self, r: _RingArg, /) -> int: ...
    def aiou_read_batch(
        self, fd: int, arena: _Ptr, arena_size: int, bufsize: int, kind: int, out: _Ptr, cap: int,
        max_reads: int, err: _Ptr, dropped: _Ptr, reads: _Ptr, /,
    ) -> int: ...
    def aiou_recv_batch(
        self, fd: int, arena: _Ptr, arena_size: int, bufsize: int, kind: int, out: _Ptr, cap: int,
        max_reads: int, err: _Ptr, dropped: _Ptr, reads: _Ptr, /,
    ) -> int: ...
    def aiou_send_batch(
        self, fd: int, kind: int, flags: int, gso_max: int, data: _In, lens: _Ptr, n: int, addrs: _In,
        addrlens: _Ptr, errs: _Ptr, nerr: _Ptr, events: _Ptr, seg: _Ptr, writes: _Ptr, /,
    ) -> int: ...
    def aiou_probe_opcodes(self, supported: _Ptr, max: int, last_op: _Ptr, /) -> int: ...
    def aiou_csum_add(self, data: _In, len: int, sum: int, /) -> int: ...
    def aiou_csum(self, data: _In, len: int, /) -> int: ...
    def aiou_pseudo_sum4(self, src: _In, dst: _In, proto: int, l4_len: int, /) -> int: ...
    def aiou_pseudo_sum6(self, src: _In, dst: _In, proto: int, l4_len: int, /) -> int: ...
    def aiou_tun_split_size(self, in_: _In, in_len: int, npkts: _Ptr, nbytes: _Ptr, why: _Ptr, /) -> int: ...
    def aiou_tun_split(
        self, in_: _In, in_len: int, out: _Ptr, out_cap: int, lens: _Ptr, max_pkts: int, why: _Ptr, /
    ) -> int: ...
    def aiou_tun_coalesce_plan(self, pkts: _Ptr, lens: _Ptr, n: int, flags: int, plan: _Ptr, /) -> int: ...
    def aiou_tun_coalesce_emit(
        self, pkts: _Ptr, lens: _Ptr, plan: _Ptr, i: int, dst: _Ptr, dst_cap: int, /
    ) -> int: ...
    def aiou_tun_coalesce_iov(
        self, pkts: _Ptr, lens: _Ptr, plan: _Ptr, i: int, hdr: _Ptr, iov: _Ptr, iov_cap: int, /
    ) -> int: ...
    def aiou_offload_index(self, data: _In, data_len: int, lens: _Ptr, n: int, pkts: _Ptr, /) -> int: ...

ffi: FFI
lib: Lib
