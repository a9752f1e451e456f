"""The read half of WireGuard's cross-platform configuration protocol
(https://www.wireguard.com/xplatform/), so ``wg show NAME`` works against
this peer: a Unix socket at /var/run/wireguard/NAME.sock answering ``get=1``.
``set=1`` is refused (configuration comes from the file).
"""
from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from .device import Device

SOCKET_DIR = "/var/run/wireguard"


def describe(device: Device, listen_port: int, fwmark: int, show_endpoint: Any) -> str:
    lines = [f"private_key={_private_hex(device)}", f"listen_port={listen_port}"]
    if fwmark:
        lines.append(f"fwmark={fwmark}")
    for peer in device.peers.values():
        lines.append(f"public_key={peer.public_key.hex()}")
        lines.append(f"preshared_key={peer.handshake.psk.hex()}")
        lines.append("protocol_version=1")
        if peer.endpoint is not None:
            lines.append(f"endpoint={show_endpoint(peer.endpoint)}")
        secs, frac = divmod(peer.last_handshake_wall, 1)
        lines.append(f"last_handshake_time_sec={int(secs)}")
        lines.append(f"last_handshake_time_nsec={int(frac * 1e9)}")
        lines.append(f"tx_bytes={peer.tx_bytes}")
        lines.append(f"rx_bytes={peer.rx_bytes}")
        lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        lines.extend(f"allowed_ip={network}" for network in device.allowed.entries(peer))
    lines.append("errno=0")
    return "\n".join(lines) + "\n\n"


def _private_hex(device: Device) -> str:
    from .crypto import private_bytes

    return private_bytes(device.identity.private).hex()


async def serve(name: str, answer: Any) -> asyncio.AbstractServer | None:
    """Listens on SOCKET_DIR/name.sock; None (and a note) when it cannot."""
    path = os.path.join(SOCKET_DIR, name + ".sock")

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\n\n")
            if request.startswith(b"get=1\n"):
                writer.write(answer().encode())
            else:
                writer.write(b"errno=95\n\n")  # EOPNOTSUPP: configuration comes from the file
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    try:
        os.makedirs(SOCKET_DIR, mode=0o755, exist_ok=True)
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
            probe.close()
            print(f"not serving {path}: another process answers there", flush=True)
            return None
        except OSError:
            probe.close()
        if os.path.exists(path):
            os.unlink(path)
        old = os.umask(0o077)
        try:
            return await asyncio.start_unix_server(client, path)
        finally:
            os.umask(old)
    except OSError as exc:
        print(f"not serving {path}: {exc}", flush=True)
        return None


async def close(server: asyncio.AbstractServer | None, name: str) -> None:
    if server is None:
        return
    server.close()
    await server.wait_closed()
    try:
        os.unlink(os.path.join(SOCKET_DIR, name + ".sock"))
    except FileNotFoundError:
        pass
