"""FakeRing (the production ``Ring`` over ``FakeKernel``), the fake peer of a
fake TUN, and the helpers that build the production transports on them
through the public factories."""
from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Awaitable, Callable, Literal, NamedTuple, Protocol, TypeVar

from .. import _validate as check
from ..device import Mode, TunDevice, validate_ifname
from ..protocol import PacketQueueProtocol
from ..ring import Ring
from ..transport import TunTransport, create_tun_connection
from ..tun import Tun
from ..udp import DatagramTransport
from ._kernel import FakeDevice, FakeKernel, FakeOp, _errno

__all__ = ["FakePeer", "FakeRing", "FakeTun", "FakeTunConnector", "fake_datagram_endpoint", "fake_tun", "fake_tun_connection"]

P = TypeVar("P", bound=asyncio.BaseProtocol)


class FakeRing(Ring):
    """The production ``Ring`` over a ``FakeKernel``: no root, no io_uring."""

    backend = "fake"

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        read_mode: Literal["multishot", "single"] = "multishot",
        batch_limit: int = 256,
        buffers_per_group: int | None = None,
        warn_unclosed: bool = True,
    ) -> None:
        """``read_mode`` is what ``packet_source(mode="auto")`` reads in
        (``"multishot"`` or ``"single"``); ``buffers_per_group`` caps multishot
        buffer groups (to provoke ``-ENOBUFS``); ``batch_limit`` is the most
        CQEs one reap returns."""
        check.choice("read_mode", read_mode, ("multishot", "single"))
        check.int_in_range("batch_limit", batch_limit, 1)
        if buffers_per_group is not None:
            check.int_in_range("buffers_per_group", buffers_per_group, 1)
        kernel = FakeKernel(batch_limit=batch_limit, group_sizes=buffers_per_group, multishot=read_mode == "multishot")
        super().__init__(loop=loop, kernel=kernel, warn_unclosed=warn_unclosed)

    @property
    def kernel(self) -> FakeKernel:
        kernel: FakeKernel = self._engine.kernel
        return kernel

    @property
    def cancel_policy(self) -> str:
        """``"cancel"``: a cancelled op completes with ``-ECANCELED`` (the
        default); ``"ignore"``: the cancel answers ``-EALREADY`` and the op
        stays pending for the test to complete."""
        return self.kernel.cancel_policy

    @cancel_policy.setter
    def cancel_policy(self, value: str) -> None:
        self.kernel.cancel_policy = check.choice("cancel_policy", value, ("cancel", "ignore"))

    def pending(self, kind: str | None = None, fd: int | None = None) -> list[FakeOp]:
        """Ops submitted to the fake kernel and not completed, oldest first
        (what is queued is submitted first, by the ring's own flush)."""
        self.submit_now()
        return [o for o in self.kernel.ops.values() if (kind is None or o.kind == kind) and (fd is None or o.fd == fd)]

    def complete(self, op: FakeOp, res: int | None = None, data: bytes | None = None, more: bool = False) -> None:
        """Complete ``op``: for reads ``res`` defaults to ``len(data)`` and may
        not exceed the buffer; for writes it defaults to the byte count."""
        if not isinstance(op, FakeOp):
            raise TypeError(f"op must be a FakeOp from pending(), not {type(op).__name__}")
        if data is not None:
            check.bytes_like(data)
            if op.kind in ("read", "readv") and len(data) > op.size:
                raise ValueError(f"{len(data)} bytes of data do not fit the op's {op.size}-byte buffer")
        if res is None:
            res = len(data) if data is not None else op.size
        check.int_in_range("res", res, 0)
        if op.kind in ("read", "readv") and res > op.size:
            raise ValueError(f"res {res} is larger than the op's {op.size}-byte buffer")
        if data is not None and res != len(data) and op.kind in ("read", "readv", "read_multishot"):
            raise ValueError(f"res {res} does not match the {len(data)} bytes of data")
        self.kernel.finish(op, res, data, more)

    def fail(self, op: FakeOp, err: int) -> None:
        """Complete ``op`` with ``-err`` (``err`` a positive errno, e.g. ``errno.EIO``)."""
        if not isinstance(op, FakeOp):
            raise TypeError(f"op must be a FakeOp from pending(), not {type(op).__name__}")
        self.kernel.finish(op, -_errno(err))

    def add_device(self, fd: int, *, max_packet: int = 65535 + 22, vnet: bool = False) -> FakeDevice:
        """Make ``fd`` a fake device of this ring (its reads and writes are
        answered by the fake kernel); ``vnet``: a TUN with a virtio header."""
        check.fd(fd)
        device = FakeDevice(self.kernel, fd, max_packet, vnet=vnet)
        self.kernel.devices[fd] = device
        return device


