"""Sending into a socket whose buffer is full (issue 11, items 4 and 30): the
datagrams wait in the endpoint, in order, are sent when the socket drains,
count for flow control, and never hold up another endpoint of the loop.

The socket buffer is made to fill for real: a small SO_SNDBUF and a link that
holds what it is given (tbf on a veth into another namespace), so the kernel
answers EAGAIN; loopback never does (it frees a datagram's memory at once).
Each scenario runs on asyncio's own endpoint (the oracle) and on aiouring's,
on both loops."""
from __future__ import annotations

import asyncio
import socket

import pytest

import aiouring
from support.udp import KINDS, HeldLink, Recorder, drain, factory, held_link, writable
from support.wait import wait_for_condition
from aiouring import Backend
from typing import Any, Callable
from typing import Iterator
from support.udp import EndpointFactory


@pytest.fixture(params=KINDS)
def endpoint(request: pytest.FixtureRequest) -> EndpointFactory:
    return factory(request.param)


@pytest.fixture
def link() -> Iterator[HeldLink]:
    with held_link() as link:
        yield link


def numbered(i: int, size: int) -> bytes:
    head = b"%05d:" % i
    return head + b"x" * (size - len(head))


async def test_datagrams_meeting_a_full_socket_are_sent_when_it_drains_then_close_completes(endpoint: EndpointFactory, link: HeldLink) -> None:
    """Item 4: datagrams larger than 1848 B (the old write-pool slot) and the
    small ones behind them meet EAGAIN; once the link lets go every one is
    sent, in order, and a close() made meanwhile completes with connection_lost."""
    receiver = link.receiver_socket()
    with link.in_sender():
        transport, protocol = await endpoint(local_addr=(link.SENDER, 0))
    try:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # the kernel makes it 8 KiB
        sizes = [4000, 100, 1849, 3000, 10, 2500] * 6
        sent = [numbered(i, n) for i, n in enumerate(sizes)]
        for d in sent:
            transport.sendto(d, receiver.getsockname())
        # the socket is full and datagrams wait in the endpoint
        await wait_for_condition(lambda: not writable(sock) and transport.get_write_buffer_size() > 0)
        transport.close()
        got: list[bytes] = []
        assert not protocol.lost.done()
        link.release()
        await wait_for_condition(lambda: drain(receiver, got) >= len(sent), timeout=10)
        assert sorted(got) == sorted(sent)  # the order: test_datagrams_behind_a_full_socket_keep_their_order
        assert await asyncio.wait_for(protocol.lost, 5) is None
        assert protocol.errors == []
    finally:
        if not protocol.lost.done():
            transport.abort()
        receiver.close()
    await asyncio.wait_for(protocol.lost, 5)




@pytest.mark.parametrize("kind", KINDS)
async def test_datagrams_behind_a_full_socket_keep_their_order(kind: str, link: HeldLink) -> None:
    """Items 4 and 30: what waits for a full socket leaves in the order of the sendto() calls."""
    receiver = link.receiver_socket()
    with link.in_sender():
        transport, protocol = await factory(kind)(local_addr=(link.SENDER, 0))
    try:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sent = [numbered(i, (1000, 2500, 10)[i % 3]) for i in range(60)]
        for d in sent:
            transport.sendto(d, receiver.getsockname())
        await wait_for_condition(lambda: not writable(sock) and transport.get_write_buffer_size() > 0)
        link.release()
        got: list[bytes] = []
        await wait_for_condition(lambda: drain(receiver, got) >= len(sent), timeout=10)
        assert [g[:5] for g in got] == [d[:5] for d in sent]
    finally:
        transport.close()
        receiver.close()
    assert await asyncio.wait_for(protocol.lost, 5) is None


