"""The program: a config file in, a WireGuard interface up until SIGTERM/SIGINT.

    python examples/wireguard wg0.conf [--interface wg0]

Brings up a TUN named after ``--interface`` (default: the file's name
without ``.conf``, as wg-quick does) with the config's Address and MTU
(default 1420), one UDP socket on ListenPort (IPv6 and IPv4 together when the
host has IPv6), routes for the peers' AllowedIPs, and ``wg show NAME``'s
socket; prints ``ready ...`` once up.  SIGUSR1 prints the counters; SIGTERM
or SIGINT stop it cleanly (hooks, rules, transports) and print them.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import socket
import sys
from typing import Any

import aiouring

from . import constants as K
from . import net, uapi
from .config import Config, ConfigError, load
from .crypto import key_to_base64
from .device import Device

SO_SNDBUFFORCE, SO_RCVBUFFORCE, SO_MARK = 32, 33, 36  # Linux; not all in the socket module
DEFAULT_MTU = 1420


class TunSide(aiouring.TunProtocol):
    def __init__(self, device: Device) -> None:
        self.device = device
        self.from_tun = device.from_tun
        self.errors = 0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    def packets_received(self, packets: list[bytes]) -> None:
        try:
            self.from_tun(packets)
        except Exception:
            self.device.drops["internal_error"] += 1
            if not self.errors:
                import logging

                logging.getLogger("aiouring.wireguard").exception("unexpected error on the send path")
            self.errors += 1

    def error_received(self, exc: Exception) -> None:
        _count_error(self.device, "tun", exc)


class UdpSide(asyncio.DatagramProtocol):
    def __init__(self, device: Device) -> None:
        self.device = device
        self.datagrams_received = device.process_udp
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.device.process_udp([(data, addr)])

    def error_received(self, exc: Exception) -> None:
        _count_error(self.device, "udp", exc)


def _count_error(device: Device, side: str, exc: Exception) -> None:
    # ECONNREFUSED while a peer is down is expected; EMSGSIZE is a datagram
    # larger than the receive buffers, dropped
    key = f"{side}_error_" + errno.errorcode.get(getattr(exc, "errno", 0) or 0, "other")
    device.stats[key] = device.stats.get(key, 0) + 1


def open_socket(port: int, fwmark: int) -> socket.socket:
    """One UDP socket for both families when IPv6 is there (IPv4 peers appear
    as ::ffff:a.b.c.d), else an IPv4 one."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        except OSError:
            sock.close()
            raise
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", port))
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, 4 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, 4 << 20)
    if fwmark:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, fwmark)
    return sock


def resolve(endpoint: tuple[str, int], family: int) -> Any:
    """An Endpoint as the socket's address tuple (resolving a name once, as wg does)."""
    host, port = endpoint
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        for fam, _, _, _, addr in infos:
            if fam == socket.AF_INET6 and len(addr) == 4:  # (an AF_INET6 address always is)
                return (addr[0], port, 0, addr[3])
        return ("::ffff:" + str(infos[0][4][0]), port, 0, 0)
    for fam, _, _, _, addr in infos:
        if fam == socket.AF_INET:
            return (addr[0], port)
    raise ConfigError(f"endpoint {host}:{port} has no IPv4 address and this host has no IPv6")


def show_endpoint(addr: Any) -> str:
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        return f"{host[7:]}:{addr[1]}"
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


