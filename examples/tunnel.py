#!/usr/bin/env python3
"""A point-to-point VPN tunnel: a TUN on each side, UDP between them, every
packet sealed with ChaCha20-Poly1305.

    # on peer A (192.168.77.1)                   # on peer B (192.168.77.2)
    python examples/tunnel.py \\                  python examples/tunnel.py \\
        --address 10.50.0.1/24 \\                     --address 10.50.0.2/24 \\
        --listen 0.0.0.0:51820 \\                     --listen 0.0.0.0:51820 \\
        --peer 192.168.77.2:51820 --key-file psk     --peer 192.168.77.1:51820 --key-file psk

The key is 32 bytes, given in hex with --key or in a file (hex or raw).

Wire format of a datagram: a 4-byte sender id (from the sender's tunnel
address: the two sides have different ones), a 4-byte salt chosen at random
when the process starts, an 8-byte counter, then the ChaCha20-Poly1305
ciphertext of the packet.  Salt and counter form the 12-byte nonce; the whole
16-byte header is authenticated, so any change to a datagram makes it fail.
The counter of a process starts at the wall clock in nanoseconds and goes up
by one per datagram; no process sends one datagram per nanosecond, so the
counters of a restarted peer start above everything its earlier lives sent.

The replay rule (receiver side; O(1) state, no list of salts to overflow):

* a datagram carrying this side's own sender id is refused (``reflected``):
  both directions share the key, so without the id an attacker could bounce
  a side's own datagrams back to it;
* the receiver knows one *current* peer salt and one 2048-counter sliding
  window over the peer's counters (RFC 6479).  A datagram with the current
  salt is accepted if the window takes its counter (new, or late but inside
  the window and not seen);
* a datagram with any other salt is a new life of the peer only if its
  counter is above every counter seen so far; then its salt becomes the
  current one.  Anything else is refused (``replayed``): datagrams of a
  superseded life, however many restarts ago, never come back, and a
  restarted peer is accepted at once because its counters start higher;
* only a datagram that could be delivered (an IPv4/IPv6 packet no larger
  than the local --mtu) may move this state; others are counted
  (``malformed``, ``oversize``) and change nothing;
* the tunnel roams (answers a new UDP address) only on a datagram that was
  delivered and is newer than anything seen before (``roamed`` counts it);
  a replay can neither be delivered nor move the tunnel.

Limits, stated plainly: the state lives in memory.  After *this* side
restarts it accepts the first authentic datagram of any life, so recorded
datagrams can be delivered (each at most once, in rising order) until the
live peer's next datagram, which is newer than any recording and pulls the
tunnel back.  A peer whose clock stepped back by more than the gap since its
last life is refused until its clock catches up: restart this side too.

Without --peer the tunnel waits and answers the last address that sent it an
authentic datagram.  --plain skips the encryption (same framing) to measure
the data path alone: it authenticates nothing, so it has no replay window and
roams only without --peer; never use it on a link others can reach.
Nothing received can take the tunnel down: a datagram or packet that cannot
be forwarded (malformed, forged, replayed, larger than the local --mtu) is
dropped and counted by reason in the counters printed on exit.  If a
transport dies anyway, the process says so on stderr and exits with 1.

--io picks the plumbing: aiouring (default: TUN transport + UDP endpoint on the
ring), or, for comparison, the stdlib: stdlib-drain is the best stdlib recipe
(add_reader and a bounded drain of os.read on the TUN and of recvfrom on the
UDP socket), stdlib-pipes the naive one (connect_read_pipe/connect_write_pipe
on the TUN, loop.create_datagram_endpoint for UDP).  SIGINT/SIGTERM stop it cleanly; the
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
import time
from typing import Any

import aiouring

HEADER = struct.Struct("!4s4sQ")  # sender id, salt, counter
WINDOW = 2048
TAG = 16
OVERHEAD = HEADER.size + TAG


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


def sender_id(address: str) -> bytes:
    """The 4-byte id a side puts in its datagrams: from its tunnel address."""
    import hashlib
    import ipaddress

    return hashlib.sha256(ipaddress.ip_interface(address).ip.packed).digest()[:4]


class Sealer:
    """Seals and opens datagrams under the replay rule of the module
    docstring; counts what it refuses, by reason."""

    def __init__(self, key: bytes | None, address: str, mtu: int = 65535) -> None:
        self.id = sender_id(address)
        self.mtu = mtu
        self.salt = os.urandom(4)
        self.counter = time.time_ns()  # see the module docstring: lives of a process start higher
        self.aead = None
        if key is not None:
            from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

            self.aead = ChaCha20Poly1305(key)
        self.peer_salt: bytes | None = None
        self.window = ReplayWindow()
        self.stats = {"sent": 0, "received": 0, "rejected": 0, "replayed": 0, "reflected": 0, "malformed": 0, "oversize": 0}

    def seal(self, packet: bytes) -> bytes:
        header = HEADER.pack(self.id, self.salt, self.counter)
        self.counter += 1
        self.stats["sent"] += 1
        if self.aead is None:
            return header + packet
        return header + self.aead.encrypt(header[4:], packet, header)

    def open(self, datagram: bytes) -> tuple[bytes, bool] | None:
        """``(packet, newest)`` for a datagram to deliver (``newest``: its
        counter is above all seen before, so the tunnel may roam to its
        sender), or None when it is refused (counted)."""
        stats = self.stats
        if len(datagram) < HEADER.size + (0 if self.aead is None else TAG) + 1:
            stats["malformed"] += 1
            return None
        header = datagram[: HEADER.size]
        if self.aead is None:
            packet = datagram[HEADER.size :]
        else:
            try:
                packet = self.aead.decrypt(header[4:], datagram[HEADER.size :], header)
            except Exception:  # cryptography's InvalidTag: forged, damaged or wrong key
                stats["rejected"] += 1
                return None
        sender, salt, counter = HEADER.unpack(header)
        if sender == self.id:
            stats["reflected"] += 1
            return None
        # what cannot be delivered is refused before it may move the replay state
        if packet[0] >> 4 not in (4, 6):
            stats["malformed"] += 1
            return None
        if len(packet) > self.mtu:
            # a peer with a larger --mtu, or anyone with --plain: the TUN would
            # refuse it (ValueError on aiouring's transport)
            stats["oversize"] += 1
            return None
        newest = counter > self.window.top
        if self.aead is not None:  # --plain authenticates nothing: no window to keep
            if salt != self.peer_salt and not newest:
                stats["replayed"] += 1  # a superseded life of the peer, or an older one
                return None
            if not self.window.check_and_set(counter):
                stats["replayed"] += 1
                return None
            self.peer_salt = salt
        stats["received"] += 1
        return packet, newest


# -- aiouring plumbing ------------------------------------------------------------


class TunSide(aiouring.TunProtocol):
    def __init__(self, tunnel: "Tunnel") -> None:
        self.tunnel = tunnel

    def packets_received(self, packets: list[bytes]) -> None:
        self.tunnel.from_tun(packets)

    def error_received(self, exc: Exception) -> None:
        # one TUN write refused (EIO while the link is down, EINVAL for a packet
        # the driver rejects): that packet is lost, the transport goes on
        self.tunnel.count("tun_" + errno.errorcode.get(getattr(exc, "errno", 0) or 0, "error"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.lost("the TUN transport", exc)


class UdpSide(asyncio.DatagramProtocol):
    def __init__(self, tunnel: "Tunnel") -> None:
        self.tunnel = tunnel

    def datagrams_received(self, datagrams: list[tuple[bytes, Any]]) -> None:
        self.tunnel.from_udp(datagrams)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.tunnel.from_udp([(data, addr)])

    def error_received(self, exc: Exception) -> None:
        # counted by errno name: ECONNREFUSED while the peer is down is expected
        self.tunnel.count("udp_" + errno.errorcode.get(getattr(exc, "errno", 0) or 0, "error"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.lost("the UDP endpoint", exc)


class Tunnel:
    """One side of the tunnel, on any plumbing (see ``open_tunnel``).

    Nothing that arrives may take the tunnel down: a packet or datagram that
    cannot be forwarded is dropped and counted by reason.  If a transport dies
    anyway (``connection_lost`` before we closed it), ``failed`` gets the
    reason and ``run`` exits non-zero, so a dead tunnel never looks alive."""

    transports: dict[str, Any]  # the aiouring plumbing's transports, set by open_tunnel

    def __init__(self, key: bytes | None, peer: Any, mtu: int, address: str) -> None:
        self.sealer = Sealer(key, address, mtu)
        self.stats = self.sealer.stats
        self.peer = peer
        # roaming follows authenticated traffic; with --plain nothing is, so
        # only a tunnel with no --peer to answer follows whoever sends
        self.roams = key is not None or peer is None
        self.tun_write: Any = None
        self.udp: Any = None
        self.closers: list[Any] = []
        self.closing = False
        self.failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def count(self, reason: str) -> None:
        self.stats[reason] = self.stats.get(reason, 0) + 1

    def lost(self, what: str, exc: BaseException | None) -> None:
        if self.closing or self.failed.done():
            return
        self.failed.set_result(f"{what} failed: {exc!r}" if exc is not None else f"{what} closed unexpectedly")

    def from_tun(self, packets: list[bytes]) -> None:
        peer, udp = self.peer, self.udp
        if peer is None or udp is None:
            # nobody to send to yet (no --peer and no authentic datagram so far),
            # or the UDP side is not up: the kernel's own IPv6 router
            # solicitations and MLD reports come the moment the TUN is up
            self.stats["tun_dropped"] = self.stats.get("tun_dropped", 0) + len(packets)
            return
        seal, sendto = self.sealer.seal, udp.sendto
        for packet in packets:
            try:
                sendto(seal(packet), peer)
            except Exception as exc:  # never into the TUN transport: that would close it
                self.count("udp_send_" + type(exc).__name__)

    def from_udp(self, datagrams: list[tuple[bytes, Any]]) -> None:
        open_, write = self.sealer.open, self.tun_write
        for data, addr in datagrams:
            # nothing raised here may reach the UDP transport: it would close it
            try:
                opened = open_(data)
                if opened is None:
                    continue
                packet, newest = opened
                if newest and self.peer != addr and self.roams:
                    self.peer = addr  # answer where the newest authentic traffic comes from
                    self.count("roamed")
                write(packet)
            except Exception as exc:  # ClosedError while closing, EINVAL from the driver...
                self.count("dropped_" + type(exc).__name__)

    def close(self) -> None:
        self.closing = True
        for close in self.closers:
            close()


_OFFLOAD: dict[str, aiouring.Offload] = {"auto": "auto", "on": True, "off": False}


async def open_tunnel(args: argparse.Namespace, key: bytes | None) -> tuple[Tunnel, str]:
    """Bring up both sides.  The UDP endpoint comes first: the TUN starts
    delivering packets (the kernel's own IPv6 ones at least) the moment it is
    up, and each of them goes straight out to the peer."""
    peer = _hostport(args.peer) if args.peer else None
    tunnel = Tunnel(key, peer, args.mtu, args.address)
    listen = _hostport(args.listen)
    loop = asyncio.get_running_loop()
    mtu = args.mtu
    udp_t: asyncio.DatagramTransport
    try:
        if args.io == "aiouring":
            udp_t, _ = await aiouring.create_datagram_endpoint(
                lambda: UdpSide(tunnel), local_addr=listen, backend=args.backend,
                max_datagram_size=mtu + OVERHEAD + 64, receive_buffers=1024,
                gso=_OFFLOAD[args.offload], gro=_OFFLOAD[args.offload],
            )
            tunnel.closers.append(udp_t.close)
            _big_buffers(udp_t.get_extra_info("socket"))
            tunnel.udp = udp_t
            tun_t, _ = await aiouring.create_tun_connection(
                lambda: TunSide(tunnel), args.name, addresses=[args.address], mtu=mtu, backend=args.backend,
                offload=_OFFLOAD[args.offload],
            )
            tunnel.closers.insert(0, tun_t.close)
            tunnel.tun_write = tun_t.write
            tunnel.transports = {"tun": tun_t, "udp": udp_t}
            return tunnel, tun_t.get_extra_info("name")
        if args.io == "stdlib-drain":
            tunnel.udp = DrainUdp(tunnel, listen)
            tunnel.closers.append(tunnel.udp.close)
        else:  # stdlib-pipes: asyncio's own datagram endpoint, one recvfrom per readiness callback
            udp_t, _ = await loop.create_datagram_endpoint(lambda: UdpSide(tunnel), local_addr=listen)
            tunnel.closers.append(udp_t.close)
            _big_buffers(udp_t.get_extra_info("socket"))
            tunnel.udp = udp_t
        device = aiouring.TunDevice.open(args.name)
        tunnel.closers.append(device.close)
        await device.configure(addresses=[args.address], mtu=mtu)
        fd = device.fileno()
        if args.io == "stdlib-drain":
            _drain_tun(tunnel, fd)
        else:
            await _pipe_tun(tunnel, fd)
        return tunnel, device.name
    except BaseException:
        tunnel.close()
        raise


DRAIN_BATCH = 64  # bounded, so one busy fd cannot starve the other or the loop


class DrainUdp:
    """The best stdlib recipe for UDP: a non-blocking socket, ``add_reader``,
    and a bounded ``recvfrom`` drain per readiness callback (asyncio's own
    endpoint takes one datagram per callback).  ``sendto`` is a direct
    non-blocking send; a full socket buffer drops the datagram, as a router
    would (counted)."""

    def __init__(self, tunnel: Tunnel, listen: tuple[str, int]) -> None:
        self.tunnel = tunnel
        self.loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self.sock.bind(listen)
            _big_buffers(self.sock)
            self.loop.add_reader(self.sock.fileno(), self._on_readable)
        except BaseException:
            self.sock.close()
            raise

    def _on_readable(self) -> None:
        recvfrom, datagrams = self.sock.recvfrom, []
        try:
            for _ in range(DRAIN_BATCH):
                datagrams.append(recvfrom(65536))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:  # a queued ICMP error (ECONNREFUSED...): per datagram, as error_received
            self.tunnel.count("udp_" + errno.errorcode.get(exc.errno or 0, "error"))
        if datagrams:
            stats = self.tunnel.stats
            if len(datagrams) > stats.get("udp_drain_max", 0):
                stats["udp_drain_max"] = len(datagrams)  # the largest batch one wake-up took
            self.tunnel.from_udp(datagrams)

    def sendto(self, data: bytes, addr: Any) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.tunnel.count("udp_send_full")
        except OSError as exc:
            self.tunnel.count("udp_" + errno.errorcode.get(exc.errno or 0, "error"))

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


def _drain_tun(tunnel: Tunnel, fd: int) -> None:
    """The add_reader + bounded os.read drain on the TUN."""
    loop = asyncio.get_running_loop()
    read = os.read

    def on_readable() -> None:
        packets = []
        try:
            for _ in range(DRAIN_BATCH):
                packets.append(read(fd, 65536))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:  # EBADFD once the interface is gone: the TUN is dead
            loop.remove_reader(fd)
            tunnel.lost("the TUN (drain recipe)", exc)
        if packets:
            tunnel.from_tun(packets)

    def tun_write(packet: bytes) -> None:
        try:
            os.write(fd, packet)
        except OSError as exc:
            tunnel.count("tun_" + errno.errorcode.get(exc.errno or 0, "error"))

    os.set_blocking(fd, False)
    loop.add_reader(fd, on_readable)
    tunnel.tun_write = tun_write
    tunnel.closers.insert(0, lambda: loop.remove_reader(fd))


async def _pipe_tun(tunnel: Tunnel, fd: int) -> None:
    """asyncio's connect_read_pipe/connect_write_pipe on the TUN: the naive baseline."""
    loop = asyncio.get_running_loop()

    class PipeSide(asyncio.Protocol):
        def __init__(self, what: str) -> None:
            self.what = what

        def data_received(self, data: bytes) -> None:
            tunnel.from_tun([data])

        def connection_lost(self, exc: Exception | None) -> None:
            tunnel.lost(self.what, exc)

    rfile = os.fdopen(os.dup(fd), "rb", buffering=0)
    wfile = os.fdopen(os.dup(fd), "wb", buffering=0)
    rt, _ = await loop.connect_read_pipe(lambda: PipeSide("the TUN read pipe"), rfile)
    tunnel.closers.insert(0, rt.close)
    wt, _ = await loop.connect_write_pipe(lambda: PipeSide("the TUN write pipe"), wfile)
    tunnel.closers.insert(0, wt.close)
    tunnel.tun_write = wt.write


SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # Linux; not exported by the socket module


def _big_buffers(sock: Any) -> None:
    """Socket buffers of 4 MiB, past net.core.[rw]mem_max when root, as wireguard-go does."""
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


async def run(args: argparse.Namespace) -> int:
    key = load_key(args)
    tunnel, name = await open_tunnel(args, key)
    mode = "plain" if key is None else "chacha20-poly1305"
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: None if stop.done() else stop.set_result(None))
    await asyncio.sleep(0)  # let connection_made and any immediate failure run before saying ready
    if not tunnel.failed.done():
        print(f"ready: {name} {args.address} <-> {args.peer or 'any peer'} over UDP {args.listen} ({mode}, io={args.io}, offload={args.offload})", flush=True)
    done, _ = await asyncio.wait([stop, tunnel.failed], timeout=args.duration, return_when=asyncio.FIRST_COMPLETED)
    failure = tunnel.failed.result() if tunnel.failed.done() else None
    tunnel.close()
    await asyncio.sleep(0.05)
    calls = {}  # the kernel's reads and writes: far fewer than packets with offloads
    for kind, transport in getattr(tunnel, "transports", {}).items():
        io = transport.get_extra_info("stats")
        calls.update({f"{kind}_reads": io.reads, f"{kind}_writes": io.writes})
    print("counters: " + " ".join(f"{k}={v}" for k, v in {**tunnel.stats, **calls}.items()), flush=True)
    if failure is not None:
        print(f"tunnel.py: {failure}; exiting", file=sys.stderr, flush=True)
        return 1
    return 0


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
    parser.add_argument(
        "--offload", default="auto", choices=["auto", "on", "off"],
        help="TUN super-packets and UDP GSO/GRO: auto (where the kernel takes them), on (or fail), off",
    )
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--duration", type=float, default=None)
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        return uvloop.run(run(args))
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
