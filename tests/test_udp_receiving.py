"""Receiving (issue 11, items 6, 29, 31): what reaches the protocol, in what
order, when it pauses, and when its callbacks raise; asyncio's own endpoint
is the oracle wherever it has the behaviour."""
from __future__ import annotations

import asyncio
import errno
import random
import socket
from typing import Any

import pytest

import aiouring
from support.udp import BACKENDS, KINDS, Recorder, factory, receive
from aiouring import Backend
from typing import Callable
from support.udp import EndpointFactory


@pytest.fixture(params=KINDS)
def endpoint(request: pytest.FixtureRequest) -> EndpointFactory:
    return factory(request.param)


def sender() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def receive_like_recvfrom(sock: socket.socket, bufsize: int, n: int) -> list[Any]:
    """What a reader making one recvmsg(bufsize) per datagram sees, as
    asyncio's transport does: the length, or EMSGSIZE for a datagram that did
    not fit (the errno our endpoints report for it)."""
    events: list[Any] = []
    for _ in range(n):
        data, _, flags, _ = sock.recvmsg(bufsize)
        events.append(f"EMSGSIZE" if flags & socket.MSG_TRUNC else len(data))
    return events


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(3))
async def test_truncation_is_reported_in_its_place_as_a_recvfrom_reader_sees_it(backend: Backend, seed: int) -> None:
    """Item 6: with max_datagram_size N, a datagram longer than N is
    error_received(OSError(EMSGSIZE)) in its place among the others, on both
    backends, never a shortened datagram: the same sequence a reader making
    one recvmsg(N) per datagram sees (asyncio's way, with its own N)."""
    rng = random.Random(seed)
    size = 1400
    lengths = [rng.choice([0, 1, size - 1, size, size + 1, rng.randrange(0, 9000), 65000]) for _ in range(60)]
    events: list[Any] = []
    done = asyncio.Event()

    class Order(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            events.append(len(data))
            if len(events) == len(lengths):
                done.set()

        def error_received(self, exc: Exception) -> None:
            assert isinstance(exc, OSError)
            events.append(errno.errorcode[exc.errno or 0])
            if len(events) == len(lengths):
                done.set()

    transport, _ = await aiouring.create_datagram_endpoint(Order, local_addr=("127.0.0.1", 0), backend=backend, max_datagram_size=size)
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as oracle, sender() as s:
        oracle.bind(("127.0.0.1", 0))
        oracle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        for n in lengths:
            s.sendto(b"d" * n, transport.get_extra_info("sockname"))
            s.sendto(b"d" * n, oracle.getsockname())
        await asyncio.wait_for(done.wait(), 5)
        assert events == receive_like_recvfrom(oracle, size, len(lengths))
    transport.close()


@pytest.mark.oracle_differs_on_uvloop("has no pause_reading() on datagram transports")
async def test_pause_reading_inside_datagram_received_stops_the_batch_and_holds_arrivals(endpoint: EndpointFactory) -> None:
    """Item 29: pause_reading() called in datagram_received takes effect at
    once: the datagrams read with it are not delivered (asyncio delivers 1
    where a batch used to deliver 5), nor those that arrive while paused,
    until resume_reading(); then all of them, in order, none lost."""

    class Pauser(Recorder):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            super().datagram_received(data, addr)
            if len(self.datagrams) == 1:
                self.transport.pause_reading()

    transport, protocol = await endpoint(Pauser, local_addr=("127.0.0.1", 0))
    witness_t, witness = await endpoint(local_addr=("127.0.0.1", 0))
    with sender() as s:
        for i in range(5):
            s.sendto(b"%d" % i, transport.get_extra_info("sockname"))
        s.sendto(b"sentinel 1", witness_t.get_extra_info("sockname"))
        await witness.wait(1)
        await protocol.wait(1)
        assert not transport.is_reading()
        for i in range(5, 10):  # arrive while paused
            s.sendto(b"%d" % i, transport.get_extra_info("sockname"))
        s.sendto(b"sentinel 2", witness_t.get_extra_info("sockname"))
        await witness.wait(2)
        assert protocol.payloads == [b"0"]
        transport.resume_reading()
        await protocol.wait(10)
        assert protocol.payloads == [b"%d" % i for i in range(10)]
    for t, p in ((transport, protocol), (witness_t, witness)):
        t.close()
        assert await p.lost is None


@pytest.mark.oracle_differs_on_uvloop("has no pause_reading() on datagram transports")
async def test_pause_and_resume_reading_from_outside_keep_order(endpoint: EndpointFactory) -> None:
    """Item 29: paused from outside a callback, with datagrams queued in the
    kernel and some already read: nothing lost, nothing repeated, in order."""
    transport, protocol = await endpoint(local_addr=("127.0.0.1", 0))
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    witness_t, witness = await endpoint(local_addr=("127.0.0.1", 0))
    sent = 0
    with sender() as s:
        for round_ in range(20):
            for _ in range(round_ % 7 + 1):
                s.sendto(b"%d" % sent, transport.get_extra_info("sockname"))
                sent += 1
            if round_ % 2:
                transport.pause_reading()
                s.sendto(b"w", witness_t.get_extra_info("sockname"))
                await witness.wait(len(witness.datagrams) + 1)
                held = len(protocol.datagrams)
                s.sendto(b"w", witness_t.get_extra_info("sockname"))
                await witness.wait(len(witness.datagrams) + 1)
                assert len(protocol.datagrams) == held  # nothing while paused
                transport.resume_reading()
            else:
                await asyncio.sleep(0)
        await protocol.wait(sent)
    assert protocol.payloads == [b"%d" % i for i in range(sent)]
    for t, p in ((transport, protocol), (witness_t, witness)):
        t.close()
        assert await p.lost is None


class Reports:
    """The loop's exception handler, recording (the conftest fails a test
    whose reports nobody expected)."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        self.previous = loop.get_exception_handler()
        loop.set_exception_handler(lambda loop, context: self.contexts.append(context))

    def restore(self) -> None:
        asyncio.get_running_loop().set_exception_handler(self.previous)

    @property
    def exceptions(self) -> list[BaseException | None]:
        return [c.get("exception") for c in self.contexts]


async def test_an_exception_in_datagram_received_is_logged_and_the_endpoint_goes_on(endpoint: EndpointFactory) -> None:
    """Item 31: as asyncio, the exception reaches the loop's exception handler
    and the endpoint keeps receiving (it used to be closed)."""
    reports = Reports()

    class Boom(Recorder):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            super().datagram_received(data, addr)
            if data == b"boom":
                raise ZeroDivisionError("in datagram_received")

    try:
        transport, protocol = await endpoint(Boom, local_addr=("127.0.0.1", 0))
        with sender() as s:
            for d in (b"one", b"boom", b"two", b"boom", b"three"):
                s.sendto(d, transport.get_extra_info("sockname"))
            await protocol.wait(5)
            assert protocol.payloads == [b"one", b"boom", b"two", b"boom", b"three"]
            assert [type(e) for e in reports.exceptions] == [ZeroDivisionError, ZeroDivisionError]
            assert not transport.is_closing()
            transport.sendto(b"still sending", s.getsockname())
            assert await receive(s) == b"still sending"
        transport.close()
        assert await protocol.lost is None
    finally:
        reports.restore()


@pytest.mark.oracle_differs_on_uvloop("does not receive after connection_made raised")
async def test_an_exception_in_connection_made_is_logged_and_the_factory_returns(endpoint: EndpointFactory) -> None:
    """Item 31: as asyncio, create_datagram_endpoint still returns the
    transport, the exception reaches the loop's exception handler, and the
    endpoint works."""
    reports = Reports()

    class Boom(Recorder):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            raise ZeroDivisionError("in connection_made")

    try:
        transport, protocol = await endpoint(Boom, local_addr=("127.0.0.1", 0))
        assert [type(e) for e in reports.exceptions] == [ZeroDivisionError]
        assert protocol.transport is transport and not transport.is_closing()
        with sender() as s:
            s.sendto(b"hello", transport.get_extra_info("sockname"))
            await protocol.wait(1)
            transport.sendto(b"back", s.getsockname())
            assert await receive(s) == b"back"
        transport.close()
        assert await protocol.lost is None
        assert protocol.events[0] == "connection_made" and protocol.events[-1] == "connection_lost"
    finally:
        reports.restore()
