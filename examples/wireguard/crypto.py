"""The primitives WireGuard is built from, as the whitepaper names them (§5.4).

HASH is BLAKE2s-256, MAC is keyed BLAKE2s-128, HMAC is HMAC over BLAKE2s-256
and KDFn is HKDF built on that HMAC; DH is X25519, AEAD is ChaCha20-Poly1305
with a 64-bit little-endian counter after four zero bytes as the nonce, and
XAEAD (cookie replies only) is XChaCha20-Poly1305 from libsodium.  Nothing here
is hand-written cryptography: ``hashlib``, ``hmac``, ``cryptography`` and
PyNaCl do the work.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

__all__ = [
    "AEAD", "InvalidTag", "KEY_LEN", "ZERO_NONCE", "aead_decrypt", "aead_encrypt", "dh", "generate_private",
    "hash_", "hmac_", "kdf1", "kdf2", "kdf3", "key_from_base64", "key_to_base64", "mac", "public_key",
    "tai64n", "xaead_decrypt", "xaead_encrypt",
]

KEY_LEN = 32
ZERO_NONCE = bytes(12)
AEAD = ChaCha20Poly1305
_blake2s = hashlib.blake2s


def hash_(*parts: bytes) -> bytes:
    h = _blake2s()
    for part in parts:
        h.update(part)
    return h.digest()


def mac(key: bytes, data: bytes) -> bytes:
    return _blake2s(data, digest_size=16, key=key).digest()


def hmac_(key: bytes, *parts: bytes) -> bytes:
    h = hmac.new(key, digestmod=_blake2s)
    for part in parts:
        h.update(part)
    return h.digest()


def kdf1(key: bytes, data: bytes) -> bytes:
    prk = hmac_(key, data)
    return hmac_(prk, b"\x01")


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    prk = hmac_(key, data)
    t0 = hmac_(prk, b"\x01")
    return t0, hmac_(prk, t0, b"\x02")


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    prk = hmac_(key, data)
    t0 = hmac_(prk, b"\x01")
    t1 = hmac_(prk, t0, b"\x02")
    return t0, t1, hmac_(prk, t1, b"\x03")


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(b"\0\0\0\0" + counter.to_bytes(8, "little"), plaintext, ad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, ad: bytes) -> bytes:
    """Raises ``InvalidTag`` when the ciphertext is not authentic."""
    return ChaCha20Poly1305(key).decrypt(b"\0\0\0\0" + counter.to_bytes(8, "little"), ciphertext, ad)


def xaead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt

    return crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def xaead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """Raises ``InvalidTag`` when the ciphertext is not authentic."""
    from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt
    from nacl.exceptions import CryptoError

    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key)
    except CryptoError:
        raise InvalidTag from None


def generate_private() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def private_from_bytes(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def public_key(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """X25519; raises ``ValueError`` for a public key that gives the all-zero
    secret (a low-order point), which WireGuard refuses too."""
    secret = private.exchange(X25519PublicKey.from_public_bytes(public))
    if secret == bytes(32):  # cryptography refuses these already; be explicit
        raise ValueError("low-order public key")
    return secret


_TAI64N = struct.Struct("!QI")
_TAI64_BASE = (1 << 62) + 10


def tai64n(now_ns: int | None = None) -> bytes:
    """TAI64N of the wall clock.  The nanoseconds are truncated to 2^24 ns
    (~16.8 ms), as wireguard-go does, so the timestamp does not leak precise
    timing; a peer refuses an initiation whose timestamp is not newer than the
    last one it took, and that makes initiations less than 16.8 ms apart
    collide (the flood limit is 20 ms anyway)."""
    ns = time.time_ns() if now_ns is None else now_ns
    secs, nanos = divmod(ns, 1_000_000_000)
    return _TAI64N.pack(_TAI64_BASE + secs, nanos & ~0xFFFFFF)


def key_from_base64(text: str) -> bytes:
    """A 32-byte key in wg's base64 form; ``ValueError`` otherwise."""
    text = text.strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(f"not a base64 key: {text!r}") from None
    if len(raw) != KEY_LEN or len(text) != 44:
        raise ValueError(f"a key is 32 bytes in base64 (44 characters), got {text!r}")
    return raw


def key_to_base64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
