"""TunTransport: an asyncio transport over a TUN/TAP device and a ring.

The transport decides, the ring performs: it keeps one packet reader armed on
the device (paused by cancelling it, so the kernel holds packets back), keeps
a queue of whole packets to write (never coalesced: a TUN write is one
packet), and reacts to completions.  It never makes a syscall itself, which
is what lets ``aiouring.testing.FakeRing`` run this same code.

State: ``_closing`` (close() or abort() was called), ``_finished`` (the
teardown has been scheduled), ``_paused`` (reading paused by the protocol),
``_protocol_paused`` (``pause_writing`` was called).  Teardown waits for the
reader to stop and every in-flight write to complete, so the device's fd is
closed only once the kernel holds no request on it; then
``connection_lost`` is called exactly once, through ``call_soon``.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import warnings
from typing import Any, Callable

from .backends import AnyRing, get_ring
from .device import TunDevice
from .errors import ClosedError, oserror
from .protocol import TunProtocol
from ._transport_base import RingTransportBase

__all__ = ["TunTransport", "create_tun_connection"]

logger = logging.getLogger("aiouring")

_PACKET_OVERHEAD = 8  # per queued packet in the write buffer size, as asyncio's datagram transport counts


class TunTransport(RingTransportBase, asyncio.Transport):
    """Transport of whole packets to and from a TUN/TAP device.

    ``write(packet)`` never blocks: it hands the packet to the ring's write
    pool, or queues it here when the pool is full.  Flow control follows
    asyncio: ``pause_writing()`` above the high-water mark,
    ``resume_writing()`` at the low one, counting the bytes queued here.
    A write that fails calls ``protocol.error_received(exc)`` and the
    transport stays open; a read error is fatal (``connection_lost(exc)``).
    ``close()`` stops reading and flushes queued writes; ``abort()`` drops them.

    What each fault does:

    * read ``-EAGAIN``/``-EINTR``: the read is re-armed, nothing is reported.
    * read ``-ENOBUFS`` (the buffer ring ran dry) or a multishot read ending
      without ``IORING_CQE_F_MORE``: buffers are already back in the ring; the
      read is re-armed; packets still queued in the device are read next.
    * read ``-ECANCELED`` nobody asked for: re-armed; if the ring is closing,
      ``connection_lost(ClosedError)``.
    * any other read error (``-EIO``, ``-EBADFD``...): ``connection_lost(exc)``.
    * write errors (``-EIO`` on a device whose link is down, ``-EINVAL`` for a
      packet the driver refuses, ``-ECANCELED``, ``-EAGAIN``...):
      ``error_received(exc)`` for that packet; later packets go on.
    * a full write pool or submission queue: packets wait here (counted by
      ``get_write_buffer_size``) and go out in order when there is room.
    * an overflowed completion queue: nothing to do; the kernel keeps the
      CQEs and the ring's next reap flushes them.
    * the ring closed under the transport: ``connection_lost(ClosedError)``.
    * an exception raised by the protocol: reported to the loop's exception
      handler, then ``connection_lost(exc)``.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ring: AnyRing,
        device: TunDevice,
        protocol: Any,
        *,
        waiter: asyncio.Future | None = None,
        read_mode: str = "auto",
        read_buffers: int = 256,
    ) -> None:
        asyncio.Transport.__init__(self, {"name": device.name, "mtu": device.mtu})
        self._init_base(loop, ring, protocol)
        self._device = device
        self._fd = device.fileno()
        self._read_mode = read_mode
        self._read_buffers = read_buffers
        self._max_packet = device.max_packet_size
        self._backlog: list[bytes] = []
        self._writer = ring.open_writer(self._fd, self._on_write_error, self._on_write_space)
        loop.call_soon(self._start, waiter)

    # -- info -------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``name``, ``mtu``, ``fileno``, ``ring``, ``backend``, ``read_mode``,
        ``mode`` (``"tun"``/``"tap"``), ``device``."""
        if name == "fileno":
            return self._fd if not self._device.closed else default
        if name == "ring":
            return self._ring
        if name == "backend":
            return self._ring.backend
        if name == "read_mode":
            return self._reader.mode if self._reader is not None else self._planned_read_mode()
        if name == "mode":
            return self._device.mode
        if name == "device":
            return self._device
        if name == "mtu":
            return self._device.mtu
        return super().get_extra_info(name, default)

    def _planned_read_mode(self) -> str:
        if self._ring.backend == "epoll":
            return "readiness"
        if self._read_mode != "auto":
            return self._read_mode
        from .ring import _multishot_supported

        return "multishot" if _multishot_supported() else "single"

    def __repr__(self) -> str:
        state = ["closed" if self._finished else "closing" if self._closing else "open"]
        if not self._finished:
            state.append("paused" if self._paused else "reading")
        return (
            f"<TunTransport {self._device.name} fd={self._fd} {' '.join(state)} "
            f"backend={self._ring.backend} bufsize={self._buffer_size}>"
        )

    # -- reading ------------------------------------------------------------------

    def _arm_reader(self) -> None:
        if self._ring.backend == "epoll":
            self._reader = self._ring.start_packet_reader(
                self._fd, self._device.read_size, self._on_packets, self._on_reader_stopped
            )
        else:
            self._reader = self._ring.start_packet_reader(
                self._fd,
                self._device.read_size,
                self._on_packets,
                self._on_reader_stopped,
                mode=self._read_mode,
                buffers=self._read_buffers,
            )

    def _on_packets(self, packets: list[bytes]) -> None:
        if self._closing:
            return  # the application asked to stop receiving
        if self._paused or self._backlog:
            # keep order: packets held while paused go first
            self._backlog.extend(packets)
            return
        self._deliver(packets)

    def _deliver(self, packets: list[bytes]) -> None:
        try:
            self._protocol.packets_received(packets)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.packets_received() call failed.")

    def _on_reader_stopped(self, exc: BaseException | None) -> None:
        self._reader_stopped()
        if exc is not None and not self._closing:
            if isinstance(exc, ClosedError):
                self._force_close(exc)
            else:
                self._fatal_error(exc, "Fatal read error on TUN transport")
            return
        self._maybe_finish()

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        """Stop handing packets to the protocol; the read is cancelled in the
        kernel, so packets wait in the device's queue.  Packets the kernel had
        already read are kept and handed over on ``resume_reading``."""
        if self._closing or self._paused:
            return
        self._paused = True
        if self._started:
            self._stop_reader()

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        if not self._started:
            return
        if self._backlog:
            self._loop.call_soon(self._deliver_backlog)
        self._arm_reader()

    def _deliver_backlog(self) -> None:
        if self._backlog and not self._paused and not self._closing:
            backlog, self._backlog = self._backlog, []
            self._deliver(backlog)

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
        if not size:
            raise ValueError("cannot write an empty packet")
        if size > self._max_packet:
            raise ValueError(
                f"packet of {size} bytes is larger than {self._device.name}'s limit of {self._max_packet} "
                f"(MTU {self._device.mtu} + {self._device.header_size} header bytes)"
            )
        if self._closing:
            raise ClosedError(f"write() on a closed TUN transport ({self._device.name})")
        if not self._queue and self._writer.write(data):
            return
        self._queue.append(data)
        self._buffer_size += self._queued_size(data)
        if not self._protocol_paused and self._buffer_size > self._high_water:
            self._maybe_pause_protocol()

    def writelines(self, packets: Any) -> None:
        """Write each packet of an iterable (each one a whole packet)."""
        for packet in packets:
            self.write(packet)

    def _on_write_space(self) -> None:
        """The ring has room again: hand over what is queued, in order."""
        queue = self._queue
        writer = self._writer
        try:
            while queue:
                if not writer.write(queue[0]):
                    break
                self._buffer_size -= self._queued_size(queue.popleft())
        except ClosedError as exc:
            self._force_close(exc)
            return
        if self._protocol_paused and self._buffer_size <= self._low_water:
            self._maybe_resume_protocol()
        if self._closing:
            self._maybe_finish()

    def _on_write_error(self, res: int) -> None:
        if res == -errno.ECANCELED and (self._ring.closed or self._finished):
            return
        if self._finished:
            return
        try:
            self._protocol.error_received(oserror(res, f"write to {self._device.name}"))
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.error_received() call failed.")

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("a TUN device has no end-of-file to write")

    def _queued_size(self, packet: bytes) -> int:
        return len(packet) + _PACKET_OVERHEAD

    # -- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Stop reading, write what is queued, then close the device and call
        ``connection_lost(None)``.  Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._backlog.clear()
        if self._started:
            self._stop_reader()
        self._maybe_finish()

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on TUN transport") -> None:
        if not isinstance(exc, OSError) or self._loop.get_debug():
            self._loop.call_exception_handler(
                {"message": message, "exception": exc, "transport": self, "protocol": self._protocol}
            )
        elif isinstance(exc, OSError):
            logger.debug("%r: %s", self, message, exc_info=True)
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        self._backlog.clear()
        super()._force_close(exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            if self._started:
                self._protocol.connection_lost(exc)
        finally:
            self._writer.close()
            self._device.close()
            self._protocol = None
            self._queue.clear()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not self._finished and not self._device.closed:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._device.close()


async def create_tun_connection(
    protocol_factory: Callable[[], Any],
    name: str | None = None,
    *,
    fd: Any = None,
    mode: str = "tun",
    mtu: int | None = None,
    packet_info: bool = False,
    addresses: Any = (),
    up: bool = True,
    ring: AnyRing | None = None,
    backend: str = "auto",
    read_mode: str = "auto",
    read_buffers: int = 256,
) -> tuple[TunTransport, TunProtocol]:
    """Open a TUN/TAP device and connect a protocol to it, like ``loop.create_connection``.

    ``name=None`` lets the kernel pick ``tunN``/``tapN``; ``fd=`` adopts an
    open TUN fd instead (see ``Tun.from_fd``).  ``mtu``, ``addresses`` and
    ``up`` configure the interface through netlink.  ``ring`` defaults to the
    loop's ring for ``backend`` (``"auto"``, ``"uring"`` or ``"epoll"``).
    Returns once ``connection_made`` has been called.  Raises
    ``PermissionError``/``FileNotFoundError`` when a TUN cannot be opened here.
    """
    loop = asyncio.get_running_loop()
    if ring is None:
        ring = get_ring(backend)
    device = TunDevice.adopt(fd) if fd is not None else TunDevice.open(name, mode=mode, packet_info=packet_info)
    try:
        if mtu is not None or addresses or (up and fd is None):
            await device.configure(mtu=mtu, addresses=addresses, up=up)
        protocol = protocol_factory()
        waiter = loop.create_future()
        transport = TunTransport(
            loop, ring, device, protocol,
            waiter=waiter, read_mode=read_mode, read_buffers=read_buffers,
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
