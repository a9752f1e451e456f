"""WireGuard configuration files, in ``wg``'s format with wg-quick's additions.

``[Interface]``: PrivateKey, ListenPort, FwMark (wg's keys); Address, MTU,
DNS, Table, PreUp/PostUp/PreDown/PostDown, SaveConfig (wg-quick's).
``[Peer]``: PublicKey, PresharedKey, Endpoint (host:port or [v6]:port),
AllowedIPs, PersistentKeepalive.  Keys are case-insensitive, ``#`` starts a
comment, list values are comma-separated and may repeat over lines, as wg
and wg-quick read them.  An unknown key or a bad value is a ``ConfigError``
naming the line.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from .crypto import key_from_base64

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class ConfigError(ValueError):
    pass


@dataclass
class PeerConfig:
    public_key: bytes
    preshared_key: bytes | None = None
    endpoint: tuple[str, int] | None = None
    allowed_ips: list[Network] = field(default_factory=list)
    persistent_keepalive: int = 0


@dataclass
class Config:
    private_key: bytes
    listen_port: int = 0
    fwmark: int = 0
    addresses: list[Interface] = field(default_factory=list)
    mtu: int | None = None
    dns: list[str] = field(default_factory=list)
    table: str = "auto"
    pre_up: list[str] = field(default_factory=list)
    post_up: list[str] = field(default_factory=list)
    pre_down: list[str] = field(default_factory=list)
    post_down: list[str] = field(default_factory=list)
    save_config: bool = False
    peers: list[PeerConfig] = field(default_factory=list)


def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6 address]:port`` -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"bad endpoint {text!r}: expected [ADDRESS]:PORT")
        port = rest[1:]
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ConfigError(f"bad endpoint {text!r}: expected HOST:PORT or [IPV6]:PORT")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"bad endpoint port in {text!r}")
    return host, int(port)


def _key(value: str, what: str) -> bytes:
    try:
        return key_from_base64(value)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def _int(value: str, what: str, lo: int, hi: int) -> int:
    try:
        number = int(value, 0)
    except ValueError:
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not lo <= number <= hi:
        raise ConfigError(f"{what} must be from {lo} to {hi}, got {number}")
    return number


def _list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse(text: str) -> Config:
    interface: dict[str, object] = {}
    peers: list[dict[str, object]] = []
    section: dict[str, object] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            if line.startswith("["):
                name = line.strip("[]").strip().lower()
                if name == "interface":
                    section = interface
                elif name == "peer":
                    section = {}
                    peers.append(section)
                else:
                    raise ConfigError(f"unknown section {line}")
                continue
            if section is None:
                raise ConfigError("a key outside any section")
            key, sep, value = line.partition("=")
            if not sep:
                raise ConfigError(f"expected KEY = VALUE, got {line!r}")
            _set(section, key.strip().lower(), value.strip(), section is interface)
        except ConfigError as exc:
            raise ConfigError(f"line {number}: {exc}") from None
    if "private_key" not in interface:
        raise ConfigError("[Interface] needs a PrivateKey")
    config = Config(**interface)  # type: ignore[arg-type]  # the parsed section: its values checked by _set
    seen = set()
    for p in peers:
        if "public_key" not in p:
            raise ConfigError("every [Peer] needs a PublicKey")
        peer = PeerConfig(**p)  # type: ignore[arg-type]  # the parsed section: its values checked by _set
        if peer.public_key in seen:
            raise ConfigError("the same PublicKey in two [Peer] sections")
        seen.add(peer.public_key)
        config.peers.append(peer)
    return config


_HOOKS = {"preup": "pre_up", "postup": "post_up", "predown": "pre_down", "postdown": "post_down"}


def _set(section: dict[str, Any], key: str, value: str, is_interface: bool) -> None:
    if is_interface:
        if key == "privatekey":
            section["private_key"] = _key(value, "PrivateKey")
        elif key == "listenport":
            section["listen_port"] = _int(value, "ListenPort", 0, 65535)
        elif key == "fwmark":
            section["fwmark"] = 0 if value == "off" else _int(value, "FwMark", 0, 0xFFFFFFFF)
        elif key == "address":
            try:
                section.setdefault("addresses", []).extend(ipaddress.ip_interface(a) for a in _list(value))
            except ValueError as exc:
                raise ConfigError(f"Address: {exc}") from None
        elif key == "mtu":
            section["mtu"] = _int(value, "MTU", 576, 65535)
        elif key == "dns":
            section.setdefault("dns", []).extend(_list(value))
        elif key == "table":
            section["table"] = value
        elif key in ("preup", "postup", "predown", "postdown"):
            section.setdefault(_HOOKS[key], []).append(value)
        elif key == "saveconfig":
            section["save_config"] = value.lower() == "true"
        else:
            raise ConfigError(f"unknown key {key!r} in [Interface]")
    else:
        if key == "publickey":
            section["public_key"] = _key(value, "PublicKey")
        elif key == "presharedkey":
            section["preshared_key"] = _key(value, "PresharedKey")
        elif key == "endpoint":
            section["endpoint"] = parse_endpoint(value)
        elif key == "allowedips":
            try:
                section.setdefault("allowed_ips", []).extend(ipaddress.ip_network(a, strict=False) for a in _list(value))
            except ValueError as exc:
                raise ConfigError(f"AllowedIPs: {exc}") from None
        elif key == "persistentkeepalive":
            section["persistent_keepalive"] = 0 if value == "off" else _int(value, "PersistentKeepalive", 0, 65535)
        else:
            raise ConfigError(f"unknown key {key!r} in [Peer]")


def load(path: str) -> Config:
    with open(path) as f:
        return parse(f.read())
