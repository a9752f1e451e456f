"""Persistent devices: made and configured by root, attached later by an
unprivileged process that re-applies nothing, deleted by root."""
from __future__ import annotations

import asyncio
import os
import socket
import sys
import textwrap

import pytest

from aiouring.device import TunDevice
from support.netns import interface_names

NOBODY = 65534

# The attaching process: uid/gid 65534, no capabilities, opens the device with
# open_tun(name) and its defaults, prints its capabilities and one packet.
ATTACH = textwrap.dedent("""
    import asyncio, os, sys
    import aiouring  # first: this interpreter lives under /root, which uid 65534 cannot read
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)

    async def main():
        with open("/proc/self/status") as f:
            caps = [l.split()[1] for l in f if l.startswith("CapEff")][0]
        tun = await aiouring.open_tun(sys.argv[1])
        print("ready", os.getuid(), caps, tun.name, tun.mtu, flush=True)
        while True:
            packet = await asyncio.wait_for(tun.read(), 10)
            if packet[0] >> 4 == 4:
                print("packet", packet.hex(), flush=True)
                break
        if len(sys.argv) > 2:  # the configuration root made, asked for again: nothing to change
            await tun.get_extra_info("device").configure(
                mtu=1400, addresses=["10.60.0.1/24"], routes=["10.61.0.0/16"], txqueuelen=500)
            print("reconfigured", flush=True)
        await tun.aclose()

    asyncio.run(main())
""")


async def run_as_nobody(name: str, ready: "asyncio.Future[str]", *extra: str) -> tuple[int, str, str]:
    """Run ATTACH as uid 65534 in a private mount namespace whose /dev/net/tun
    is mode 0666, as udev makes it on most distributions (this machine's is
    0600, which would stop the test before the kernel's own checks)."""
    shell = "mount -t tmpfs none /dev/net && mknod -m 666 /dev/net/tun c 10 200 && exec \"$0\" -c \"$@\""
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--mount", "--propagation", "private", "sh", "-c", shell, sys.executable, ATTACH, name, *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines = []
    try:
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        ready.set_result(first)
        lines.append(first)
        lines.append((await asyncio.wait_for(proc.stdout.read(), 30)).decode())
        err = (await proc.stderr.read()).decode()
        await asyncio.wait_for(proc.wait(), 30)
    except BaseException:
        if not ready.done():
            ready.set_result("")
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, "".join(lines), err


async def test_nobody_attaches_to_a_persistent_configured_device_and_reads(netns: str) -> None:
    device = await TunDevice.create("aioupers0", persist=True, owner=NOBODY, group="nogroup",
                                    addresses=["10.60.0.1/24"], mtu=1400, routes=["10.61.0.0/16"])
    assert device.persistent
    device.close()
    assert "aioupers0" in interface_names()  # outlived its fd
    try:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[str] = loop.create_future()
        child = asyncio.ensure_future(run_as_nobody("aioupers0", ready, "reconfigure"))
        line = await asyncio.wait_for(ready, 60)
        assert line.split() == ["ready", str(NOBODY), "0000000000000000", "aioupers0", "1400"], (line, child.done() and child.result())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"to nobody", ("10.61.2.3", 9))  # through the route root set up
        code, out, err = await asyncio.wait_for(child, 60)
        assert code == 0, err
        packet = bytes.fromhex(out.split("packet ")[1].split()[0])
        assert packet.endswith(b"to nobody") and socket.inet_ntoa(packet[16:20]) == "10.61.2.3"
        assert "reconfigured" in out.split()
    finally:
        await TunDevice.delete("aioupers0")
    assert "aioupers0" not in interface_names()


async def test_someone_elses_device_is_refused_with_the_reason(netns: str) -> None:
    """Owned by another uid.  (With no owner and no group at all, the kernel
    lets any process that can open /dev/net/tun attach.)"""
    device = await TunDevice.create("aioupers1", persist=True, owner=12345, addresses=["10.62.0.1/24"])
    device.close()
    try:
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        code, out, err = await asyncio.wait_for(run_as_nobody("aioupers1", ready), 60)
        assert code != 0
        assert "PermissionError" in err and "attaching to aioupers1 needs CAP_NET_ADMIN, or to be its owner" in err, err
    finally:
        await TunDevice.delete("aioupers1")


async def test_set_persist_false_lets_the_device_go_with_its_last_fd(netns: str) -> None:
    device = TunDevice.open("aioupers2", persist=True)
    device.close()
    again = TunDevice.open("aioupers2")  # attach to it; persistence is read back
    assert again.persistent and "aioupers2" in interface_names()
    again.set_persist(False)
    assert not again.persistent
    again.close()
    assert "aioupers2" not in interface_names()


async def test_delete_removes_a_persistent_device_with_fds_attached(netns: str) -> None:
    device = TunDevice.open("aioupers3", persist=True)
    await TunDevice.delete("aioupers3")
    assert "aioupers3" not in interface_names()
    with pytest.raises(OSError):
        os.read(device.fileno(), 100)  # detached by the deletion
    device.close()


async def test_adopt_reads_the_flags(netns: str) -> None:
    import fcntl
    import struct

    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", b"aiouadopt0", 0x0001 | 0x1000 | 0x4000 | 0x0100))
    device = TunDevice.adopt(fd)
    assert (device.name, device.mode, device.vnet_hdr, device.multi_queue, device.persistent, device.packet_info) == (
        "aiouadopt0", "tun", True, True, False, False)
    assert device.header_size == 10
    device.close()
    plain = TunDevice.open(mode="tap", packet_info=True)
    other = TunDevice.adopt(os.dup(plain.fileno()))
    assert (other.mode, other.vnet_hdr, other.multi_queue, other.packet_info) == ("tap", False, False, True)
    other.close()
    plain.close()
