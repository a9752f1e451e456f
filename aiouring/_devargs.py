"""Checking and normalising what ``TunDevice`` is asked to set up.

Every function raises ``TypeError`` for a wrong type and ``ValueError`` for a
bad value, naming the argument and what was given, so that a mistake is
caught before a device is opened or the kernel is asked for anything.
"""
from __future__ import annotations

import grp
import ipaddress
import pwd
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Literal, Union

__all__ = [
    "AddressArg",
    "Addresses",
    "Mode",
    "RouteArg",
    "Routes",
    "Interface",
    "IPAddress",
    "IPNetwork",
    "Route",
    "Config",
    "parse_int",
    "parse_flag",
    "parse_mtu",
    "parse_txqueuelen",
    "parse_mac",
    "parse_up",
    "parse_interface",
    "parse_peer",
    "parse_addresses",
    "parse_routes",
    "parse_account",
    "parse_config",
]

Interface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Mode = Literal["tun", "tap"]
# What the device arguments take: one address ("10.0.0.1/24", "fd00::1/64",
# an ipaddress interface, or an address taken as a host) or any iterable of
# them (and, after Route below, the same for routes).  None is none.
AddressArg = Union[str, ipaddress.IPv4Interface, ipaddress.IPv6Interface, ipaddress.IPv4Address, ipaddress.IPv6Address]
Addresses = Union[AddressArg, Iterable[AddressArg], None]

MIN_MTU = 68  # the IPv4 minimum (RFC 791); a device may refuse more (the kernel says)
MAX_MTU = 65535
MAX_U32 = 0xFFFFFFFF
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$")


def parse_int(name: str, value: Any, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low} to {high}, not {value}")
    return value


def parse_mtu(value: Any) -> int:
    return parse_int("mtu", value, MIN_MTU, MAX_MTU)


def parse_txqueuelen(value: Any) -> int:
    return parse_int("txqueuelen", value, 0, MAX_U32)


def parse_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def parse_up(value: Any) -> bool:
    return parse_flag("up", value)


def parse_mac(value: Any, mode: str) -> bytes:
    """A unicast Ethernet address as 6 bytes, from ``"02:00:5e:10:00:01"``
    (``-`` separators too) or 6 bytes; only a TAP device has one."""
    if mode != "tap":
        raise ValueError("mac= is for a TAP device (mode='tap'): a TUN device has no link-layer address")
    if isinstance(value, str):
        if not _MAC.match(value):
            raise ValueError(f"mac must look like '02:00:5e:10:00:01', not {value!r}")
        raw = bytes.fromhex(value.replace(":", "").replace("-", ""))
    elif isinstance(value, (bytes, bytearray)):
        if len(value) != 6:
            raise ValueError(f"mac must be 6 bytes, not {len(value)}")
        raw = bytes(value)
    else:
        raise TypeError(f"mac must be a str like '02:00:5e:10:00:01' or 6 bytes, not {type(value).__name__}")
    if raw[0] & 1:
        raise ValueError(f"mac {value!r} is a multicast address: a device needs a unicast one (first octet even)")
    if raw == bytes(6):
        raise ValueError("mac 00:00:00:00:00:00 is not a valid device address")
    return raw


def parse_interface(value: Any, what: str = "address") -> Interface:
    """``"10.0.0.1/24"``, ``"fd00::1/64"``, an ``ipaddress`` interface, or an
    ``ipaddress`` address (taken as a host: /32 or /128)."""
    if isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return value
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ipaddress.ip_interface(value)
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str like '10.0.0.1/24' or an ipaddress object, not {type(value).__name__}")
    try:
        return ipaddress.ip_interface(value)
    except ValueError as exc:
        raise ValueError(f"invalid {what} {value!r}: {exc}") from None


def parse_peer(address: Any, value: Any) -> tuple[Interface, IPAddress | None, int]:
    """(local interface, peer or None, prefix length): with a peer, the prefix
    length is the peer's (``"10.0.0.2"`` is a /32), as ``ip addr add A peer P``."""
    local = parse_interface(address)
    if value is None:
        return local, None, local.network.prefixlen
    other = parse_interface(value, "peer")
    if other.version != local.version:
        raise ValueError(f"peer {value!r} is IPv{other.version} but address {address!r} is IPv{local.version}")
    if local.network.prefixlen != local.max_prefixlen:
        raise ValueError(
            f"with peer=, give the address without a prefix length ({str(local.ip)!r}): "
            f"the prefix length is the peer's ({str(other.ip)!r} is a /{other.max_prefixlen})"
        )
    return ipaddress.ip_interface(f"{local.ip}/{other.network.prefixlen}"), other.ip, other.network.prefixlen


