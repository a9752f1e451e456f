"""Protocol constants (whitepaper §6.1, wireguard-go's device/constants.go),
each overridable from the environment so tests can shorten the timers:

    AIOURING_WG_REKEY_AFTER_MESSAGES    2**60
    AIOURING_WG_REJECT_AFTER_MESSAGES   2**64 - 2**13 - 1
    AIOURING_WG_REKEY_AFTER_TIME        120   seconds (float accepted everywhere)
    AIOURING_WG_REJECT_AFTER_TIME       180
    AIOURING_WG_REKEY_ATTEMPT_TIME      90
    AIOURING_WG_REKEY_TIMEOUT           5
    AIOURING_WG_KEEPALIVE_TIMEOUT       10
    AIOURING_WG_COOKIE_REFRESH_TIME     120
    AIOURING_WG_REKEY_JITTER            0.334 (the most added to REKEY_TIMEOUT)
    AIOURING_WG_UNDER_LOAD              64    handshake messages in one second that
                                              put the device under load (0: always)
    AIOURING_WG_TICK                    0.05  how often the timers are looked at

Values are read once, when this module is imported.
"""
from __future__ import annotations

import os


def _env(name: str, default: float) -> float:
    raw = os.environ.get("AIOURING_WG_" + name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"AIOURING_WG_{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise SystemExit(f"AIOURING_WG_{name} must not be negative, got {raw!r}")
    return value


REKEY_AFTER_MESSAGES = int(_env("REKEY_AFTER_MESSAGES", 1 << 60))
REJECT_AFTER_MESSAGES = int(_env("REJECT_AFTER_MESSAGES", (1 << 64) - (1 << 13) - 1))
REKEY_AFTER_TIME = _env("REKEY_AFTER_TIME", 120.0)
REJECT_AFTER_TIME = _env("REJECT_AFTER_TIME", 180.0)
REKEY_ATTEMPT_TIME = _env("REKEY_ATTEMPT_TIME", 90.0)
REKEY_TIMEOUT = _env("REKEY_TIMEOUT", 5.0)
KEEPALIVE_TIMEOUT = _env("KEEPALIVE_TIMEOUT", 10.0)
COOKIE_REFRESH_TIME = _env("COOKIE_REFRESH_TIME", 120.0)
REKEY_JITTER = _env("REKEY_JITTER", 0.334)
UNDER_LOAD = int(_env("UNDER_LOAD", 64))
TICK = _env("TICK", 0.05) or 0.05
MAX_HANDSHAKE_ATTEMPTS = int(REKEY_ATTEMPT_TIME // REKEY_TIMEOUT) if REKEY_TIMEOUT else 18

UNDER_LOAD_AFTER_TIME = 1.0  # how long the device stays under load once it was
HANDSHAKE_INITIATION_RATE = 0.02  # a peer's initiations closer than this are a flood
STAGED_PACKETS = 1024  # packets kept per peer while a handshake is under way

# message layout (whitepaper §5.4.2-§5.4.7)
MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_COOKIE_REPLY, MESSAGE_TRANSPORT = 1, 2, 3, 4
INITIATION_SIZE, RESPONSE_SIZE, COOKIE_REPLY_SIZE = 148, 92, 64
TRANSPORT_HEADER_SIZE = 16
TAG_SIZE = 16
KEEPALIVE_SIZE = TRANSPORT_HEADER_SIZE + TAG_SIZE
PADDING = 16

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
