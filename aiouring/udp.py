"""UDP (and other datagram sockets) on a ring: ``create_datagram_endpoint``
and its ``DatagramTransport``.

The same shape and behaviour as ``loop.create_datagram_endpoint`` with the
standard ``asyncio.DatagramProtocol`` (the test suite runs CPython's own
tests for it against this factory).  On io_uring one multishot recvmsg on a
provided buffer ring receives every datagram and sends leave in write
batches with everything else of the loop iteration; on epoll the socket is
drained with recvmsg and written with sendmsg in batches, one native call
each.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from asyncio import trsock
import errno
from typing import Any, Callable, TypeVar

from . import offload as _offload
from .backends import AnyRing, Backend, choose_backend, get_ring
from .offload import Offload
from .sockaddr import Address, HostPort, to_sockaddr
from ._transport_base import RingTransportBase, State

__all__ = ["DatagramTransport", "create_datagram_endpoint"]

logger = logging.getLogger("aiouring")

P = TypeVar("P", bound=asyncio.BaseProtocol)

_LOG_THRESHOLD_FOR_CONNLOST_WRITES = 5  # as asyncio's constants
_MAX_UDP = 65535
_MAX_UNIX = 256 * 1024  # what asyncio's datagram transport reads at most
# include/uapi/linux/udp.h (the socket module has no names for them)
_UDP_SEGMENT = 103
_UDP_GRO = 104


class DatagramTransport(RingTransportBase, asyncio.DatagramTransport):
    """A datagram transport on a ring (see ``create_datagram_endpoint``).

    Follows asyncio's selector datagram transport: ``sendto(data, addr)``
    never blocks (datagrams the socket cannot take yet wait, counted by
    ``get_write_buffer_size`` with ``pause_writing``/``resume_writing`` at the
    water marks); with a remote address ``addr`` must be None or that
    address; a failed send or an ICMP error goes to
    ``protocol.error_received``; an exception in a protocol callback is
    reported to the loop's exception handler and the endpoint keeps serving;
    ``close()`` flushes, ``abort()`` drops.  ``pause_reading()`` takes effect
    at the next datagram, even inside a batch.
    Differences from asyncio, on purpose: a malformed address raises at the
    call what ``socket.sendto`` raises for it (``TypeError``, also for no
    address on an unconnected endpoint, or ``OverflowError``; asyncio closes
    the transport on them), and ``sendto`` after ``close()`` is dropped and
    counted (logged after 5) whether connected or not.  An address that
    cannot be resolved (``socket.gaierror``) goes to ``error_received`` as
    with asyncio.  A protocol with ``datagrams_received(list_of_(data, addr))`` gets
    whole batches instead of one ``datagram_received`` call per datagram.
    """

    _item_hook_name = "datagram_received"
    _batch_hook_name = "datagrams_received"

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ring: AnyRing,
        sock: socket.socket,
        protocol: Any,
        address: Any = None,
        waiter: asyncio.Future[None] | None = None,
        max_datagram_size: int = _MAX_UDP,
        receive_buffers: int = 64,
        backend_reason: str = "",
        gso: bool = False,
        gro: bool = False,
    ) -> None:
        asyncio.DatagramTransport.__init__(self, {"socket": trsock.TransportSocket(sock)})
        self._extra: dict[str, Any] = self._extra  # set by asyncio.BaseTransport
        self._sock = sock
        self._fileno = sock.fileno()
        self._family = sock.family
        self._address = address
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        try:
            self._extra["peername"] = sock.getpeername()
        except OSError:
            self._extra["peername"] = None
        # datagrams without an address go to the connected peer (b""), or,
        # for a broadcast endpoint that is not connected, to its remote address
        self._default_sockaddr = b"" if self._extra["peername"] is not None or address is None else to_sockaddr(address, self._family)
        self._sends_after_close = 0
        self._max_datagram = max_datagram_size
        self._receive_buffers = receive_buffers
        self._backend_reason = backend_reason
        self._gro = gro
        # with GRO a buffer holds a whole super-datagram: longer datagrams
        # than max_datagram_size are then refused here, as a short buffer would
        self._gro_limit = max_datagram_size if gro and max_datagram_size < _MAX_UDP else 0
        sink = ring.datagram_sink(sock, self._on_sink_error, self._on_sink_progress, gso=gso)
        self._init_base(loop, ring, protocol, sink, waiter)

    # -- info --------------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """asyncio's ``socket``, ``sockname``, ``peername``, and ``ring``,
        ``backend``, ``backend_reason``, ``offload`` (a frozenset: ``"gso"``
        while sends are segmented, ``"gro"`` when receives are coalesced),
        ``stats`` (a ``TransportStats`` snapshot)."""
        if name == "stats":
            return self._stats()
        if name == "offload":
            return self._sink.offloads | ({"gro"} if self._gro else set())
        if name == "ring":
            return self._ring
        if name == "backend":
            return self._ring.backend
        if name == "backend_reason":
            return self._backend_reason
        return super().get_extra_info(name, default)

    def __repr__(self) -> str:
        return (
            f"<DatagramTransport {self._state.value} sockname={self._extra.get('sockname')} "
            f"backend={self._ring.backend} bufsize={self._sink.buffered}>"
        )

    # -- receiving --------------------------------------------------------------------

    def _default_protocol_class(self) -> type:
        return asyncio.DatagramProtocol

    def _open_source(self) -> Any:
        source: Any = None

        def stopped(exc: BaseException | None) -> None:
            self._on_source_stopped(source, exc)

        bufsize = _MAX_UDP if self._gro else self._max_datagram
        on_records = self._on_records_limited if self._gro_limit else self._on_records
        source = self._ring.datagram_source(
            self._sock, bufsize, on_records, stopped, self._on_receive_error, buffers=self._receive_buffers, gro=self._gro
        )
        return source

    def _on_records_limited(self, records: list[tuple[bytes, Any]]) -> None:
        limit = self._gro_limit
        start = 0
        for i, (data, _) in enumerate(records):
            if len(data) > limit:
                if i > start:
                    self._on_records(records[start:i])
                self._on_receive_error(OSError(errno.EMSGSIZE, f"a {len(data)}-byte datagram is longer than max_datagram_size ({limit})"))
                start = i + 1
        if start == 0:
            self._on_records(records)
        elif start < len(records):
            self._on_records(records[start:])

    def _call_item(self, hook: Callable[..., None], record: tuple[bytes, Any]) -> None:
        self._call(hook, record[0], record[1])

    @staticmethod
    def _record_bytes(records: list[Any]) -> int:
        return sum([len(r[0]) for r in records])

    def _on_receive_error(self, exc: OSError) -> None:
        self._rx_errors += 1
        if self._state is State.OPEN:
            self._call(self._protocol.error_received, exc)

    # -- sending -----------------------------------------------------------------------

    def sendto(self, data: bytes | bytearray | memoryview, addr: Address | None = None) -> None:
        """Send one datagram (see the class docstring)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if not data:
            return
        if self._address is not None:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            sockaddr = self._default_sockaddr
        elif addr is None and self._extra["peername"] is not None:
            sockaddr = b""  # an adopted connected socket: its peer
        else:
            try:
                sockaddr = to_sockaddr(addr, self._family)  # None raises TypeError, as socket.sendto(data, None)
            except OSError as exc:  # gaierror and the like: socket.sendto's, which asyncio reports
                self._tx_errors += 1
                if self._state is State.OPEN:
                    self._call(self._protocol.error_received, exc)
                return
        if self._state is not State.OPEN and self._state is not State.STARTING:
            if self._sends_after_close >= _LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("socket.send() raised exception.")
            self._sends_after_close += 1
            self._tx_dropped += 1
            return
        self._sink.sendto(bytes(data), sockaddr)
        if not self._protocol_paused and self._sink.buffered > self._high_water:
            self._maybe_pause_protocol()

    # -- closing -----------------------------------------------------------------------

    def _release(self) -> None:
        self._sock.close()


