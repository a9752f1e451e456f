"""What TunDevice says when something is wrong: bad arguments refused before
anything is created, and the kernel's refusals as OSError subclasses naming
the interface and the operation."""
from __future__ import annotations

import errno
import ipaddress
import os
import subprocess
import sys
import textwrap

import pytest

from aiouring.device import Route, TunDevice
from support.netns import interface_names
from typing import Any

TESTS = os.path.dirname(__file__)


# -- the kernel's refusals ------------------------------------------------------------


async def test_tap_mtu_above_its_limit_names_the_limit(netns: str) -> None:
    device = TunDevice.open(mode="tap")
    try:
        with pytest.raises(OSError) as info:
            await device.set_mtu(65535)
        assert info.value.errno == errno.EINVAL and type(info.value) is OSError
        message = str(info.value)
        assert "set_mtu" in message and device.name in message and "65521" in message, message
        assert device.mtu == 1500
        await device.set_mtu(65521)  # the limit itself is fine
        assert device.mtu == 65521
    finally:
        device.close()


async def test_duplicate_address_is_file_exists(netns: str) -> None:
    device = TunDevice.open()
    try:
        await device.add_address("10.50.0.1/24")
        with pytest.raises(FileExistsError) as info:
            await device.add_address("10.50.0.1/24")
        assert info.value.errno == errno.EEXIST
        assert f"add_address: adding address 10.50.0.1/24 on {device.name}" in str(info.value)
        await device.add_address("fd50::1/64")
        with pytest.raises(FileExistsError, match="fd50::1"):
            await device.add_address("fd50::1/64")
    finally:
        device.close()


@pytest.mark.parametrize("address, code", [("::1/128", errno.EADDRNOTAVAIL), ("ff02::5/64", errno.EADDRNOTAVAIL)])
async def test_address_the_kernel_refuses_is_an_oserror_naming_it(address: str, code: int, netns: str) -> None:
    device = TunDevice.open()
    try:
        with pytest.raises(OSError) as info:
            await device.add_address(address)
        assert info.value.errno == code
        assert str(ipaddress.ip_interface(address).ip) in str(info.value) and device.name in str(info.value)
        assert "kernel:" in str(info.value)  # the kernel's own words (extended ack) are passed on
    finally:
        device.close()


async def test_missing_route_and_missing_interface(netns: str) -> None:
    device = TunDevice.open()
    try:
        await device.set_up()
        with pytest.raises(OSError, match=f"remove_route: .*no route 10.80.0.0/16 through {device.name}") as info:
            await device.remove_route("10.80.0.0/16")
        assert info.value.errno == errno.ESRCH
    finally:
        device.close()
    ghost = TunDevice(-1, "aioughost0")
    with pytest.raises(OSError, match="aioughost0.*network namespace") as info:
        await ghost.set_mtu(1400)
    assert info.value.errno == errno.ENODEV
    with pytest.raises(OSError) as info:
        await TunDevice.delete("aioughost0")
    assert info.value.errno == errno.ENODEV


async def test_route_through_a_link_that_is_down_says_to_bring_it_up(netns: str) -> None:
    device = TunDevice.open()
    try:
        with pytest.raises(OSError, match="bring .* up first") as info:
            await device.configure(up=False, routes=["10.81.0.0/16"])
        assert info.value.errno == errno.ENETDOWN
    finally:
        device.close()


async def test_delete_refuses_what_is_not_a_tun(netns: str) -> None:
    with pytest.raises(ValueError, match="lo is not a TUN/TAP"):
        await TunDevice.delete("lo")
    assert "lo" in interface_names()


def test_without_cap_net_admin_the_error_says_what_to_do(netns: str) -> None:
    """A process without capabilities (still uid 0) changing a TUN: a
    PermissionError with the hint, from every kind of change."""
    device = TunDevice.open("aiounocap0")
    script = textwrap.dedent("""
        import asyncio, sys
        sys.path.insert(0, sys.argv[1])
        from support.sandbox import drop_capabilities
        drop_capabilities()
        from aiouring.device import TunDevice

        async def main():
            device = TunDevice(-1, "aiounocap0")
            for call in (lambda: device.set_mtu(1400), lambda: device.add_address("10.51.0.1/24"),
                         lambda: device.set_up(), lambda: device.configure(txqueuelen=100)):
                try:
                    await call()
                except PermissionError as exc:
                    print("PermissionError", exc.errno, exc)
            counters = await device.kernel_counters()  # reading needs no privilege
            print("counters", counters.rx_packets)

        asyncio.run(main())
    """)
    try:
        proc = subprocess.run([sys.executable, "-c", script, TESTS], capture_output=True, text=True, timeout=60)
    finally:
        device.close()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    refused = [line for line in lines if line.startswith("PermissionError")]
    assert len(refused) == 4, proc.stdout
    for line in refused:
        assert f"PermissionError {errno.EPERM}" in line and "aiounocap0" in line
        assert "CAP_NET_ADMIN" in line and "setcap cap_net_admin+ep" in line and "persistent" in line
    assert "counters 0" in lines


