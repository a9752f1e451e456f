"""Tun: the awaitable face of a TUN/TAP device (``await tun.read()``), and ``open_tun``.

Built on the same ``TunTransport`` as ``create_tun_connection``, with a
``PacketQueueProtocol`` between them: there is one data path, not two.
"""
from __future__ import annotations

import asyncio
import warnings
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterable, cast

from .backends import AnyRing, Backend
from .device import FdOrFile, Mode, TunDevice
from ._devargs import Addresses, Routes
from .errors import ClosedError
from .protocol import PacketQueueProtocol
from .ring import ReadMode
from .transport import Offload, TunTransport, create_tun_connection
from ._transport_base import TransportStats
from ._typing import Buffer

__all__ = ["Tun", "open_tun"]


class _Ready:
    """An awaitable that is already done (what ``Tun.write`` returns when it need not wait)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return cast(Generator[Any, None, None], iter(()))  # an exhausted iterator: done at once


_READY = _Ready()


class Tun:
    """An open TUN/TAP device read and written with ``await``.

    * ``await read()`` returns one packet; a packet already received is
      returned without suspending.  Reads stay armed in the kernel while the
      application is busy.  Several tasks may read at once: they are served in
      the order they started waiting, one packet each.
    * Cancelling a ``read()`` (directly, or through ``asyncio.wait_for`` /
      ``asyncio.timeout``) never loses a packet: a packet stays queued until a
      reader has resumed and taken it, so the next ``read()`` returns it.
    * ``await write(packet)`` queues one packet and returns; it waits only while
      the write buffer is above its high-water mark.  ``ValueError``/
      ``TypeError`` for a bad packet and ``ClosedError`` after close are raised
      before anything is written.  A packet the kernel refuses later (a link
      that is down: ``EIO``) is raised by the next ``write()``, ``write_batch()``
      or ``drain()`` as its ``OSError``, with the refused packet in its
      ``packet`` attribute; the packets given to that call were written all
      the same.  A refused packet never takes another one with it.
    * ``await read_batch()`` and ``await write_batch(packets)`` do the same a
      batch at a time (``async for batch in tun.batches()``): one call per
      batch instead of one per packet.
    * ``close()`` then ``await wait_closed()``, or ``async with``.  Readers
      waiting at close are woken with ``ClosedError``; every call after close
      raises it.
    """

    def __init__(self, transport: TunTransport, protocol: PacketQueueProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._loop = protocol._loop
        self._closed = False
        self._name: str = transport.get_extra_info("name")

    # -- opening --------------------------------------------------------------------

    @classmethod
    async def from_fd(
        cls,
        fd_or_file: FdOrFile,
        *,
        ring: AnyRing | None = None,
        backend: Backend = "auto",
        read_mode: ReadMode = "auto",
        max_queued: int = 4096,
        offload: Offload = "auto",
    ) -> "Tun":
        """Adopt a TUN/TAP fd that is already open (int or file object), taking
        ownership of it.  Raises ``ValueError`` if it is not a TUN/TAP fd.
        Offloads are used if the fd was opened with ``IFF_VNET_HDR``."""
        if fd_or_file is None:
            raise TypeError("from_fd needs an fd or a file object, not None")
        return await open_tun(fd=fd_or_file, ring=ring, backend=backend, read_mode=read_mode, max_queued=max_queued, offload=offload)

    # -- properties --------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu(self) -> int:
        mtu: int = self._transport.get_extra_info("mtu")
        return mtu

    @property
    def mode(self) -> Mode:
        mode: Mode = self._transport.get_extra_info("mode")
        return mode

    @property
    def transport(self) -> TunTransport:
        return self._transport

    @property
    def device(self) -> TunDevice:
        """The ``TunDevice``: its coroutines change the interface while it runs
        (``add_route``, ``add_address``, ``set_mtu``, ``set_up``, ...)."""
        device: TunDevice = self._transport.get_extra_info("device")
        return device

    @property
    def stats(self) -> TransportStats:
        """What this Tun has moved so far (a ``TransportStats`` snapshot; its
        transport's ``get_extra_info("stats")``)."""
        stats: TransportStats = self._transport.get_extra_info("stats")
        return stats

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        self._check_open()
        fd: int = self._transport.get_extra_info("fileno")
        return fd

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's ``get_extra_info`` (``ring``, ``backend``, ``read_mode``, ...)."""
        return self._transport.get_extra_info(name, default)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"queued={len(self._protocol.queue)}"
        return f"<Tun {self._name} {state} {self._transport!r}>"

    # -- reading --------------------------------------------------------------------

    async def read(self) -> bytes:
        """One packet; see the class docstring for cancellation and close."""
        proto = self._protocol
        queue = proto.queue
        while True:
            if self._closed:
                raise ClosedError(f"TUN device {self._name} is closed")
            if queue:
                packet = queue.popleft()
                if proto._reading_paused:
                    proto.took()
                return packet
            if proto.lost:
                raise self._lost_error()
            await self._wait_for_packets()

    async def _wait_for_packets(self) -> None:
        """Until the protocol wakes this reader (a packet, close or loss).  A
        reader cancelled after it was woken passes the wake-up on, so the
        packet it will not take is not left waiting."""
        proto = self._protocol
        fut = self._loop.create_future()
        proto.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                proto.wake_next()  # we were woken for a packet we will not take
            else:
                try:
                    proto.waiters.remove(fut)
                except ValueError:
                    pass
            raise

    async def read_batch(self, max_packets: int = 64) -> list[bytes]:
        """At least one packet and at most ``max_packets``, in order: what is
        queued now, or (only when nothing is) the next packets to arrive.
        Cancellation and close as for ``read()``: packets leave the queue only
        when the call returns them."""
        if not isinstance(max_packets, int) or isinstance(max_packets, bool) or max_packets < 1:
            raise ValueError(f"max_packets must be a positive int, not {max_packets!r}")
        proto = self._protocol
        queue = proto.queue
        while not queue:
            if self._closed:
                raise ClosedError(f"TUN device {self._name} is closed")
            if proto.lost:
                raise self._lost_error()
            await self._wait_for_packets()
        if self._closed:
            raise ClosedError(f"TUN device {self._name} is closed")
        if len(queue) <= max_packets:
            batch = list(queue)
            queue.clear()
        else:
            batch = [queue.popleft() for _ in range(max_packets)]
        if proto._reading_paused:
            proto.took()
        return batch

    async def batches(self, max_packets: int = 64) -> AsyncIterator[list[bytes]]:
        """``read_batch(max_packets)`` until the device is closed."""
        while True:
            try:
                yield await self.read_batch(max_packets)
            except ClosedError:
                return

    def read_nowait(self) -> bytes | None:
        """A packet already received, or ``None``."""
        self._check_open()
        if self._protocol.queue:
            packet = self._protocol.queue.popleft()
            self._protocol.took()
            return packet
        return None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.read()
        except ClosedError:
            raise StopAsyncIteration from None

    # -- writing --------------------------------------------------------------------

    def write(self, packet: Buffer) -> Awaitable[None]:
        """Write one packet: ``await tun.write(packet)``.

        The packet is handed over when ``write`` is called, and the call
        raises right away if it cannot be (see the class docstring); the
        awaitable it returns waits only while the write buffer is above its
        high-water mark.  (It is not a coroutine, so a ``write`` that is not
        awaited still writes and warns about nothing.)
        """
        if self._closed:
            raise ClosedError(f"TUN device {self._name} is closed")
        proto = self._protocol
        self._transport.write(packet)
        if proto.write_errors:
            raise self._write_error()
        if proto._writing_paused:
            return proto.drain()
        return _READY

    def write_batch(self, packets: Iterable[Buffer]) -> Awaitable[None]:
        """Write packets (an iterable of bytes-like), each a whole packet, in
        order.  Every packet is checked before any is written: a bad one
        raises ``ValueError``/``TypeError`` and none is written.  Otherwise as
        ``write()``: the awaitable waits only above the high-water mark, and
        an earlier refused packet is raised after these went out."""
        if self._closed:
            raise ClosedError(f"TUN device {self._name} is closed")
        batch = [self._transport.check_packet(p) for p in packets]
        write = self._transport.write
        for packet in batch:
            write(packet)
        proto = self._protocol
        if proto.write_errors:
            raise self._write_error()
        if proto._writing_paused:
            return proto.drain()
        return _READY

    def _write_error(self) -> OSError:
        exc = self._protocol.write_errors.popleft()
        exc.add_note("raised for a packet written earlier (in exc.packet); the packets passed to this call were written")
        return exc

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark; raises the
        ``OSError`` of a packet the kernel refused since the last call that
        reported one (``exc.packet`` is that packet)."""
        self._check_open()
        if self._protocol.write_errors:
            raise self._write_error()
        await self._protocol.drain()

    # -- closing ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop reading, flush queued writes and close the device.  Readers
        waiting now are woken with ``ClosedError``.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        proto = self._protocol
        while proto.waiters:
            fut = proto.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
        self._transport.close()

    async def wait_closed(self) -> None:
        """Wait until the device's fd is closed and the kernel holds nothing of ours."""
        await asyncio.shield(self._protocol.closed_fut)

    async def aclose(self) -> None:
        self.close()
        await self.wait_closed()

    async def __aenter__(self) -> "Tun":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"TUN device {self._name} is closed")

    def _lost_error(self) -> BaseException:
        exc = self._protocol.lost_exc
        if exc is None:
            return ClosedError(f"TUN device {self._name} was closed")
        return exc

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not self._closed and not self._protocol.lost:
            _warn(f"unclosed {self!r}", ResourceWarning, source=self)
            try:
                self._transport.abort()
            except Exception:
                pass


