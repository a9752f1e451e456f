"""UDP GSO/GRO through the public endpoint factory (issue 12, item 2):
``gso``/``gro`` "auto", on and off, the kill switch, and what the protocol
sees, on the real kernel's loopback in a namespace, both backends and loops.
The counters of ``get_extra_info("stats")`` show that sends and receives were
merged (``writes``/``reads`` well below the datagram count)."""
from __future__ import annotations

import asyncio
import errno
import logging
import socket

import pytest

import aiouring
from aiouring import offload as offload_fns
from support.netns import network_namespace
from support.udp import Recorder
from support.wait import wait_for_condition
from aiouring import Backend
from pathlib import Path
from typing import Any, Iterator

UDP_GRO = 104


@pytest.fixture
def loopback() -> Iterator[None]:
    with network_namespace():
        yield


async def endpoint(backend: Backend, **kwargs: Any) -> tuple[aiouring.DatagramTransport, Recorder]:
    return await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend, **kwargs)


async def close(*pairs: tuple[Any, Any]) -> None:
    for transport, protocol in pairs:
        transport.close()
        assert await protocol.lost is None


async def test_auto_turns_gso_and_gro_on_for_a_udp_socket(loopback: None, backend: Backend) -> None:
    transport, protocol = await endpoint(backend)
    assert transport.get_extra_info("offload") == frozenset({"gso", "gro"})
    assert transport.get_extra_info("socket").getsockopt(socket.SOL_UDP, UDP_GRO) == 1
    await close((transport, protocol))


async def test_a_burst_leaves_in_few_sends_and_arrives_as_the_datagrams_sent(loopback: None, backend: Backend) -> None:
    rx = await endpoint(backend, receive_buffers=256)
    rx[0].get_extra_info("socket").setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: hold the burst
    tx = await endpoint(backend)
    dst = rx[0].get_extra_info("sockname")
    sizes = [1200] * 500 + [700] + [1400] * 30 + [50]  # runs, a shorter tail, a new size
    sent = [b"%05d" % i + bytes([i % 251]) * (n - 5) for i, n in enumerate(sizes)]
    for datagram in sent:
        tx[0].sendto(datagram, dst)
    await wait_for_condition(lambda: len(rx[1].datagrams) >= len(sent))
    assert [d for d, _ in rx[1].datagrams] == sent
    assert {a for _, a in rx[1].datagrams} == {tx[0].get_extra_info("socket").getsockname()}
    assert rx[1].errors == [] and tx[1].errors == []
    out, into = tx[0].get_extra_info("stats"), rx[0].get_extra_info("stats")
    assert (out.packets_sent, out.bytes_sent) == (len(sent), sum(sizes))
    assert (into.packets_received, into.bytes_received) == (len(sent), sum(sizes))
    assert out.writes <= len(sent) // 10, out  # GSO: runs of equal datagrams went as one send
    assert into.reads <= len(sent) // 10, into  # GRO: the kernel handed over merged datagrams
    await close(tx, rx)


async def test_false_sends_and_receives_one_by_one(loopback: None, backend: Backend) -> None:
    rx = await endpoint(backend, gso=False, gro=False)
    rx[0].get_extra_info("socket").setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: hold the burst
    tx = await endpoint(backend, gso=False, gro=False)
    assert rx[0].get_extra_info("offload") == frozenset() == tx[0].get_extra_info("offload")
    assert rx[0].get_extra_info("socket").getsockopt(socket.SOL_UDP, UDP_GRO) == 0
    dst = rx[0].get_extra_info("sockname")
    for i in range(100):
        tx[0].sendto(b"%03d" % i * 300, dst)
    await wait_for_condition(lambda: len(rx[1].datagrams) >= 100)
    assert [d for d, _ in rx[1].datagrams] == [b"%03d" % i * 300 for i in range(100)]
    assert tx[0].get_extra_info("stats").writes == 100
    assert rx[0].get_extra_info("stats").reads == 100
    await close(tx, rx)


async def test_gro_false_turns_it_off_on_an_adopted_socket(loopback: None, backend: Backend) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    transport, protocol = await aiouring.create_datagram_endpoint(Recorder, sock=sock, backend=backend, gro=False)
    assert sock.getsockopt(socket.SOL_UDP, UDP_GRO) == 0
    assert "gro" not in transport.get_extra_info("offload")
    await close((transport, protocol))


