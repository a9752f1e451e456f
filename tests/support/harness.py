"""One way to drive a TUN transport on each ring kind: the real kernel through
io_uring or epoll (in a network namespace), or the fake ring."""
from __future__ import annotations

import asyncio
import socket
from typing import Any, Sequence

import aiouring
from aiouring.testing import FakeRing, fake_device, fake_tun
from packets import udp, udp_payload
from support.traffic import is_own

SO_RCVBUFFORCE = 33  # not exported by the socket module
LOCAL = "10.3.0.1"
REMOTE = "10.3.0.2"


class RecordingProtocol(aiouring.TunProtocol):
    """Records callbacks and fails on an illegal order.

    ``packets`` holds the test's own (IPv4) traffic in order; ``other`` what the
    kernel sent unasked (IPv6 router solicitations, MLD); ``batches`` the size
    of every batch."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.packets: list[bytes] = []
        self.other: list[bytes] = []
        self.batches: list[int] = []
        self.errors: list[OSError] = []
        self.transport: Any = None
        self.lost = asyncio.get_running_loop().create_future()
        self.arrived = asyncio.Event()

    def _record(self, name: str) -> None:
        assert not self.lost.done(), f"{name} after connection_lost"
        if name == "connection_made":
            assert not self.events, "connection_made twice or late"
        else:
            assert self.events and self.events[0] == "connection_made", f"{name} before connection_made"
        self.events.append(name)

    def connection_made(self, transport: Any) -> None:
        self._record("connection_made")
        self.transport = transport

    def packets_received(self, packets: list[bytes]) -> None:
        self._record("packets_received")
        self.batches.append(len(packets))
        for packet in packets:
            (self.packets if is_own(packet) else self.other).append(packet)
        self.arrived.set()

    def error_received(self, exc: OSError) -> None:
        self._record("error_received")
        self.errors.append(exc)

    def pause_writing(self) -> None:
        self._record("pause_writing")

    def resume_writing(self) -> None:
        self._record("resume_writing")

    def connection_lost(self, exc: BaseException | None) -> None:
        self._record("connection_lost")
        self.lost.set_result(exc)

    async def wait_packets(self, n: int, timeout: float = 10) -> list[bytes]:
        async def wait() -> None:
            while len(self.packets) < n:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(wait(), timeout)
        return self.packets


class Harness:
    """Inbound packets (network -> application) and outbound ones (application -> network)."""

    kind: str

    async def connect(self, factory: Any = RecordingProtocol, **options: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    async def open_tun(self, **options: Any) -> aiouring.Tun:
        raise NotImplementedError

    def packet(self, payload: bytes, port: int = 7000) -> bytes:
        """A packet that, written to the TUN, reaches this harness's receiver."""
        return udp(REMOTE, LOCAL, 5000, port, payload)

    def send_inbound(self, payloads: list[bytes]) -> None:
        raise NotImplementedError

    async def outbound(self, n: int, timeout: float = 10) -> Sequence[bytes | None]:
        raise NotImplementedError

    def unwrap(self, packet: bytes) -> bytes | None:
        """The payload of a packet the application wrote (None: not the harness's traffic)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class KernelHarness(Harness):
    def __init__(self, backend: aiouring.Backend) -> None:
        self.kind = backend
        self.backend = backend
        self.ring: Any = None
        self._sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._receiver: socket.socket | None = None
        self._received: list[bytes] = []

    async def connect(self, factory: Any = RecordingProtocol, **options: Any) -> tuple[Any, Any]:
        options.setdefault("addresses", [f"{LOCAL}/24"])
        transport, protocol = await aiouring.create_tun_connection(factory, backend=self.backend, **options)
        self._bind()
        return transport, protocol

    async def open_tun(self, **options: Any) -> aiouring.Tun:
        options.setdefault("addresses", [f"{LOCAL}/24"])
        tun = await aiouring.open_tun(backend=self.backend, **options)
        self._bind()
        return tun

    def _bind(self) -> None:
        if self._receiver is None:
            self._receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._receiver.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            self._receiver.bind((LOCAL, 7000))
            self._receiver.setblocking(False)

    def send_inbound(self, payloads: list[bytes]) -> None:
        for p in payloads:
            self._sender.sendto(p, (REMOTE, 9))

    def unwrap(self, packet: bytes) -> bytes | None:
        return udp_payload(packet)

    async def outbound(self, n: int, timeout: float = 10) -> list[bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        assert self._receiver is not None
        while len(self._received) < n:
            try:
                self._received.append(self._receiver.recv(65535))
            except BlockingIOError:
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(0.001)
        return self._received

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
        self._sender.close()
        if self._receiver is not None:
            self._receiver.close()


class FakeHarness(Harness):
    kind = "fake"

    def __init__(self) -> None:
        self.ring: FakeRing | None = None
        self.device: Any = None
        self._peer: Any = None

    async def connect(self, factory: Any = RecordingProtocol, mtu: int = 1500, **options: Any) -> tuple[Any, Any]:
        self.ring = FakeRing()
        device, self.device = fake_device(self.ring, mtu=mtu)
        return await aiouring.create_tun_connection(factory, device=device, ring=self.ring, **options)

    async def open_tun(self, **options: Any) -> aiouring.Tun:
        pair = await fake_tun(**{k: v for k, v in options.items() if k in ("mtu", "max_queued")})
        self.ring, self._peer = pair.ring, pair.peer
        self.device = pair.peer._device
        return pair.tun

    def send_inbound(self, payloads: list[bytes]) -> None:
        self.device.inject(*[udp(LOCAL, REMOTE, 5000, 9, p) for p in payloads])

    def unwrap(self, packet: bytes) -> bytes | None:
        return udp_payload(packet)

    async def outbound(self, n: int, timeout: float = 10) -> Sequence[bytes | None]:  # None: a packet that is not IPv4 UDP
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.device.written) < n and loop.time() < deadline:
            await asyncio.sleep(0.001)
        return [udp_payload(p) for p in self.device.written]

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
