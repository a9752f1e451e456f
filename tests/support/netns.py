"""Network namespaces for tests: each test that touches the network gets its own."""
from __future__ import annotations

import contextlib
import itertools
import os
from typing import Iterator

from pyroute2 import IPRoute, netns

_counter = itertools.count()


def sysctl(key: str, value: str) -> None:
    """Write a net sysctl in the current thread's network namespace."""
    with open(f"/proc/sys/{key}", "w") as f:
        f.write(value)


@contextlib.contextmanager
def network_namespace(*, ipv6: bool = True, forwarding: bool = False) -> Iterator[str]:
    """Create a namespace, move this thread into it (threads and processes it
    starts follow), bring ``lo`` up; undo it all on exit.  IPv6 is on, as on
    real hosts (a new TUN emits router solicitations and MLD reports the
    moment it is up); ``ipv6=False`` only for a test that says why."""
    name = f"aiou-{os.getpid()}-{next(_counter)}"
    netns.create(name)
    netns.pushns(name)
    try:
        if not ipv6:
            sysctl("net/ipv6/conf/all/disable_ipv6", "1")
            sysctl("net/ipv6/conf/default/disable_ipv6", "1")
        if forwarding:
            sysctl("net/ipv4/ip_forward", "1")
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        yield name
    finally:
        netns.popns()
        netns.remove(name)


def interface_names() -> set[str]:
    """Interfaces of the current thread's namespace (from /proc/net/dev, not sysfs)."""
    with open("/proc/net/dev") as f:
        return {line.split(":")[0].strip() for line in f.readlines()[2:]}


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


@contextlib.contextmanager
def two_namespaces(*, addresses: tuple[str, str] = ("192.168.77.1", "192.168.77.2"), prefix: int = 24, ipv6: bool = True) -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth pair (``addresses`` on each end, IPv6
    on as on real hosts, lo up); yields their names.  Nothing is left behind."""
    names = [f"aiou-{os.getpid()}-{next(_counter)}{side}" for side in "ab"]
    for name in names:
        netns.create(name)
    try:
        for i, name in enumerate(names):
            netns.pushns(name)
            try:
                if not ipv6:
                    sysctl("net/ipv6/conf/all/disable_ipv6", "1")
                    sysctl("net/ipv6/conf/default/disable_ipv6", "1")
                with IPRoute() as ipr:
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                    if i == 0:
                        ipr.link("add", ifname="veth0", kind="veth", peer={"ifname": "veth0", "net_ns_fd": names[1]})
            finally:
                netns.popns()
        for name, address in zip(names, addresses):
            netns.pushns(name)
            try:
                with IPRoute() as ipr:
                    index = ipr.link_lookup(ifname="veth0")[0]
                    ipr.addr("add", index=index, address=address, prefixlen=prefix)
                    ipr.link("set", index=index, state="up")
            finally:
                netns.popns()
        yield names[0], names[1]
    finally:
        for name in names:
            netns.remove(name)
