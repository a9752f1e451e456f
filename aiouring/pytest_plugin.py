"""pytest plugin (entry point ``aiouring``): fixtures for testing code built on aiouring.

``fake_ring`` is a ``FakeRing`` for the running loop; ``fake_tun`` is a
``FakeTun(tun, peer, ring)`` from ``aiouring.testing.fake_tun()``, closed after
the test.  Both need pytest-asyncio and work with no root and no io_uring::

    async def test_my_vpn_echoes(fake_tun):
        fake_tun.peer.send(packet)
        assert await fake_tun.tun.read() == packet
"""
from __future__ import annotations

from typing import Any, AsyncIterator

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixtures need pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:
    from .testing import FakeRing, FakeTun, fake_tun as _fake_tun

    @pytest_asyncio.fixture
    async def fake_ring() -> AsyncIterator[FakeRing]:
        ring = FakeRing()
        try:
            yield ring
        finally:
            ring.close()

    @pytest_asyncio.fixture(name="fake_tun")
    async def fake_tun_fixture() -> AsyncIterator[FakeTun]:
        pair = await _fake_tun()
        try:
            yield pair
        finally:
            await pair.tun.aclose()


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "aiouring: tests using aiouring's fake ring fixtures")
