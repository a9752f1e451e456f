"""TUNs with virtio-net headers and offloads, for the kernel offload tests.

The library's device.py does not open vnet-header TUNs yet; these helpers do
it by hand: ``IFF_TUN|IFF_NO_PI|IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` through
fcntl, addresses through pyroute2, and a few readers with deadlines.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import struct
import time
from typing import Callable

from pyroute2 import IPRoute

from aiouring.offload import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNGETVNETHDRSZ = 0x800454D7
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFA_F_NODAD = 0x02
VNET_READ_SIZE = 10 + 65535 + 40  # header + the largest IPv6 packet a TUN can carry


class VnetTun:
    """One TUN fd (non-blocking).  ``vnet``: opened with IFF_VNET_HDR;
    ``offload``: the TUNSETOFFLOAD flags the kernel accepted."""

    def __init__(self, name: str, *, vnet: bool = True, offload: int = 0) -> None:
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet else 0)
            ifr = fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
            self.name = struct.unpack("16sH22x", ifr)[0].rstrip(b"\0").decode()
            self.vnet = vnet
            self.offload = 0
            if offload:
                self.offload = set_offload(self.fd, offload)
        except BaseException:
            os.close(self.fd)
            raise

    @property
    def uso(self) -> bool:
        return bool(self.offload & TUN_F_USO4)

    def configure(self, addresses: list[str], *, mtu: int = 1420, txqueuelen: int = 4096) -> None:
        """MTU, queue length, addresses, link up; returns once every address
        routes as local.  An IPv6 address gets its local route from addrconf
        after link-up, asynchronously even with NODAD: until then a packet to
        it counts as Ip6InAddrErrors and is dropped (seen here as a lost
        SYN-ACK in about one run in twenty)."""
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=self.name)[0]
            ipr.link("set", index=index, mtu=mtu, txqlen=txqueuelen)
            for a in addresses:
                ip, prefix = a.split("/")
                ipr.addr("add", index=index, address=ip, prefixlen=int(prefix), flags=IFA_F_NODAD)
            ipr.link("set", index=index, state="up")
            for a in addresses:
                ip = a.split("/")[0]
                if not wait_for(lambda: _routes_locally(ipr, ip), 5.0):
                    raise TimeoutError(f"{ip} on {self.name} never became a local address")

    def write(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def read_now(self) -> bytes | None:
        try:
            return os.read(self.fd, VNET_READ_SIZE)
        except BlockingIOError:
            return None

    async def read(self, timeout: float = 5.0) -> bytes:
        """The next packet, waiting with ``loop.add_reader``; TimeoutError after ``timeout``."""
        data = self.read_now()
        if data is not None:
            return data
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ready = loop.create_future()
            loop.add_reader(self.fd, lambda: None if ready.done() else ready.set_result(None))
            try:
                await asyncio.wait_for(ready, max(0.0, deadline - loop.time()))
            finally:
                loop.remove_reader(self.fd)
            data = self.read_now()
            if data is not None:
                return data

    async def read_until(self, want: Callable[[bytes], bool], timeout: float = 5.0) -> bytes:
        """The first packet ``want`` accepts, skipping the others (router
        solicitations, MLD...); TimeoutError after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            data = await self.read(max(0.0, deadline - loop.time()))
            if want(data):
                return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


RTN_LOCAL = 2


def _routes_locally(ipr: IPRoute, ip: str) -> bool:
    try:
        return any(r["type"] == RTN_LOCAL for r in ipr.route("get", dst=ip))
    except Exception:  # pyroute2 raises NetlinkError while no route exists
        return False


def set_offload(fd: int, flags: int) -> int:
    """TUNSETOFFLOAD with ``flags``; when USO4|USO6 are refused (kernels
    before 6.2), retry without them.  Returns the flags that took."""
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
        return flags
    except OSError as exc:
        uso = TUN_F_USO4 | TUN_F_USO6
        if exc.errno != errno.EINVAL or not flags & uso:
            raise
    fcntl.ioctl(fd, TUNSETOFFLOAD, flags & ~uso)
    return flags & ~uso


def offload_all() -> int:
    return TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6


def vnet_header_size(fd: int) -> int:
    size: int = struct.unpack("i", fcntl.ioctl(fd, TUNGETVNETHDRSZ, b"\0" * 4))[0]
    return size


def snmp_counters() -> dict[str, int]:
    """This thread's namespace's SNMP counters ("Tcp.InCsumErrors",
    "Udp.InCsumErrors", "Udp6InCsumErrors", ...), as nstat reads them."""
    out: dict[str, int] = {}
    with open("/proc/thread-self/net/snmp") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        proto = names.split(":")[0]
        for k, v in zip(names.split()[1:], values.split()[1:]):
            out[f"{proto}.{k}"] = int(v)
    with open("/proc/thread-self/net/snmp6") as f:
        for line in f:
            k, v = line.split()
            out[k] = int(v)
    return out


def csum_errors() -> dict[str, int]:
    c = snmp_counters()
    return {k: c[k] for k in ("Tcp.InCsumErrors", "Udp.InCsumErrors", "Udp6InCsumErrors")}


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