def test_the_library_does_not_use_pyroute2() -> None:
    """pyroute2's NetlinkError cannot escape: the library does not import it
    (and importing aiouring is ~130 ms faster without it)."""
    proc = subprocess.run([sys.executable, "-c", "import sys, aiouring; print('pyroute2' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stdout + proc.stderr


# -- arguments refused before anything is created -----------------------------------------------


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"mtu": 20}, ValueError, "mtu must be from 68 to 65535"),
        ({"mtu": "1400"}, TypeError, "mtu must be an int"),
        ({"mtu": True}, TypeError, "mtu must be an int"),
        ({"addresses": 5}, TypeError, "addresses must be a list"),
        ({"addresses": b"10.0.0.1/24"}, TypeError, "addresses must be a list"),
        ({"addresses": ["10.0.0.300/24"]}, ValueError, "invalid address"),
        ({"addresses": [42]}, TypeError, "address must be a str"),
        ({"addresses": ["10.0.0.1/24", "10.0.0.1/16"]}, ValueError, "given twice"),
        ({"routes": ["10.9.0.1/16"]}, ValueError, "invalid route destination '10.9.0.1/16'"),
        ({"routes": ["default"]}, ValueError, "0.0.0.0/0"),
        ({"routes": [Route("10.9.0.0/16")], "txqueuelen": -1}, ValueError, "txqueuelen"),
        ({"routes": 7}, TypeError, "routes must be a list"),
        ({"mac": "02:00:00:00:00:01"}, ValueError, "mac= is for a TAP"),
        ({"mode": "tap", "mac": "zz:00:00:00:00:01"}, ValueError, "mac must look like"),
        ({"mode": "tap", "mac": "01:00:5e:00:00:01"}, ValueError, "multicast"),
        ({"mode": "tap", "mac": b"\x02\x00"}, ValueError, "6 bytes"),
        ({"mode": "tap", "mac": 5}, TypeError, "mac must be"),
        ({"owner": "no-such-user-here"}, ValueError, "owner: no user"),
        ({"owner": -1}, ValueError, "owner must be from 0"),
        ({"group": "no-such-group-here"}, ValueError, "group: no group"),
        ({"group": 1.5}, TypeError, "group must be an int"),
        ({"persist": "yes"}, TypeError, "persist must be True or False"),
        ({"up": "yes"}, TypeError, "up must be True or False"),
        ({"mode": "tin"}, ValueError, "mode must be"),
        ({"name": "x" * 16}, ValueError, "at most 15"),
    ],
)
async def test_bad_arguments_are_refused_before_anything_is_created(options: dict[str, Any], error: type[Exception], match: str, netns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import aiouring._tunioctl as tunioctl

    opened: list[int] = []
    real_open = tunioctl.open_tun_path
    def counting_open() -> int:
        opened.append(1)
        return real_open()

    monkeypatch.setattr(tunioctl, "open_tun_path", counting_open)
    before = interface_names()
    with pytest.raises(error, match=match):
        await TunDevice.create(**options)
    assert opened == [] and interface_names() == before


@pytest.mark.parametrize(
    "route, error, match",
    [
        (Route, ValueError, "IPv6 but destination"),
        ("metric", ValueError, "route metric"),
        ("table", ValueError, "route table must be from 1"),
        ("gateway", ValueError, "invalid route gateway"),
    ],
)
async def test_bad_routes_are_refused(route: Any, error: type[Exception], match: str, netns: str) -> None:
    device = TunDevice.open()
    try:
        with pytest.raises(error, match=match):
            if route is Route:
                await device.add_route("10.9.0.0/16", gateway="fd00::1")
            elif route == "metric":
                await device.add_route("10.9.0.0/16", metric=-5)
            elif route == "table":
                await device.add_route("10.9.0.0/16", table=0)
            else:
                await device.add_route("10.9.0.0/16", gateway="10.0.0.300")
    finally:
        device.close()


async def test_a_bad_argument_in_configure_changes_nothing(netns: str) -> None:
    device = TunDevice.open()
    try:
        with pytest.raises(ValueError, match="route destination"):
            await device.configure(mtu=1400, addresses=["10.52.0.1/24"], routes=["not a network"])
        assert device.mtu == 1500
        from test_device import addresses_of, link_info

        assert link_info(device.name)["mtu"] == 1500 and addresses_of(device.name) == set()
        assert "UP" not in link_info(device.name)["flags"]
    finally:
        device.close()


async def test_peer_arguments(netns: str) -> None:
    device = TunDevice.open()
    try:
        with pytest.raises(ValueError, match="without a prefix length"):
            await device.add_address("10.53.0.1/24", peer="10.53.0.2")
        with pytest.raises(ValueError, match="peer 'fd00::2' is IPv6"):
            await device.add_address("10.53.0.1", peer="fd00::2")
    finally:
        device.close()


async def test_a_failing_configure_in_create_leaves_nothing_behind_even_persistent(netns: str) -> None:
    with pytest.raises(OSError, match="::1"):
        await TunDevice.create("aioufail0", persist=True, addresses=["::1/128"])
    assert "aioufail0" not in interface_names()
