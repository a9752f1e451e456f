"""aiouring's UDP endpoint against asyncio's own: each scenario runs on asyncio's
``loop.create_datagram_endpoint`` and on aiouring's (uring and epoll), on both loops."""
from __future__ import annotations

import asyncio
import socket

import pytest

import aiouring
from support.wait import wait_for_condition
from aiouring import Backend
from typing import Any, Callable, cast
from support.udp import EndpointFactory, Recorder


@pytest.fixture(params=["asyncio-stdlib", "uring", "epoll"])
def endpoint(request: pytest.FixtureRequest) -> EndpointFactory:
    """create_datagram_endpoint of the kind under test."""
    kind = request.param

    async def create(factory: Callable[[], Any] = Recorder, **kwargs: Any) -> Any:
        if kind == "asyncio-stdlib":
            return await asyncio.get_running_loop().create_datagram_endpoint(factory, **kwargs)
        return await aiouring.create_datagram_endpoint(factory, backend=kind, **kwargs)

    create.kind = kind  # type: ignore[attr-defined]  # what EndpointFactory adds to the function
    return cast(EndpointFactory, create)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_unconnected_echo_reports_addresses_like_asyncio(endpoint: EndpointFactory, host: str) -> None:
    server_t, server = await endpoint(local_addr=(host, 0))
    server_addr = server_t.get_extra_info("sockname")
    client_t, client = await endpoint(local_addr=(host, 0))
    client_addr = client_t.get_extra_info("sockname")
    for i in range(50):
        client_t.sendto(b"ping %d" % i, server_addr[:2])
    await server.wait(50)
    assert [d for d, _ in server.datagrams] == [b"ping %d" % i for i in range(50)]
    assert {a for _, a in server.datagrams} == {client_addr}
    for data, addr in server.datagrams:
        server_t.sendto(data.replace(b"ping", b"pong"), addr)
    await client.wait(50)
    assert [d for d, _ in client.datagrams] == [b"pong %d" % i for i in range(50)]
    assert {a for _, a in client.datagrams} == {server_addr}
    for t in (server_t, client_t):
        t.close()
    assert await server.lost is None and await client.lost is None


async def test_connected_endpoint_checks_addresses_like_asyncio(endpoint: EndpointFactory) -> None:
    server_t, server = await endpoint(local_addr=("127.0.0.1", 0))
    peer = server_t.get_extra_info("sockname")
    client_t, client = await endpoint(remote_addr=peer)
    assert client_t.get_extra_info("peername") == peer
    wrapped = client_t.get_extra_info("socket")
    assert not isinstance(wrapped, socket.socket)  # a wrapper that cannot be closed under the transport
    if endpoint.kind != "asyncio-stdlib":  # uvloop hands out its own PseudoSocket
        assert isinstance(wrapped, asyncio.trsock.TransportSocket)
    assert wrapped.fileno() >= 0 and wrapped.getpeername() == peer
    client_t.sendto(b"no address")
    client_t.sendto(b"the peer", peer)
    with pytest.raises(ValueError, match="Invalid address"):
        client_t.sendto(b"elsewhere", ("127.0.0.1", peer[1] + 1))
    await server.wait(2)
    assert [d for d, _ in server.datagrams] == [b"no address", b"the peer"]
    server_t.close()
    client_t.close()
    await server.lost
    await client.lost


async def test_bad_data_raises_type_error_and_empty_sends_nothing(endpoint: EndpointFactory) -> None:
    server_t, server = await endpoint(local_addr=("127.0.0.1", 0))
    client_t, client = await endpoint(remote_addr=server_t.get_extra_info("sockname"))
    with pytest.raises(TypeError, match="bytes-like"):
        client_t.sendto("text")
    client_t.sendto(b"")
    client_t.sendto(bytearray(b"bytearray"))
    client_t.sendto(memoryview(b"memoryview"))
    client_t.sendto(b"last")  # datagrams on loopback keep their order: an empty one would show up before
    await server.wait(3)
    assert [d for d, _ in server.datagrams] == [b"bytearray", b"memoryview", b"last"]
    server_t.close()
    client_t.close()
    await client.lost


async def test_icmp_port_unreachable_goes_to_error_received(endpoint: EndpointFactory) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    transport, protocol = await endpoint(remote_addr=("127.0.0.1", closed_port))
    for _ in range(3):
        transport.sendto(b"anyone?")
        await protocol.wait(len(protocol.errors) + 1)  # the ICMP error of this send
    assert len(protocol.errors) == 3 and all(isinstance(e, ConnectionRefusedError) for e in protocol.errors)
    assert not transport.is_closing()
    transport.close()
    assert await protocol.lost is None


