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
def network_namespace(*, ipv6: bool = False, forwarding: bool = False) -> Iterator[str]:
    """Create a namespace, move this thread into it (threads and processes it
    starts follow), bring ``lo`` up; undo it all on exit.  IPv6 is off unless
    asked for, so a new TUN does not emit router solicitations and MLD."""
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
