#!/usr/bin/env python3
"""A point-to-point VPN tunnel: a TUN on each side, UDP between them, every
packet sealed with ChaCha20-Poly1305.

    # on peer A (192.168.77.1)                   # on peer B (192.168.77.2)
    python examples/tunnel.py \\                  python examples/tunnel.py \\
        --address 10.50.0.1/24 \\                     --address 10.50.0.2/24 \\
        --listen 0.0.0.0:51820 \\                     --listen 0.0.0.0:51820 \\
        --peer 192.168.77.2:51820 --key-file psk     --peer 192.168.77.1:51820 --key-file psk

The key is 32 bytes, given in hex with --key or in a file (hex or raw).
Wire format of a datagram: a 4-byte sender salt, chosen at random when the
process starts, an 8-byte counter, then the ChaCha20-Poly1305 ciphertext of
the packet; salt and counter form the 12-byte nonce and are authenticated, so
a nonce never repeats (a restarted peer picks a new salt) and any change to a
datagram makes it fail authentication.  Each receiver keeps a 2048-packet
sliding replay window per sender salt (for the last 4 salts), so a replayed
datagram is dropped.  Without --peer the tunnel waits and answers the last
address that sent it an authentic datagram.  --plain skips the encryption
(same framing) to measure the data path alone.

--io picks the plumbing: aiouring (default: TUN transport + UDP endpoint on the
ring), or, for comparison, the stdlib with the add_reader drain recipe on the
TUN (stdlib-drain) or with connect_read_pipe/connect_write_pipe (stdlib-pipes),
both with loop.create_datagram_endpoint.  SIGINT/SIGTERM stop it cleanly; the
counters are printed on exit.
"""
from __future__ import annotations

import argparse
import asyncio
import binascii
import errno
import os
import signal
import socket
import struct
import sys
from typing import Any

import aiouring

HEADER = struct.Struct("!4sQ")
WINDOW = 2048
SALTS_KEPT = 4
OVERHEAD = HEADER.size + 16


