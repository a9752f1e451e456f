"""Tun: the awaitable face of a TUN/TAP device (``await tun.read()``), and ``open_tun``.

Built on the same ``TunTransport`` as ``create_tun_connection``, with a
``PacketQueueProtocol`` between them: there is one data path, not two.
"""
from __future__ import annotations

import asyncio
import warnings
from typing import Any, AsyncIterator, Awaitable, Callable, Generator, cast

from .backends import AnyRing
from .errors import ClosedError
from .protocol import PacketQueueProtocol
from .transport import TunTransport, create_tun_connection

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
      the write buffer is above its high-water mark.  If ``write()`` raises, the
      packet given to it was not written: ``ValueError``/``TypeError`` for a bad
      packet, ``ClosedError`` after close, or the ``OSError`` of an earlier
      packet the kernel refused (with a note saying so).
    * ``close()`` then ``await wait_closed()``, or ``async with``.  Readers
      waiting at close are woken with ``ClosedError``; every call after close
      raises it.
    """

    def __init__(self, transport: TunTransport, protocol: PacketQueueProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._loop = protocol._loop
        self._closed = False
        self._name = transport.get_extra_info("name")

    # -- opening --------------------------------------------------------------------

    @classmethod
    async def from_fd(
        cls,
        fd_or_file: Any,
        *,
        ring: AnyRing | None = None,
        backend: str = "auto",
        read_mode: str = "auto",
        max_queued: int = 4096,
    ) -> "Tun":
        """Adopt a TUN/TAP fd that is already open (int or file object), taking
        ownership of it.  Raises ``ValueError`` if it is not a TUN/TAP fd."""
        if fd_or_file is None:
            raise TypeError("from_fd needs an fd or a file object, not None")
        return await open_tun(fd=fd_or_file, ring=ring, backend=backend, read_mode=read_mode, max_queued=max_queued)

    # -- properties --------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu(self) -> int:
        return self._transport.get_extra_info("mtu")

    @property
    def mode(self) -> str:
        return self._transport.get_extra_info("mode")

    @property
    def transport(self) -> TunTransport:
        return self._transport

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        self._check_open()
        return self._transport.get_extra_info("fileno")

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

    def write(self, packet: Any) -> Awaitable[None]:
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
        if proto.write_errors:
            exc = proto.write_errors.popleft()
            exc.add_note("raised for a packet written earlier; the packet passed to this call was not written")
            raise exc
        self._transport.write(packet)
        if proto._writing_paused:
            return proto.drain()
        return _READY

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark."""
        self._check_open()
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


async def open_tun(
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
    max_queued: int = 4096,
) -> Tun:
    """Open a TUN (or, with ``mode="tap"``, TAP) device and return a ``Tun``.

    ``name=None`` lets the kernel pick ``tunN``.  ``mtu``, ``addresses``
    (``"10.0.0.1/24"``, ``"fd00::1/64"``) and ``up`` configure the interface
    through netlink.  ``ring``: the ring to use, by default the loop's ring
    for ``backend`` (``"auto"``, ``"uring"``, ``"epoll"``).  ``max_queued``:
    packets held for ``read()`` before reading is paused in the kernel.
    Raises ``PermissionError`` without CAP_NET_ADMIN, ``FileNotFoundError``
    without ``/dev/net/tun``, ``FileExistsError`` for a name in use.
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await create_tun_connection(
        lambda: PacketQueueProtocol(loop, max_queued),
        name,
        fd=fd,
        mode=mode,
        mtu=mtu,
        packet_info=packet_info,
        addresses=addresses,
        up=up,
        ring=ring,
        backend=backend,
        read_mode=read_mode,
    )
    return Tun(transport, protocol)  # type: ignore[arg-type]
