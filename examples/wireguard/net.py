"""What wg-quick does around the device: routes for AllowedIPs, the policy
routing of a default route, hooks.  Runs ``ip`` as wg-quick does (aiouring's
own route API is still to come); everything here is undone by ``Routes.undo``
(routes through the interface vanish with it, rules do not).
"""
from __future__ import annotations

import asyncio
import ipaddress
import shutil
import sys
from typing import Any

from .config import Config


async def run(*cmd: str, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {err.decode().strip() or f'exit status {proc.returncode}'}")
    return out.decode()


async def run_hooks(commands: list[str], interface: str) -> None:
    """PreUp/PostUp/PreDown/PostDown, with %i replaced by the interface name, as wg-quick runs them."""
    shell = shutil.which("bash") or "/bin/sh"
    for command in commands:
        proc = await asyncio.create_subprocess_exec(shell, "-c", command.replace("%i", interface))
        if await proc.wait() != 0:
            print(f"hook failed ({proc.returncode}): {command}", file=sys.stderr, flush=True)


class Routes:
    """Routes for every peer's AllowedIPs through ``interface``, like
    wg-quick: a prefix already routed through the interface (its own
    subnet) is skipped; a /0 goes into its own table with the two rules that
    keep the tunnel's own UDP out of it (``not fwmark T table T`` and
    ``table main suppress_prefixlength 0``), and the socket gets the mark.
    ``Table = off`` adds nothing; a numeric Table puts the routes there."""

    def __init__(self, interface: str, config: Config) -> None:
        self.interface = interface
        self.config = config
        self.rules: list[list[str]] = []
        self.fwmark = config.fwmark

    async def apply(self, set_mark: Any) -> None:
        table = self.config.table.strip().lower() or "auto"
        if table == "off":
            return
        networks = sorted({n for p in self.config.peers for n in p.allowed_ips},
                          key=lambda n: (n.version, n.prefixlen), reverse=True)
        for network in networks:
            proto = "-6" if network.version == 6 else "-4"
            if table != "auto":
                await run("ip", proto, "route", "add", str(network), "dev", self.interface, "table", self.config.table)
            elif network.prefixlen == 0:
                await self._default_route(network, proto, set_mark)
            elif not (await run("ip", proto, "route", "show", "dev", self.interface, "match", str(network), check=False)).strip():
                await run("ip", proto, "route", "add", str(network), "dev", self.interface)

    async def _default_route(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network, proto: str, set_mark: Any) -> None:
        if not self.fwmark:
            table = 51820
            while ((await run("ip", "-4", "route", "show", "table", str(table), check=False)).strip()
                   or (await run("ip", "-6", "route", "show", "table", str(table), check=False)).strip()):
                table += 1
            self.fwmark = table
            set_mark(table)
        mark = str(self.fwmark)
        for rule in (["not", "fwmark", mark, "table", mark], ["table", "main", "suppress_prefixlength", "0"]):
            await run("ip", proto, "rule", "add", *rule)
            self.rules.append([proto, *rule])
        await run("ip", proto, "route", "add", str(network), "dev", self.interface, "table", mark)
        if proto == "-4":
            try:
                with open("/proc/sys/net/ipv4/conf/all/src_valid_mark", "w") as f:
                    f.write("1")
            except OSError:
                pass

    async def undo(self) -> None:
        for proto, *rule in reversed(self.rules):
            await run("ip", proto, "rule", "del", *rule, check=False)
        self.rules.clear()
