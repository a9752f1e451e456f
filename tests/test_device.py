"""Managing a live TUN/TAP interface through TunDevice: routes, addresses, MTU,
link state, queue length, MAC, kernel counters.  Each test runs on the stdlib
loop and on uvloop, against the kernel, in a namespace of its own."""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import json
import os
import socket
import struct
import subprocess
import threading
from typing import Any, Callable

import pytest

import aiouring
from aiouring.device import LinkCounters, Route, TunDevice
from packets import udp, udp_payload
from support.traffic import read_own
from support.wait import wait_for_condition


def ip_json(*argv: str) -> Any:
    """What iproute2 says (a second opinion, independent of the code under test)."""
    out = subprocess.run(["ip", "-j", *argv], check=True, capture_output=True, text=True, timeout=10).stdout
    return json.loads(out) if out.strip() else []


def link_info(name: str) -> dict[str, Any]:
    info: dict[str, Any] = ip_json("-d", "link", "show", "dev", name)[0]
    return info


def addresses_of(name: str) -> set[tuple[str, int, str | None]]:
    """(local, prefixlen, peer) of each global address on ``name``."""
    out = set()
    for entry in ip_json("addr", "show", "dev", name)[0]["addr_info"]:
        if entry.get("scope") == "link":
            continue
        out.add((entry["local"], entry["prefixlen"], entry.get("address")))
    return out


async def read_where(tun: aiouring.Tun, want: Callable[[bytes], bool], timeout: float = 5) -> bytes:
    """The first packet ``want`` accepts (the kernel's own IPv6 packets are skipped with the rest)."""

    async def scan() -> bytes:
        while True:
            packet = await tun.read()
            if want(packet):
                return packet

    return await asyncio.wait_for(scan(), timeout)


def ipv6_udp_to(dst: str) -> Callable[[bytes], bool]:
    raw = ipaddress.IPv6Address(dst).packed
    return lambda p: len(p) >= 48 and p[0] >> 4 == 6 and p[6] == 17 and p[24:40] == raw


def ipv4_to(dst: str) -> Callable[[bytes], bool]:
    raw = ipaddress.IPv4Address(dst).packed
    return lambda p: len(p) >= 20 and p[0] >> 4 == 4 and p[16:20] == raw


def send_udp(dst: str, payload: bytes = b"hello", port: int = 9) -> None:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, (dst, port))


# -- routes ------------------------------------------------------------------------


async def test_added_routes_carry_traffic_to_the_tun(netns: str) -> None:
    tun = await aiouring.open_tun(addresses=["10.20.0.1/24", "fd20::1/64"])
    device = tun.get_extra_info("device")
    await device.add_route("10.99.0.0/16")
    await device.add_route("10.98.0.0/16", gateway="10.20.0.2", metric=7)
    await device.add_route(Route("fd99::/64"))

    send_udp("10.99.1.2", b"routed")
    assert udp_payload(await read_where(tun, ipv4_to("10.99.1.2"))) == b"routed"
    send_udp("10.98.3.4", b"via gateway")
    assert udp_payload(await read_where(tun, ipv4_to("10.98.3.4"))) == b"via gateway"
    send_udp("fd99::5", b"six")
    assert (await read_where(tun, ipv6_udp_to("fd99::5")))[48:] == b"six"

    [via] = ip_json("route", "show", "10.98.0.0/16")
    assert (via["gateway"], via["dev"], via["metric"]) == ("10.20.0.2", tun.name, 7)

    await device.remove_route("10.99.0.0/16")
    with pytest.raises(OSError) as info:
        send_udp("10.99.1.2")
    assert info.value.errno == errno.ENETUNREACH
    await device.remove_route("10.98.0.0/16", gateway="10.20.0.2", metric=7)
    await device.remove_route("fd99::/64")
    assert ip_json("route", "show", "10.98.0.0/16") == []
    assert ip_json("-6", "route", "show", "fd99::/64") == []
    for route in ("10.94.0.0/16", "fd94::/64"):  # one somebody else added (proto static, default metric)
        subprocess.run(["ip", "route", "add", route, "dev", tun.name, "proto", "static"], check=True)
        assert ip_json("-6" if ":" in route else "-4", "route", "show", route) != []
        await device.remove_route(route)
        assert ip_json("-6" if ":" in route else "-4", "route", "show", route) == []
    await tun.aclose()


async def test_route_in_another_table_is_used_only_by_a_rule(netns: str) -> None:
    tun = await aiouring.open_tun(addresses=["10.21.0.1/24"])
    device = tun.get_extra_info("device")
    await device.add_route("10.97.0.0/16", table=1000)  # above 255: only RTA_TABLE can name it
    assert [r["dst"] for r in ip_json("route", "show", "table", "1000")] == ["10.97.0.0/16"]
    with pytest.raises(OSError) as info:
        send_udp("10.97.1.1")  # not in the main table
    assert info.value.errno == errno.ENETUNREACH
    subprocess.run(["ip", "rule", "add", "to", "10.97.0.0/16", "table", "1000"], check=True)
    send_udp("10.97.1.1", b"by rule")
    assert udp_payload(await read_where(tun, ipv4_to("10.97.1.1"))) == b"by rule"
    await device.remove_route("10.97.0.0/16", table=1000)
    assert ip_json("route", "show", "table", "1000") == []
    await tun.aclose()