class Interface:
    """The device with its TUN, socket, routes and timer task."""

    def __init__(self, config: Config, name: str, backend: aiouring.Backend, offload: aiouring.Offload = "auto") -> None:
        self.config = config
        self.name = name
        self.backend = backend
        self.offload = offload
        self.mtu = config.mtu or DEFAULT_MTU
        self.device = Device(config.private_key, mtu=self.mtu)
        self.tun: Any = None
        self.udp: Any = None
        self.routes = net.Routes(name, config)
        self.uapi: Any = None
        self.timer: asyncio.Task[None] | None = None
        self.listen_port = 0

    async def up(self) -> None:
        config = self.config
        await net.run_hooks(config.pre_up, self.name)
        sock = open_socket(config.listen_port, config.fwmark)
        self.listen_port = sock.getsockname()[1]
        for p in config.peers:
            endpoint = resolve(p.endpoint, sock.family) if p.endpoint else None
            self.device.add_peer(p.public_key, preshared_key=p.preshared_key, endpoint=endpoint,
                                 allowed_ips=p.allowed_ips, persistent_keepalive=p.persistent_keepalive)
        device = self.device
        try:
            self.udp, _ = await aiouring.create_datagram_endpoint(
                lambda: UdpSide(device), sock=sock, backend=self.backend,
                max_datagram_size=max(self.mtu, 1500) + K.KEEPALIVE_SIZE + K.PADDING, receive_buffers=1024,
                gso=self.offload, gro=self.offload,
            )
        except BaseException:
            sock.close()
            raise
        # before the TUN: with IPv6 on it emits packets (router solicitations)
        # from the moment it is up, and a peer whose AllowedIPs take them
        # starts a handshake at once
        device.send = self.udp.sendto
        self.tun, _ = await aiouring.create_tun_connection(
            lambda: TunSide(device), self.name, addresses=[str(a) for a in config.addresses], mtu=self.mtu,
            backend=self.backend, offload=self.offload,
        )
        self.tun.set_write_buffer_limits(high=4 << 20)
        self.udp.set_write_buffer_limits(high=4 << 20)
        device.write = self.tun.write
        await self.routes.apply(lambda mark: sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark))
        self.uapi = await uapi.serve(self.name, lambda: uapi.describe(device, self.listen_port, self.routes.fwmark, show_endpoint))
        await net.run_hooks(config.post_up, self.name)
        if config.dns:
            print("note: DNS = ... is not applied (use resolvconf yourself)", file=sys.stderr, flush=True)
        device.start()
        self.timer = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        tick = self.device.tick
        while True:
            await asyncio.sleep(K.TICK)
            try:
                tick()
            except Exception:
                self.device.drops["internal_error"] += 1
                import logging

                logging.getLogger("aiouring.wireguard").exception("unexpected error in the timers")

    async def down(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            try:
                await self.timer
            except asyncio.CancelledError:
                pass
        await net.run_hooks(self.config.pre_down, self.name)
        await uapi.close(self.uapi, self.name)
        await self.routes.undo()
        # UDP first: once closed it delivers nothing more, so nothing is
        # written to a TUN that is closing (its write() would raise)
        for transport in (self.udp, self.tun):
            if transport is not None:
                transport.close()  # sends what is queued first
                try:
                    await asyncio.wait_for(asyncio.shield(transport.get_protocol().closed), 5)
                except asyncio.TimeoutError:
                    transport.abort()
        await net.run_hooks(self.config.post_down, self.name)

    def counters_line(self) -> str:
        counters = self.device.counters()
        peers = " ".join(f"peer{i}_handshakes={p.handshakes}" for i, p in enumerate(self.device.peers.values()))
        return "counters: " + " ".join(f"{k}={v}" for k, v in counters.items()) + (" " + peers if peers else "")


async def run(args: argparse.Namespace) -> int:
    try:
        config = load(args.config)
    except (OSError, ConfigError) as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 2
    name = args.interface or os.path.basename(args.config).removesuffix(".conf")
    if not name or len(name) > 15:
        print(f"bad interface name {name!r} (1 to 15 characters): use --interface", file=sys.stderr)
        return 2
    if config.save_config:
        print("note: SaveConfig is ignored", file=sys.stderr, flush=True)
    offloads: dict[str, aiouring.Offload] = {"auto": "auto", "on": True, "off": False}
    interface = Interface(config, name, args.backend, offloads[args.offload])
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: None if stop.done() else stop.set_result(None))
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(interface.counters_line(), flush=True))
    try:
        await interface.up()
        addresses = ",".join(str(a) for a in config.addresses) or "-"
        print(f"ready {name} public_key={key_to_base64(interface.device.public_key)} listen_port={interface.listen_port} "
              f"address={addresses} mtu={interface.mtu} peers={len(config.peers)} backend={interface.udp.get_extra_info('backend')}",
              flush=True)
        await stop
    finally:
        await interface.down()
        print(interface.counters_line(), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python examples/wireguard", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a wg / wg-quick configuration file")
    parser.add_argument("--interface", "-i", default=None, help="interface name (default: the config file's name)")
    parser.add_argument("--backend", default="auto", choices=aiouring.BACKENDS)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--offload", default="auto", choices=["auto", "on", "off"],
                        help="TUN super-packets and UDP GSO/GRO: auto (where the kernel takes them), on (or fail), off")
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        return uvloop.run(run(args))
    return asyncio.run(run(args))
