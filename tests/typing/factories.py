"""Checked by mypy (tests/test_types.py), never run: the factories are
generic in the protocol, so no cast is needed to reach your own protocol's
attributes."""
from __future__ import annotations

import asyncio
from typing import assert_type

import aiouring
from aiouring.testing import FakeDevice, FakePeer, fake_datagram_endpoint, fake_tun_connection


class MyProto(aiouring.TunProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def packet_received(self, packet: bytes) -> None:
        self.packets.append(packet)


class MyDgram(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, tuple[str, int]]] = []


async def tun_connection() -> None:
    transport, protocol = await aiouring.create_tun_connection(MyProto)
    assert_type(transport, aiouring.TunTransport)
    assert_type(protocol, MyProto)
    assert_type(protocol.packets, list[bytes])
    assert_type(await aiouring.create_tun_connection(MyProto, "tun7", mode="tap", backend="epoll"),
                tuple[aiouring.TunTransport, MyProto])
    assert_type(await aiouring.create_tun_connection(lambda: MyProto()), tuple[aiouring.TunTransport, MyProto])


async def datagram_endpoint() -> None:
    pair = await aiouring.create_datagram_endpoint(MyDgram, local_addr=("127.0.0.1", 0))
    assert_type(pair, tuple[aiouring.DatagramTransport, MyDgram])
    assert_type(pair[1].datagrams, list[tuple[bytes, tuple[str, int]]])


async def fakes() -> None:
    assert_type(await fake_tun_connection(MyProto), tuple[aiouring.TunTransport, MyProto, FakePeer])
    assert_type(await fake_datagram_endpoint(MyDgram), tuple[aiouring.DatagramTransport, MyDgram, FakeDevice])


async def literals_and_packets() -> None:
    tun = await aiouring.open_tun(addresses=["10.0.0.1/24"], routes=[aiouring.Route("10.9.0.0/16", gateway="10.0.0.2")])
    assert_type(tun.mode, aiouring.Mode)
    assert_type(await tun.read(), bytes)
    assert_type(await tun.read_batch(), list[bytes])
    await tun.write(bytearray(b"\x45"))
    async with aiouring.Ring() as ring:
        assert_type(ring, aiouring.Ring)