class ReplayWindow:
    """RFC 6479-style sliding window over 64-bit counters."""

    def __init__(self) -> None:
        self.top = -1
        self.bits = 0

    def check_and_set(self, counter: int) -> bool:
        if counter > self.top:
            shift = counter - self.top
            self.bits = ((self.bits << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self.top = counter
            return True
        offset = self.top - counter
        if offset >= WINDOW or self.bits >> offset & 1:
            return False
        self.bits |= 1 << offset
        return True


class Sealer:
    """Seals and opens datagrams; counts what it rejects."""

    def __init__(self, key: bytes | None) -> None:
        self.salt = os.urandom(4)
        self.counter = 0
        self.aead = None
        if key is not None:
            from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

            self.aead = ChaCha20Poly1305(key)
        self.windows: dict[bytes, ReplayWindow] = {}
        self.stats = {"sent": 0, "received": 0, "rejected": 0, "replayed": 0, "malformed": 0}

    def seal(self, packet: bytes) -> bytes:
        header = HEADER.pack(self.salt, self.counter)
        self.counter += 1
        self.stats["sent"] += 1
        if self.aead is None:
            return header + packet
        return header + self.aead.encrypt(header, packet, header)

    def open(self, datagram: bytes) -> bytes | None:
        if len(datagram) < HEADER.size + 1:
            self.stats["malformed"] += 1
            return None
        header = datagram[: HEADER.size]
        if self.aead is None:
            packet = datagram[HEADER.size :]
        else:
            try:
                packet = self.aead.decrypt(header, datagram[HEADER.size :], header)
            except Exception:  # cryptography's InvalidTag: forged, damaged or wrong key
                self.stats["rejected"] += 1
                return None
        salt, counter = HEADER.unpack(header)
        window = self.windows.get(salt)
        if window is None:
            if len(self.windows) >= SALTS_KEPT:
                self.windows.pop(next(iter(self.windows)))
            window = self.windows[salt] = ReplayWindow()
        if not window.check_and_set(counter):
            self.stats["replayed"] += 1
            return None
        if not packet or packet[0] >> 4 not in (4, 6):
            self.stats["malformed"] += 1
            return None
        self.stats["received"] += 1
        return packet


# -- aiouring plumbing ------------------------------------------------------------


class TunSide(aiouring.TunProtocol):
    def __init__(self, tunnel: "Tunnel") -> None:
        self.tunnel = tunnel

    def packets_received(self, packets: list[bytes]) -> None:
        self.tunnel.from_tun(packets)


class UdpSide(asyncio.DatagramProtocol):
    def __init__(self, tunnel: "Tunnel") -> None:
        self.tunnel = tunnel

    def datagrams_received(self, datagrams: list[tuple[bytes, Any]]) -> None:
        self.tunnel.from_udp(datagrams)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.tunnel.from_udp([(data, addr)])

    def error_received(self, exc: Exception) -> None:
        # counted by errno name: ECONNREFUSED while the peer is down is expected
        key = "udp_" + errno.errorcode.get(getattr(exc, "errno", 0) or 0, "error")
        stats = self.tunnel.sealer.stats
        stats[key] = stats.get(key, 0) + 1


class Tunnel:
    """One side of the tunnel, on any plumbing (see ``open_tunnel``)."""

    def __init__(self, key: bytes | None, peer: Any) -> None:
        self.sealer = Sealer(key)
        self.peer = peer
        self.tun_write: Any = None
        self.udp: Any = None
        self.closers: list[Any] = []

    def from_tun(self, packets: list[bytes]) -> None:
        peer = self.peer
        if peer is None:
            return  # nobody to send to yet
        seal, sendto = self.sealer.seal, self.udp.sendto
        for packet in packets:
            sendto(seal(packet), peer)

    def from_udp(self, datagrams: list[tuple[bytes, Any]]) -> None:
        open_, write = self.sealer.open, self.tun_write
        for data, addr in datagrams:
            packet = open_(data)
            if packet is not None:
                if self.peer != addr:
                    self.peer = addr  # roaming: answer where authentic traffic comes from
                write(packet)

    def close(self) -> None:
        for close in self.closers:
            close()


async def open_tunnel(args: argparse.Namespace, key: bytes | None) -> tuple[Tunnel, str]:
    peer = _hostport(args.peer) if args.peer else None
    tunnel = Tunnel(key, peer)
    listen = _hostport(args.listen)
    loop = asyncio.get_running_loop()
    mtu = args.mtu
    if args.io == "aiouring":
        tun_t, _ = await aiouring.create_tun_connection(lambda: TunSide(tunnel), args.name, addresses=[args.address], mtu=mtu, backend=args.backend)
        udp_t, _ = await aiouring.create_datagram_endpoint(
            lambda: UdpSide(tunnel), local_addr=listen, backend=args.backend,
            max_datagram_size=mtu + OVERHEAD + 64, receive_buffers=1024,
        )
        _big_buffers(udp_t)
        tunnel.tun_write, tunnel.udp = tun_t.write, udp_t
        tunnel.closers = [tun_t.close, udp_t.close]
        return tunnel, tun_t.get_extra_info("name")
    device = aiouring.TunDevice.open(args.name)
    await device.configure(addresses=[args.address], mtu=mtu)
    fd = device.fileno()
    udp_t, _ = await loop.create_datagram_endpoint(lambda: UdpSide(tunnel), local_addr=listen)
    _big_buffers(udp_t)
    tunnel.udp = udp_t
    if args.io == "stdlib-drain":
        def on_readable() -> None:
            packets = []
            try:
                for _ in range(64):
                    packets.append(os.read(fd, 65536))
            except BlockingIOError:
                pass
            tunnel.from_tun(packets)

        def tun_write(packet: bytes) -> None:
            try:
                os.write(fd, packet)
            except OSError:
                pass

        loop.add_reader(fd, on_readable)
        tunnel.tun_write = tun_write
        tunnel.closers = [lambda: loop.remove_reader(fd), udp_t.close, device.close]
    else:  # stdlib-pipes
        class PipeSide(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                tunnel.from_tun([data])

        rfile = os.fdopen(os.dup(fd), "rb", buffering=0)
        wfile = os.fdopen(os.dup(fd), "wb", buffering=0)
        rt, _ = await loop.connect_read_pipe(PipeSide, rfile)
        wt, _ = await loop.connect_write_pipe(asyncio.Protocol, wfile)
        tunnel.tun_write = wt.write
        tunnel.closers = [rt.close, wt.close, udp_t.close, device.close]
    return tunnel, device.name


SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # Linux; not exported by the socket module


def _big_buffers(transport: Any) -> None:
    """Socket buffers of 4 MiB, past net.core.[rw]mem_max when root, as wireguard-go does."""
    sock = transport.get_extra_info("socket")
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, 4 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, 4 << 20)


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def load_key(args: argparse.Namespace) -> bytes | None:
    if args.plain:
        return None
    if args.key:
        raw = args.key.encode()
    elif args.key_file:
        with open(args.key_file, "rb") as f:
            raw = f.read().strip()
    else:
        raise SystemExit("a key is needed: --key HEX or --key-file FILE (or --plain to measure without encryption)")
    try:
        key = binascii.unhexlify(raw) if len(raw) == 64 else raw
    except binascii.Error:
        key = raw
    if len(key) != 32:
        raise SystemExit("the key must be 32 bytes (64 hex digits)")
    return key


async def run(args: argparse.Namespace) -> dict:
    key = load_key(args)
    tunnel, name = await open_tunnel(args, key)
    mode = "plain" if key is None else "chacha20-poly1305"
    print(f"ready: {name} {args.address} <-> {args.peer or 'any peer'} over UDP {args.listen} ({mode}, io={args.io})", flush=True)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    try:
        await asyncio.wait_for(asyncio.shield(stop), args.duration)
    except asyncio.TimeoutError:
        pass
    tunnel.close()
    await asyncio.sleep(0.05)
    stats = tunnel.sealer.stats
    print("counters: " + " ".join(f"{k}={v}" for k, v in stats.items()), flush=True)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True, help="this side's tunnel address, e.g. 10.50.0.1/24")
    parser.add_argument("--listen", default="0.0.0.0:51820", help="local UDP HOST:PORT")
    parser.add_argument("--peer", default=None, help="the other side's UDP HOST:PORT")
    parser.add_argument("--key", default=None, help="pre-shared key, 64 hex digits")
    parser.add_argument("--key-file", default=None, help="file holding the key (hex or 32 raw bytes)")
    parser.add_argument("--plain", action="store_true", help="no encryption (to measure the data path)")
    parser.add_argument("--mtu", type=int, default=1420)
    parser.add_argument("--name", default=None, help="TUN interface name")
    parser.add_argument("--io", default="aiouring", choices=["aiouring", "stdlib-drain", "stdlib-pipes"])
    parser.add_argument("--backend", default="auto", choices=aiouring.BACKENDS)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--duration", type=float, default=None)
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
