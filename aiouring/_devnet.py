"""Running a device's netlink requests off the event loop, and phrasing their errors.

The kernel carries out an rtnetlink request inside ``sendmsg()`` under its
RTNL lock, so ``run()`` hands a device operation's requests to a new thread
and awaits the answer; the loop keeps running meanwhile.  The netlink
socket is created on the caller's thread first: a socket acts in the
network namespace it was created in, so the requests act in the caller's
namespace whichever thread sends them.  (A pooled executor thread would do
as well for that reason; a new thread per operation keeps the operation
independent of an executor the application may have filled or shut down.)
"""
from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
from typing import Any, Callable, TypeVar

from . import _devargs as args
from . import _netlink as nl
from ._devargs import Route

__all__ = ["Session", "run"]

T = TypeVar("T")

EPERM_HINT = (
    "changing an interface needs CAP_NET_ADMIN: run as root, give the program the capability "
    "(setcap cap_net_admin+ep on it), or have root create a persistent device "
    "(TunDevice.open(name, persist=True, owner=uid)) and configure it; attaching to it later "
    "re-applies nothing already in effect"
)


class _Stopped(Exception):
    """The awaiting task was cancelled: no further request is sent."""


class Session:
    """One operation's netlink requests, on a worker thread: stops before the
    next request once cancelled, and turns the kernel's refusals into
    ``OSError``s that name the interface and the operation."""

    def __init__(self, sock: nl.RtSocket, name: str, operation: str, stop: threading.Event) -> None:
        self.sock = sock
        self.name = name
        self.operation = operation
        self.stop = stop

    def do(self, request: Callable[[], T], what: str, explain: Callable[[nl.KernelError], str] | None = None) -> T:
        if self.stop.is_set():
            raise _Stopped()
        try:
            return request()
        except nl.KernelError as exc:
            code = exc.errno or errno.EIO
            message = f"{self.operation}: {what} on {self.name} failed: {os.strerror(code)}"
            if exc.kernel_message:
                message += f" (kernel: {exc.kernel_message})"
            if explain is not None:
                message += f"; {explain(exc)}"
            if code == errno.EPERM:
                message += f"; {EPERM_HINT}"
            raise OSError(code, message) from None  # OSError() picks the errno's subclass

    def link(self) -> nl.Link:
        def missing(exc: nl.KernelError) -> str:
            return "no interface has that name in this thread's network namespace"

        return self.do(lambda: self.sock.link(self.name), "looking up the interface", missing)

    def set_link(self, link: nl.Link, what: str, attrs: bytes = b"", *, flags: int = 0, change: int = 0) -> None:
        self.do(lambda: self.sock.set_link(link.index, flags=flags, change=change, attrs=attrs), what)

    def set_mac(self, link: nl.Link, mac: bytes) -> None:
        if link.address != mac:
            self.set_link(link, f"setting the MAC address to {mac.hex(':')}", nl.attr(nl.IFLA_ADDRESS, mac))

    def set_txqueuelen(self, link: nl.Link, txqueuelen: int) -> None:
        if link.txqlen != txqueuelen:
            self.set_link(link, f"setting the queue length to {txqueuelen}", nl.attr(nl.IFLA_TXQLEN, nl.u32(txqueuelen)))

    def set_mtu(self, link: nl.Link, mtu: int) -> None:
        if link.mtu == mtu:
            return

        def limits(exc: nl.KernelError) -> str:
            if link.min_mtu is not None and link.max_mtu is not None:
                return f"{self.name} takes an MTU from {link.min_mtu} to {link.max_mtu}"
            return "the device's limits are not known"

        self.do(lambda: self.sock.set_link(link.index, attrs=nl.attr(nl.IFLA_MTU, nl.u32(mtu))), f"setting the MTU to {mtu}", limits)

    def address(self, add: bool, link: nl.Link, iface: args.Interface, peer: args.IPAddress | None, prefixlen: int) -> None:
        shown = f"{iface.ip}/{prefixlen}" if peer is None else f"{iface.ip} peer {peer}/{prefixlen}"

        def explain(exc: nl.KernelError) -> str:
            if add and exc.errno == errno.EEXIST:
                return f"{self.name} has {iface.ip} already"
            if not add and exc.errno == errno.EADDRNOTAVAIL:
                return f"{self.name} has no address {shown}"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"the kernel does not let {self.name} have {iface.ip}"
            return f"address {shown}"

        self.do(lambda: self.sock.address(add, link.index, iface, peer, prefixlen),
                f"{'adding' if add else 'removing'} address {shown}", explain)

    def has_route(self, link: nl.Link, route: Route) -> bool:
        family = socket.AF_INET if route.destination.version == 4 else socket.AF_INET6
        dst = None if route.destination.prefixlen == 0 else str(route.destination.network_address)
        gateway = None if route.gateway is None else str(route.gateway)
        for r in self.do(lambda: self.sock.routes(family), "listing routes"):
            if (r.table, r.dst, r.dst_len, r.oif, r.gateway, r.priority) == (
                route.table_id, dst, route.destination.prefixlen, link.index, gateway, route.effective_metric
            ):
                return True
        return False

    def route(self, add: bool, link: nl.Link, route: Route) -> None:
        def explain(exc: nl.KernelError) -> str:
            if add and exc.errno == errno.EEXIST:
                return f"the route {route} exists already"
            if not add and exc.errno == errno.ESRCH:
                return f"there is no route {route} through {self.name}"
            if add and exc.errno == errno.ENETDOWN:
                return f"bring {self.name} up first"
            return f"route {route}"

        self.do(lambda: self.sock.route(add, link.index, route.destination, route.gateway, route.metric, route.table_id),
                f"{'adding' if add else 'removing'} route {route}", explain)


async def run(name: str, operation: str, work: Callable[[Session], T]) -> T:
    """Run ``work`` on a new thread with a netlink socket made here (so in the
    caller's network namespace); see ``TunDevice`` for cancellation."""
    sock = nl.RtSocket()
    stop = threading.Event()

    def job() -> T:
        try:
            return work(Session(sock, name, operation, stop))
        finally:
            sock.close()

    return await in_new_thread(job, stop)


async def in_new_thread(fn: Callable[[], T], stop: threading.Event) -> T:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def run() -> None:
        try:
            result: Any = fn()
            ok = True
        except BaseException as exc:
            result, ok = exc, False
        try:
            loop.call_soon_threadsafe(settle, ok, result)
        except RuntimeError:
            pass  # the loop was closed meanwhile: nobody is waiting

    threading.Thread(target=run, name="aiouring-netlink", daemon=True).start()
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        stop.set()
        while not fut.done():  # the request in the kernel cannot be taken back: wait for its answer
            try:
                await asyncio.shield(fut)
            except BaseException:
                pass
        if not fut.cancelled():
            fut.exception()  # retrieved: the caller asked for cancellation, not for this
        raise