class FakePeer:
    """The network side of a fake TUN: ``send`` packets to the application,
    ``receive`` what it wrote."""

    def __init__(self, device: FakeDevice) -> None:
        self._device = device
        self._taken = 0

    @property
    def device(self) -> FakeDevice:
        return self._device

    def send(self, *packets: bytes) -> None:
        """Packets the application will read from the TUN, in order (each a
        non-empty bytes-like object no larger than the device's MTU plus
        headers)."""
        self._device.inject(*packets)

    def send_super(self, *super_packets: bytes) -> None:
        """Reads as an offloading TUN hands them over (``fake_tun(offload=True)``):
        a virtio header and a packet, a TSO/USO super-packet say; the
        application reads the packets it stands for."""
        self._device.inject_super(*super_packets)

    @property
    def written(self) -> list[bytes]:
        """Every packet the application wrote, in order (what merged
        super-packets stand for, with offloads)."""
        return self._device.written

    @property
    def writes(self) -> list[bytes]:
        """With offloads: every write the application's transport made, virtio
        header included (merged super-packets as merged)."""
        return self._device.writes

    def refuse_merged_writes(self, refuse: bool = True) -> None:
        """Behave as the kernels that take ``IFF_VNET_HDR`` and then refuse
        merged writes (``EINVAL``): the transport must resend one by one."""
        self._device.refuse_merged = bool(refuse)

    def fail_writes(self, err: int, count: int = 1) -> None:
        """The application's next ``count`` writes fail with ``err`` (a
        positive errno such as ``errno.EIO``)."""
        self._device.fail_writes(err, count)

    async def receive(self) -> bytes:
        """The next packet the application wrote (waits for it)."""
        while self._taken >= len(self._device.written):
            self._device.write_event.clear()
            await self._device.write_event.wait()
        packet = self._device.written[self._taken]
        self._taken += 1
        return packet


class FakeTun(NamedTuple):
    tun: Tun
    peer: FakePeer
    ring: FakeRing


class FakeTunConnector(Protocol):
    """What the ``fake_tun_connection`` fixture is: ``await
    connect(protocol_factory, **options)`` gives ``(transport, protocol,
    peer)`` with the factory's protocol type (options as
    ``fake_tun_connection``)."""

    def __call__(
        self, protocol_factory: Callable[[], P], *, name: str = ..., mtu: int = ..., mode: Mode = ...,
        offload: bool = ..., ring: FakeRing | None = ...,
    ) -> Awaitable[tuple[TunTransport, P, FakePeer]]: ...


class FakeTunDevice(TunDevice):
    """A ``TunDevice`` whose fd the fake kernel answers for: offloads are
    "negotiated" with no ioctl, and there is no interface to configure."""

    def enable_offloads(self, *, tso: bool = True, uso: bool = True) -> frozenset[str]:
        if not self.vnet_hdr:
            raise OSError(22, f"enable_offloads: {self.name} has no virtio-net header")
        self._fake_offloads = frozenset({"csum"} | ({"tso4", "tso6"} if tso else set()) | ({"uso4", "uso6"} if uso else set()))
        return self._fake_offloads

    def disable_offloads(self) -> None:
        self._fake_offloads = frozenset()

    @property
    def offloads(self) -> frozenset[str]:
        return getattr(self, "_fake_offloads", frozenset())

    async def configure(self, **options: Any) -> None:
        raise ValueError("a fake TUN has no interface to configure: pass neither addresses, mtu nor up=True")