async def test_sending_on_a_closed_connected_transport_is_dropped(endpoint: EndpointFactory) -> None:
    server_t, server = await endpoint(local_addr=("127.0.0.1", 0))
    client_t, client = await endpoint(remote_addr=server_t.get_extra_info("sockname"))
    client_t.close()
    await client.lost
    for _ in range(7):
        client_t.sendto(b"too late")  # no exception: dropped (and logged after a few)
    other_t, _ = await endpoint(remote_addr=server_t.get_extra_info("sockname"))
    other_t.sendto(b"sentinel")
    await server.wait(1)
    assert [d for d, _ in server.datagrams] == [b"sentinel"]
    assert [e for e in client.events if isinstance(e, str)] == ["connection_made", "connection_lost"]
    other_t.close()
    server_t.close()
    await server.lost


async def test_thousand_datagrams_arrive_with_contents(endpoint: EndpointFactory) -> None:
    server_t, server = await endpoint(local_addr=("127.0.0.1", 0))
    server_t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    client_t, client = await endpoint(remote_addr=server_t.get_extra_info("sockname"))
    payloads = [bytes([i % 256]) * (1 + i % 1400) for i in range(1000)]
    for i in range(0, 1000, 100):
        for p in payloads[i : i + 100]:
            client_t.sendto(p)
        await server.wait(i + 100)
    assert [d for d, _ in server.datagrams] == payloads
    server_t.close()
    client_t.close()
    await server.lost


async def test_datagram_larger_than_a_write_slot_keeps_its_place(endpoint: EndpointFactory) -> None:
    server_t, server = await endpoint(local_addr=("127.0.0.1", 0))
    client_t, client = await endpoint(remote_addr=server_t.get_extra_info("sockname"))
    client_t.sendto(b"small first")
    client_t.sendto(b"L" * 60000)
    client_t.sendto(b"small last")
    await server.wait(3)
    assert [d[:11] for d, _ in server.datagrams] == [b"small first", b"L" * 11, b"small last"]
    assert len(server.datagrams[1][0]) == 60000
    server_t.close()
    client_t.close()
    await server.lost


async def test_abort_calls_connection_lost_once(endpoint: EndpointFactory) -> None:
    transport, protocol = await endpoint(local_addr=("127.0.0.1", 0))
    transport.abort()
    transport.abort()
    transport.close()
    assert await protocol.lost is None
    transport.abort()
    for _ in range(3):
        await asyncio.sleep(0)  # a second connection_lost would be scheduled by now
    assert [e for e in protocol.events if isinstance(e, str)] == ["connection_made", "connection_lost"]


@pytest.mark.parametrize("backend", ["uring", "epoll"])
async def test_every_accepted_byte_counts_for_flow_control(backend: Backend) -> None:
    server_t, server = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend)
    client_t, client = await aiouring.create_datagram_endpoint(Recorder, remote_addr=server_t.get_extra_info("sockname"), backend=backend)
    client_t.set_write_buffer_limits(high=100, low=10)
    for i in range(20):
        client_t.sendto(b"x" * 50)
        assert client_t.get_write_buffer_size() == 50 * (i + 1)  # until the kernel has them
        assert client.events.count("pause_writing") == (i >= 2)  # above 100 bytes: paused, once
    await server.wait(20)
    await wait_for_condition(lambda: "resume_writing" in client.events)
    assert client.events.index("resume_writing") > client.events.index("pause_writing")
    assert client_t.get_write_buffer_size() == 0
    server_t.close()
    client_t.close()
    await client.lost


async def test_a_slow_endpoint_never_holds_up_another() -> None:
    """Sends wait per endpoint: one whose socket is full does not stop the others."""
    server_t, server = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend="uring")
    sink_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink_sock.bind(("127.0.0.1", 0))
    sink_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    slow_t, slow = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend="uring")
    slow_t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # the kernel's minimum
    for _ in range(2000):
        slow_t.sendto(b"s" * 1400, sink_sock.getsockname())
    fast_t, fast = await aiouring.create_datagram_endpoint(Recorder, remote_addr=server_t.get_extra_info("sockname"), backend="uring")
    for i in range(50):
        fast_t.sendto(b"fast %d" % i)
    await server.wait(50)
    assert [d for d, _ in server.datagrams] == [b"fast %d" % i for i in range(50)]
    for t in (server_t, slow_t, fast_t):
        t.abort()
    sink_sock.close()
    await slow.lost


