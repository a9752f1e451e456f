"""UDP on the ring: ``create_datagram_endpoint`` and its ``DatagramTransport``.

The same shape as ``loop.create_datagram_endpoint``, with the standard
``asyncio.DatagramProtocol``.  On the uring backend one multishot recvmsg on a
provided buffer ring receives every datagram (source addresses come back in
the same buffer), and sends are copied into the ring's write pool and
submitted with everything else once per loop iteration; on the epoll backend
the socket is drained with recvfrom and written with sendto in batches.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import warnings
from typing import Any, Callable

from .backends import AnyRing, get_ring
from .errors import ClosedError, oserror
from ._transport_base import RingTransportBase
from .sockaddr import decode_records, to_sockaddr

__all__ = ["DatagramTransport", "create_datagram_endpoint"]

logger = logging.getLogger("aiouring")

_LOG_THRESHOLD_FOR_CONNLOST_WRITES = 5  # as asyncio's constants
_MAX_DATAGRAM = 65535


class DatagramTransport(RingTransportBase, asyncio.DatagramTransport):
    """A datagram transport on a ring (see ``create_datagram_endpoint``).

    Follows ``asyncio``'s selector datagram transport: ``sendto(data, addr)``
    never blocks (datagrams wait here when the ring's pool is full, counted by
    ``get_write_buffer_size`` with ``pause_writing``/``resume_writing`` at the
    water marks); on a connected endpoint ``addr`` must be None or the peer;
    errors of a send or an ICMP error on a receive go to
    ``protocol.error_received``; ``close()`` flushes, ``abort()`` drops.
    Differences from asyncio, on purpose: ``sendto`` without an address on an
    unconnected endpoint raises ``ValueError`` (asyncio closes the transport
    on the resulting ``TypeError``), and ``sendto`` after ``close()`` is
    dropped and counted (logged after 5) whether connected or not.
    A protocol with ``datagrams_received(list_of_(data, addr))`` gets whole
    batches instead of one ``datagram_received`` call per datagram.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ring: AnyRing,
        sock: socket.socket,
        protocol: Any,
        address: Any = None,
        waiter: asyncio.Future | None = None,
        max_datagram_size: int = 65535,
        receive_buffers: int = 64,
    ) -> None:
        asyncio.DatagramTransport.__init__(self, {"socket": sock})
        self._extra: dict[str, Any] = self._extra  # set by asyncio.BaseTransport
        self._init_base(loop, ring, protocol)
        self._sock = sock
        self._address = address
        self._family = sock.family
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        try:
            self._extra["peername"] = sock.getpeername()
        except OSError:
            self._extra["peername"] = None
        self._uring = ring.backend != "epoll"
        if self._uring and ring.backend == "uring":
            # On an O_NONBLOCK socket io_uring answers a send that finds the
            # socket buffer full with -EAGAIN (the datagram is lost); on a
            # blocking one it waits in the kernel, which never blocks this
            # thread.  Direct sends below use MSG_DONTWAIT.
            sock.setblocking(True)
        self._sends_after_close = 0
        self._batch_hook = getattr(protocol, "datagrams_received", None)
        self._max_datagram = max_datagram_size
        self._receive_buffers = receive_buffers
        self._writer: Any = ring.open_datagram_writer(sock, self._on_send_error, self._on_space)
        loop.call_soon(self._start, waiter)

    # -- info --------------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ring":
            return self._ring
        if name == "backend":
            return self._ring.backend
        return super().get_extra_info(name, default)

    def __repr__(self) -> str:
        state = "closed" if self._finished else "closing" if self._closing else "open"
        return f"<DatagramTransport {state} sockname={self._extra.get('sockname')} backend={self._ring.backend} bufsize={self._buffer_size}>"

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol
        self._batch_hook = getattr(protocol, "datagrams_received", None)

    # -- receiving --------------------------------------------------------------------

    def _arm_reader(self) -> None:
        on_batch = self._on_records if self._uring else self._on_datagrams
        # room for the recvmsg header and the source address beside the payload
        self._reader = self._ring.start_datagram_reader(
            self._sock, self._max_datagram + 256, on_batch, self._on_reader_stopped, self._on_receive_error, buffers=self._receive_buffers
        )

    def _on_records(self, records: list[bytes]) -> None:
        self._on_datagrams(decode_records(records))

    def _on_datagrams(self, datagrams: list[tuple[bytes, Any]]) -> None:
        if self._closing:
            return
        try:
            if self._batch_hook is not None:
                self._batch_hook(datagrams)
            else:
                received = self._protocol.datagram_received
                for data, addr in datagrams:
                    received(data, addr)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.datagram_received() call failed.")

    def _on_receive_error(self, exc: BaseException) -> None:
        if not self._closing:
            self._protocol.error_received(exc)

    def _on_reader_stopped(self, exc: BaseException | None) -> None:
        self._reader_stopped()
        if exc is not None and not self._closing:
            self._fatal_error(exc, "Fatal read error on datagram transport")
            return
        self._maybe_finish()

    def pause_reading(self) -> None:
        """Stop receiving (the kernel keeps datagrams in the socket buffer)."""
        if self._closing or self._paused:
            return
        self._paused = True
        self._stop_reader()

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        self._arm_reader()

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    # -- sending -----------------------------------------------------------------------

    def sendto(self, data: Any, addr: Any = None) -> None:
        """Send one datagram (see the class docstring)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if not data:
            return
        if self._address is not None:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = None
        elif addr is None:
            raise ValueError("this endpoint is not connected: sendto() needs an address")
        if self._closing:
            if self._sends_after_close >= _LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("socket.send() raised exception.")
            self._sends_after_close += 1
            return
        data = bytes(data)
        if not self._queue and self._send(data, addr):
            return
        self._queue.append((data, addr))
        self._buffer_size += self._queued_size((data, addr))
        self._maybe_pause_protocol()

    def _send(self, data: bytes, addr: Any) -> bool:
        raw = b"" if addr is None or not self._uring else to_sockaddr(addr, self._family)
        try:
            return self._writer.sendto(data, addr, raw)
        except ClosedError:
            raise
        except OSError as exc:  # larger than a pool slot: one direct send, as asyncio would
            self._ring.submit_now()  # after the datagrams already queued, not before them
            try:
                if addr is None:
                    self._sock.send(data, socket.MSG_DONTWAIT)
                else:
                    self._sock.sendto(data, socket.MSG_DONTWAIT, addr)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc2:
                self._protocol.error_received(exc2)
            del exc
            return True

    def _on_space(self) -> None:
        queue = self._queue
        while queue:
            data, addr = queue[0]
            if not self._send(data, addr):
                break
            queue.popleft()
            self._buffer_size -= self._queued_size((data, addr))
        self._maybe_resume_protocol()
        if self._closing:
            self._maybe_finish()

    def _on_send_error(self, res: int) -> None:
        if not self._finished:
            self._protocol.error_received(oserror(res, "sendmsg"))

    def _queued_size(self, item: tuple[bytes, Any]) -> int:
        return len(item[0])  # as asyncio's datagram transport counts

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop receiving, send what is queued, close the socket, then
        ``connection_lost(None)``."""
        if self._closing:
            return
        self._closing = True
        self._stop_reader()
        self._maybe_finish()

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler({"message": message, "exception": exc, "transport": self, "protocol": self._protocol})
        self._force_close(exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._writer.close()
            self._sock.close()
            self._protocol = None

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not self._finished and self._sock.fileno() >= 0:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()


async def create_datagram_endpoint(
    protocol_factory: Callable[[], Any],
    local_addr: Any = None,
    remote_addr: Any = None,
    *,
    family: int = 0,
    proto: int = 0,
    flags: int = 0,
    reuse_port: bool | None = None,
    allow_broadcast: bool | None = None,
    sock: socket.socket | None = None,
    ring: AnyRing | None = None,
    backend: str = "auto",
    max_datagram_size: int = 65535,
    receive_buffers: int = 64,
) -> tuple[DatagramTransport, Any]:
    """A UDP endpoint on the ring, like ``loop.create_datagram_endpoint``.

    ``local_addr``/``remote_addr`` are (host, port) tuples resolved with
    ``loop.getaddrinfo``; with ``remote_addr`` the socket is connected and
    ``sendto`` takes no address.  ``sock`` adopts a socket instead.  Returns
    ``(transport, protocol)`` once ``connection_made`` has been called.
    ``max_datagram_size`` sizes each receive buffer (a larger datagram is
    reported to ``error_received`` as ``EMSGSIZE``) and ``receive_buffers``
    how many the kernel can fill between two reaps; a VPN that knows its MTU
    sets the first small and the second large.
    """
    if not 1 <= max_datagram_size <= _MAX_DATAGRAM:
        raise ValueError(f"max_datagram_size must be from 1 to {_MAX_DATAGRAM}, not {max_datagram_size!r}")
    loop = asyncio.get_running_loop()
    if ring is None:
        ring = get_ring(backend)
    address = None
    if sock is not None:
        if local_addr or remote_addr or family or proto or flags or reuse_port or allow_broadcast:
            raise ValueError("socket modifier keyword arguments can not be used when sock is specified")
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError(f"A UDP Socket was expected, got {sock!r}")
        sock.setblocking(False)
        try:
            address = sock.getpeername()
        except OSError:
            address = None
    else:
        if not (local_addr or remote_addr):
            if family == 0:
                raise ValueError("unexpected address family")
        local = await _resolve(loop, local_addr, family, proto, flags) if local_addr else None
        remote = await _resolve(loop, remote_addr, family, proto, flags) if remote_addr else None
        if local and remote and local[0] != remote[0]:
            raise ValueError("local_addr and remote_addr have different address families")
        chosen = local or remote
        fam = chosen[0] if chosen is not None else family
        sock = socket.socket(fam, socket.SOCK_DGRAM, proto)
        try:
            sock.setblocking(False)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if allow_broadcast:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            if local:
                sock.bind(local[1])
            if remote:
                sock.connect(remote[1])
                address = remote[1]
        except BaseException:
            sock.close()
            raise
    protocol = protocol_factory()
    waiter = loop.create_future()
    transport = DatagramTransport(loop, ring, sock, protocol, address, waiter, max_datagram_size, receive_buffers)
    try:
        await waiter
    except BaseException:
        transport.abort()
        raise
    return transport, protocol


async def _resolve(loop: asyncio.AbstractEventLoop, addr: Any, family: int, proto: int, flags: int) -> tuple[int, Any]:
    if not isinstance(addr, tuple) or len(addr) < 2:
        raise TypeError(f"addresses are (host, port) tuples, not {addr!r}")
    infos = await loop.getaddrinfo(addr[0], addr[1], family=family, type=socket.SOCK_DGRAM, proto=proto, flags=flags)
    if not infos:
        raise OSError(f"getaddrinfo({addr!r}) returned empty list")
    return infos[0][0], infos[0][4]
