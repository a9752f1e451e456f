"""The Noise_IKpsk2 handshake of WireGuard (whitepaper §5.4), sans I/O.

Each function takes bytes and state and returns bytes or raises
``HandshakeError`` with the reason a message was refused (the device counts
drops by that reason).  Message layouts, all integers little-endian:

    initiation (148)  type=1 | sender | ephemeral[32] | static[32+16] | timestamp[12+16] | mac1[16] | mac2[16]
    response   (92)   type=2 | sender | receiver | ephemeral[32] | empty[0+16] | mac1[16] | mac2[16]
    cookie     (64)   type=3 | receiver | nonce[24] | cookie[16+16]

The type is one byte followed by three zero bytes.  mac1 = MAC(HASH("mac1----"
|| receiver's static public key), message up to mac1); mac2 = MAC(cookie,
message up to mac2) when a fresh cookie is known, else zeros.
"""
from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from .constants import (
    CONSTRUCTION, COOKIE_REFRESH_TIME, COOKIE_REPLY_SIZE, HANDSHAKE_INITIATION_RATE, IDENTIFIER,
    INITIATION_SIZE, LABEL_COOKIE, LABEL_MAC1, MESSAGE_COOKIE_REPLY, MESSAGE_INITIATION, MESSAGE_RESPONSE,
    RESPONSE_SIZE,
)
from .crypto import (
    InvalidTag, aead_decrypt, aead_encrypt, dh, generate_private, hash_, kdf1, kdf2, kdf3, mac, public_key,
    tai64n, xaead_decrypt, xaead_encrypt,
)

INITIAL_CHAIN_KEY = hash_(CONSTRUCTION)
INITIAL_HASH = hash_(INITIAL_CHAIN_KEY, IDENTIFIER)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

_HEAD = struct.Struct("<II")  # type, sender (initiation) / type, receiver (cookie reply)
_RESPONSE_HEAD = struct.Struct("<III")
_EMPTY_MAC2 = bytes(16)

# handshake states
ZEROED, INITIATION_CREATED, INITIATION_CONSUMED, RESPONSE_CREATED, RESPONSE_CONSUMED = range(5)


class HandshakeError(Exception):
    """A handshake message was refused; ``reason`` names the drop counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Identity:
    """This device's static key pair and what is derived from it once."""

    def __init__(self, private: X25519PrivateKey) -> None:
        self.private = private
        self.public = public_key(private)
        self.mac1_key = hash_(LABEL_MAC1, self.public)  # checks mac1 of messages to us
        self.cookie_key = hash_(LABEL_COOKIE, self.public)  # seals the cookie replies we send
        self.initial_hash = hash_(INITIAL_HASH, self.public)  # H after mixing the responder's static


