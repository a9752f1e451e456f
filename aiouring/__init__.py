"""aiouring: Linux io_uring for asyncio, for packet devices (TUN/TAP) first.

Public names live here and nowhere else.
"""
from .backends import BACKENDS, get_ring, open_ring
from .errors import ClosedError, UnsupportedError
from .probe import ProbeResult, probe
from .readiness import ReadinessRing
from .ring import PacketReader, Ring

__all__ = [
    "BACKENDS",
    "ClosedError",
    "PacketReader",
    "ProbeResult",
    "ReadinessRing",
    "Ring",
    "UnsupportedError",
    "get_ring",
    "open_ring",
    "probe",
]
