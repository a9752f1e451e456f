"""A minimal rtnetlink client: links, addresses and routes of one namespace.

Owns the wire format (message headers, attributes, acks and dumps) and
nothing else; ``device.py`` decides what to ask and phrases the errors.

Why not pyroute2: its asyncio API needs ``loop.create_datagram_endpoint``
on an ``AF_NETLINK`` socket, which uvloop refuses ("invalid family 16"),
and its blocking API refuses a thread whose loop is running.  And an
asynchronous netlink socket would not help anyway: the kernel runs an
rtnetlink request inside ``sendmsg()``, under the RTNL lock, and has queued
the answer before ``sendmsg()`` returns, so a loop that sent requests itself
would wait for that lock (held for long stretches while another process
tears down a namespace).  So the requests are plain blocking calls, made
off the loop by ``device.py``.

A socket acts in the network namespace of the thread that *created* it,
whichever thread uses it later: ``RtSocket()`` is created on the caller's
thread and may then be handed to any other.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Iterator

__all__ = [
    "KernelError",
    "RtSocket",
    "Link",
    "AddressEntry",
    "RouteEntry",
    "Stats64",
    "attr",
    "IFF_UP",
]

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26

IFF_UP = 0x1

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_TXQLEN = 13
IFLA_LINKINFO = 18
IFLA_STATS64 = 23
IFLA_MIN_MTU = 50
IFLA_MAX_MTU = 51
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
# IFLA_TUN_* (include/uapi/linux/if_link.h): u32 owner/group/queues, u8 the rest
_TUN_INFO = {1: "owner", 2: "group", 3: "type", 4: "pi", 5: "vnet_hdr", 6: "persist", 7: "multi_queue",
             8: "num_queues", 9: "num_disabled_queues"}

IFA_ADDRESS = 1
IFA_LOCAL = 2

RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_TABLE = 15
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
RTN_UNICAST = 1

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTATTR = struct.Struct("=HH")
_STATS64 = struct.Struct("=8Q")  # the first eight fields of struct rtnl_link_stats64


class KernelError(OSError):
    """A netlink request the kernel refused: ``errno`` and, when the kernel
    said more (extended ack), ``kernel_message``."""

    def __init__(self, code: int, kernel_message: str | None) -> None:
        super().__init__(code, os.strerror(code))
        self.kernel_message = kernel_message


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, value: bytes) -> bytes:
    """One netlink attribute (type, length, value, padding)."""
    raw = _RTATTR.pack(_RTATTR.size + len(value), kind) + value
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def u32(value: int) -> bytes:
    return struct.pack("=I", value)


def _attrs(data: bytes | memoryview, offset: int = 0) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    view = memoryview(data)
    while offset + _RTATTR.size <= len(view):
        length, kind = _RTATTR.unpack_from(view, offset)
        if length < _RTATTR.size:
            break
        out[kind & 0x3FFF] = bytes(view[offset + _RTATTR.size : offset + length])  # drop NESTED/BYTEORDER bits
        offset += _align(length)
    return out


def _u32(raw: bytes | None) -> int | None:
    return struct.unpack("=I", raw[:4])[0] if raw and len(raw) >= 4 else None


@dataclass(frozen=True)
class Stats64:
    rx_packets: int
    tx_packets: int
    rx_bytes: int
    tx_bytes: int
    rx_errors: int
    tx_errors: int
    rx_dropped: int
    tx_dropped: int


@dataclass(frozen=True)
class Link:
    """What ``RTM_GETLINK`` says about one interface."""

    index: int
    flags: int
    mtu: int | None
    txqlen: int | None
    address: bytes | None
    min_mtu: int | None
    max_mtu: int | None
    kind: str | None
    stats: Stats64 | None = field(default=None, repr=False)
    tun: dict[str, int] | None = None  # IFLA_TUN_* of a TUN/TAP: "pi", "persist", "owner", ...


@dataclass(frozen=True)
class AddressEntry:
    family: int
    index: int
    prefixlen: int
    local: str  # this host's address
    peer: str | None  # the other end of a point-to-point link, when it differs


@dataclass(frozen=True)
class RouteEntry:
    family: int
    table: int
    dst: str | None  # None: the default route
    dst_len: int
    oif: int | None
    gateway: str | None
    priority: int


def _ip(family: int, raw: bytes) -> str:
    return socket.inet_ntop(family, raw)


class RtSocket:
    """One ``NETLINK_ROUTE`` socket (blocking; see the module docstring for
    which namespace it acts in).  ``close()`` it when done."""

    def __init__(self, timeout: float = 30.0) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self._sock.bind((0, 0))
            self._sock.settimeout(timeout)
        except BaseException:
            self._sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    # -- the wire -------------------------------------------------------------------

    def _send(self, msg_type: int, flags: int, body: bytes) -> int:
        self._seq += 1
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags | NLM_F_REQUEST, self._seq, 0)
        self._sock.send(header + body)
        return self._seq

    def _replies(self, seq: int) -> Iterator[tuple[int, int, memoryview]]:
        """Messages answering ``seq`` until its ack or NLMSG_DONE; raises
        ``KernelError`` for an error ack."""
        while True:
            data, _, msg_flags, _ = self._sock.recvmsg(1 << 16)
            if msg_flags & socket.MSG_TRUNC:
                raise OSError(errno.EMSGSIZE, "netlink answer larger than 64 KiB")
            view = memoryview(data)
            offset = 0
            while offset + _NLMSGHDR.size <= len(view):
                length, kind, flags, mseq, _ = _NLMSGHDR.unpack_from(view, offset)
                if length < _NLMSGHDR.size:
                    raise OSError(errno.EPROTO, "malformed netlink message")
                body = view[offset + _NLMSGHDR.size : offset + length]
                offset += _align(length)
                if mseq != seq:
                    continue  # an answer to an earlier, abandoned request
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0]
                    if code == 0:
                        return
                    raise KernelError(code, _extack(body, flags))
                if kind == NLMSG_DONE:
                    return
                yield kind, flags, body
                if not flags & NLM_F_MULTI:
                    return

    def change(self, msg_type: int, body: bytes, flags: int = 0) -> None:
        """Send one request that changes something and wait for its ack."""
        for _ in self._replies(self._send(msg_type, flags | NLM_F_ACK, body)):
            pass

    def _dump(self, msg_type: int, body: bytes) -> Iterator[memoryview]:
        for _, _, reply in self._replies(self._send(msg_type, NLM_F_DUMP, body)):
            yield reply

    # -- questions --------------------------------------------------------------------

    def link(self, name: str) -> Link:
        """The interface called ``name``; ``KernelError(ENODEV)`` if there is none."""
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr(IFLA_IFNAME, name.encode() + b"\0")
        for _, _, reply in self._replies(self._send(RTM_GETLINK, NLM_F_ACK, body)):
            return _parse_link(reply)
        raise KernelError(errno.ENODEV, None)

    def addresses(self, index: int) -> list[AddressEntry]:
        out = []
        for reply in self._dump(RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            family, prefixlen, _, _, ifindex = _IFADDRMSG.unpack_from(reply)
            if ifindex != index or family not in (socket.AF_INET, socket.AF_INET6):
                continue
            attrs = _attrs(reply, _IFADDRMSG.size)
            address = attrs.get(IFA_ADDRESS)
            local = attrs.get(IFA_LOCAL, address)
            if local is None:
                continue
            peer = address if address is not None and address != local else None
            out.append(AddressEntry(family, index, prefixlen, _ip(family, local), None if peer is None else _ip(family, peer)))
        return out

    def routes(self, family: int) -> list[RouteEntry]:
        out = []
        for reply in self._dump(RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)):
            fam, dst_len, _, _, table, _, _, rtype, _ = _RTMSG.unpack_from(reply)
            if fam != family or rtype != RTN_UNICAST:
                continue
            attrs = _attrs(reply, _RTMSG.size)
            dst = attrs.get(RTA_DST)
            gateway = attrs.get(RTA_GATEWAY)
            out.append(RouteEntry(
                family,
                _u32(attrs.get(RTA_TABLE)) or table,
                None if dst is None else _ip(family, dst),
                dst_len,
                _u32(attrs.get(RTA_OIF)),
                None if gateway is None else _ip(family, gateway),
                _u32(attrs.get(RTA_PRIORITY)) or 0,
            ))
        return out

    # -- changes ------------------------------------------------------------------------

    def set_link(self, index: int, *, flags: int = 0, change: int = 0, attrs: bytes = b"") -> None:
        self.change(RTM_NEWLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change) + attrs)

    def delete_link(self, index: int) -> None:
        self.change(RTM_DELLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0))

    def address(self, add: bool, index: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                peer: ipaddress.IPv4Address | ipaddress.IPv6Address | None, prefixlen: int) -> None:
        family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
        body = _IFADDRMSG.pack(family, prefixlen, 0, 0, index)
        body += attr(IFA_LOCAL, iface.ip.packed)
        body += attr(IFA_ADDRESS, (peer if peer is not None else iface.ip).packed)
        if add:
            self.change(RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_EXCL)
        else:
            self.change(RTM_DELADDR, body)

    def route(self, add: bool, index: int, dst: ipaddress.IPv4Network | ipaddress.IPv6Network,
              gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None, metric: int | None, table: int) -> None:
        family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        if add:
            scope, protocol = (RT_SCOPE_UNIVERSE if gateway is not None else RT_SCOPE_LINK), RTPROT_BOOT
        else:
            scope, protocol = RT_SCOPE_NOWHERE, 0  # as `ip route del`: any scope, whoever added it
        body = _RTMSG.pack(family, dst.prefixlen, 0, 0, table if table < 256 else 0, protocol, scope, RTN_UNICAST, 0)
        if dst.prefixlen:
            body += attr(RTA_DST, dst.network_address.packed)
        body += attr(RTA_OIF, u32(index)) + attr(RTA_TABLE, u32(table))
        if gateway is not None:
            body += attr(RTA_GATEWAY, gateway.packed)
        if metric is not None:
            body += attr(RTA_PRIORITY, u32(metric))
        if add:
            self.change(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_EXCL)
        else:
            self.change(RTM_DELROUTE, body)


def _extack(body: memoryview, flags: int) -> str | None:
    """The kernel's own words from an error ack (NLMSGERR_ATTR_MSG), if any."""
    if not flags & NLM_F_ACK_TLVS:
        return None
    # struct nlmsgerr: int error + the request's header (and, unless capped, its payload)
    offset = 4 + _NLMSGHDR.size
    if not flags & NLM_F_CAPPED and len(body) >= offset:
        offset = 4 + _align(_NLMSGHDR.unpack_from(body, 4)[0])
    message = _attrs(body, offset).get(NLMSGERR_ATTR_MSG)
    return message.rstrip(b"\0").decode(errors="replace") if message else None


def _parse_link(reply: memoryview) -> Link:
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(reply)
    attrs = _attrs(reply, _IFINFOMSG.size)
    kind = None
    tun = None
    if IFLA_LINKINFO in attrs:
        info = _attrs(attrs[IFLA_LINKINFO])
        raw_kind = info.get(IFLA_INFO_KIND)
        kind = raw_kind.rstrip(b"\0").decode() if raw_kind else None
        if kind == "tun" and IFLA_INFO_DATA in info:
            tun = {_TUN_INFO[k]: int.from_bytes(v[:4], sys.byteorder)
                   for k, v in _attrs(info[IFLA_INFO_DATA]).items() if k in _TUN_INFO}
    raw_stats = attrs.get(IFLA_STATS64)
    stats = Stats64(*_STATS64.unpack_from(raw_stats)) if raw_stats and len(raw_stats) >= _STATS64.size else None
    return Link(
        index, flags, _u32(attrs.get(IFLA_MTU)), _u32(attrs.get(IFLA_TXQLEN)), attrs.get(IFLA_ADDRESS),
        _u32(attrs.get(IFLA_MIN_MTU)), _u32(attrs.get(IFLA_MAX_MTU)), kind, stats, tun,
    )
