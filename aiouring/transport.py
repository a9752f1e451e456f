"""TunTransport: an asyncio transport over a TUN/TAP device, and ``create_tun_connection``."""
from __future__ import annotations

import asyncio
from typing import Any, Callable, TypeVar

from .backends import AnyRing, Backend, choose_backend, get_ring
from .device import TunDevice
from .errors import ClosedError
from .protocol import TunProtocol
from .ring import ReadMode
from ._transport_base import RingTransportBase, State

__all__ = ["TunTransport", "create_tun_connection"]

P = TypeVar("P", bound=asyncio.BaseProtocol)


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
        protocol: Any,
        *,
        waiter: asyncio.Future[None] | None = None,
        read_mode: ReadMode = "auto",
        read_buffers: int = 256,
        backend_reason: str = "",
    ) -> None:
        asyncio.Transport.__init__(self, {"name": device.name})
        self._device = device
        self._fd = device.fileno()
        self._read_mode = ring.read_mode(read_mode)
        self._read_buffers = read_buffers
        self._backend_reason = backend_reason
        sink = ring.packet_sink(self._fd, self._on_sink_error, self._on_sink_progress, vnet=device.vnet_hdr)
        self._init_base(loop, ring, protocol, sink, waiter)

    # -- info -------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``name``, ``mtu``, ``fileno``, ``ring``, ``backend``,
        ``backend_reason`` (why that backend), ``read_mode``, ``mode``
        (``"tun"``/``"tap"``), ``device``."""
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
            self._fd, self._device.read_size, self._on_records, stopped,
            mode=self._read_mode, buffers=self._read_buffers,  # type: ignore[arg-type]
        )
        return source

    def _call_item(self, hook: Callable[..., None], packet: bytes) -> None:
        self._call(hook, packet)

    # -- writing ------------------------------------------------------------------

    def write(self, data: Any) -> None:
        """Send one packet.  Raises ``TypeError`` for a non-bytes-like,
        ``ValueError`` for an empty packet or one larger than
        ``get_extra_info("mtu")`` plus the device's headers, ``ClosedError``
        after ``close()``/``abort()``."""
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                try:
                    memoryview(data)
                except TypeError:
                    raise TypeError(f"packet must be a bytes-like object, not {type(data).__name__}") from None
            data = bytes(data)
        size = len(data)
        device = self._device
        if not size or size > device.max_packet_size:
            if not size:
                raise ValueError("cannot write an empty packet")
            raise ValueError(
                f"packet of {size} bytes is larger than {device.name}'s limit of {device.max_packet_size} "
                f"(MTU {device.mtu} + {device.header_size} header bytes)"
            )
        if self._state is not State.OPEN:
            raise ClosedError(f"write() on a closed TUN transport ({device.name})")
        self._sink.write(data)
        if not self._protocol_paused and self._sink.buffered > self._high_water:
            self._maybe_pause_protocol()

    def writelines(self, packets: Any) -> None:
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
    fd: Any = None,
    device: TunDevice | None = None,
    mode: str = "tun",
    mtu: int | None = None,
    packet_info: bool = False,
    addresses: Any = (),
    up: bool = True,
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
    Returns once ``connection_made`` has been called.  Raises
    ``PermissionError``/``FileNotFoundError`` when a TUN cannot be opened here.
    """
    loop = asyncio.get_running_loop()
    if fd is not None and device is not None:
        raise ValueError("pass fd= or device=, not both")
    adopted = fd is not None or device is not None
    if adopted and (name is not None or mode != "tun" or packet_info):
        raise ValueError("name, mode and packet_info come from the adopted device: do not pass them with fd= or device=")
    reason = "the ring given"
    if ring is None:
        chosen, reason = choose_backend(backend, "tun")
        ring = get_ring(chosen)  # type: ignore[arg-type]
    ring.read_mode(read_mode)  # a bad mode is refused before a device is opened
    if device is None:
        device = TunDevice.adopt(fd) if fd is not None else TunDevice.open(name, mode=mode, packet_info=packet_info)
    try:
        if mtu is not None or addresses or (up and not adopted):
            await device.configure(mtu=mtu, addresses=addresses, up=up)
        protocol = protocol_factory()
        waiter = loop.create_future()
        transport = TunTransport(
            loop, ring, device, protocol,
            waiter=waiter, read_mode=read_mode, read_buffers=read_buffers, backend_reason=reason,
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