class Handshake:
    """One peer's side of the handshake: the remote static key, the
    pre-shared key, the Noise state of the exchange under way, and the cookie
    this peer gave us (for mac2)."""

    def __init__(self, identity: Identity, remote_static: bytes, psk: bytes | None = None) -> None:
        self.identity = identity
        self.remote_static = remote_static
        self.psk = psk or bytes(32)
        self.static_static = dh(identity.private, remote_static)  # ValueError for a low-order key
        self.mac1_key = hash_(LABEL_MAC1, remote_static)
        self.cookie_key = hash_(LABEL_COOKIE, remote_static)
        self.initial_hash = hash_(INITIAL_HASH, remote_static)
        self.clear()
        self.last_timestamp = bytes(12)
        self.last_initiation_consumed = float("-inf")
        self.cookie: bytes | None = None
        self.cookie_time = float("-inf")
        self.last_mac1: bytes | None = None

    def clear(self) -> None:
        self.state = ZEROED
        self.hash = b""
        self.chain_key = b""
        self.local_ephemeral: X25519PrivateKey | None = None
        self.remote_ephemeral = b""
        self.local_index = 0
        self.remote_index = 0

    # -- macs --------------------------------------------------------------------------

    def add_macs(self, body: bytes, now: float) -> bytes:
        """``body`` (a message without its macs) followed by mac1 and mac2."""
        mac1 = mac(self.mac1_key, body)
        self.last_mac1 = mac1
        if self.cookie is not None and now - self.cookie_time < COOKIE_REFRESH_TIME:
            return body + mac1 + mac(self.cookie, body + mac1)
        return body + mac1 + _EMPTY_MAC2

    def consume_cookie_reply(self, message: bytes, now: float) -> None:
        if self.last_mac1 is None:
            raise HandshakeError("cookie_unexpected")
        try:
            cookie = xaead_decrypt(self.cookie_key, message[8:32], message[32:64], self.last_mac1)
        except InvalidTag:
            raise HandshakeError("cookie_bad_tag") from None
        self.cookie = cookie
        self.cookie_time = now

    # -- initiator ------------------------------------------------------------------------

    def create_initiation(self, local_index: int, now: float, wall_ns: int | None = None, ephemeral: X25519PrivateKey | None = None) -> bytes:
        """An initiation; ``wall_ns`` (the timestamp's clock) and ``ephemeral``
        (an X25519 private key) are for known-answer tests."""
        ephemeral = ephemeral or generate_private()
        e_pub = public_key(ephemeral)
        h = hash_(self.initial_hash, e_pub)
        c = kdf1(INITIAL_CHAIN_KEY, e_pub)
        c, k = kdf2(c, dh(ephemeral, self.remote_static))
        static = aead_encrypt(k, 0, self.identity.public, h)
        h = hash_(h, static)
        c, k = kdf2(c, self.static_static)
        timestamp = aead_encrypt(k, 0, tai64n(wall_ns), h)
        h = hash_(h, timestamp)
        self.state = INITIATION_CREATED
        self.hash, self.chain_key = h, c
        self.local_ephemeral = ephemeral
        self.local_index = local_index
        return self.add_macs(_HEAD.pack(MESSAGE_INITIATION, local_index) + e_pub + static + timestamp, now)

    def consume_response(self, message: bytes) -> None:
        """Completes the exchange begun by ``create_initiation``; the caller
        has matched the receiver index and checked the macs."""
        if self.state != INITIATION_CREATED or self.local_ephemeral is None:  # (set whenever the state is)
            raise HandshakeError("response_unexpected")
        _, sender, _ = _RESPONSE_HEAD.unpack_from(message)
        e_r = message[12:44]
        h = hash_(self.hash, e_r)
        c = kdf1(self.chain_key, e_r)
        try:
            c = kdf1(c, dh(self.local_ephemeral, e_r))
            c = kdf1(c, dh(self.identity.private, e_r))
        except ValueError:
            raise HandshakeError("response_invalid") from None
        c, tau, k = kdf3(c, self.psk)
        h = hash_(h, tau)
        try:
            aead_decrypt(k, 0, message[44:60], h)
        except InvalidTag:
            raise HandshakeError("response_invalid") from None
        self.hash = hash_(h, message[44:60])
        self.chain_key = c
        self.remote_index = sender
        self.state = RESPONSE_CONSUMED

    # -- responder --------------------------------------------------------------------------

    def create_response(self, local_index: int, now: float) -> bytes:
        if self.state != INITIATION_CONSUMED:
            raise HandshakeError("response_without_initiation")
        ephemeral = generate_private()
        e_pub = public_key(ephemeral)
        h = hash_(self.hash, e_pub)
        c = kdf1(self.chain_key, e_pub)
        c = kdf1(c, dh(ephemeral, self.remote_ephemeral))
        c = kdf1(c, dh(ephemeral, self.remote_static))
        c, tau, k = kdf3(c, self.psk)
        h = hash_(h, tau)
        empty = aead_encrypt(k, 0, b"", h)
        self.hash = hash_(h, empty)
        self.chain_key = c
        self.local_ephemeral = None
        self.local_index = local_index
        self.state = RESPONSE_CREATED
        return self.add_macs(_RESPONSE_HEAD.pack(MESSAGE_RESPONSE, local_index, self.remote_index) + e_pub + empty, now)

    # -- both ---------------------------------------------------------------------------

    def derive_keys(self) -> tuple[bytes, bytes, bool]:
        """(send key, receive key, we initiated) once the exchange completed;
        the Noise state is wiped."""
        if self.state == RESPONSE_CONSUMED:
            send, receive = kdf2(self.chain_key, b"")
            initiator = True
        elif self.state == RESPONSE_CREATED:
            receive, send = kdf2(self.chain_key, b"")
            initiator = False
        else:
            raise HandshakeError("no_session")
        self.state = ZEROED
        self.hash = self.chain_key = b""
        self.local_ephemeral = None
        return send, receive, initiator


