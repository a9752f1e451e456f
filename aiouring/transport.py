"""TunTransport: an asyncio transport over a TUN/TAP device, and ``create_tun_connection``."""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import struct
from typing import Any, Callable, Iterable, Literal, TypeVar, Union

from . import offload as _offload
from ._native.offload import checksum
from .backends import AnyRing, Backend, choose_backend, get_ring
from .device import FdOrFile, TunDevice
from ._devargs import Addresses, Mode, Routes
from .errors import ClosedError
from .protocol import TunProtocol
from .ring import ReadMode
from ._transport_base import RingTransportBase, State
from ._typing import Buffer

__all__ = ["Offload", "TunTransport", "create_tun_connection"]

logger = logging.getLogger("aiouring")

P = TypeVar("P", bound=asyncio.BaseProtocol)
Offload = _offload.Offload

# Reads with a virtio header: the header and the largest packet a TUN carries
# (an IPv6 packet: 40 + 65535).
_VNET_READ = _offload.VNET_HDR_SIZE + 40 + 65535


class TunTransport(RingTransportBase, asyncio.Transport):
    """Transport of whole packets to and from a TUN/TAP device.

    ``write(packet)`` never blocks: packets queue and leave together at the
    end of the loop iteration, whole and in order (never coalesced into one
    write).  Flow control follows asyncio: ``pause_writing()`` above the
    high-water mark, ``resume_writing()`` at the low one, counting every byte
    written and not yet taken by the kernel.  ``packets_received(list)`` (or
    ``packet_received`` per packet) gets what is read; ``pause_reading()``
    stops it at once, even in the middle of a batch, and nothing is lost.
    ``close()`` stops reading and flushes; ``abort()`` drops.

    What each fault does:

    * a read ending with ``-EAGAIN``/``-EINTR``/``-ENOBUFS``, or a multishot
      read ending without ``IORING_CQE_F_MORE``: re-armed, nothing reported;
    * a read ``-ECANCELED`` nobody asked for: re-armed; if the ring is
      closing, ``connection_lost(ClosedError)``;
    * any other read error (``-EIO``, ``-EBADFD``...): ``connection_lost(exc)``;
    * a write the device refuses (``-EIO`` on a link that is down, ``-EINVAL``
      for a packet the driver rejects...): ``error_received(exc)`` for that
      packet; later packets go on;
    * an overflowed completion queue: nothing to do; the kernel keeps the
      CQEs and the ring's next reap flushes them;
    * the ring closed under the transport: ``connection_lost(ClosedError)``;
    * an exception raised by a protocol callback: reported to the loop's
      exception handler; the transport goes on.
    """

    _item_hook_name = "packet_received"
    _batch_hook_name = "packets_received"

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ring: AnyRing,
        device: TunDevice,
        protocol: asyncio.BaseProtocol,
        *,
        waiter: asyncio.Future[None] | None = None,
        read_mode: ReadMode = "auto",
        read_buffers: int = 256,
        backend_reason: str = "",
        offloads: frozenset[str] = frozenset(),
        coalesce: bool = False,
    ) -> None:
        """``offloads``: what the device took (``TunDevice.enable_offloads``);
        ``coalesce``: merge written segments into super-packets."""
        asyncio.Transport.__init__(self, {"name": device.name})
        self._device = device
        self._fd = device.fileno()
        self._vnet = bool(device.vnet_hdr)
        self._read_mode = ring.read_mode(read_mode)
        self._read_buffers = read_buffers if not self._vnet else min(read_buffers, 64)
        self._backend_reason = backend_reason
        self._offloads = offloads
        sink = ring.packet_sink(
            self._fd, self._on_sink_error, self._on_sink_progress, vnet=self._vnet,
            coalesce_tcp=coalesce and bool(offloads & {"tso4", "tso6"}),
            coalesce_udp=coalesce and bool(offloads & {"uso4", "uso6"}),
        )
        self._init_base(loop, ring, protocol, sink, waiter)

    # -- info -------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``name``, ``mtu``, ``fileno``, ``ring``, ``backend``,
        ``backend_reason`` (why that backend), ``read_mode``, ``mode``
        (``"tun"``/``"tap"``), ``device``, ``offload`` (what is on now: the
        device's ``tso4``/``tso6``/``uso4``/``uso6``, and ``coalesce-tcp``/
        ``coalesce-udp`` while writes are merged into super-packets),
        ``stats`` (a ``TransportStats`` snapshot)."""
        if name == "stats":
            return self._stats()
        if name == "offload":
            return self._offloads | {"coalesce-" + kind for kind in self._sink.offloads}
        if name == "fileno":
            return self._fd if not self._device.closed else default
        if name == "ring":
            return self._ring
        if name == "backend":
            return self._ring.backend
        if name == "backend_reason":
            return self._backend_reason
        if name == "read_mode":
            return self._read_mode
        if name == "mode":
            return self._device.mode
        if name == "device":
            return self._device
        if name == "mtu":
            return self._device.mtu
        return super().get_extra_info(name, default)

    def __repr__(self) -> str:
        state = [self._state.value]
        if self._state is State.OPEN:
            state.append("paused" if self._read_paused else "reading")
        return (
            f"<TunTransport {self._device.name} fd={self._fd} {' '.join(state)} "
            f"backend={self._ring.backend} bufsize={self._sink.buffered}>"
        )

    # -- reading ------------------------------------------------------------------

    def _default_protocol_class(self) -> type:
        return TunProtocol

    def _open_source(self) -> Any:
        source: Any = None

        def stopped(exc: BaseException | None) -> None:
            self._on_source_stopped(source, exc)

        source = self._ring.packet_source(
            self._fd, _VNET_READ if self._vnet else self._device.read_size, self._on_records, stopped,
            mode=self._read_mode, buffers=self._read_buffers, vnet=self._vnet,  # type: ignore[arg-type]  # a mode ring.read_mode() returned (a str)
        )
        return source

    def _call_item(self, hook: Callable[..., None], packet: bytes) -> None:
        self._call(hook, packet)

    # -- writing ------------------------------------------------------------------

    def write(self, data: Buffer) -> None:
        """Send one packet.  Raises ``TypeError`` for a non-bytes-like,
        ``ValueError`` for an empty packet or one larger than
        ``get_extra_info("mtu")`` plus the device's headers, ``ClosedError``
        after ``close()``/``abort()``."""
        data = self.check_packet(data)
        if self._state is not State.OPEN:
            raise ClosedError(f"write() on a closed TUN transport ({self._device.name})")
        self._sink.write(data)
        if not self._protocol_paused and self._sink.buffered > self._high_water:
            self._maybe_pause_protocol()

    def check_packet(self, data: Buffer) -> bytes:
        """``data`` as the ``bytes`` ``write`` would take, or the exception
        ``write`` would raise for it.  (The largest packet is the MTU plus the
        device's own headers: ``tun_pi``, Ethernet; not the virtio header,
        which the transport writes.)"""
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                try:
                    memoryview(data)
                except TypeError:
                    raise TypeError(f"packet must be a bytes-like object, not {type(data).__name__}") from None
            data = bytes(data)
        size = len(data)
        device = self._device
        limit = device.max_packet_size - (device.vnet_hdr_size if device.vnet_hdr else 0)
        if not size or size > limit:
            if not size:
                raise ValueError("cannot write an empty packet")
            raise ValueError(
                f"packet of {size} bytes is larger than {device.name}'s limit of {limit} "
                f"(MTU {device.mtu} + {limit - device.mtu} header bytes)"
            )
        return data

    def writelines(self, packets: Iterable[Buffer]) -> None:
        """Write each packet of an iterable (each one a whole packet)."""
        for packet in packets:
            self.write(packet)

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("a TUN device has no end-of-file to write")

    # -- closing ------------------------------------------------------------------

    def _release(self) -> None:
        self._device.close()


async def create_tun_connection(
    protocol_factory: Callable[[], P],
    name: str | None = None,
    *,
    fd: FdOrFile | None = None,
    device: TunDevice | None = None,
    mode: Mode = "tun",
    mtu: int | None = None,
    packet_info: bool = False,
    addresses: Addresses = (),
    routes: Routes = (),
    up: bool = True,
    txqueuelen: int | None = None,
    mac: str | bytes | None = None,
    multi_queue: bool = False,
    persist: bool = False,
    owner: int | str | None = None,
    group: int | str | None = None,
    offload: Offload = "auto",
    ring: AnyRing | None = None,
    backend: Backend = "auto",
    read_mode: ReadMode = "auto",
    read_buffers: int = 256,
) -> tuple[TunTransport, P]:
    """Open a TUN/TAP device and connect a protocol to it, like ``loop.create_connection``.

    ``name=None`` lets the kernel pick ``tunN``/``tapN``; ``fd=`` adopts an
    open TUN fd instead (see ``Tun.from_fd``), and ``device=`` an open
    ``TunDevice``; ``name``, ``mode`` and ``packet_info`` then come from it
    and must not be given.  The transport owns the device and closes it.  ``mtu``,
    ``addresses`` and ``up`` configure the interface through netlink.
    ``ring`` defaults to the loop's ring for ``backend`` (``"auto"``,
    ``"uring"`` or ``"epoll"``; ``get_extra_info("backend_reason")`` says why).

    ``offload``: TUN super-packets (``IFF_VNET_HDR`` with TSO and, where the
    kernel has it, USO).  Reads of up to 64 KiB are split into ordinary
    packets and segments written in one loop iteration are merged into
    super-packets, in C; the protocol sees and writes ordinary packets either
    way.  ``"auto"`` (the default) uses them when the kernel takes them and
    logs why not otherwise; ``True`` raises if it cannot; ``False`` does
    without.  Only for TUN mode without ``packet_info``; an adopted fd uses
    them if it was opened with ``IFF_VNET_HDR``.  The environment variable
    ``AIOURING_DISABLE_OFFLOADS`` (``tun`` or ``all``) turns them off; a
    kernel that refuses a merged write (seen on some vendor kernels) makes
    the transport stop merging and resend those packets one by one.
    ``get_extra_info("offload")`` says what is on.

    Returns once ``connection_made`` has been called.  Raises
    ``PermissionError``/``FileNotFoundError`` when a TUN cannot be opened here.
    """
    loop = asyncio.get_running_loop()
    if fd is not None and device is not None:
        raise ValueError("pass fd= or device=, not both")
    adopted = fd is not None or device is not None
    if adopted and (name is not None or mode != "tun" or packet_info or multi_queue or persist or owner is not None or group is not None):
        raise ValueError(
            "name, mode, packet_info, multi_queue, persist, owner and group come from the adopted device: "
            "do not pass them with fd= or device="
        )
    reason = "the ring given"
    if ring is None:
        chosen, reason = choose_backend(backend, "tun")
        ring = get_ring(chosen)
    ring.read_mode(read_mode)  # a bad mode is refused before a device is opened
    want = _want_offload(offload, mode, packet_info)
    if device is None:
        if fd is not None:
            device = TunDevice.adopt(fd)
        else:
            device = await TunDevice.create(
                name, mode=mode, packet_info=packet_info, multi_queue=multi_queue, vnet_hdr=want,
                persist=persist, owner=owner, group=group, mtu=mtu, addresses=addresses, routes=routes,
                up=up, txqueuelen=txqueuelen, mac=mac,
            )
    elif not isinstance(device, TunDevice):
        raise TypeError(f"device must be a TunDevice, not {type(device).__name__}")
    try:
        offloads, coalesce = _enable_offloads(device, offload, want)
        if adopted and (mtu is not None or addresses or routes or txqueuelen is not None or mac is not None):
            await device.configure(mtu=mtu, addresses=addresses, routes=routes, up=up, txqueuelen=txqueuelen, mac=mac)
        if coalesce:
            coalesce = _coalesced_write_accepted(device)
        protocol = protocol_factory()
        waiter = loop.create_future()
        transport = TunTransport(
            loop, ring, device, protocol,
            waiter=waiter, read_mode=read_mode, read_buffers=read_buffers, backend_reason=reason,
            offloads=offloads, coalesce=coalesce,
        )
    except BaseException:
        device.close()
        raise
    try:
        await waiter
    except BaseException:
        transport.abort()
        raise
    return transport, protocol


def _want_offload(offload: Any, mode: str, packet_info: bool) -> bool:
    """Whether to open the device with a virtio header."""
    if not (offload is True or offload is False or (isinstance(offload, str) and offload == "auto")):
        raise ValueError(f"offload must be 'auto', True or False, not {offload!r}")
    if offload is False:
        return False
    why = None
    if "tun" in _offload.disabled():
        why = f"{_offload.DISABLE_ENV} turns them off"
    elif mode != "tun" or packet_info:
        why = "they need TUN mode without packet_info"
    if why is None:
        return True
    if offload is True:
        raise ValueError(f"offload=True, but TUN offloads cannot be used: {why}")
    logger.info("aiouring: TUN offloads off: %s", why)
    return False


def _enable_offloads(device: TunDevice, offload: Any, want: bool) -> tuple[frozenset[str], bool]:
    """(what the device took, whether to merge writes)."""
    if not device.vnet_hdr:
        if offload is True:
            raise ValueError(f"offload=True, but {device.name}'s fd was opened without IFF_VNET_HDR")
        return frozenset(), False
    if not want and offload is False:
        # an adopted vnet fd: its framing stays, nothing is merged
        return frozenset(), False
    try:
        offloads = device.enable_offloads(tso=True, uso=True)
    except OSError as exc:
        if offload is True:
            raise
        logger.info("aiouring: TUN offloads off on %s: %s", device.name, exc)
        return frozenset(), False
    return offloads, bool(offloads & {"tso4", "tso6", "uso4", "uso6"})


def _coalesced_write_accepted(device: TunDevice) -> bool:
    """Write one merged super-packet (two TCP segments to 127.0.0.1, which
    the kernel drops as a martian) to see that the kernel takes merged writes:
    some LTS and vendor kernels accept IFF_VNET_HDR, then refuse them with
    EINVAL.  Any other answer (EIO on a link that is down) proves nothing:
    the transport finds out at its first real merged write."""
    probe = _offload.gro_coalesce([_probe_segment(1000 + 100 * i) for i in range(2)], tcp=True)
    if len(probe) != 1:
        return True  # not merged: nothing to learn
    try:
        os.write(device.fileno(), probe[0])
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            logger.warning("aiouring: the kernel refuses merged TUN writes on %s (EINVAL): writes go out one by one", device.name)
            return False
    return True


def _probe_segment(seq: int) -> bytes:
    payload = bytes(100)
    tcp = struct.pack("!HHIIBBHHH", 9, 9, seq, 1, 5 << 4, 0x10, 1024, 0, 0) + payload
    src = dst = bytes([127, 0, 0, 1])
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    return ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:] + tcp