async def create_datagram_endpoint(
    protocol_factory: Callable[[], P],
    local_addr: HostPort | None = None,
    remote_addr: HostPort | None = None,
    *,
    family: int = 0,
    proto: int = 0,
    flags: int = 0,
    reuse_port: bool | None = None,
    allow_broadcast: bool | None = None,
    sock: socket.socket | None = None,
    ring: AnyRing | None = None,
    backend: Backend = "auto",
    max_datagram_size: int | None = None,
    receive_buffers: int = 64,
    gso: Offload = "auto",
    gro: Offload = "auto",
) -> tuple[DatagramTransport, P]:
    """A datagram endpoint on a ring, like ``loop.create_datagram_endpoint``
    (same arguments, same address rules, same errors).

    ``local_addr``/``remote_addr`` are (host, port) tuples resolved with
    ``loop.getaddrinfo`` (paths for ``family=AF_UNIX``); with ``remote_addr``
    the socket is connected (unless ``allow_broadcast``) and ``sendto`` takes
    no address.  ``sock`` adopts a socket instead (it is made non-blocking,
    as asyncio does).  Returns ``(transport, protocol)`` once
    ``connection_made`` has been called.  ``ring`` defaults to the loop's
    ring for ``backend``.  ``max_datagram_size`` sizes each receive buffer
    (default: 65,535, or 256 KiB on AF_UNIX; a longer datagram is reported to
    ``error_received`` as ``EMSGSIZE``) and ``receive_buffers`` how many the
    kernel can fill between two reaps; a VPN that knows its MTU sets the
    first small and the second large.

    ``gso``/``gro`` (UDP sockets only; ``"auto"``, ``True`` or ``False``):
    with GSO, runs of equal-sized datagrams to one address (the last may be
    shorter) given to ``sendto`` in one loop iteration leave as one
    ``UDP_SEGMENT`` send; with GRO (``UDP_GRO``) the kernel may hand over
    several datagrams of one sender as one, which is split again, so the
    protocol sees the datagrams that were sent either way.  ``"auto"`` turns
    each on when the socket takes it (and ``AIOURING_DISABLE_OFFLOADS`` does
    not list it); ``True`` raises ``ValueError`` when it cannot.  A send the
    kernel refuses as segmented is sent again datagram by datagram and GSO
    goes off for the endpoint.  ``get_extra_info("offload")`` says what is on.
    """
    check_size = max_datagram_size
    if check_size is not None and (not isinstance(check_size, int) or not 1 <= check_size <= _MAX_UNIX):
        raise ValueError(f"max_datagram_size must be from 1 to {_MAX_UNIX}, not {check_size!r}")
    loop = asyncio.get_running_loop()
    reason = "the ring given"
    if ring is None:
        chosen, reason = choose_backend(backend, "udp")
        ring = get_ring(chosen)
    ring.read_mode()  # refuses a closed ring, or one of another loop, before a socket is made
    r_addr = None
    if sock is not None:
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError(f"A UDP Socket was expected, got {sock!r}")
        if local_addr or remote_addr or family or proto or flags or reuse_port or allow_broadcast:
            opts = dict(local_addr=local_addr, remote_addr=remote_addr, family=family, proto=proto, flags=flags, reuse_port=reuse_port, allow_broadcast=allow_broadcast)
            problems = ", ".join(f"{k}={v}" for k, v in opts.items() if v)
            raise ValueError(f"socket modifier keyword arguments can not be used when sock is specified. ({problems})")
        sock.setblocking(False)
    else:
        sock, r_addr = await _make_socket(loop, local_addr, remote_addr, family, proto, flags, reuse_port, allow_broadcast)
    if max_datagram_size is None:
        max_datagram_size = _MAX_UNIX if sock.family == socket.AF_UNIX else _MAX_UDP
    try:
        gso_on = _udp_offload(sock, "gso", gso)
        gro_on = _udp_offload(sock, "gro", gro)
        protocol = protocol_factory()
        waiter = loop.create_future()
        transport = DatagramTransport(
            loop, ring, sock, protocol, r_addr, waiter, max_datagram_size, receive_buffers, reason, gso_on, gro_on
        )
    except BaseException:
        sock.close()
        raise
    try:
        await waiter
    except BaseException:
        transport.abort()
        raise
    return transport, protocol


