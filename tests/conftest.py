"""Shared fixtures: every async test runs on the stdlib loop and on uvloop, and
fails if it leaves ops in flight, leaks fds, or sends something to the loop's
exception handler it did not ask for."""
from __future__ import annotations

import asyncio
import gc
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest
import uvloop  # a test dependency: the suite runs every loop-facing test on it

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
sys.path.insert(0, os.path.dirname(__file__))

from support.netns import network_namespace, open_fds, sysctl  # noqa: E402

if TYPE_CHECKING:
    from aiouring import Backend
    from support.harness import Harness

# What reached a loop's exception handler while no test had installed its own.
REPORTED: list[dict[str, Any]] = []


def _recording(loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    loop.set_exception_handler(lambda loop, context: REPORTED.append(context))
    return loop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {
        "asyncio": lambda: _recording(asyncio.new_event_loop()),
        "uvloop": lambda: _recording(uvloop.new_event_loop()),
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test that compares with asyncio's own endpoint ("asyncio-stdlib")
    # where uvloop's endpoint behaves differently: that case proves nothing
    # on uvloop, so it is deselected (and counted as such), not skipped.
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        marked = item.get_closest_marker("oracle_differs_on_uvloop") is not None
        ids = getattr(getattr(item, "callspec", None), "id", "")
        (drop if marked and "uvloop" in ids and "asyncio-stdlib" in ids else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_sessionstart(session: pytest.Session) -> None:
    # uvloop keeps one pipe per process from its first loop on: open it now,
    # so the per-test fd check sees only what a test leaves behind.
    loop = uvloop.new_event_loop()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    import aiouring

    return [str(aiouring.probe())]


@pytest.fixture(autouse=True)
def leaves_nothing_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if, once it and its loop are done, a ring still holds an
    op, an fd it opened is still open, or the loop's exception handler heard
    of something the test did not expect (a test that expects reports
    installs its own handler)."""
    from aiouring.ring import live_rings

    gc.collect()
    fds_before = open_fds()
    rings_before = set(map(id, live_rings()))
    REPORTED.clear()
    yield
    gc.collect()
    reported = list(REPORTED)
    REPORTED.clear()
    busy = [r for r in live_rings() if id(r) not in rings_before and r.in_flight]
    leaked = open_fds() - fds_before
    problems = []
    if reported:
        problems.append("the loop's exception handler was called: " + "; ".join(str(c.get("message")) + ": " + repr(c.get("exception")) for c in reported))
    if busy:
        problems.append(f"rings left with ops in flight: {busy}")
    if leaked:
        problems.append(f"fds left open: {sorted(leaked)} -> {[_describe(fd) for fd in sorted(leaked)]}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def _describe(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace for the test (IPv6 on)."""
    with network_namespace() as name:
        yield name


@pytest.fixture
def netns_forwarding() -> Iterator[str]:
    """A fresh network namespace with IPv4 forwarding on."""
    with network_namespace(forwarding=True) as name:
        yield name


@pytest.fixture
def forwarding() -> Iterator[None]:
    """A namespace where packets a TUN on 10.9.0.0/24 writes to 10.9.0.3
    from 10.9.0.2 are forwarded straight back out of it (no redirects, no
    reverse-path filter)."""
    with network_namespace(forwarding=True):
        for scope in ("all", "default"):
            sysctl(f"net/ipv4/conf/{scope}/send_redirects", "0")
            sysctl(f"net/ipv4/conf/{scope}/rp_filter", "0")
        yield


@pytest.fixture(params=["uring", "epoll"])
def backend(request: pytest.FixtureRequest) -> Backend:
    param: Backend = request.param
    return param


@pytest.fixture(params=["uring", "epoll", "fake"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A TUN on each ring kind; real ones live in a fresh network namespace."""
    from support.harness import FakeHarness, KernelHarness

    h: Harness
    if request.param == "fake":
        h = FakeHarness()
        yield h
        h.close()
        return
    with network_namespace():
        h = KernelHarness(request.param)
        yield h
        h.close()