def _many(name: str, value: Any, example: str) -> list[Any]:
    """``value`` as a list: ``None`` is none, a single str or ipaddress object
    is one, any other iterable gives its items; anything else is a TypeError."""
    if value is None:
        return []
    if isinstance(value, (str, Route, ipaddress.IPv4Interface, ipaddress.IPv6Interface, ipaddress.IPv4Address,
                          ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return [value]
    if isinstance(value, (bytes, bytearray, memoryview, dict)):
        raise TypeError(f"{name} must be a list like {example}, not {type(value).__name__}")
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"{name} must be a list like {example}, not {type(value).__name__}") from None


def parse_addresses(value: Any) -> list[Interface]:
    out: list[Interface] = []
    for item in _many("addresses", value, "['10.0.0.1/24', 'fd00::1/64']"):
        iface = parse_interface(item)
        if any(o.ip == iface.ip for o in out):
            raise ValueError(f"address {iface.ip} is given twice in addresses")
        out.append(iface)
    return out


def _network(value: Any) -> IPNetwork:
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if not isinstance(value, str):
        raise TypeError(f"route destination must be a str like '10.9.0.0/16' or an ipaddress network, not {type(value).__name__}")
    try:
        return ipaddress.ip_network(value)
    except ValueError as exc:
        raise ValueError(f"invalid route destination {value!r}: {exc} (a default route is '0.0.0.0/0' or '::/0')") from None


@dataclass(frozen=True)
class Route:
    """A route through the device.

    ``destination``: a network (``"10.9.0.0/16"``, ``"fd09::/64"``,
    ``"0.0.0.0/0"`` for a default route; host bits must be zero).
    ``gateway``: a next hop of the same family reachable through the device
    (``None``: the destination is on the link).  ``metric``: the route's
    priority, lower wins (``None``: the kernel's default, 0 for IPv4 and 1024
    for IPv6).  ``table``: a routing table number (``None``: main, 254).
    Strings are parsed; bad values raise ``ValueError``/``TypeError``.
    """

    destination: IPNetwork
    gateway: IPAddress | None = None
    metric: int | None = None
    table: int | None = None

    if TYPE_CHECKING:
        # the constructor also takes strings, which __post_init__ parses
        def __init__(self, destination: IPNetwork | str, gateway: IPAddress | str | None = None,
                     metric: int | None = None, table: int | None = None) -> None: ...

    def __post_init__(self) -> None:
        dst = _network(self.destination)
        gw = self.gateway
        if gw is not None:
            if isinstance(gw, str):
                try:
                    gw = ipaddress.ip_address(gw)
                except ValueError as exc:
                    raise ValueError(f"invalid route gateway {self.gateway!r}: {exc}") from None
            elif not isinstance(gw, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                raise TypeError(f"route gateway must be a str or an ipaddress address, not {type(gw).__name__}")
            if gw.version != dst.version:
                raise ValueError(f"route gateway {gw} is IPv{gw.version} but destination {dst} is IPv{dst.version}")
        if self.metric is not None:
            parse_int("route metric", self.metric, 0, MAX_U32)
        if self.table is not None:
            parse_int("route table", self.table, 1, MAX_U32)
        object.__setattr__(self, "destination", dst)
        object.__setattr__(self, "gateway", gw)

    @property
    def table_id(self) -> int:
        return 254 if self.table is None else self.table

    @property
    def effective_metric(self) -> int:
        """The metric the kernel gives the route (its default when ``metric`` is ``None``)."""
        if self.metric is not None:
            return self.metric
        return 0 if self.destination.version == 4 else 1024

    def __str__(self) -> str:
        out = str(self.destination)
        if self.gateway is not None:
            out += f" via {self.gateway}"
        if self.metric is not None:
            out += f" metric {self.metric}"
        if self.table is not None:
            out += f" table {self.table}"
        return out


# one route (a destination like "10.9.0.0/16", an ipaddress network, a Route) or any iterable of them
RouteArg = Union[str, ipaddress.IPv4Network, ipaddress.IPv6Network, Route]
Routes = Union[RouteArg, Iterable[RouteArg], None]


def parse_route(value: Any) -> Route:
    return value if isinstance(value, Route) else Route(value)


def parse_routes(value: Any) -> list[Route]:
    out: list[Route] = []
    for item in _many("routes", value, "['10.9.0.0/16', Route('fd09::/64', gateway='fd00::2')]"):
        r = parse_route(item)
        if r in out:
            raise ValueError(f"route {r} is given twice in routes")
        out.append(r)
    return out


def parse_account(name: str, value: Any) -> int | None:
    """``owner``/``group``: ``None``, a uid/gid, or a user/group name."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return pwd.getpwnam(value).pw_uid if name == "owner" else grp.getgrnam(value).gr_gid
        except KeyError:
            kind = "user" if name == "owner" else "group"
            raise ValueError(f"{name}: no {kind} called {value!r}") from None
    return parse_int(name, value, 0, MAX_U32 - 1)  # (uid_t)-1 means "nobody set"


@dataclass(frozen=True)
class Config:
    """A checked ``configure()`` request."""

    mtu: int | None
    addresses: tuple[Interface, ...]
    routes: tuple[Route, ...]
    up: bool
    txqueuelen: int | None
    mac: bytes | None


def parse_config(mode: str, *, mtu: Any = None, addresses: Any = (), routes: Any = (), up: Any = True,
           txqueuelen: Any = None, mac: Any = None) -> Config:
    return Config(
        None if mtu is None else parse_mtu(mtu),
        tuple(parse_addresses(addresses)),
        tuple(parse_routes(routes)),
        parse_up(up),
        None if txqueuelen is None else parse_txqueuelen(txqueuelen),
        None if mac is None else parse_mac(mac, mode),
    )