def _udp_offload(sock: socket.socket, kind: str, want: Any) -> bool:
    """Whether ``kind`` (``"gso"``/``"gro"``) is on for ``sock``; turns
    ``UDP_GRO`` on or off."""
    if not (want is True or want is False or (isinstance(want, str) and want == "auto")):
        raise ValueError(f"{kind} must be 'auto', True or False, not {want!r}")
    why = None
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.proto not in (0, socket.IPPROTO_UDP):
        why = "not a UDP socket"
    elif want is not False and kind in _offload.disabled():
        why = f"{_offload.DISABLE_ENV} turns it off"
    if why is None:
        try:
            if kind == "gro":
                if want is False:
                    if sock.getsockopt(socket.SOL_UDP, _UDP_GRO):  # an adopted socket that had it on
                        sock.setsockopt(socket.SOL_UDP, _UDP_GRO, 0)
                    return False
                sock.setsockopt(socket.SOL_UDP, _UDP_GRO, 1)
            else:
                if want is False:
                    return False
                sock.getsockopt(socket.SOL_UDP, _UDP_SEGMENT)  # ENOPROTOOPT before Linux 4.18
            return True
        except OSError as exc:
            why = f"the socket refuses it ({exc.strerror or exc})"
    if want is True:
        raise ValueError(f"{kind}=True, but UDP {kind.upper()} cannot be used: {why}")
    if want == "auto" and why != "not a UDP socket":
        logger.info("aiouring: UDP %s off: %s", kind.upper(), why)
    return False


