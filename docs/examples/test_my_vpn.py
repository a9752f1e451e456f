# test_my_vpn.py: runs as is with pytest and pytest-asyncio in its default
# (strict) mode; no root, no io_uring.  (pip install "aiouring-net[testing]")
import pytest

import aiouring

pytestmark = pytest.mark.asyncio  # not needed with asyncio_mode = "auto"

# an IPv4 ICMP echo request, 10.0.0.2 -> 10.0.0.1
PING = bytes.fromhex("4500001c00000000400100000a0000020a000001" "0800f7ff00000000")


async def test_the_awaitable_tun_echoes(fake_tun):
    fake_tun.peer.send(PING)  # the network sends a packet...
    packet = await fake_tun.tun.read()  # ...the code under test reads it
    await fake_tun.tun.write(packet)  # and writes it back
    assert await fake_tun.peer.receive() == PING  # what the network got


class Echo(aiouring.TunProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def packet_received(self, packet):
        self.transport.write(packet)


async def test_the_protocol_echoes(fake_tun_connection):
    transport, protocol, peer = await fake_tun_connection(Echo)
    peer.send(PING)
    assert await peer.receive() == PING
    stats = transport.get_extra_info("stats")
    assert (stats.packets_received, stats.packets_sent) == (1, 1)
