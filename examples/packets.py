"""Just enough IPv4/UDP/ICMP to build and answer packets in the examples,
tests and benchmarks (no dependencies)."""
from __future__ import annotations

import ipaddress
import struct

PROTO_ICMP = 1
PROTO_UDP = 17


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, ttl: int = 64, ident: int = 0) -> bytes:
    """An IPv4 packet (20-byte header, checksum filled in) carrying ``payload``."""
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0, ttl, proto, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes, *, ident: int = 0) -> bytes:
    """An IPv4 UDP packet with a correct UDP checksum."""
    length = 8 + len(payload)
    pseudo = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + struct.pack("!BBH", 0, PROTO_UDP, length)
    segment = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = checksum(pseudo + segment) or 0xFFFF
    segment = segment[:6] + struct.pack("!H", csum) + segment[8:]
    return ipv4(src, dst, PROTO_UDP, segment, ident=ident)


def parse_ipv4(packet: bytes) -> tuple[str, str, int, bytes] | None:
    """(source, destination, protocol, payload) of an IPv4 packet, or None."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    src = str(ipaddress.IPv4Address(packet[12:16]))
    dst = str(ipaddress.IPv4Address(packet[16:20]))
    return src, dst, packet[9], packet[ihl:total]


def udp_payload(packet: bytes) -> bytes | None:
    """The payload of an IPv4 UDP packet, or None for anything else."""
    parsed = parse_ipv4(packet)
    if parsed is None or parsed[2] != PROTO_UDP:
        return None
    return parsed[3][8:]


def echo_reply(packet: bytes) -> bytes | None:
    """The ICMP echo reply answering an IPv4 echo request, or None."""
    parsed = parse_ipv4(packet)
    if parsed is None or parsed[2] != PROTO_ICMP:
        return None
    src, dst, _, icmp = parsed
    if len(icmp) < 8 or icmp[0] != 8:  # type 8: echo request
        return None
    reply = b"\x00\x00\x00\x00" + icmp[4:]
    reply = reply[:2] + struct.pack("!H", checksum(reply)) + reply[4:]
    return ipv4(dst, src, PROTO_ICMP, reply, ident=struct.unpack_from("!H", packet, 4)[0])