async def test_a_full_socket_holds_up_no_other_endpoint_of_the_loop(endpoint: EndpointFactory, link: HeldLink) -> None:
    """Item 30: one endpoint whose socket is full (thousands of small
    datagrams waiting, more than the old shared write pool had slots) does not
    delay another endpoint's sends on the same loop and ring."""
    receiver = link.receiver_socket()
    with link.in_sender():
        slow_t, slow = await endpoint(local_addr=(link.SENDER, 0))
        fast_rx_t, fast_rx = await endpoint(local_addr=("127.0.0.1", 0))
        fast_t, fast = await endpoint(remote_addr=fast_rx_t.get_extra_info("sockname"))
    try:
        fast_rx_t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        slow_sock = slow_t.get_extra_info("socket")
        slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for i in range(3000):
            slow_t.sendto(numbered(i, 1000), receiver.getsockname())
        await wait_for_condition(lambda: not writable(slow_sock) and slow_t.get_write_buffer_size() > 0)
        for i in range(300):
            fast_t.sendto(b"fast %d" % i)
        await fast_rx.wait(300)
        assert fast_rx.payloads == [b"fast %d" % i for i in range(300)]
        assert not writable(slow_sock) and slow_t.get_write_buffer_size() > 0  # still held
        link.release()
        got: list[bytes] = []
        await wait_for_condition(lambda: drain(receiver, got) >= 3000, timeout=20)
        assert sorted(got) == [numbered(i, 1000) for i in range(3000)]
        await wait_for_condition(lambda: slow_t.get_write_buffer_size() == 0)
    finally:
        for t in (slow_t, fast_rx_t, fast_t):
            t.close()
        receiver.close()
    for p in (slow, fast_rx, fast):
        assert await asyncio.wait_for(p.lost, 5) is None


async def test_pause_writing_comes_when_a_full_socket_keeps_64k_waiting(endpoint: EndpointFactory, link: HeldLink) -> None:
    """Item 30, asyncio's rule: once more than the high-water mark (64 KiB)
    waits, pause_writing; resume_writing once it drained below the low mark."""
    receiver = link.receiver_socket()
    with link.in_sender():
        transport, protocol = await endpoint(local_addr=(link.SENDER, 0))
    try:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for n in range(6):
            transport.sendto(numbered(n, 3500), receiver.getsockname())
        await wait_for_condition(lambda: not writable(sock) and transport.get_write_buffer_size() > 0)
        assert "pause_writing" not in protocol.events
        n = 6
        while "pause_writing" not in protocol.events:
            transport.sendto(numbered(n, 3500), receiver.getsockname())
            n += 1
            assert n < 100
        assert 64 * 1024 < transport.get_write_buffer_size() <= 64 * 1024 + 3500
        link.release()
        got: list[bytes] = []
        await wait_for_condition(lambda: drain(receiver, got) >= n, timeout=10)
        assert sorted(got) == [numbered(i, 3500) for i in range(n)]
        await wait_for_condition(lambda: "resume_writing" in protocol.events)
        assert protocol.events.count("pause_writing") == 1
    finally:
        transport.close()
        receiver.close()
    assert await asyncio.wait_for(protocol.lost, 5) is None


@pytest.mark.parametrize("backend", ["uring", "epoll"])
async def test_pause_writing_at_the_19th_datagram_of_3500_bytes(backend: Backend) -> None:
    """Item 30: every accepted byte counts for get_write_buffer_size() from
    sendto() on, so 3.5 KB datagrams cross the default 64 KiB mark at the
    19th (not once a shared write pool of 1000 slots overflowed)."""
    rx_t, rx = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend)
    rx_t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    tx_t, tx = await aiouring.create_datagram_endpoint(Recorder, remote_addr=rx_t.get_extra_info("sockname"), backend=backend)
    paused_at = None
    for i in range(1, 40):
        tx_t.sendto(b"d" * 3500)
        assert tx_t.get_write_buffer_size() == 3500 * i
        if "pause_writing" in tx.events:
            paused_at = i
            break
    assert paused_at == 19
    await rx.wait(19)
    await wait_for_condition(lambda: "resume_writing" in tx.events)
    assert tx_t.get_write_buffer_size() == 0
    for t in (rx_t, tx_t):
        t.close()
    await rx.lost
    await tx.lost
