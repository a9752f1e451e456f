"""pytest plugin (entry point ``aiouring``): fixtures for testing code built on
aiouring with no root and no io_uring.

Install with ``pip install "aiouring-net[testing]"`` (it brings
pytest-asyncio, which runs the async tests and fixtures).  The fixtures:

* ``fake_tun``: a ``FakeTun(tun, peer, ring)``: an awaitable ``Tun`` on a fake
  TUN and the peer on its network side;
* ``fake_tun_connection``: an async function ``connect(protocol_factory,
  **options)`` returning ``(transport, protocol, peer)`` for Transport/Protocol
  code;
* ``fake_ring``: a ``FakeRing`` to script completions by hand.

Everything they make is closed after the test::

    async def test_my_vpn_echoes(fake_tun):
        fake_tun.peer.send(packet)
        assert await fake_tun.tun.read() == packet
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, TypeVar

if TYPE_CHECKING:
    import pytest

    from .transport import TunTransport

P = TypeVar("P", bound=asyncio.BaseProtocol)

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixtures need pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]  # the module or None, tested below

if pytest_asyncio is not None:
    from .testing import FakePeer, FakeRing, FakeTun, FakeTunConnector, fake_tun as _fake_tun, fake_tun_connection as _fake_tun_connection

    @pytest_asyncio.fixture
    async def fake_ring() -> AsyncIterator[FakeRing]:
        """A ``FakeRing`` on the test's loop: the production ``Ring`` over a
        scripted fake kernel (``pending()``, ``complete()``, ``fail()``,
        ``cancel_policy``, ``add_device()``).  Closed after the test."""
        ring = FakeRing()
        try:
            yield ring
        finally:
            ring.close()

    @pytest_asyncio.fixture(name="fake_tun")
    async def fake_tun_fixture() -> AsyncIterator[FakeTun]:
        """``FakeTun(tun, peer, ring)``: an awaitable ``Tun`` on a fake TUN
        (``aiouring.testing.fake_tun()``).  ``peer.send(packet)`` arrives at
        ``tun.read()``; ``await peer.receive()`` is the next packet the code
        wrote.  Closed after the test."""
        pair = await _fake_tun()
        try:
            yield pair
        finally:
            await pair.tun.aclose()
            pair.ring.close()

    @pytest_asyncio.fixture(name="fake_tun_connection")
    async def fake_tun_connection_fixture() -> AsyncIterator[FakeTunConnector]:
        """``await fake_tun_connection(protocol_factory, **options)`` connects
        your ``TunProtocol`` to the production ``TunTransport`` on a fake TUN
        and returns ``(transport, protocol, peer)`` (options as
        ``aiouring.testing.fake_tun_connection``: ``name``, ``mtu``, ``mode``,
        ``offload``).  Every transport it made is aborted and its ring closed
        after the test."""
        made: list[tuple[TunTransport, FakeRing]] = []

        async def connect(protocol_factory: Callable[[], P], **options: Any) -> tuple[TunTransport, P, FakePeer]:
            ring = options.pop("ring", None) or FakeRing()
            transport, protocol, peer = await _fake_tun_connection(protocol_factory, ring=ring, **options)
            made.append((transport, ring))
            return transport, protocol, peer

        try:
            yield connect
        finally:
            for transport, ring in made:
                transport.abort()
                await transport.wait_closed()
                ring.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "aiouring: tests using aiouring's fake ring fixtures")
