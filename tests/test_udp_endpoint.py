"""Making the endpoint (issue 11, items 26, 32, 33): argument rules,
broadcast endpoints, adopted sockets and what get_extra_info gives, with
asyncio's own endpoint as the oracle."""
from __future__ import annotations

import asyncio
import os
import socket
from asyncio import trsock

import pytest

import aiouring
from support.udp import BACKENDS, KINDS, Recorder, factory, receive
from aiouring import Backend
from typing import Any, Callable
from support.udp import EndpointFactory


@pytest.fixture(params=KINDS)
def endpoint(request: pytest.FixtureRequest) -> EndpointFactory:
    return factory(request.param)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(local_addr=("127.0.0.1", 0, 0, 0)),
        dict(local_addr=("::1", 0, 0, 0)),
        dict(local_addr=("127.0.0.1",)),
        dict(local_addr="127.0.0.1:0"),
        dict(remote_addr=("127.0.0.1", 9, 0, 0)),
        dict(local_addr=["127.0.0.1", 0]),
    ],
    ids=repr,
)
@pytest.mark.oracle_differs_on_uvloop("takes 4-tuples")
async def test_an_address_that_is_not_a_2_tuple_raises_type_error(endpoint: EndpointFactory, kwargs: dict[str, Any]) -> None:
    """Item 26: asyncio's "2-tuple is expected" for local_addr/remote_addr
    outside AF_UNIX (a 4-tuple local_addr used to be bound)."""
    with pytest.raises(TypeError):
        await endpoint(**kwargs)


@pytest.mark.oracle_differs_on_uvloop("connects the socket (and hangs at loop close when a test fails with it open)")
async def test_allow_broadcast_with_remote_addr_leaves_the_socket_unconnected(endpoint: EndpointFactory) -> None:
    """Item 32: with allow_broadcast the remote address is only the default
    destination: the socket is not connected, so datagrams from any host are
    received (a connected socket would drop them)."""
    remote_t, remote = await endpoint(local_addr=("127.0.0.1", 0))
    transport, protocol = await endpoint(remote_addr=remote_t.get_extra_info("sockname"), allow_broadcast=True)
    sock = transport.get_extra_info("socket")
    assert transport.get_extra_info("peername") is None
    with pytest.raises(OSError):
        sock.getpeername()
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
    transport.sendto(b"to the remote")
    await remote.wait(1)
    assert remote.payloads == [b"to the remote"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        # the socket was bound at its first send, after "sockname" was taken
        other.sendto(b"from another host", ("127.0.0.1", sock.getsockname()[1]))
        await protocol.wait(1)
        assert protocol.datagrams == [(b"from another host", other.getsockname())]
    for t, p in ((transport, protocol), (remote_t, remote)):
        t.close()
        assert await p.lost is None


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_adopted_connected_socket_can_send_to_another_address(backend: Backend) -> None:
    """Item 32: an adopted socket that is already connected keeps no remote
    address of the endpoint's: sendto(data, other) is passed to the kernel,
    which sends it there (Linux lets a connected UDP socket do so), and
    sendto(data) goes to the peer.  asyncio's endpoint accepts the address
    too, but on the stdlib loop sends to the peer whatever it says (it calls
    send()), and uvloop's reports EISCONN."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        peer.bind(("127.0.0.1", 0))
        other.bind(("127.0.0.1", 0))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(peer.getsockname())
        transport, protocol = await aiouring.create_datagram_endpoint(Recorder, sock=sock, backend=backend)
        assert transport.get_extra_info("peername") == peer.getsockname()
        transport.sendto(b"elsewhere", other.getsockname())
        transport.sendto(b"to the peer")
        assert await receive(other) == b"elsewhere"
        assert await receive(peer) == b"to the peer"
        assert protocol.errors == []
        transport.close()
        assert await protocol.lost is None


async def test_an_adopted_socket_stays_non_blocking_and_is_lent_as_a_transport_socket(endpoint: EndpointFactory) -> None:
    """Item 33: as asyncio, the adopted socket is non-blocking from then on
    (the uring backend used to make it blocking), and get_extra_info("socket")
    is asyncio's TransportSocket wrapper, not the socket itself."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    transport, protocol = await endpoint(sock=sock)
    assert sock.getblocking() is False
    wrapped = transport.get_extra_info("socket")
    assert wrapped is not sock and wrapped.fileno() == sock.fileno()
    if endpoint.kind != "asyncio-stdlib" or not type(asyncio.get_running_loop()).__module__.startswith("uvloop"):
        assert isinstance(wrapped, trsock.TransportSocket)  # uvloop's own hands out its PseudoSocket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"ping", sock.getsockname())
        await protocol.wait(1)
        transport.sendto(b"pong", protocol.datagrams[0][1])
        assert await receive(s) == b"pong"
    assert sock.getblocking() is False
    transport.close()
    assert await protocol.lost is None


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_made_socket_is_non_blocking_on_both_backends(backend: Backend) -> None:
    """Item 33: the sockets the endpoint makes itself are non-blocking too."""
    transport, protocol = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend)
    assert os.get_blocking(transport.get_extra_info("socket").fileno()) is False
    transport.close()
    assert await protocol.lost is None