class InitiationPreamble:
    """The first half of consuming an initiation, before the peer is known:
    decrypts the initiator's static key."""

    __slots__ = ("sender", "ephemeral", "hash", "chain_key", "remote_static")
    sender: int
    ephemeral: bytes
    hash: bytes
    chain_key: bytes
    remote_static: bytes


def open_initiation(identity: Identity, message: bytes) -> InitiationPreamble:
    """Decrypts the static key of an initiation whose mac1 was checked."""
    p = InitiationPreamble()
    _, p.sender = _HEAD.unpack_from(message)
    e_i = message[8:40]
    h = hash_(identity.initial_hash, e_i)
    c = kdf1(INITIAL_CHAIN_KEY, e_i)
    try:
        c, k = kdf2(c, dh(identity.private, e_i))
        remote_static = aead_decrypt(k, 0, message[40:88], h)
    except (ValueError, InvalidTag):
        raise HandshakeError("initiation_invalid") from None
    p.ephemeral, p.hash, p.chain_key, p.remote_static = e_i, hash_(h, message[40:88]), c, remote_static
    return p


def finish_initiation(hs: Handshake, p: InitiationPreamble, message: bytes, now: float) -> None:
    """The second half: authenticates the initiator and its timestamp, then
    moves ``hs`` to INITIATION_CONSUMED (ready for ``create_response``)."""
    c, k = kdf2(p.chain_key, hs.static_static)
    try:
        timestamp = aead_decrypt(k, 0, message[88:116], p.hash)
    except InvalidTag:
        raise HandshakeError("initiation_invalid") from None
    if timestamp <= hs.last_timestamp:  # big-endian TAI64N compares as bytes
        raise HandshakeError("initiation_replayed")
    if now - hs.last_initiation_consumed <= HANDSHAKE_INITIATION_RATE:
        raise HandshakeError("initiation_flood")
    hs.hash = hash_(p.hash, message[88:116])
    hs.chain_key = c
    hs.remote_index = p.sender
    hs.remote_ephemeral = p.ephemeral
    hs.last_timestamp = timestamp
    hs.last_initiation_consumed = now
    hs.state = INITIATION_CONSUMED


# -- the responder's side of cookies (whitepaper §5.4.7) --------------------------------------


def check_mac1(identity: Identity, message: bytes) -> bool:
    end = len(message) - 32
    return _equal(mac(identity.mac1_key, message[:end]), message[end : end + 16])


class CookieChecker:
    """Makes cookie replies and checks mac2 while the device is under load.
    The secret behind the cookies changes every COOKIE_REFRESH_TIME."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.secret = b""
        self.secret_time = float("-inf")

    def _cookie(self, source: bytes) -> bytes:
        return mac(self.secret, source)

    def check_mac2(self, message: bytes, source: bytes, now: float) -> bool:
        if now - self.secret_time > COOKIE_REFRESH_TIME:
            return False
        end = len(message) - 16
        return _equal(mac(self._cookie(source), message[:end]), message[end:])

    def make_reply(self, message: bytes, source: bytes, now: float) -> bytes:
        """A cookie reply to a handshake message (mac1 checked) from ``source``
        (the sender's IP address and port, as bytes)."""
        if now - self.secret_time > COOKIE_REFRESH_TIME:
            self.secret = os.urandom(32)
            self.secret_time = now
        nonce = os.urandom(24)
        end = len(message) - 32
        mac1 = message[end : end + 16]
        (sender,) = struct.unpack_from("<I", message, 4)
        sealed = xaead_encrypt(self.identity.cookie_key, nonce, self._cookie(source), mac1)
        return _HEAD.pack(MESSAGE_COOKIE_REPLY, sender) + nonce + sealed


def _equal(a: bytes, b: bytes) -> bool:
    import hmac

    return hmac.compare_digest(a, b)


SIZES = {MESSAGE_INITIATION: INITIATION_SIZE, MESSAGE_RESPONSE: RESPONSE_SIZE, MESSAGE_COOKIE_REPLY: COOKIE_REPLY_SIZE}