async def test_configure_adds_routes_after_bringing_the_link_up(netns: str) -> None:
    device = TunDevice.open()
    try:
        await device.configure(addresses="10.22.0.1/24", routes=["10.96.0.0/16", Route("10.95.0.0/16", gateway="10.22.0.9")])
        assert {r["dst"] for r in ip_json("route", "show", "dev", device.name)} >= {"10.96.0.0/16", "10.95.0.0/16"}
        await device.configure(routes=["10.96.0.0/16"])  # already there: left alone, no FileExistsError
        with pytest.raises(FileExistsError, match=r"add_route: .*10\.96\.0\.0/16.*exists already"):
            await device.add_route("10.96.0.0/16")
    finally:
        device.close()


# -- addresses ---------------------------------------------------------------------


async def test_addresses_are_added_and_removed(netns: str) -> None:
    device = TunDevice.open()
    try:
        await device.configure()
        await device.add_address("10.23.0.1/24")
        await device.add_address(ipaddress.ip_interface("fd23::1/64"))
        assert addresses_of(device.name) == {("10.23.0.1", 24, None), ("fd23::1", 64, None)}
        await device.remove_address("10.23.0.1/24")
        await device.remove_address("fd23::1/64")
        assert addresses_of(device.name) == set()
        with pytest.raises(OSError, match=f"remove_address: .*{device.name}.*has no address 10.23.0.1/24") as info:
            await device.remove_address("10.23.0.1/24")
        assert info.value.errno == errno.EADDRNOTAVAIL
    finally:
        device.close()


async def test_point_to_point_peer_address(netns: str) -> None:
    tun = await aiouring.open_tun()
    device = tun.get_extra_info("device")
    await device.add_address("10.30.0.1", peer="10.30.0.2")
    assert addresses_of(tun.name) == {("10.30.0.1", 32, "10.30.0.2")}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"to the peer", ("10.30.0.2", 9))
        packet = await read_where(tun, ipv4_to("10.30.0.2"))
    assert packet[12:16] == ipaddress.IPv4Address("10.30.0.1").packed and udp_payload(packet) == b"to the peer"
    await device.remove_address("10.30.0.1", peer="10.30.0.2")
    assert addresses_of(tun.name) == set()
    await tun.aclose()


async def test_a_single_address_string_is_one_address(netns: str) -> None:
    tun = await aiouring.open_tun(addresses="10.40.0.1/24")
    assert addresses_of(tun.name) == {("10.40.0.1", 24, None)}
    await tun.aclose()


# -- link settings -------------------------------------------------------------------


async def test_set_mtu_on_a_live_device_lets_a_bigger_packet_through_whole(netns: str) -> None:
    tun = await aiouring.open_tun(addresses=["10.24.0.1/24"])
    device = tun.get_extra_info("device")
    big = os.urandom(8000)
    send_udp("10.24.0.2", big)
    first = await read_own(tun)
    assert len(first) <= 1500 and struct.unpack_from("!H", first, 6)[0] & 0x2000  # a fragment (MF set) at MTU 1500

    await device.set_mtu(9000)
    assert device.mtu == 9000 and tun.mtu == 9000 and link_info(tun.name)["mtu"] == 9000
    send_udp("10.24.0.2", big)
    whole = await read_where(tun, lambda p: ipv4_to("10.24.0.2")(p) and not struct.unpack_from("!H", p, 6)[0] & 0x3FFF)
    assert len(whole) == 20 + 8 + 8000 and udp_payload(whole) == big

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:  # and the write limit follows the MTU
        sink.bind(("10.24.0.1", 7000))
        sink.settimeout(5)
        await tun.write(udp("10.24.0.2", "10.24.0.1", 9, 7000, big))
        assert await asyncio.get_running_loop().run_in_executor(None, sink.recv, 9000) == big
    await tun.aclose()


async def test_set_up_and_down(netns: str) -> None:
    device = TunDevice.open()
    try:
        assert "UP" not in link_info(device.name)["flags"]
        await device.set_up()
        assert "UP" in link_info(device.name)["flags"]
        await device.set_up(False)
        assert "UP" not in link_info(device.name)["flags"]
    finally:
        device.close()


async def test_txqueuelen_and_configure_all_at_once(netns: str) -> None:
    device = TunDevice.open(mode="tap")
    try:
        await device.configure(mtu=1400, txqueuelen=4096, mac="02:11:22:33:44:55", addresses=["10.25.0.1/24"])
        info = link_info(device.name)
        assert (info["mtu"], info["txqlen"], info["address"]) == (1400, 4096, "02:11:22:33:44:55")
        assert "UP" in info["flags"] and device.mtu == 1400
        await device.set_txqueuelen(16)
        assert link_info(device.name)["txqlen"] == 16
    finally:
        device.close()