async def _make_socket(
    loop: asyncio.AbstractEventLoop, local_addr: Any, remote_addr: Any, family: int, proto: int, flags: int,
    reuse_port: bool | None, allow_broadcast: bool | None,
) -> tuple[socket.socket, Any]:
    """The socket ``loop.create_datagram_endpoint`` would make, by its rules."""
    if not (local_addr or remote_addr):
        if family == 0:
            raise ValueError("unexpected address family")
        pairs: list[tuple[tuple[int, int], tuple[Any, Any]]] = [((family, proto), (None, None))]
    elif family == socket.AF_UNIX:
        for addr in (local_addr, remote_addr):
            if addr is not None and not isinstance(addr, str):
                raise TypeError("string is expected")
        if local_addr and local_addr[0] not in (0, "\x00"):
            try:
                if stat.S_ISSOCK(os.stat(local_addr).st_mode):
                    os.remove(local_addr)  # a stale socket file, as asyncio removes it
            except FileNotFoundError:
                pass
            except OSError as err:
                logger.error("Unable to check or remove stale UNIX socket %r: %r", local_addr, err)
        pairs = [((family, proto), (local_addr, remote_addr))]
    else:
        infos: dict[tuple[int, int], list[Any]] = {}
        for idx, addr in ((0, local_addr), (1, remote_addr)):
            if addr is None:
                continue
            if not (isinstance(addr, tuple) and len(addr) == 2):
                raise TypeError("2-tuple is expected")
            found = await _resolve(loop, addr, family, proto, flags)
            if not found:
                raise OSError("getaddrinfo() returned empty list")
            for fam, _, pro, _, address in found:
                infos.setdefault((fam, pro), [None, None])[idx] = address
        pairs = [
            (key, (pair[0], pair[1])) for key, pair in infos.items()
            if not ((local_addr and pair[0] is None) or (remote_addr and pair[1] is None))
        ]
        if not pairs:
            raise ValueError("can not get address information")
    errors: list[OSError] = []
    for (fam, pro), (local, remote) in pairs:
        sock = None
        try:
            sock = socket.socket(family=fam, type=socket.SOCK_DGRAM, proto=pro)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if allow_broadcast:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setblocking(False)
            if local_addr:
                sock.bind(local)
            if remote_addr and not allow_broadcast:
                sock.connect(remote)  # a datagram connect never blocks
            return sock, (remote if remote_addr else None)
        except OSError as exc:
            if sock is not None:
                sock.close()
            errors.append(exc)
        except BaseException:
            if sock is not None:
                sock.close()
            raise
    raise errors[0]


async def _resolve(loop: asyncio.AbstractEventLoop, addr: tuple[Any, Any], family: int, proto: int, flags: int) -> list[Any]:
    """getaddrinfo results for a (host, port) pair, skipping the call for a
    numeric host as asyncio does."""
    host, port = addr
    if proto in (0, socket.IPPROTO_UDP) and host is not None:
        if isinstance(host, bytes):
            host = host.decode("idna")
        try:
            port_num = 0 if port in (None, b"", "") else int(port)
        except (TypeError, ValueError):
            port_num = None  # a service name: getaddrinfo's job
        if port_num is not None and isinstance(host, str) and "%" not in host:
            for af in ([socket.AF_INET, socket.AF_INET6] if family == socket.AF_UNSPEC else [family]):
                try:
                    socket.inet_pton(af, host)
                except OSError:
                    continue
                address = (host, port_num, 0, 0) if af == socket.AF_INET6 else (host, port_num)
                return [(af, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", address)]
    return await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM, proto=proto, flags=flags)