def fake_device(ring: FakeRing, name: str = "faketun0", *, mtu: int = 1500, mode: Mode = "tun", offload: bool = False) -> tuple[TunDevice, FakeDevice]:
    """A ``TunDevice`` whose fd the fake kernel answers for, with the same
    checks as opening a real one; ``offload``: with a virtio header, as a TUN
    opened for offloads."""
    validate_ifname(name)
    check.choice("mode", mode, ("tun", "tap"))
    check.int_in_range("mtu", mtu, 68, 65535)
    if not isinstance(offload, bool):
        raise TypeError(f"offload must be True or False, not {offload!r}")
    if offload and mode != "tun":
        raise ValueError("offloads are for TUN mode")
    fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    device = FakeTunDevice(fd, name, mode, False, mtu, offload)
    return device, ring.add_device(fd, max_packet=device.max_packet_size, vnet=offload)


async def fake_tun_connection(
    protocol_factory: Callable[[], P], name: str = "faketun0", *, mtu: int = 1500, mode: Mode = "tun",
    offload: bool = False, ring: FakeRing | None = None,
) -> tuple[TunTransport, P, FakePeer]:
    """The production ``TunTransport`` and your protocol on a fake TUN, and
    the peer that talks to it: ``(transport, protocol, peer)``.  No root, no
    io_uring.  Takes the checks of ``create_tun_connection``.  ``offload``:
    the TUN speaks in super-packets (``peer.send_super``, ``peer.writes``).
    Close the transport when done; a ring this call made is closed once
    nothing uses it."""
    own_ring = ring is None
    ring = ring or FakeRing(warn_unclosed=False)  # closed when the transport lets go of it
    device, fake = fake_device(ring, name, mtu=mtu, mode=mode, offload=offload)
    try:
        transport, protocol = await create_tun_connection(protocol_factory, device=device, ring=ring, up=False, offload=offload)
    except BaseException:
        device.close()
        if own_ring:
            ring.close()
        raise
    return transport, protocol, FakePeer(fake)


async def fake_tun(
    name: str = "faketun0", *, mtu: int = 1500, mode: Mode = "tun", offload: bool = False,
    ring: FakeRing | None = None, max_queued: int = 4096,
) -> FakeTun:
    """A ``Tun`` on a ``FakeRing`` and the peer that talks to it; no root needed.

    Takes the checks of ``open_tun`` (a bad name, mode or MTU raises as it
    would there).  Close the ``Tun`` when done (``async with`` works); a ring
    this call made is closed once nothing uses it.
    """
    check.int_in_range("max_queued", max_queued, 1)
    loop = asyncio.get_running_loop()
    transport, protocol, peer = await fake_tun_connection(
        lambda: PacketQueueProtocol(loop, max_queued), name, mtu=mtu, mode=mode, offload=offload, ring=ring
    )
    return FakeTun(Tun(transport, protocol), peer, transport.get_extra_info("ring"))
async def fake_datagram_endpoint(
    protocol_factory: Callable[[], P], local_addr: tuple[str, int] = ("127.0.0.1", 0), remote_addr: tuple[str, int] | None = None, *, ring: FakeRing | None = None
) -> tuple[DatagramTransport, P, FakeDevice]:
    """A UDP endpoint whose I/O goes through a ``FakeRing``: ``(transport,
    protocol, device)``.  ``device.inject_datagram(data, addr)`` delivers a
    datagram; ``device.sent`` lists ``(data, addr)`` the endpoint sent (addr
    None on a connected endpoint); ``device.fail_writes(errno)`` refuses sends.
    The socket is real (bound on loopback, never used for I/O): no root needed.
    """
    from ..udp import create_datagram_endpoint

    ring = ring or FakeRing()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(local_addr)
        if remote_addr is not None:
            sock.connect(remote_addr)
        device = ring.add_device(sock.fileno())
        transport, protocol = await create_datagram_endpoint(protocol_factory, sock=sock, ring=ring)
    except BaseException:
        sock.close()
        raise
    return transport, protocol, device
