"""A WireGuard device, sans I/O: peers, keypairs, the data path and the timers.

The device never touches a socket or a TUN.  It is given two callables,
``send(datagram, address)`` for UDP and ``write(packet)`` for the TUN, and it
is fed batches: ``from_tun(packets)`` with IP packets read from the TUN,
``from_udp([(datagram, address), ...])`` with datagrams, and ``tick()``
every few tens of milliseconds for the timers.  ``clock`` gives monotonic
seconds and ``wall_clock`` Unix nanoseconds (tests pass their own).

Every datagram fed to ``from_udp`` ends in exactly one counter: one of the
``received_*`` stats when it was taken, or one ``drops`` reason when it was
not; nothing raises out of the receive path (``Device.process_udp`` wraps
it: an unexpected error is counted as ``internal_error`` and logged once).

Timers follow wireguard-go's device/timers.go, as deadlines checked by
``tick`` rather than one timer object per event, so the data path only
stores a timestamp per batch:

* retransmit: an initiation unanswered after REKEY_TIMEOUT (+ jitter) is
  sent again, REKEY_ATTEMPT_TIME / REKEY_TIMEOUT + 1 times (as wireguard-go:
  20 initiations in all with the default constants), then the
  staged packets are dropped and key material is wiped 3*REJECT_AFTER_TIME later;
* passive keepalive: data received and nothing sent for KEEPALIVE_TIMEOUT;
* new handshake: data sent and nothing authenticated received for
  KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (+ jitter);
* zero keys: 3*REJECT_AFTER_TIME after the last session was derived;
* persistent keepalive: PersistentKeepalive seconds after the last
  authenticated packet either way.

Rekeying: the initiator of the current session starts a new handshake when
the keypair is older than REKEY_AFTER_TIME or has sent REKEY_AFTER_MESSAGES,
and when it receives on a keypair older than REJECT_AFTER_TIME -
KEEPALIVE_TIMEOUT - REKEY_TIMEOUT; nobody sends or receives on a keypair
older than REJECT_AFTER_TIME or past REJECT_AFTER_MESSAGES.
"""
from __future__ import annotations

import logging
import os
import random
import socket
import struct
import time
from collections import deque
from typing import Any, Callable, Iterable

from . import constants as K
from .allowedips import AllowedIPs
from .crypto import AEAD, InvalidTag
from .noise import (
    SIZES, CookieChecker, Handshake, HandshakeError, Identity, check_mac1, finish_initiation, open_initiation,
)
from .replay import ReplayWindow

log = logging.getLogger("aiouring.wireguard")

_TRANSPORT = struct.pack("<I", K.MESSAGE_TRANSPORT)
_INITIATION = struct.pack("<I", K.MESSAGE_INITIATION)
_RESPONSE = struct.pack("<I", K.MESSAGE_RESPONSE)
_COOKIE = struct.pack("<I", K.MESSAGE_COOKIE_REPLY)
_NONCE_PREFIX = b"\0\0\0\0"
_PADS = [bytes(n) for n in range(K.PADDING)]
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

DROP_REASONS = (
    # UDP side
    "truncated",           # shorter than its message type needs, or a handshake message of the wrong size
    "unknown_type",        # not one of the four message types
    "unknown_index",       # transport or response to a receiver index we do not have (stale or forged)
    "expired_keypair",     # transport on a keypair older than REJECT_AFTER_TIME
    "bad_tag",             # transport that does not authenticate (forged, damaged, wrong key)
    "replayed",            # transport whose counter was seen, fell behind the window, or is too large
    "bad_inner_packet",    # decrypted payload is not a well-formed IPv4/IPv6 packet
    "disallowed_source",   # decrypted packet whose source is not in the sending peer's AllowedIPs
    "too_big",             # decrypted packet larger than our MTU (the TUN would refuse it)
    "bad_mac1",            # handshake message with a wrong mac1
    "cookie_required",     # handshake message without a valid mac2 while under load (a cookie reply went back)
    "rate_limited",        # handshake message over the per-source rate while under load
    "initiation_invalid",  # initiation that does not decrypt or authenticate
    "unknown_peer",        # initiation from a static key we have no peer for
    "initiation_replayed",  # initiation whose timestamp is not newer than the last one taken
    "initiation_flood",    # initiations from one peer closer than 20 ms
    "response_invalid",    # response that does not authenticate
    "response_unexpected",  # response when no initiation of ours is pending
    "cookie_invalid",      # cookie reply that does not decrypt (or to no handshake of ours)
    "internal_error",      # a bug: an exception in the receive path (logged once)
    # TUN side
    "no_route",            # packet to an address no peer's AllowedIPs hold
    "tun_not_ip",          # not an IPv4/IPv6 packet
    "staged_overflow",     # waited for a handshake with too many others
    "handshake_failed",    # waited for a handshake that never completed
)


