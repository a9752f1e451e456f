"""TunDevice: a TUN/TAP file descriptor and its network interface. No packet I/O, no rings.

Opening goes through ``/dev/net/tun`` and the ``TUNSETIFF`` ioctl (plus
``TUNSETPERSIST``/``TUNSETOWNER``/``TUNSETGROUP`` and ``TUNSETOFFLOAD``);
interface set-up (MTU, addresses, routes, link state) goes through rtnetlink
(``_netlink.py``).

Netlink requests never run on the event loop's thread (``_devnet.py``
says how, and why they still act in the caller's network namespace);
``/dev/net/tun`` and its ioctls are in ``_tunioctl.py``, argument checks in
``_devargs.py``.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import struct
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Protocol, TypeVar, Union

from . import _devargs as args
from . import _netlink as nl
from . import _tunioctl as tio
from ._devargs import AddressArg, Addresses, IPAddress, Mode, Route, RouteArg, Routes
from ._devnet import Session, run
from ._tunioctl import IFF_MULTI_QUEUE, IFF_NO_PI, IFF_PERSIST, IFF_TAP, IFF_TUN, IFF_VNET_HDR, IFREQ, TUNGETIFF
from ._tunioctl import TUNGETVNETHDRSZ, TUNSETGROUP, TUNSETIFF, TUNSETOFFLOAD, TUNSETOWNER, TUNSETPERSIST

__all__ = ["TunDevice", "Route", "LinkCounters", "validate_ifname", "IFNAMSIZ", "FdOrFile", "Mode"]

T = TypeVar("T")


class _FileLike(Protocol):
    """An open file or socket: its fd is duplicated, then it is closed."""

    def fileno(self) -> int: ...

    def close(self) -> object: ...


# What ``adopt`` (and ``fd=`` of the factories) takes: an fd or an object with one.
FdOrFile = Union[int, _FileLike]

IFNAMSIZ = 16
MAX_QUEUES = 256  # MAX_TAP_QUEUES in drivers/net/tun.c

# TUNSETOFFLOAD bits (include/uapi/linux/if_tun.h)
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
_OFFLOAD_NAMES = {TUN_F_CSUM: "csum", TUN_F_TSO4: "tso4", TUN_F_TSO6: "tso6", TUN_F_USO4: "uso4", TUN_F_USO6: "uso6"}

MAX_MTU = 65535
PI_HEADER = 4  # struct tun_pi: flags + protocol
ETH_HEADER = 18  # Ethernet header with one VLAN tag
VNET_HEADER = 10  # struct virtio_net_hdr


def validate_ifname(name: Any) -> str:
    """``name`` if the kernel would accept it as an interface name, else ``ValueError``/``TypeError``."""
    if not isinstance(name, str):
        raise TypeError(f"interface name must be a str, not {type(name).__name__}")
    raw = name.encode("utf-8", "surrogateescape")
    if not raw:
        raise ValueError("interface name must not be empty")
    if len(raw) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} is {len(raw)} bytes; the kernel allows at most {IFNAMSIZ - 1}")
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        raise ValueError(f"interface name {name!r} is invalid: no '/', ':', whitespace, '.' or '..'")
    return name


@dataclass(frozen=True)
class LinkCounters:
    """The kernel's counters for an interface (``IFLA_STATS64``), from the
    kernel's side: ``tx_*`` is what the kernel sent into the device (packets
    the application reads), ``rx_*`` what it received from it (packets the
    application wrote).  ``tx_dropped`` counts packets dropped because the
    application did not read fast enough (the device queue, ``txqueuelen``,
    was full)."""

    rx_packets: int
    tx_packets: int
    rx_bytes: int
    tx_bytes: int
    rx_errors: int
    tx_errors: int
    rx_dropped: int
    tx_dropped: int


class TunDevice:
    """An open TUN or TAP device (one queue of it).

    Owns its fd (opened ``O_NONBLOCK | O_CLOEXEC``) and closes it in
    ``close()``; the kernel removes a non-persistent interface when its last
    fd is closed.  ``mode`` is ``"tun"`` (IP packets) or ``"tap"`` (Ethernet
    frames); ``packet_info`` means each packet carries the 4-byte ``tun_pi``
    header, ``vnet_hdr`` that it carries a ``struct virtio_net_hdr``
    (``vnet_hdr_size`` bytes, after ``tun_pi``).

    The coroutine methods change the interface through netlink, in the
    network namespace of the thread that awaits them, without blocking the
    loop.  Each raises ``TypeError``/``ValueError`` for a bad argument before
    it asks the kernel anything, and an ``OSError`` subclass carrying the
    kernel's errno when the kernel refuses (``PermissionError`` without
    CAP_NET_ADMIN, ``FileExistsError`` for an address or route already there,
    ...), its message naming the interface and the operation.  Cancelling
    one lets the request already in the kernel finish (netlink requests
    cannot be interrupted), sends nothing more, and then raises
    ``CancelledError``.  They need only the interface's name, not an open fd.
    """

    def __init__(self, fd: int, name: str, mode: Mode = "tun", packet_info: bool = False, mtu: int = 1500,
                 vnet_hdr: bool = False, *, multi_queue: bool = False, persistent: bool = False,
                 vnet_hdr_size: int = VNET_HEADER) -> None:
        self._fd = fd
        self.name = name
        self.mode = mode
        self.packet_info = packet_info
        self.mtu = mtu
        self.vnet_hdr = vnet_hdr
        self.vnet_hdr_size = vnet_hdr_size
        self.multi_queue = multi_queue
        self.persistent = persistent
        self._offloads: frozenset[str] = frozenset()

    # -- opening --------------------------------------------------------------

    @classmethod
    def open(cls, name: str | None = None, *, mode: Mode = "tun", packet_info: bool = False,
             multi_queue: bool = False, vnet_hdr: bool = False, persist: bool = False,
             owner: int | str | None = None, group: int | str | None = None) -> "TunDevice":
        """Create a TUN/TAP interface, or attach to an existing persistent one
        called ``name``, and return this fd's ``TunDevice``.

        ``multi_queue``: ``IFF_MULTI_QUEUE``, so that ``open_queue()`` can add
        queues.  ``vnet_hdr``: ``IFF_VNET_HDR``, each packet prefixed with a
        virtio-net header (needed by ``enable_offloads``).  Attaching sets
        these flags for the whole device (the kernel's rule).
        ``persist=True``: the interface outlives its fds (``TUNSETPERSIST``);
        ``False`` leaves an existing device's persistence as it is.
        ``owner``/``group`` (uid/gid or name): who may attach later without
        CAP_NET_ADMIN (``TUNSETOWNER``/``TUNSETGROUP``).  With neither, the
        kernel lets any process that can open ``/dev/net/tun`` attach.

        Blocks for the ioctls only (brief; the kernel takes its RTNL lock).
        Raises ``PermissionError`` without CAP_NET_ADMIN (or ownership of a
        persistent device), ``FileNotFoundError`` without ``/dev/net/tun``,
        ``FileExistsError`` when ``name`` is taken by an interface that cannot
        be attached, ``ValueError``/``TypeError`` for a bad argument.  If a
        step after creation fails, nothing is left behind.
        """
        for flag, value in (("packet_info", packet_info), ("multi_queue", multi_queue), ("vnet_hdr", vnet_hdr),
                            ("persist", persist)):
            args.parse_flag(flag, value)
        _check_mode(mode)
        if name is not None:
            validate_ifname(name)
        uid = args.parse_account("owner", owner)
        gid = args.parse_account("group", group)
        flags = IFF_TUN if mode == "tun" else IFF_TAP
        if not packet_info:
            flags |= IFF_NO_PI
        if multi_queue:
            flags |= IFF_MULTI_QUEUE
        if vnet_hdr:
            flags |= IFF_VNET_HDR
        fd = tio.open_tun_path()
        try:
            existed = name is not None and "%" not in name and tio.exists(name)
            try:
                ifr = fcntl.ioctl(fd, TUNSETIFF, struct.pack(IFREQ, (name or "").encode(), flags))
            except OSError as exc:
                raise tio.setiff_error(exc, name, mode, existed) from None
            got = struct.unpack(IFREQ, ifr)[0].rstrip(b"\0").decode("utf-8", "surrogateescape")
            for request, account, what in ((TUNSETOWNER, uid, "owner"), (TUNSETGROUP, gid, "group")):
                if account is not None:
                    tio.ioctl(fd, request, account, f"setting the {what} of {got} to {account}")
            if persist:
                tio.ioctl(fd, TUNSETPERSIST, 1, f"making {got} persistent")
            return cls._from_fd(fd, got, packet_info)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def adopt(cls, fd_or_file: FdOrFile) -> "TunDevice":
        """Take ownership of a TUN/TAP fd that is already open (an ``int`` or an
        object with ``fileno()``, which is closed after its fd is duplicated).
        The fd is switched to non-blocking; ``mode``, ``packet_info``,
        ``vnet_hdr`` (and its size), ``multi_queue`` and ``persistent`` are read
        from the kernel (``TUNGETIFF``).  What offloads a previous owner
        enabled is not known: ``offloads`` is empty until ``enable_offloads``
        or ``disable_offloads`` is called.  Raises ``ValueError`` if it is not
        an attached TUN/TAP fd, ``TypeError`` if it is not an fd."""
        if isinstance(fd_or_file, bool) or not (isinstance(fd_or_file, int) or hasattr(fd_or_file, "fileno")):
            raise TypeError(f"from_fd takes an int fd or a file object, not {type(fd_or_file).__name__}")
        fd = fd_or_file if isinstance(fd_or_file, int) else os.dup(fd_or_file.fileno())
        try:
            ifr = fcntl.ioctl(fd, TUNGETIFF, struct.pack(IFREQ, b"", 0))
        except OSError as exc:
            if fd is not fd_or_file:
                os.close(fd)
            raise ValueError(f"fd {fd} is not a TUN/TAP device (TUNGETIFF: {os.strerror(exc.errno or 0)})") from None
        if not isinstance(fd_or_file, int):  # a file object, whose fd was duplicated
            fd_or_file.close()
        name = struct.unpack(IFREQ, ifr)[0].rstrip(b"\0").decode("utf-8", "surrogateescape")
        os.set_blocking(fd, False)
        return cls._from_fd(fd, name, tio.packet_info(name, struct.unpack(IFREQ, ifr)[1]))

    @classmethod
    def _from_fd(cls, fd: int, name: str, packet_info: bool) -> "TunDevice":
        flags = struct.unpack(IFREQ, fcntl.ioctl(fd, TUNGETIFF, struct.pack(IFREQ, b"", 0)))[1]
        vnet = bool(flags & IFF_VNET_HDR)
        size = struct.unpack("i", fcntl.ioctl(fd, TUNGETVNETHDRSZ, b"\0" * 4))[0] if vnet else VNET_HEADER
        return cls(
            fd, name, "tap" if flags & IFF_TAP else "tun", packet_info, tio.read_mtu(name), vnet,
            multi_queue=bool(flags & IFF_MULTI_QUEUE), persistent=bool(flags & IFF_PERSIST), vnet_hdr_size=size,
        )

    @classmethod
    async def create(cls, name: str | None = None, *, mode: Mode = "tun", packet_info: bool = False,
                     multi_queue: bool = False, vnet_hdr: bool = False, persist: bool = False,
                     owner: int | str | None = None, group: int | str | None = None,
                     mtu: int | None = None, addresses: Addresses = (), routes: Routes = (), up: bool = True,
                     txqueuelen: int | None = None, mac: str | bytes | None = None) -> "TunDevice":
        """``open()`` then ``configure()``, with every argument of both checked
        before anything is opened; what ``open`` created is removed again if
        ``configure`` fails (a persistent device included).  Raises what
        ``open`` and ``configure`` raise."""
        config = args.parse_config(_check_mode(mode), mtu=mtu, addresses=addresses, routes=routes, up=up,
                                   txqueuelen=txqueuelen, mac=mac)
        created = name is None or not tio.exists(name)
        device = cls.open(name, mode=mode, packet_info=packet_info, multi_queue=multi_queue,
                          vnet_hdr=vnet_hdr, persist=persist, owner=owner, group=group)
        try:
            await device._configure(config)
        except BaseException:
            if created and device.persistent:
                device.set_persist(False)
            device.close()
            raise
        return device

    def open_queue(self) -> "TunDevice":
        """Open one more queue of this multi-queue device: a new fd (its own
        ``TunDevice``, to close separately) on the same interface, with the
        same flags.  The kernel spreads the packets it sends into the device
        across the queues by flow hash (each flow on one queue); any queue may
        write.  Offloads belong to the device, so ``offloads`` is copied.
        Raises ``ValueError`` unless the device was opened with
        ``multi_queue=True``, ``OSError`` past the kernel's 256 queues."""
        self.fileno()
        if not self.multi_queue:
            raise ValueError(f"{self.name} is single-queue: open it with multi_queue=True to add queues")
        queue = TunDevice.open(self.name, mode=self.mode, packet_info=self.packet_info, multi_queue=True,
                               vnet_hdr=self.vnet_hdr)
        queue._offloads = self._offloads
        return queue

    @classmethod
    def open_queues(cls, name: str | None, count: int, **options: Any) -> list["TunDevice"]:
        """``count`` queues of one new (or persistent multi-queue) device:
        ``open(name, multi_queue=True, **options)`` then ``open_queue()``
        ``count - 1`` times.  Closes them all if one fails."""
        args.parse_int("count", count, 1, MAX_QUEUES)
        if "multi_queue" in options:
            raise TypeError("open_queues always opens with multi_queue=True: do not pass multi_queue")
        queues = [cls.open(name, multi_queue=True, **options)]
        try:
            while len(queues) < count:
                queues.append(queues[0].open_queue())
        except BaseException:
            for queue in queues:
                queue.close()
            raise
        return queues

    def set_persist(self, persist: bool) -> None:
        """Make the interface outlive its fds (``True``) or go away with its
        last one (``False``): ``TUNSETPERSIST``, a brief blocking ioctl.
        Raises ``OSError`` (``PermissionError`` if the caller may not)."""
        args.parse_flag("persist", persist)
        tio.ioctl(self.fileno(), TUNSETPERSIST, int(persist), f"{'setting' if persist else 'clearing'} persistence of {self.name}")
        self.persistent = persist

    @classmethod
    async def delete(cls, name: str) -> None:
        """Delete the TUN/TAP interface ``name`` (a persistent one, typically)
        through netlink, whether or not fds are attached (they then fail with
        ``EBADFD``).  Raises ``ValueError`` if ``name`` is not a TUN/TAP
        interface, ``OSError`` (``ENODEV``) if there is none,
        ``PermissionError`` without CAP_NET_ADMIN."""
        validate_ifname(name)

        def work(s: Session) -> None:
            link = s.link()
            if link.kind != "tun":
                raise ValueError(f"{name} is {'a ' + link.kind if link.kind else 'not a TUN/TAP'} interface: delete() removes only TUN/TAP interfaces")
            s.do(lambda: s.sock.delete_link(link.index), "deleting it")

        await run(name, "delete", work)

    # -- interface set-up -----------------------------------------------------

    async def configure(self, *, mtu: int | None = None, addresses: Addresses = (), routes: Routes = (), up: bool = True,
                        txqueuelen: int | None = None, mac: str | bytes | None = None) -> None:
        """Bring the interface to the state asked for, changing only what is
        not so already: a persistent device that root configured can be
        attached and configured the same way without CAP_NET_ADMIN.

        ``mtu`` (68..65535; the device may allow less, e.g. 65521 on a TAP);
        ``addresses``: ``"10.0.0.1/24"``, ``"fd00::1/64"`` or ``ipaddress``
        objects, a list of them or a single one (one already on the interface
        is left alone); ``routes``: destinations (``"10.9.0.0/16"``) or
        ``Route`` objects through this interface (one already there is left
        alone); ``up=True`` brings the link up (``False`` leaves it as it is;
        routes need it up); ``txqueuelen``: packets the kernel queues for the
        application before it drops (500 by default for TUN);
        ``mac``: a TAP's Ethernet address.  Applied in that order: MAC, MTU,
        queue length, addresses, link up, routes.  Updates ``self.mtu``.
        Raises as the class docstring says; a step that fails leaves the
        earlier ones in effect.
        """
        await self._configure(args.parse_config(self.mode, mtu=mtu, addresses=addresses, routes=routes, up=up,
                                                txqueuelen=txqueuelen, mac=mac))

    async def _configure(self, config: args.Config) -> None:
        def work(s: Session) -> None:
            link = s.link()
            if config.mac is not None:
                s.set_mac(link, config.mac)
            if config.mtu is not None:
                s.set_mtu(link, config.mtu)
            if config.txqueuelen is not None:
                s.set_txqueuelen(link, config.txqueuelen)
            if config.addresses:
                present = {(a.local, a.prefixlen) for a in s.do(lambda: s.sock.addresses(link.index), "listing addresses")}
                for iface in config.addresses:
                    if (str(iface.ip), iface.network.prefixlen) not in present:
                        s.address(True, link, iface, None, iface.network.prefixlen)
            if config.up and not link.flags & nl.IFF_UP:
                s.set_link(link, "bringing the link up", flags=nl.IFF_UP, change=nl.IFF_UP)
            for route in config.routes:
                if not s.has_route(link, route):
                    s.route(True, link, route)

        await self._run("configure", work)

    async def set_mtu(self, mtu: int) -> None:
        """Set the MTU (68..65535; the device may allow less) and ``self.mtu``;
        a transport on this device reads ``mtu`` for every write.  Packets
        already queued keep their size; reads are sized for 65535 anyway."""
        value = args.parse_mtu(mtu)
        await self._run("set_mtu", lambda s: s.set_mtu(s.link(), value))

    async def set_up(self, up: bool = True) -> None:
        """Bring the link up (``True``) or down.  Taking it down makes writes
        fail with ``EIO`` and the kernel drop the routes through it (and its
        IPv6 addresses, unless ``net.ipv6.conf.*.keep_addr_on_down``)."""
        flag = args.parse_up(up)

        def work(s: Session) -> None:
            link = s.link()
            if bool(link.flags & nl.IFF_UP) != flag:
                s.set_link(link, f"bringing the link {'up' if flag else 'down'}", flags=nl.IFF_UP if flag else 0, change=nl.IFF_UP)

        await self._run("set_up", work)

    async def set_txqueuelen(self, txqueuelen: int) -> None:
        """Set how many packets the kernel queues for the application before
        it drops (the interface's ``txqueuelen``)."""
        value = args.parse_txqueuelen(txqueuelen)
        await self._run("set_txqueuelen", lambda s: s.set_txqueuelen(s.link(), value))

    async def set_mac(self, mac: str | bytes) -> None:
        """Set a TAP device's Ethernet address (``"02:00:5e:10:00:01"`` or 6
        bytes, unicast).  ``ValueError`` on a TUN device, which has none."""
        value = args.parse_mac(mac, self.mode)
        await self._run("set_mac", lambda s: s.set_mac(s.link(), value))

    async def add_address(self, address: AddressArg, *, peer: AddressArg | None = None) -> None:
        """Add an address: ``"10.0.0.1/24"``, ``"fd00::1/64"``, an ``ipaddress``
        interface or address.  ``peer=``: the other end of a point-to-point
        link (``add_address("10.0.0.1", peer="10.0.0.2")``; the prefix length
        is the peer's, /32 or /128 unless given).  Raises ``FileExistsError``
        if the interface has the address already."""
        iface, other, prefixlen = args.parse_peer(address, peer)
        await self._run("add_address", lambda s: s.address(True, s.link(), iface, other, prefixlen))

    async def remove_address(self, address: AddressArg, *, peer: AddressArg | None = None) -> None:
        """Remove an address added with the same arguments.  Raises ``OSError``
        (``EADDRNOTAVAIL``) if the interface does not have it."""
        iface, other, prefixlen = args.parse_peer(address, peer)
        await self._run("remove_address", lambda s: s.address(False, s.link(), iface, other, prefixlen))

    async def add_route(self, destination: RouteArg, *, gateway: IPAddress | str | None = None, metric: int | None = None,
                        table: int | None = None) -> None:
        """Route ``destination`` (``"10.9.0.0/16"``, ``"fd09::/64"``,
        ``"0.0.0.0/0"``) through this interface, see ``Route``.  The link must
        be up.  Raises ``FileExistsError`` if the same route exists."""
        route = _route(destination, gateway, metric, table)
        await self._run("add_route", lambda s: s.route(True, s.link(), route))

    async def remove_route(self, destination: RouteArg, *, gateway: IPAddress | str | None = None, metric: int | None = None,
                           table: int | None = None) -> None:
        """Remove a route through this interface (the first that matches the
        arguments given).  Raises ``OSError`` (``ESRCH``) if there is none."""
        route = _route(destination, gateway, metric, table)
        await self._run("remove_route", lambda s: s.route(False, s.link(), route))

    async def kernel_counters(self) -> LinkCounters:
        """The kernel's packet, byte, error and drop counters for this
        interface (``IFLA_STATS64`` through netlink, in the caller's network
        namespace: ``/sys/class/net`` would show the namespace that mounted
        ``/sys``)."""

        def work(s: Session) -> LinkCounters:
            stats = s.link().stats
            if stats is None:
                raise OSError(errno.EOPNOTSUPP, f"kernel_counters: the kernel sent no IFLA_STATS64 for {self.name}")
            return LinkCounters(**dataclasses.asdict(stats))

        return await self._run("kernel_counters", work)

    async def _run(self, operation: str, work: Callable[["Session"], T]) -> T:
        try:
            return await run(self.name, operation, work)
        finally:
            if operation in ("configure", "set_mtu"):
                try:
                    self.mtu = tio.read_mtu(self.name)
                except OSError:
                    pass  # gone: keep the last value

    # -- offloads -------------------------------------------------------------------

    def enable_offloads(self, *, tso: bool = True, uso: bool = True) -> frozenset[str]:
        """Let the kernel hand over and accept TCP (``tso``) and UDP (``uso``)
        super-packets with a partial checksum (``TUNSETOFFLOAD``; a brief
        blocking ioctl, no privilege needed).  A kernel without USO (before
        6.2) refuses it: it is dropped and the rest retried.  Returns what is
        on, e.g. ``frozenset({"csum", "tso4", "tso6", "uso4", "uso6"})``.
        Raises ``OSError`` if the device has no virtio-net header
        (``vnet_hdr=True``) or the kernel refuses even checksum/TSO offload."""
        args.parse_flag("tso", tso)
        args.parse_flag("uso", uso)
        fd = self.fileno()
        if not self.vnet_hdr:
            raise OSError(errno.EINVAL, f"enable_offloads: {self.name} has no virtio-net header, so it could not tell "
                                        "super-packets apart: open it with vnet_hdr=True")
        bits = TUN_F_CSUM | (TUN_F_TSO4 | TUN_F_TSO6 if tso else 0)
        uso_bits = TUN_F_USO4 | TUN_F_USO6 if uso else 0
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, bits | uso_bits)
            bits |= uso_bits
        except OSError as exc:
            if exc.errno != errno.EINVAL or not uso_bits:
                raise _offload_error(exc, self.name, bits | uso_bits) from None
            try:
                fcntl.ioctl(fd, TUNSETOFFLOAD, bits)
            except OSError as again:
                raise _offload_error(again, self.name, bits, " (after USO was refused)") from None
        self._offloads = _names(bits)
        return self._offloads

    def disable_offloads(self) -> None:
        """Turn every offload off (``TUNSETOFFLOAD 0``): the kernel hands over
        and expects only whole, checksummed packets (still after a virtio-net
        header if the device has one)."""
        tio.ioctl(self.fileno(), TUNSETOFFLOAD, 0, f"TUNSETOFFLOAD 0 on {self.name}")
        self._offloads = frozenset()

    @property
    def offloads(self) -> frozenset[str]:
        """The offloads turned on through this object (or the queue it was
        opened from): names from ``csum``, ``tso4``, ``tso6``, ``uso4``, ``uso6``."""
        return self._offloads

    # -- what the transport needs -----------------------------------------------

    def fileno(self) -> int:
        """The fd; ``ValueError`` once closed."""
        if self._fd < 0:
            raise ValueError(f"TUN device {self.name} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    @property
    def header_size(self) -> int:
        """Bytes a packet carries beyond the MTU: ``tun_pi``, the virtio-net
        header and the Ethernet header, those the device has."""
        return ((PI_HEADER if self.packet_info else 0) + (self.vnet_hdr_size if self.vnet_hdr else 0)
                + (ETH_HEADER if self.mode == "tap" else 0))

    @property
    def max_packet_size(self) -> int:
        """The largest packet ``write`` accepts: MTU plus headers."""
        return self.mtu + self.header_size

    @property
    def read_size(self) -> int:
        """Read buffer size: room for the largest packet the device can hold
        (MTU 65535), so a packet is never cut short, even after the MTU was
        raised behind our back."""
        return MAX_MTU + self.header_size

    def close(self) -> None:
        """Close this fd (idempotent).  The interface goes away with its last
        fd unless it is persistent."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"fd={self._fd}"
        extra = "".join(f" {flag}" for flag, on in (("vnet_hdr", self.vnet_hdr), ("multi_queue", self.multi_queue),
                                                    ("persistent", self.persistent)) if on)
        return f"<TunDevice {self.name} {self.mode} {state} mtu={self.mtu}{extra}>"

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if self._fd >= 0:
            _warn(f"unclosed {self!r}", ResourceWarning, source=self)
            self.close()


def _check_mode(mode: Any) -> str:
    if mode not in ("tun", "tap"):
        raise ValueError(f"mode must be 'tun' or 'tap', not {mode!r}")
    return str(mode)


def _route(destination: Any, gateway: Any, metric: Any, table: Any) -> Route:
    if isinstance(destination, Route):
        if (gateway, metric, table) != (None, None, None):
            raise TypeError("pass a Route, or a destination with gateway=/metric=/table=, not both")
        return destination
    return Route(destination, gateway, metric, table)


def _names(bits: int) -> frozenset[str]:
    return frozenset(name for bit, name in _OFFLOAD_NAMES.items() if bits & bit)


def _offload_error(exc: OSError, name: str, bits: int, after: str = "") -> OSError:
    code = exc.errno or errno.EIO
    return OSError(code, f"enable_offloads: the kernel refused TUNSETOFFLOAD {', '.join(sorted(_names(bits)))} "
                         f"on {name}{after}: {os.strerror(code)}")
