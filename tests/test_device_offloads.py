"""Offloads at the device level: IFF_VNET_HDR at open, TUNSETOFFLOAD, and what
the kernel then hands the device (one UDP super-packet instead of segments)."""
from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import struct
from typing import Any, Callable

import pytest

import aiouring.device as device_module
from aiouring.device import TunDevice
import aiouring._tunioctl as tunioctl

TUNGETVNETHDRSZ = 0x800454D7
TUNGETIFF = 0x800454D2
IFF_VNET_HDR = 0x4000
SOL_UDP = 17
UDP_SEGMENT = 103
GSO_NONE = 0
GSO_UDP_L4 = 5
ALL = frozenset({"csum", "tso4", "tso6", "uso4", "uso6"})


async def read_raw(device: TunDevice, want: Callable[[bytes], bool], timeout: float = 5) -> bytes:
    """The next read from the device's fd that ``want`` accepts (skipping the kernel's IPv6 packets)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            data = os.read(device.fileno(), 10 + 65535)
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_reader(device.fileno(), lambda: None if ready.done() else ready.set_result(None))
            try:
                await asyncio.wait_for(ready, max(0.0, deadline - loop.time()))
            finally:
                loop.remove_reader(device.fileno())
            continue
        if want(data):
            return data


def is_udp_to_us(data: bytes) -> bool:
    packet = data[10:]
    return len(packet) >= 28 and packet[0] >> 4 == 4 and packet[9] == 17 and packet[16:20] == socket.inet_aton("10.28.0.2")


def send_gso(payload_size: int = 3000, segment: int = 1000) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, segment)
        sock.sendto(os.urandom(payload_size), ("10.28.0.2", 9))


async def vnet_device() -> TunDevice:
    device = TunDevice.open(vnet_hdr=True)
    await device.configure(addresses=["10.28.0.1/24"])
    return device


async def test_vnet_hdr_at_open_and_the_sizes_that_follow(netns: str) -> None:
    device = TunDevice.open(vnet_hdr=True)
    try:
        flags = struct.unpack("16sH22x", fcntl.ioctl(device.fileno(), TUNGETIFF, bytes(40)))[1]
        assert flags & IFF_VNET_HDR
        assert struct.unpack("i", fcntl.ioctl(device.fileno(), TUNGETVNETHDRSZ, bytes(4)))[0] == 10
        assert device.vnet_hdr and device.vnet_hdr_size == 10 and device.header_size == 10
        assert device.max_packet_size == 1500 + 10 and device.read_size == 65535 + 10
        assert device.offloads == frozenset()
    finally:
        device.close()
    tap = TunDevice.open(mode="tap", packet_info=True, vnet_hdr=True)
    assert tap.header_size == 4 + 10 + 18
    tap.close()
    plain = TunDevice.open()
    assert not plain.vnet_hdr and plain.header_size == 0
    plain.close()


async def test_uso_is_accepted_here_and_the_kernel_hands_over_super_packets(netns: str) -> None:
    device = await vnet_device()
    try:
        assert device.enable_offloads() == ALL and device.offloads == ALL
        send_gso()
        data = await read_raw(device, is_udp_to_us)
        flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = struct.unpack_from("<BBHHHH", data)
        assert (gso_type, gso_size, csum_start, csum_offset) == (GSO_UDP_L4, 1000, 20, 6)
        assert len(data) == 10 + 20 + 8 + 3000  # one read: the whole super-packet

        device.disable_offloads()
        assert device.offloads == frozenset()
        send_gso()
        sizes = []
        for _ in range(3):
            data = await read_raw(device, is_udp_to_us)
            assert data[1] == GSO_NONE
            sizes.append(len(data) - 10)
        assert sizes == [1028, 1028, 1028]  # the kernel segmented it
    finally:
        device.close()


async def test_tso_only_leaves_udp_to_the_kernel(netns: str) -> None:
    device = await vnet_device()
    try:
        assert device.enable_offloads(uso=False) == {"csum", "tso4", "tso6"}
        send_gso()
        for _ in range(3):
            data = await read_raw(device, is_udp_to_us)
            assert data[1] == GSO_NONE and len(data) == 10 + 1028
        assert device.enable_offloads(tso=False, uso=False) == {"csum"}
    finally:
        device.close()


async def test_offloads_are_refused_without_a_vnet_header(netns: str) -> None:
    device = TunDevice.open()
    try:
        with pytest.raises(OSError, match="no virtio-net header.*vnet_hdr=True") as info:
            device.enable_offloads()
        assert info.value.errno == errno.EINVAL
        assert device.offloads == frozenset()
        with pytest.raises(TypeError, match="uso"):
            device.enable_offloads(uso="yes")  # type: ignore[arg-type]
    finally:
        device.close()


class RefusingFcntl:
    """fcntl with TUNSETOFFLOAD answering EINVAL for the bits in ``refuse``."""

    def __init__(self, refuse: int) -> None:
        self.refuse = refuse
        self.asked: list[int] = []

    def ioctl(self, fd: int, request: int, arg: Any = 0, *rest: Any) -> Any:
        if request == tunioctl.TUNSETOFFLOAD:
            self.asked.append(arg)
            if arg & self.refuse:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return fcntl.ioctl(fd, request, arg, *rest)


async def test_a_kernel_without_uso_gets_tso_alone(netns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = RefusingFcntl(refuse=device_module.TUN_F_USO4 | device_module.TUN_F_USO6)  # as before Linux 6.2
    monkeypatch.setattr(device_module, "fcntl", fake)
    device = TunDevice.open(vnet_hdr=True)
    try:
        assert device.enable_offloads() == {"csum", "tso4", "tso6"}
        assert fake.asked == [0x67, 0x07]
    finally:
        device.close()


async def test_a_kernel_refusing_tso_raises(netns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "fcntl", RefusingFcntl(refuse=device_module.TUN_F_TSO4))
    device = TunDevice.open(vnet_hdr=True)
    try:
        with pytest.raises(OSError, match=f"refused TUNSETOFFLOAD csum, tso4, tso6 on {device.name}") as info:
            device.enable_offloads(uso=False)
        assert info.value.errno == errno.EINVAL and device.offloads == frozenset()
        with pytest.raises(OSError, match="after USO was refused"):
            device.enable_offloads()
    finally:
        device.close()


async def test_queues_share_the_vnet_header_and_offloads(netns: str) -> None:
    first = TunDevice.open(multi_queue=True, vnet_hdr=True)
    try:
        first.enable_offloads()
        second = first.open_queue()
        try:
            assert second.vnet_hdr and second.offloads == ALL and second.name == first.name
        finally:
            second.close()
    finally:
        first.close()