@pytest.mark.parametrize("backend", ["uring", "epoll"])
async def test_batch_hook_gets_datagrams_in_lists(backend: Backend) -> None:
    class Batches(Recorder):
        def datagrams_received(self, datagrams: list[tuple[bytes, Any]]) -> None:
            self.batches = getattr(self, "batches", []) + [len(datagrams)]
            for data, addr in datagrams:
                self.datagram_received(data, addr)

    server_t, server = await aiouring.create_datagram_endpoint(Batches, local_addr=("127.0.0.1", 0), backend=backend)
    client_t, _ = await aiouring.create_datagram_endpoint(Recorder, remote_addr=server_t.get_extra_info("sockname"), backend=backend)
    for i in range(100):
        client_t.sendto(b"%d" % i)
    await server.wait(100)
    assert sum(server.batches) == 100 and [d for d, _ in server.datagrams] == [b"%d" % i for i in range(100)]
    server_t.close()
    client_t.close()
    await server.lost


async def test_endpoint_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="family"):
        await aiouring.create_datagram_endpoint(Recorder)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        with pytest.raises(ValueError, match="UDP"):
            await aiouring.create_datagram_endpoint(Recorder, sock=tcp)
    with pytest.raises(TypeError):
        await aiouring.create_datagram_endpoint(Recorder, local_addr="127.0.0.1:5000")


async def test_fake_ring_endpoint_delivers_sends_and_reports_errors() -> None:
    """The same transport on the fake ring: what a user's test suite would use."""
    import errno as errno_
    from aiouring.testing import fake_datagram_endpoint

    transport, protocol, device = await fake_datagram_endpoint(Recorder)
    device.inject_datagram(b"hello", ("10.0.0.9", 4000))
    device.inject_datagram(b"again", ("10.0.0.9", 4000))
    await protocol.wait(2)
    assert protocol.datagrams == [(b"hello", ("10.0.0.9", 4000)), (b"again", ("10.0.0.9", 4000))]
    transport.sendto(b"reply", ("10.0.0.9", 4000))
    await wait_for_condition(lambda: device.sent)
    assert device.sent == [(b"reply", ("10.0.0.9", 4000))]
    device.fail_writes(errno_.ECONNREFUSED)
    transport.sendto(b"refused", ("10.0.0.9", 4000))
    await protocol.wait(3)
    assert isinstance(protocol.errors[0], ConnectionRefusedError)
    transport.close()
    assert await protocol.lost is None
    transport.get_extra_info("ring").close()


@pytest.mark.parametrize("backend", ["uring", "epoll"])
async def test_each_datagram_of_a_batch_reaches_its_own_destination(backend: Backend) -> None:
    """One loop iteration's sends to several addresses leave as one batch:
    each must go where its own sendto said, whatever Python does with the
    memory meanwhile (the kernel reads the addresses at submit time)."""
    receivers = []
    for _ in range(4):
        t, p = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend)
        t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        receivers.append((t, p))
    sender_t, sender = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend)
    # a second sender, flushed right after the first, allocates batches of the same sizes
    other_t, other = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend)
    drop = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    drop.bind(("127.0.0.1", 0))
    for round_ in range(5):
        for i in range(200):
            t, _ = receivers[i % 4]
            host, port = t.get_extra_info("sockname")
            sender_t.sendto(b"%d.%d" % (round_, i), (str(host), int(port)))  # fresh tuples each time
            other_t.sendto(b"x" * 8, drop.getsockname())
        await asyncio.sleep(0)
    for n, (t, p) in enumerate(receivers):
        await p.wait(250)
        assert sorted(d for d, _ in p.datagrams) == sorted(b"%d.%d" % (r, i) for r in range(5) for i in range(n, 200, 4))
    assert sender.errors == []
    drop.close()
    for t, p in receivers + [(sender_t, sender), (other_t, other)]:
        t.close()
        await p.lost


@pytest.mark.parametrize("backend", ["uring", "epoll"])
async def test_empty_small_and_oversize_datagrams_arrive_in_order_with_their_errors(backend: Backend) -> None:
    """Both backends hand over the same thing: empty datagrams are datagrams,
    one longer than max_datagram_size is EMSGSIZE in its place, never cut short."""
    events: list[int | str] = []
    done = asyncio.Event()

    class Order(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            events.append(len(data))
            if data == b"after":
                done.set()

        def error_received(self, exc: Exception) -> None:
            assert isinstance(exc, OSError)
            events.append(type(exc).__name__ + str(exc.errno))

    transport, _ = await aiouring.create_datagram_endpoint(Order, local_addr=("127.0.0.1", 0), backend=backend, max_datagram_size=1516)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in [b"", b"\x45", b"x" * 16, b"y" * 1516, b"z" * 1517, b"w" * 60000, b"after"]:
            s.sendto(d, transport.get_extra_info("sockname"))
        await asyncio.wait_for(done.wait(), 5)
    import errno as errno_

    assert events == [0, 1, 16, 1516, f"OSError{errno_.EMSGSIZE}", f"OSError{errno_.EMSGSIZE}", 5]
    transport.close()