class Keypair:
    """The two keys of a session, with its counters; ``header`` starts each
    transport message sent with it (type and the peer's receiver index)."""

    __slots__ = ("send", "receive", "local_index", "remote_index", "created", "initiator", "send_counter",
                 "replay", "peer", "header")

    def __init__(self, peer: "Peer", send_key: bytes, receive_key: bytes, initiator: bool,
                 local_index: int, remote_index: int, now: float) -> None:
        self.peer = peer
        self.send = AEAD(send_key)
        self.receive = AEAD(receive_key)
        self.initiator = initiator
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = now
        self.send_counter = 0
        self.replay = ReplayWindow()
        self.header = _TRANSPORT + _U32.pack(remote_index)


class Peer:
    def __init__(self, device: "Device", public_key: bytes, preshared_key: bytes | None,
                 endpoint: Any, persistent_keepalive: int) -> None:
        self.device = device
        self.public_key = public_key
        self.handshake = Handshake(device.identity, public_key, preshared_key)
        self.endpoint = endpoint
        self.persistent_keepalive = persistent_keepalive
        self.current: Keypair | None = None
        self.previous: Keypair | None = None
        self.next: Keypair | None = None
        self.staged: deque[bytes] = deque()
        # timers: deadlines in clock seconds, None when not armed
        self.retransmit_at: float | None = None
        self.keepalive_at: float | None = None
        self.new_handshake_at: float | None = None
        self.zero_keys_at: float | None = None
        self.persistent_at: float | None = None
        self.handshake_attempts = 0
        self.need_another_keepalive = False
        self.sent_last_minute_handshake = False
        self.last_initiation_sent = float("-inf")
        self.last_handshake_wall = 0.0  # time.time() of the last completed handshake (for `wg show`)
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.handshakes = 0

    def __repr__(self) -> str:
        from .crypto import key_to_base64

        return f"<Peer {key_to_base64(self.public_key)[:8]}… endpoint={self.endpoint}>"

    # -- sending ---------------------------------------------------------------------

    def send_packets(self, packets: list[bytes], now: float) -> None:
        """Encrypts and sends IP packets (an empty one is a keepalive), or
        stages them and starts a handshake when there is no usable keypair."""
        kp = self.current
        endpoint = self.endpoint
        if (kp is None or endpoint is None or now - kp.created >= K.REJECT_AFTER_TIME
                or kp.send_counter + len(packets) > K.REJECT_AFTER_MESSAGES):
            self.stage(packets)
            self.initiate(now)
            return
        device = self.device
        send = device.send
        encrypt = kp.send.encrypt
        header = kp.header
        counter = kp.send_counter
        mtu = device.mtu
        pads = _PADS
        nbytes = 0
        empty = 0
        for packet in packets:
            n = len(packet)
            pad = -n & 15
            if pad:
                if n + pad > mtu:
                    pad = mtu - n if n < mtu else 0
                packet += pads[pad]
            elif not n:
                empty += 1
            c = counter.to_bytes(8, "little")
            message = header + c + encrypt(_NONCE_PREFIX + c, packet, None)
            send(message, endpoint)
            nbytes += len(message)
            counter += 1
        kp.send_counter = counter
        self.tx_bytes += nbytes
        stats = device.stats
        if empty:
            stats["sent_keepalive"] += empty
        if len(packets) > empty:
            stats["sent_data"] += len(packets) - empty
            if self.new_handshake_at is None:
                self.new_handshake_at = now + K.KEEPALIVE_TIMEOUT + K.REKEY_TIMEOUT + random.uniform(0, K.REKEY_JITTER)
        # any authenticated packet sent
        self.keepalive_at = None
        if self.persistent_keepalive:
            self.persistent_at = now + self.persistent_keepalive
        if counter > K.REKEY_AFTER_MESSAGES or (kp.initiator and now - kp.created > K.REKEY_AFTER_TIME):
            self.initiate(now)

    def stage(self, packets: Iterable[bytes]) -> None:
        staged = self.staged
        for packet in packets:
            if len(staged) >= K.STAGED_PACKETS:
                staged.popleft()
                self.device.drops["staged_overflow"] += 1
            staged.append(packet)

    def send_staged(self, now: float) -> None:
        if self.staged and self.current is not None:
            packets = list(self.staged)
            self.staged.clear()
            self.send_packets(packets, now)

    def send_keepalive(self, now: float) -> None:
        if self.staged:
            if self.current is None:
                self.initiate(now)
            else:
                self.send_staged(now)
            return
        self.send_packets([b""], now)

    def flush_staged(self, reason: str) -> None:
        if self.staged:
            self.device.drops[reason] += sum(1 for p in self.staged if p)
            self.staged.clear()

    # -- handshakes --------------------------------------------------------------------

    def initiate(self, now: float, retry: bool = False) -> None:
        """Sends a handshake initiation, at most one per REKEY_TIMEOUT."""
        if not retry:
            self.handshake_attempts = 0
        if now - self.last_initiation_sent < K.REKEY_TIMEOUT:
            return
        device = self.device
        if self.endpoint is None:
            device.stats["initiation_without_endpoint"] += 1
            return
        self.last_initiation_sent = now
        device.forget_handshake_index(self.handshake.local_index)
        index = device.new_index()
        message = self.handshake.create_initiation(index, now, device.wall_clock())
        device.handshake_index[index] = self
        self.keepalive_at = None
        if self.persistent_keepalive:
            self.persistent_at = now + self.persistent_keepalive
        device.stats["sent_initiation"] += 1
        self.tx_bytes += len(message)
        device.send(message, self.endpoint)
        self.retransmit_at = now + K.REKEY_TIMEOUT + random.uniform(0, K.REKEY_JITTER)

    def respond(self, address: Any, now: float) -> None:
        """After an initiation was consumed: sends the response and derives
        the new session (it becomes ``next`` until the initiator uses it)."""
        device = self.device
        device.forget_handshake_index(self.handshake.local_index)
        index = device.new_index()
        message = self.handshake.create_response(index, now)
        self.begin_session(now)
        self.keepalive_at = None
        if self.persistent_keepalive:
            self.persistent_at = now + self.persistent_keepalive
        device.stats["sent_response"] += 1
        self.tx_bytes += len(message)
        device.send(message, address)

    def begin_session(self, now: float) -> None:
        """Derives the keypair of the completed exchange and rotates
        current/previous/next as wireguard-go does: the initiator uses it at
        once; the responder keeps it as ``next`` until the initiator's first
        packet with it arrives (key confirmation)."""
        hs = self.handshake
        local, remote = hs.local_index, hs.remote_index
        send_key, receive_key, initiator = hs.derive_keys()
        hs.local_index = 0
        device = self.device
        kp = Keypair(self, send_key, receive_key, initiator, local, remote, now)
        device.handshake_index.pop(local, None)
        device.index[local] = kp
        if initiator:
            old_previous = self.previous
            if self.next is not None:
                self.previous = self.next
                self.next = None
                device.forget_keypair(self.current)
            else:
                self.previous = self.current
            device.forget_keypair(old_previous)
            self.current = kp
        else:
            device.forget_keypair(self.next)
            self.next = kp
            device.forget_keypair(self.previous)
            self.previous = None
        self.zero_keys_at = now + 3 * K.REJECT_AFTER_TIME
        device.stats["sessions"] += 1

    def handshake_complete(self, now: float) -> None:
        self.retransmit_at = None
        self.handshake_attempts = 0
        self.sent_last_minute_handshake = False
        self.last_handshake_wall = time.time()
        self.handshakes += 1
        self.device.stats["handshakes_completed"] += 1

    def confirm(self, kp: Keypair, now: float) -> None:
        """The initiator used the session we derived as responder: it becomes current."""
        if kp is not self.next:
            return
        device = self.device
        device.forget_keypair(self.previous)
        self.previous = self.current
        self.current = kp
        self.next = None
        self.handshake_complete(now)

    def received_authenticated(self, address: Any, nbytes: int, data: bool, now: float) -> None:
        """Bookkeeping once per batch for the transport messages of this peer."""
        self.endpoint = address
        self.rx_bytes += nbytes
        self.new_handshake_at = None
        if self.persistent_keepalive:
            self.persistent_at = now + self.persistent_keepalive
        if data:
            if self.keepalive_at is None:
                self.keepalive_at = now + K.KEEPALIVE_TIMEOUT
            else:
                self.need_another_keepalive = True
        kp = self.current
        if (kp is not None and kp.initiator and not self.sent_last_minute_handshake
                and now - kp.created > K.REJECT_AFTER_TIME - K.KEEPALIVE_TIMEOUT - K.REKEY_TIMEOUT):
            self.sent_last_minute_handshake = True
            self.initiate(now)
        if self.staged and self.current is not None:
            self.send_staged(now)

    # -- timers --------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        at = self.retransmit_at
        if at is not None and now >= at:
            self.retransmit_at = None
            if self.handshake_attempts > K.MAX_HANDSHAKE_ATTEMPTS:
                # give up: what waited is dropped, the partial exchange is wiped later
                self.keepalive_at = None
                self.flush_staged("handshake_failed")
                if self.zero_keys_at is None:
                    self.zero_keys_at = now + 3 * K.REJECT_AFTER_TIME
                self.device.stats["handshakes_given_up"] += 1
            else:
                self.handshake_attempts += 1
                self.initiate(now, retry=True)
        at = self.keepalive_at
        if at is not None and now >= at:
            self.keepalive_at = None
            self.send_keepalive(now)
            if self.need_another_keepalive:
                self.need_another_keepalive = False
                self.keepalive_at = now + K.KEEPALIVE_TIMEOUT
        at = self.new_handshake_at
        if at is not None and now >= at:
            self.new_handshake_at = None
            self.initiate(now)
        at = self.zero_keys_at
        if at is not None and now >= at:
            self.zero_keys_at = None
            self.zero_keys()
        at = self.persistent_at
        if at is not None and now >= at:
            self.persistent_at = None
            if self.persistent_keepalive:
                self.send_keepalive(now)

    def zero_keys(self) -> None:
        device = self.device
        for kp in (self.current, self.previous, self.next):
            device.forget_keypair(kp)
        self.current = self.previous = self.next = None
        device.forget_handshake_index(self.handshake.local_index)
        self.handshake.clear()
        self.flush_staged("handshake_failed")