async def test_tap_mac_is_the_source_of_its_frames(netns: str) -> None:
    tap = await aiouring.open_tun(mode="tap", addresses=["10.26.0.1/24"])
    device = tap.get_extra_info("device")
    await device.set_mac("02:aa:bb:cc:dd:ee")
    assert link_info(tap.name)["address"] == "02:aa:bb:cc:dd:ee"
    send_udp("10.26.0.2")  # the kernel asks ARP for it first
    frame = await read_own(tap, frames=True)
    assert frame[6:12] == bytes.fromhex("02aabbccddee")
    await tap.aclose()


# -- counters --------------------------------------------------------------------------


def proc_net_dev(name: str) -> dict[str, int]:
    with open("/proc/net/dev") as f:
        for line in f:
            if line.split(":")[0].strip() == name:
                v = list(map(int, line.split(":")[1].split()))
                return {"rx_bytes": v[0], "rx_packets": v[1], "rx_errors": v[2], "rx_dropped": v[3],
                        "tx_bytes": v[8], "tx_packets": v[9], "tx_errors": v[10], "tx_dropped": v[11]}
    raise KeyError(name)


async def test_kernel_counters_count_both_ways_and_drops(netns: str) -> None:
    device = TunDevice.open()
    try:
        await device.configure(addresses=["10.27.0.1/24"], txqueuelen=8)
        before = await device.kernel_counters()
        assert isinstance(before, LinkCounters)
        for i in range(50):  # nobody reads: 8 wait in the queue, the rest are dropped
            send_udp("10.27.0.2", b"x" * 100)
        for i in range(3):
            os.write(device.fileno(), udp("10.27.0.2", "10.27.0.1", 9, 9999, b"in %d" % i))
        after = await device.kernel_counters()
        assert after.rx_packets - before.rx_packets == 3
        assert after.rx_bytes - before.rx_bytes == 3 * (28 + 4)
        assert after.tx_dropped - before.tx_dropped >= 50 - 8 - 4  # a few slots may hold the kernel's IPv6 packets
        assert after.tx_packets - before.tx_packets <= 8 + 4
        with pytest.raises(dataclasses.FrozenInstanceError):
            after.rx_packets = 0  # type: ignore[misc]
        snapshot = proc_net_dev(device.name)  # the same numbers the namespace's /proc shows
        now = await device.kernel_counters()
        assert {k: getattr(now, k) for k in snapshot} == snapshot
    finally:
        device.close()


# -- the loop is never blocked ------------------------------------------------------------


async def test_netlink_calls_do_not_block_the_loop(netns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request held up in the kernel (simulated: the RTNL lock is busy) does
    not stop the loop: another task keeps ticking meanwhile."""
    from aiouring import _netlink

    device = TunDevice.open()
    release = threading.Event()
    real = _netlink.RtSocket.set_link

    def slow_set_link(self: Any, *a: Any, **kw: Any) -> None:
        release.wait(5)
        real(self, *a, **kw)

    monkeypatch.setattr(_netlink.RtSocket, "set_link", slow_set_link)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.ensure_future(tick())
    pending = asyncio.ensure_future(device.set_mtu(1300))
    await wait_for_condition(lambda: ticks > 1000)
    assert not pending.done()
    release.set()
    await asyncio.wait_for(pending, 5)
    ticker.cancel()
    assert device.mtu == 1300
    device.close()


async def test_cancelled_call_finishes_the_request_in_flight_and_sends_no_more(netns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiouring import _netlink

    device = TunDevice.open()
    entered = threading.Event()
    release = threading.Event()
    real = _netlink.RtSocket.set_link
    calls: list[tuple[Any, ...]] = []

    def gated_set_link(self: Any, *a: Any, **kw: Any) -> None:
        calls.append(a)
        entered.set()
        release.wait(5)
        real(self, *a, **kw)

    monkeypatch.setattr(_netlink.RtSocket, "set_link", gated_set_link)
    task = asyncio.ensure_future(device.configure(mtu=1300, txqueuelen=77, up=True))
    await wait_for_condition(entered.is_set)
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done()  # waits for the kernel's answer to the request under way
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert len(calls) == 1  # the MTU went through; the queue length and link-up were not sent
    info = link_info(device.name)
    assert (info["mtu"], info["txqlen"]) == (1300, 500) and "UP" not in info["flags"]
    assert device.mtu == 1300
    device.close()


async def test_calls_act_in_the_callers_namespace(netns: str) -> None:
    """The same name in two namespaces: each caller changes its own."""
    from pyroute2 import netns as pyroute2_netns

    outer = TunDevice.open("aiousame0")
    inner_ns = f"aiou-{os.getpid()}-inner"
    pyroute2_netns.create(inner_ns)
    try:
        pyroute2_netns.pushns(inner_ns)  # this thread, and so the loop, moves into it
        try:
            inner = TunDevice.open("aiousame0")
            try:
                await inner.set_mtu(1234)
                assert link_info("aiousame0")["mtu"] == 1234
            finally:
                inner.close()
        finally:
            pyroute2_netns.popns()
        assert link_info("aiousame0")["mtu"] == 1500
        await outer.set_mtu(1400)
        assert link_info("aiousame0")["mtu"] == 1400
    finally:
        outer.close()
        pyroute2_netns.remove(inner_ns)
