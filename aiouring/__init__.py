"""aiouring: Linux io_uring for asyncio, for packet devices (TUN/TAP) and UDP.

Public names live here and nowhere else.
"""
from ._version import __version__ as __version__
from .backends import BACKENDS, Backend, get_ring, open_ring
from .device import LinkCounters, Mode, Route, TunDevice
from .errors import ClosedError, UnsupportedError
from .offload import Offload
from .packet_io import DatagramSink, PacketSink, PacketSource
from .probe import ProbeResult, probe
from .protocol import TunProtocol
from .ring import ReadinessRing, Ring, RingBase
from .transport import TunTransport, create_tun_connection
from .tun import Tun, open_tun
from .udp import DatagramTransport, create_datagram_endpoint
from ._transport_base import TransportStats

__all__ = [
    "BACKENDS",
    "Backend",
    "ClosedError",
    "DatagramSink",
    "DatagramTransport",
    "LinkCounters",
    "Mode",
    "Offload",
    "PacketSink",
    "PacketSource",
    "ProbeResult",
    "ReadinessRing",
    "Route",
    "Ring",
    "RingBase",
    "Tun",
    "TunDevice",
    "TunProtocol",
    "TunTransport",
    "TransportStats",
    "UnsupportedError",
    "create_datagram_endpoint",
    "create_tun_connection",
    "get_ring",
    "open_ring",
    "open_tun",
    "probe",
]