class Device:
    """See the module docstring.  ``send`` and ``write`` may be replaced
    after construction (the transports exist only once the device does)."""

    def __init__(self, private_key: bytes, *, mtu: int = 1420,
                 send: Callable[[bytes, Any], None] | None = None,
                 write: Callable[[bytes], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], int] = time.time_ns) -> None:
        from .crypto import private_from_bytes

        self.identity = Identity(private_from_bytes(private_key))
        self.mtu = mtu
        self.send: Callable[[bytes, Any], None] = send or (lambda data, addr: None)
        self.write: Callable[[bytes], None] = write or (lambda packet: None)
        self.clock = clock
        self.wall_clock = wall_clock  # nanoseconds, for the TAI64N timestamps of initiations
        self.peers: dict[bytes, Peer] = {}
        self.allowed = AllowedIPs()
        self.index: dict[int, Keypair] = {}
        self.handshake_index: dict[int, Peer] = {}
        self.cookie_checker = CookieChecker(self.identity)
        self.drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.stats: dict[str, int] = dict.fromkeys((
            "received_data", "received_keepalive", "received_initiation", "received_response", "received_cookie",
            "sent_data", "sent_keepalive", "sent_initiation", "sent_response", "sent_cookie",
            "sessions", "handshakes_completed", "handshakes_given_up", "initiation_without_endpoint",
        ), 0)
        self._handshake_window_start = float("-inf")
        self._handshake_window_count = 0
        self._under_load_until = float("-inf")
        self._rate: dict[bytes, list[float]] = {}
        self._logged_internal_error = False

    @property
    def public_key(self) -> bytes:
        return self.identity.public

    def add_peer(self, public_key: bytes, *, preshared_key: bytes | None = None, endpoint: Any = None,
                 allowed_ips: Iterable[Any] = (), persistent_keepalive: int = 0) -> Peer:
        if public_key in self.peers:
            raise ValueError("a peer with this public key exists already")
        if public_key == self.identity.public:
            raise ValueError("a peer cannot have this device's own public key")
        peer = Peer(self, public_key, preshared_key, endpoint, persistent_keepalive)
        self.peers[public_key] = peer
        for network in allowed_ips:
            self.allowed.insert(network, peer)
        return peer

    def start(self) -> None:
        """What a device does when it comes up: peers with PersistentKeepalive
        send one right away (which starts their handshake)."""
        now = self.clock()
        for peer in self.peers.values():
            if peer.persistent_keepalive and peer.endpoint is not None:
                peer.send_keepalive(now)

    def counters(self) -> dict[str, int]:
        out = dict(self.stats)
        out.update(("drop_" + k, v) for k, v in self.drops.items())
        return out

    # -- indices -------------------------------------------------------------------------

    def new_index(self) -> int:
        while True:
            index = int.from_bytes(os.urandom(4), "little")
            if index not in self.index and index not in self.handshake_index:
                return index

    def forget_keypair(self, kp: Keypair | None) -> None:
        if kp is not None and self.index.get(kp.local_index) is kp:
            del self.index[kp.local_index]

    def forget_handshake_index(self, index: int) -> None:
        if index:
            self.handshake_index.pop(index, None)

    # -- TUN -> UDP ----------------------------------------------------------------------

    def from_tun(self, packets: list[bytes]) -> None:
        """IP packets read from the TUN: each goes to the peer whose AllowedIPs
        hold its destination."""
        now = self.clock()
        allowed = self.allowed
        cache_get = allowed.cache.get
        miss = _MISSING
        drops = self.drops
        peer_batch: list[bytes] | None = None
        batch_peer: Peer | None = None
        others: dict[Peer, list[bytes]] | None = None
        for packet in packets:
            if not packet:
                drops["tun_not_ip"] += 1
                continue
            version = packet[0] >> 4
            if version == 4:
                dst = packet[16:20]
            elif version == 6:
                dst = packet[24:40]
            else:
                drops["tun_not_ip"] += 1
                continue
            peer = cache_get(dst, miss)
            if peer is miss:
                peer = allowed.lookup(dst)
            if peer is None:
                drops["no_route"] += 1
                continue
            if peer is batch_peer:
                peer_batch.append(packet)  # type: ignore[union-attr]  # a list whenever batch_peer is set
            elif batch_peer is None:
                batch_peer, peer_batch = peer, [packet]
            else:
                if others is None:
                    others = {}
                others.setdefault(peer, []).append(packet)
        if batch_peer is not None:
            batch_peer.send_packets(peer_batch, now)  # type: ignore[arg-type]  # a list whenever batch_peer is set
        if others:
            for peer, batch in others.items():
                peer.send_packets(batch, now)

    # -- UDP -> TUN ----------------------------------------------------------------------

    def process_udp(self, datagrams: list[tuple[bytes, Any]]) -> None:
        """``from_udp`` that never raises: an unexpected error is a bug, counted
        as ``internal_error`` for the rest of the batch and logged once."""
        try:
            self.from_udp(datagrams)
        except Exception:
            self.drops["internal_error"] += 1
            if not self._logged_internal_error:
                self._logged_internal_error = True
                log.exception("unexpected error in the receive path (counted as internal_error)")

    def from_udp(self, datagrams: list[tuple[bytes, Any]]) -> None:
        now = self.clock()
        index_get = self.index.get
        write = self.write
        drops = self.drops
        lookup = self.allowed.lookup
        cache_get = self.allowed.cache.get
        miss = _MISSING
        reject_after = K.REJECT_AFTER_TIME
        mtu = self.mtu
        # per-batch bookkeeping for the peer of the last run of transport messages
        run_peer: Peer | None = None
        run_addr: Any = None
        run_bytes = 0
        run_data = False
        n_data = n_keepalive = 0
        for data, addr in datagrams:
            if data[:4] == _TRANSPORT and len(data) >= K.KEEPALIVE_SIZE:
                kp = index_get(_U32.unpack_from(data, 4)[0])
                if kp is None:
                    drops["unknown_index"] += 1
                    continue
                if now - kp.created >= reject_after:
                    drops["expired_keypair"] += 1
                    continue
                c = data[8:16]
                try:
                    packet = kp.receive.decrypt(_NONCE_PREFIX + c, data[16:], None)
                except InvalidTag:
                    drops["bad_tag"] += 1
                    continue
                if not kp.replay.accept(_U64.unpack_from(data, 8)[0]):
                    drops["replayed"] += 1
                    continue
                peer = kp.peer
                if peer is not run_peer:
                    if run_peer is not None:
                        run_peer.received_authenticated(run_addr, run_bytes, run_data, now)
                    run_peer, run_bytes, run_data = peer, 0, False
                if kp is not peer.current:
                    peer.confirm(kp, now)
                run_addr = addr
                run_bytes += len(data)
                if not packet:
                    n_keepalive += 1
                    continue
                run_data = True
                version = packet[0] >> 4
                n = len(packet)
                if version == 4:
                    if n < 20:
                        drops["bad_inner_packet"] += 1
                        continue
                    length = packet[2] << 8 | packet[3]
                    if length > n or length < 20:
                        drops["bad_inner_packet"] += 1
                        continue
                    src = packet[12:16]
                elif version == 6:
                    if n < 40:
                        drops["bad_inner_packet"] += 1
                        continue
                    length = (packet[4] << 8 | packet[5]) + 40
                    if length > n:
                        drops["bad_inner_packet"] += 1
                        continue
                    src = packet[8:24]
                else:
                    drops["bad_inner_packet"] += 1
                    continue
                owner = cache_get(src, miss)
                if owner is miss:
                    owner = lookup(src)
                if owner is not peer:
                    drops["disallowed_source"] += 1
                    continue
                if length > mtu:
                    drops["too_big"] += 1
                    continue
                if length < n:
                    packet = packet[:length]
                write(packet)
                n_data += 1
            else:
                self._slow_path(data, addr, now)
        if run_peer is not None:
            run_peer.received_authenticated(run_addr, run_bytes, run_data, now)
        stats = self.stats
        stats["received_data"] += n_data
        stats["received_keepalive"] += n_keepalive

    def _slow_path(self, data: bytes, addr: Any, now: float) -> None:
        """Everything but a well-formed transport message."""
        head = data[:4]
        if head == _TRANSPORT:
            self.drops["truncated"] += 1
            return
        if head not in (_INITIATION, _RESPONSE, _COOKIE):
            self.drops["truncated" if len(data) < 4 else "unknown_type"] += 1
            return
        if len(data) != SIZES[data[0]]:
            self.drops["truncated"] += 1
            return
        try:
            if head == _COOKIE:
                self._cookie_reply(data, now)
            else:
                self._handshake(data, addr, now)
        except HandshakeError as exc:
            self.drops[exc.reason] += 1

    def _cookie_reply(self, data: bytes, now: float) -> None:
        receiver = _U32.unpack_from(data, 4)[0]
        peer = self.handshake_index.get(receiver)
        if peer is None:
            kp = self.index.get(receiver)
            peer = kp.peer if kp is not None else None
        if peer is None:
            raise HandshakeError("unknown_index")
        try:
            peer.handshake.consume_cookie_reply(data, now)
        except HandshakeError:
            raise HandshakeError("cookie_invalid") from None
        self.stats["received_cookie"] += 1

    def under_load(self, now: float) -> bool:
        """Counts this handshake message; true while many arrive (UNDER_LOAD
        in one second), and for a second after."""
        if now - self._handshake_window_start >= 1.0:
            self._handshake_window_start = now
            self._handshake_window_count = 0
        self._handshake_window_count += 1
        if self._handshake_window_count > K.UNDER_LOAD:
            self._under_load_until = now + K.UNDER_LOAD_AFTER_TIME
            return True
        return now < self._under_load_until

    def _rate_allows(self, source_ip: bytes, now: float) -> bool:
        """A token bucket per source address: 20 handshakes a second, bursts of 5."""
        bucket = self._rate.get(source_ip)
        if bucket is None:
            if len(self._rate) >= 4096:
                self._rate.clear()
            bucket = self._rate[source_ip] = [5.0, now]
        tokens = min(5.0, bucket[0] + (now - bucket[1]) * 20)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1
        return True

    def _handshake(self, data: bytes, addr: Any, now: float) -> None:
        if not check_mac1(self.identity, data):
            raise HandshakeError("bad_mac1")
        if self.under_load(now):
            source_ip, source = _source_bytes(addr)
            if not self.cookie_checker.check_mac2(data, source, now):
                self.send(self.cookie_checker.make_reply(data, source, now), addr)
                self.stats["sent_cookie"] += 1
                raise HandshakeError("cookie_required")
            if not self._rate_allows(source_ip, now):
                raise HandshakeError("rate_limited")
        if data[0] == K.MESSAGE_INITIATION:
            preamble = open_initiation(self.identity, data)
            peer = self.peers.get(preamble.remote_static)
            if peer is None:
                raise HandshakeError("unknown_peer")
            finish_initiation(peer.handshake, preamble, data, now)
            self.stats["received_initiation"] += 1
            peer.endpoint = addr
            peer.rx_bytes += len(data)
            peer.new_handshake_at = None
            if peer.persistent_keepalive:
                peer.persistent_at = now + peer.persistent_keepalive
            peer.respond(addr, now)
        else:
            receiver = _U32.unpack_from(data, 8)[0]
            peer = self.handshake_index.get(receiver)
            if peer is None:
                raise HandshakeError("unknown_index")
            peer.handshake.consume_response(data)
            self.stats["received_response"] += 1
            peer.endpoint = addr
            peer.rx_bytes += len(data)
            peer.new_handshake_at = None
            if peer.persistent_keepalive:
                peer.persistent_at = now + peer.persistent_keepalive
            peer.begin_session(now)
            peer.handshake_complete(now)
            if peer.staged:
                peer.send_staged(now)
            else:
                peer.send_packets([b""], now)

    # -- timers --------------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        for peer in self.peers.values():
            peer.tick(now)


_MISSING = object()


def _source_bytes(addr: Any) -> tuple[bytes, bytes]:
    """(IP address bytes, IP address and port bytes) of a socket address; an
    IPv4-mapped IPv6 address counts as its IPv4 address."""
    host = addr[0]
    if ":" in host:
        raw = socket.inet_pton(socket.AF_INET6, host)
        if raw[:12] == b"\0" * 10 + b"\xff\xff":
            raw = raw[12:]
    else:
        raw = socket.inet_pton(socket.AF_INET, host)
    return raw, raw + int(addr[1]).to_bytes(2, "big")