async def test_the_kill_switch_turns_them_off_and_true_then_raises(loopback: None, backend: Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(offload_fns.DISABLE_ENV, "gso,gro")
    with caplog.at_level(logging.INFO, logger="aiouring"):
        transport, protocol = await endpoint(backend)
    assert transport.get_extra_info("offload") == frozenset()
    assert sum(offload_fns.DISABLE_ENV in r.getMessage() for r in caplog.records) == 2
    await close((transport, protocol))
    for kind in ("gso", "gro"):
        with pytest.raises(ValueError, match=f"{kind}=True.*{offload_fns.DISABLE_ENV}"):
            await endpoint(backend, **{kind: True})
    monkeypatch.setenv(offload_fns.DISABLE_ENV, "gro")
    transport, protocol = await endpoint(backend)
    assert transport.get_extra_info("offload") == frozenset({"gso"})
    await close((transport, protocol))


async def test_a_socket_that_is_not_udp_goes_without_and_true_raises(tmp_path: Path, backend: Backend) -> None:
    path = str(tmp_path / "sock")
    with pytest.raises(ValueError, match="gso=True.*not a UDP socket"):
        await aiouring.create_datagram_endpoint(Recorder, local_addr=path, family=socket.AF_UNIX, backend=backend, gso=True)
    transport, protocol = await aiouring.create_datagram_endpoint(Recorder, local_addr=path, family=socket.AF_UNIX, backend=backend)
    assert transport.get_extra_info("offload") == frozenset()
    await close((transport, protocol))


@pytest.mark.parametrize("value", ["yes", 1, None, "AUTO"])
async def test_a_bad_value_is_a_value_error_naming_the_argument(loopback: None, backend: Backend, value: object) -> None:
    for kind in ("gso", "gro"):
        with pytest.raises(ValueError, match=f"{kind} must be 'auto', True or False"):
            await endpoint(backend, **{kind: value})


async def test_with_gro_a_datagram_longer_than_max_datagram_size_is_still_refused_in_its_place(loopback: None, backend: Backend) -> None:
    """GRO needs receive buffers that hold a super-datagram; max_datagram_size
    keeps its meaning: a longer datagram goes to error_received (EMSGSIZE) in
    its place among the others, and merged ones of allowed size pass."""
    transport, protocol = await endpoint(backend, max_datagram_size=1000)
    assert "gro" in transport.get_extra_info("offload")
    dst = transport.get_extra_info("sockname")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(b"a" * 500, dst)
        tx.sendto(b"b" * 2000, dst)
        for i in range(20):
            tx.sendto(b"%02d" % i * 450, dst)
        await wait_for_condition(lambda: len(protocol.events) >= 1 + 1 + 1 + 20)
    kinds = [e if isinstance(e, str) else e[0] for e in protocol.events]
    assert kinds == ["connection_made", "datagram", "error"] + ["datagram"] * 20
    assert protocol.events[1] == ("datagram", b"a" * 500)
    assert isinstance(protocol.errors[0], OSError) and protocol.errors[0].errno == errno.EMSGSIZE and "max_datagram_size" in str(protocol.errors[0])
    assert [d for d, _ in protocol.datagrams[1:]] == [b"%02d" % i * 450 for i in range(20)]
    stats = transport.get_extra_info("stats")
    assert (stats.packets_received, stats.receive_errors) == (21, 1)  # the refused one is an error, not a packet
    await close((transport, protocol))


async def test_a_refused_gso_send_is_resent_one_by_one_through_the_endpoint(loopback: None, backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    """SO_NO_CHECK makes the kernel refuse UDP_SEGMENT sends: every datagram
    still arrives once, GSO goes off for this endpoint, said once."""
    rx = await endpoint(backend)
    tx = await endpoint(backend)
    tx[0].get_extra_info("socket").setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK
    dst = rx[0].get_extra_info("sockname")
    with caplog.at_level(logging.WARNING, logger="aiouring"):
        for i in range(60):
            tx[0].sendto(b"%02d" % i * 100, dst)
        await wait_for_condition(lambda: len(rx[1].datagrams) >= 60)
    assert [d for d, _ in rx[1].datagrams] == [b"%02d" % i * 100 for i in range(60)]
    assert tx[1].errors == []
    assert tx[0].get_extra_info("offload") == frozenset({"gro"})
    assert sum("UDP GSO is off" in r.getMessage() for r in caplog.records) == 1
    assert tx[0].get_extra_info("stats").send_errors == 0
    await close(tx, rx)


async def test_stats_count_drops_and_errors(loopback: None, backend: Backend) -> None:
    transport, protocol = await endpoint(backend)
    transport.sendto(b"x", ("no-such-host.invalid", 9))
    await wait_for_condition(lambda: protocol.errors)
    assert isinstance(protocol.errors[0], socket.gaierror)
    transport.close()
    transport.sendto(b"after close", ("127.0.0.1", 9))
    assert await protocol.lost is None
    stats = transport.get_extra_info("stats")
    assert isinstance(stats, aiouring.TransportStats)
    assert (stats.send_errors, stats.dropped, stats.packets_sent) == (1, 1, 0)
