"""UDP test helpers: a recording protocol, endpoint factories for each kind
under test (asyncio's own endpoint as the oracle, aiouring on uring and
epoll), and a link whose queue can be held (tbf on a veth) so that a sender's
socket buffer really fills."""
from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import subprocess
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Protocol, cast

from pyroute2 import netns as pyroute_netns

import aiouring

from .netns import two_namespaces

SO_RCVBUFFORCE = 33  # Linux; the socket module does not name it
KINDS = ["asyncio-stdlib", "uring", "epoll"]
BACKENDS: list[aiouring.Backend] = ["uring", "epoll"]


class Recorder(asyncio.DatagramProtocol):
    """Records every callback, in order, in ``events`` (and datagrams and
    errors on their own); ``wait(n)`` waits for n datagrams plus errors."""

    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, Any]] = []
        self.errors: list[Exception] = []
        self.events: list[Any] = []
        self.arrived = asyncio.Event()
        self.lost = asyncio.get_running_loop().create_future()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.events.append("connection_made")
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert not self.lost.done(), "a datagram after connection_lost"
        self.datagrams.append((data, addr))
        self.events.append(("datagram", data))
        self.arrived.set()

    def error_received(self, exc: Exception) -> None:
        assert not self.lost.done(), "an error after connection_lost"
        self.errors.append(exc)
        self.events.append(("error", exc))
        self.arrived.set()

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def connection_lost(self, exc: Any) -> None:
        self.events.append("connection_lost")
        self.lost.set_result(exc)

    @property
    def payloads(self) -> list[bytes]:
        return [d for d, _ in self.datagrams]

    async def wait(self, n: int, timeout: float = 5) -> None:
        async def until() -> None:
            while len(self.datagrams) + len(self.errors) < n:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(until(), timeout)


class EndpointFactory(Protocol):
    """``await create(protocol_factory=Recorder, **kwargs)``: an endpoint of
    one kind (``kind``: ``"asyncio-stdlib"`` or an aiouring backend)."""

    kind: str

    def __call__(self, protocol_factory: Callable[[], Any] = ..., *args: Any, **kwargs: Any) -> Awaitable[Any]: ...


def factory(kind: str) -> EndpointFactory:
    """``create(protocol_factory=Recorder, **kwargs)`` for one kind of endpoint."""

    async def create(protocol_factory: Callable[[], Any] = Recorder, *args: Any, **kwargs: Any) -> Any:
        if kind == "asyncio-stdlib":
            return await asyncio.get_running_loop().create_datagram_endpoint(protocol_factory, *args, **kwargs)
        return await aiouring.create_datagram_endpoint(protocol_factory, *args, backend=kind, **kwargs)  # type: ignore[arg-type]

    create.kind = kind  # type: ignore[attr-defined]  # what EndpointFactory adds to the function
    return cast(EndpointFactory, create)


def on_uvloop() -> bool:
    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")


def writable(sock: Any) -> bool:
    """Whether the kernel would take a datagram from ``sock`` now (POLLOUT)."""
    p = select.poll()
    p.register(sock.fileno(), select.POLLOUT)
    return bool(p.poll(0))


async def receive(sock: socket.socket, timeout: float = 5) -> bytes:
    """The next datagram on ``sock``, waited for without blocking the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return sock.recv(1 << 18, socket.MSG_DONTWAIT)
        except BlockingIOError:
            if loop.time() > deadline:
                raise TimeoutError("no datagram") from None
            await asyncio.sleep(0.001)


def drain(sock: socket.socket, into: list[bytes]) -> int:
    """Read every datagram waiting on non-blocking ``sock`` into ``into``; returns len(into)."""
    while True:
        try:
            into.append(sock.recv(1 << 18))
        except BlockingIOError:
            return len(into)


class HeldLink:
    """Two namespaces joined by a veth whose egress on the sender's side is
    a tbf qdisc: ``hold()`` makes it crawl (what is sent stays queued in the
    qdisc, charged to the sending socket, so a small SO_SNDBUF fills and sends
    meet EAGAIN), ``release()`` lets everything through at once.  A socket
    belongs to the namespace it was created in: ``in_sender()`` and
    ``in_receiver()`` switch this thread for the creation."""

    SENDER = "192.168.77.1"
    RECEIVER = "192.168.77.2"

    def __init__(self, names: tuple[str, str]) -> None:
        self.sender_ns, self.receiver_ns = names

    def _tc(self, *args: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.sender_ns, "tc", "qdisc", *args], check=True)

    def hold(self) -> None:
        # a burst larger than any datagram (tbf drops longer packets), a rate
        # that lets about one through a second, and room for everything queued
        self._tc("replace", "dev", "veth0", "root", "tbf", "rate", "8kbit", "burst", "9000", "limit", "4000000")

    def release(self) -> None:
        self._tc("replace", "dev", "veth0", "root", "tbf", "rate", "10gbit", "burst", "4000000", "limit", "4000000")

    @contextlib.contextmanager
    def in_sender(self) -> Iterator[None]:
        pyroute_netns.pushns(self.sender_ns)
        try:
            yield
        finally:
            pyroute_netns.popns()

    @contextlib.contextmanager
    def in_receiver(self) -> Iterator[None]:
        pyroute_netns.pushns(self.receiver_ns)
        try:
            yield
        finally:
            pyroute_netns.popns()

    def receiver_socket(self) -> socket.socket:
        """A plain non-blocking UDP socket in the receiver's namespace with room for a burst."""
        with self.in_receiver():
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            sock.bind((self.RECEIVER, 0))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock


@contextlib.contextmanager
def held_link() -> Iterator[HeldLink]:
    """A ``HeldLink``, holding; set it up outside the running loop (a sync
    fixture): pyroute2's synchronous API runs a loop of its own."""
    with two_namespaces() as names:
        link = HeldLink(names)
        link.hold()
        yield link


@contextlib.asynccontextmanager
async def closing(*transports: Any) -> AsyncIterator[None]:
    """Abort the transports on the way out (a failed assertion leaves nothing open)."""
    try:
        yield
    finally:
        for t in transports:
            if not t.is_closing():
                t.abort()
        for _ in range(3):
            await asyncio.sleep(0)