class _OpeningTun:
    """What ``open_tun`` returns: await it for the ``Tun``, or use it with
    ``async with`` directly (the ``Tun`` is closed on the way out)."""

    __slots__ = ("_open", "_tun", "_used")

    def __init__(self, opener: Coroutine[Any, Any, Tun]) -> None:
        self._open = opener
        self._tun: Tun | None = None
        self._used = False

    def __await__(self) -> Generator[Any, None, Tun]:
        self._used = True
        return self._open.__await__()

    async def __aenter__(self) -> Tun:
        self._used = True
        self._tun = await self._open
        return self._tun

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._tun is not None:
            await self._tun.aclose()

    def __del__(self) -> None:
        # never awaited: close it, so there is no "coroutine was never awaited"
        # warning (once awaited, the await holds the coroutine, and this
        # object may go first)
        if not self._used:
            self._open.close()


def open_tun(
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
    max_queued: int = 4096,
) -> _OpeningTun:
    """Open a TUN (or, with ``mode="tap"``, TAP) device as a ``Tun``:
    ``tun = await open_tun(...)``, or ``async with open_tun(...) as tun:``.

    ``name=None`` lets the kernel pick ``tunN``.  ``mtu``, ``addresses``
    (``"10.0.0.1/24"``, ``"fd00::1/64"``), ``routes``, ``up``,
    ``txqueuelen`` and ``mac`` configure the interface through netlink;
    ``multi_queue``, ``persist``, ``owner`` and ``group`` are as for
    ``TunDevice.open`` (see ``create_tun_connection``).  Later changes:
    ``tun.device`` (routes, addresses, MTU, link state).  ``offload``: ``"auto"`` (TUN super-packets when the
    kernel takes them), ``True`` (raise if it does not), ``False``; see
    ``create_tun_connection``.  ``ring``: the ring to use, by default the
    loop's ring for ``backend`` (``"auto"``, ``"uring"``, ``"epoll"``).
    ``max_queued``: packets held for ``read()`` before reading is paused in
    the kernel.  Raises ``PermissionError`` without CAP_NET_ADMIN,
    ``FileNotFoundError`` without ``/dev/net/tun``, ``FileExistsError`` for a
    name in use, ``ValueError``/``TypeError`` for a bad argument.
    """
    if not isinstance(max_queued, int) or isinstance(max_queued, bool) or max_queued < 1:
        raise ValueError(f"max_queued must be a positive int, not {max_queued!r}")

    async def opening() -> Tun:
        loop = asyncio.get_running_loop()
        transport, protocol = await create_tun_connection(
            lambda: PacketQueueProtocol(loop, max_queued),
            name,
            fd=fd,
            device=device,
            mode=mode,
            mtu=mtu,
            packet_info=packet_info,
            addresses=addresses,
            routes=routes,
            up=up,
            txqueuelen=txqueuelen,
            mac=mac,
            multi_queue=multi_queue,
            persist=persist,
            owner=owner,
            group=group,
            offload=offload,
            ring=ring,
            backend=backend,
            read_mode=read_mode,
        )
        return Tun(transport, protocol)

    return _OpeningTun(opening())
