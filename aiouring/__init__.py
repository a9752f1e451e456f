"""aiouring: Linux io_uring for asyncio, for packet devices (TUN/TAP) first.

Public names live here and nowhere else.
"""
from .backends import BACKENDS, get_ring, open_ring
from .device import TunDevice
from .errors import ClosedError, UnsupportedError
from .probe import ProbeResult, probe
from .protocol import TunProtocol
from .readiness import ReadinessRing
from .ring import PacketReader, Ring
from .transport import TunTransport, create_tun_connection
from .tun import Tun, open_tun
from .udp import DatagramTransport, create_datagram_endpoint

__all__ = [
    "BACKENDS",
    "ClosedError",
    "DatagramTransport",
    "PacketReader",
    "ProbeResult",
    "ReadinessRing",
    "Ring",
    "Tun",
    "TunDevice",
    "TunProtocol",
    "TunTransport",
    "UnsupportedError",
    "create_datagram_endpoint",
    "create_tun_connection",
    "get_ring",
    "open_ring",
    "open_tun",
    "probe",
]
