"""Two or more examples/wireguard devices joined by an in-memory wire, on a
fake clock: the protocol's state machines without sockets, TUNs or waiting."""
from __future__ import annotations

import ipaddress
import struct
from typing import Any, Callable

from wireguard import crypto
from wireguard.device import Device

OUTCOMES = ("received_data", "received_keepalive", "received_initiation", "received_response", "received_cookie")
TUN_SIDE_DROPS = ("no_route", "tun_not_ip", "staged_overflow", "handshake_failed")


def outcome_total(device: Device) -> int:
    """How many datagrams the device has accounted for: taken or dropped."""
    return sum(device.stats[k] for k in OUTCOMES) + sum(v for k, v in device.drops.items() if k not in TUN_SIDE_DROPS)


def ip_packet(src: str, dst: str, payload: bytes = b"ping", proto: int = 17) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0, s.packed, d.packed) + payload
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), proto, 64, s.packed, d.packed) + payload


class Node:
    def __init__(self, net: "Wire", name: str, address: tuple[Any, ...]) -> None:
        self.net = net
        self.name = name
        self.address = address
        self.private = crypto.private_bytes(crypto.generate_private())
        self.tun: list[bytes] = []  # packets the device wrote to its TUN
        self.device = Device(self.private, send=self._send, write=self._write, clock=lambda: net.now,
                             wall_clock=lambda: int(net.now * 1e9))

    def _write(self, packet: bytes) -> None:
        # what aiouring's TunTransport.write refuses, refused alike
        if not packet or len(packet) > self.device.mtu:
            raise ValueError(f"packet of {len(packet)} bytes for an MTU of {self.device.mtu}")
        self.tun.append(packet)

    def _send(self, data: bytes, addr: Any) -> None:
        self.net.in_flight.append((self.address, addr, data))
        self.net.sent.append((self.address, addr, data))


class Wire:
    """Datagrams wait in ``in_flight`` until ``deliver``; every one ever sent is kept in ``sent``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.in_flight: list[tuple[Any, Any, bytes]] = []
        self.sent: list[tuple[Any, Any, bytes]] = []
        self.nodes: dict[Any, Node] = {}

    def node(self, name: str, address: tuple[Any, ...]) -> Node:
        n = Node(self, name, address)
        self.nodes[address] = n
        return n

    def deliver(self, drop: Callable[[Any, Any, bytes], bool] = lambda src, dst, data: False, rounds: int = 20) -> int:
        delivered = 0
        for _ in range(rounds):
            if not self.in_flight:
                break
            batch, self.in_flight = self.in_flight, []
            for src, dst, data in batch:
                node = self.nodes.get(dst)
                if node is not None and not drop(src, dst, data):
                    node.device.process_udp([(data, src)])
                    delivered += 1
        return delivered

    def advance(self, seconds: float, step: float = 0.05) -> None:
        """Moves the clock, ticking every device's timers and delivering as it goes."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for node in list(self.nodes.values()):
                node.device.tick()
            self.deliver()


def connect(a: Node, b: Node, a_ips: list[str], b_ips: list[str], psk: bytes | None = None, **kw: Any) -> None:
    """Makes each node a peer of the other: ``a_ips`` are a's AllowedIPs at b and the other way round."""
    a.device.add_peer(b.device.public_key, preshared_key=psk, endpoint=b.address,
                      allowed_ips=[ipaddress.ip_network(n) for n in b_ips], **kw)
    b.device.add_peer(a.device.public_key, preshared_key=psk, endpoint=a.address,
                      allowed_ips=[ipaddress.ip_network(n) for n in a_ips], **kw)
