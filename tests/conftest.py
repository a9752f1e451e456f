"""Shared fixtures: every async test runs on the stdlib loop and on uvloop."""
from __future__ import annotations

import asyncio
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
sys.path.insert(0, os.path.dirname(__file__))

from support.netns import network_namespace  # noqa: E402

try:
    import uvloop
except ImportError:  # uvloop does not exist for every platform
    uvloop = None


def pytest_asyncio_loop_factories(config, item):
    factories = {"asyncio": asyncio.new_event_loop}
    if uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


def pytest_report_header(config):
    import aiouring

    lines = [str(aiouring.probe())]
    if uvloop is None:
        lines.append("uvloop is not installable here: loop-facing tests run on the stdlib loop only")
    return lines


@pytest.fixture
def netns():
    """A fresh network namespace for the test (IPv6 off)."""
    with network_namespace() as name:
        yield name


@pytest.fixture
def netns_forwarding():
    """A fresh network namespace with IPv4 forwarding on."""
    with network_namespace(forwarding=True) as name:
        yield name


@pytest.fixture(params=["uring", "epoll"])
def backend(request):
    return request.param


@pytest.fixture(params=["uring", "epoll", "fake"])
def harness(request):
    """A TUN on each ring kind; real ones live in a fresh network namespace."""
    from support.harness import FakeHarness, KernelHarness

    if request.param == "fake":
        h = FakeHarness()
        yield h
        h.close()
        return
    with network_namespace():
        h = KernelHarness(request.param)
        yield h
        h.close()
