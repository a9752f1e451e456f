"""TunTransport behaviour, written once, run on the uring, epoll and fake rings and on both loops."""
from __future__ import annotations

import asyncio
import errno

import pytest

import aiouring
from aiouring import ClosedError
from support.harness import RecordingProtocol
from support.netns import interface_names
from support.wait import wait_for_condition
from aiouring import Backend
from support.harness import FakeHarness, Harness
from typing import Any


async def test_callbacks_come_in_a_legal_order_and_connection_lost_once(harness: Harness) -> None:
    transport, protocol = await harness.connect()
    assert protocol.events[0] == "connection_made"
    harness.send_inbound([b"one", b"two"])
    await protocol.wait_packets(2)
    transport.close()
    assert await asyncio.wait_for(protocol.lost, 5) is None
    transport.close()
    transport.abort()
    await asyncio.sleep(0.01)
    assert protocol.events[0] == "connection_made"
    assert protocol.events[-1] == "connection_lost"
    assert protocol.events.count("connection_lost") == 1


async def test_packets_arrive_whole_and_in_order(harness: Harness) -> None:
    transport, protocol = await harness.connect()
    payloads = [f"packet {i:04d}".encode() * (1 + i % 7) for i in range(300)]
    harness.send_inbound(payloads)
    packets = await protocol.wait_packets(300)
    assert [harness.unwrap(p) for p in packets] == payloads
    transport.close()
    await protocol.lost


async def test_written_packets_arrive_whole_and_in_order(harness: Harness) -> None:
    transport, protocol = await harness.connect()
    payloads = [f"out {i:04d}".encode() * (1 + i % 5) for i in range(300)]
    for p in payloads:
        transport.write(harness.packet(p))
    assert await harness.outbound(300) == payloads
    transport.close()
    await protocol.lost
    assert protocol.errors == []


async def test_pause_reading_holds_packets_until_resume(harness: Harness) -> None:
    transport, protocol = await harness.connect()
    transport.pause_reading()
    assert not transport.is_reading()
    transport.pause_reading()  # idempotent
    await asyncio.sleep(0.02)
    harness.send_inbound([b"held-1", b"held-2", b"held-3"])
    await asyncio.sleep(0.05)
    assert protocol.packets == []
    transport.resume_reading()
    assert transport.is_reading()
    packets = await protocol.wait_packets(3)
    assert [harness.unwrap(p) for p in packets] == [b"held-1", b"held-2", b"held-3"]
    transport.close()
    await protocol.lost


async def test_pause_in_connection_made_defers_reading(harness: Harness) -> None:
    class PausesAtOnce(RecordingProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            transport.pause_reading()

    transport, protocol = await harness.connect(PausesAtOnce)
    harness.send_inbound([b"early"])
    await asyncio.sleep(0.05)
    assert protocol.packets == []
    transport.resume_reading()
    assert [harness.unwrap(p) for p in await protocol.wait_packets(1)] == [b"early"]
    transport.close()
    await protocol.lost


async def test_write_flow_control_pauses_and_resumes_the_protocol(harness: Harness) -> None:
    transport, protocol = await harness.connect()
    transport.set_write_buffer_limits(high=1000, low=100)
    assert transport.get_write_buffer_limits() == (100, 1000)
    for i in range(50):
        transport.write(harness.packet(b"x" * 100))
        # every byte written counts until the kernel has taken it
        assert transport.get_write_buffer_size() == (i + 1) * len(harness.packet(b"x" * 100))
    assert protocol.events.count("pause_writing") == 1
    assert await harness.outbound(50) == [b"x" * 100] * 50
    await wait_for_condition(lambda: transport.get_write_buffer_size() == 0)
    await wait_for_condition(lambda: "resume_writing" in protocol.events)
    assert protocol.events.index("resume_writing") > protocol.events.index("pause_writing")
    with pytest.raises(ValueError):
        transport.set_write_buffer_limits(high=10, low=20)
    transport.close()
    await protocol.lost


async def test_close_flushes_queued_writes(harness: Harness) -> None:
    transport, protocol = await harness.connect()
    payloads = [b"flush %d" % i for i in range(200)]
    for p in payloads:
        transport.write(harness.packet(p))
    transport.close()
    assert transport.is_closing()
    assert await asyncio.wait_for(protocol.lost, 5) is None
    assert await harness.outbound(200) == payloads
    with pytest.raises(ClosedError):
        transport.write(harness.packet(b"late"))


async def test_abort_drops_queued_writes(harness: Harness) -> None:
    transport, protocol = await harness.connect()
    for i in range(200):
        transport.write(harness.packet(b"abort %d" % i))
    transport.abort()
    assert transport.get_write_buffer_size() == 0
    assert await asyncio.wait_for(protocol.lost, 5) is None
    # the device is closed now: whatever it wrote has arrived already
    assert await harness.outbound(200, timeout=0) == []  # nothing had been handed to the kernel


async def test_extra_info_describes_the_device(harness: Harness) -> None:
    transport, protocol = await harness.connect()
    name = transport.get_extra_info("name")
    assert isinstance(name, str) and name
    assert transport.get_extra_info("mtu") == 1500
    assert transport.get_extra_info("fileno") >= 0
    assert transport.get_extra_info("backend") == harness.kind
    assert transport.get_extra_info("ring") is not None
    assert transport.get_extra_info("mode") == "tun"
    expected_mode = {"uring": aiouring.probe().read_mode, "epoll": "readiness", "fake": "multishot"}[harness.kind]
    assert transport.get_extra_info("read_mode") == expected_mode
    assert transport.get_extra_info("nonexistent", "dflt") == "dflt"
    assert name in repr(transport)
    transport.close()
    await protocol.lost
    assert transport.get_extra_info("fileno") is None


async def test_bad_packets_are_refused_before_anything_is_written(harness: Harness) -> None:
    transport, protocol = await harness.connect()
    with pytest.raises(ValueError, match="empty"):
        transport.write(b"")
    with pytest.raises(ValueError, match="larger than"):
        transport.write(b"\x45" * 1501)
    with pytest.raises(TypeError, match="bytes-like"):
        transport.write("a string")
    with pytest.raises(TypeError):
        transport.write(12345)
    transport.write(bytearray(harness.packet(b"still fine")))
    transport.write(memoryview(harness.packet(b"also fine")))
    assert await harness.outbound(2) == [b"still fine", b"also fine"]
    transport.close()
    await protocol.lost


async def test_refused_write_goes_to_error_received_and_the_transport_stays_open(harness: Harness) -> None:
    transport, protocol = await harness.connect()
    if isinstance(harness, FakeHarness):
        harness.device.fail_writes(errno.EINVAL)
    transport.write(b"\x00" * 20)  # IP version 0: the TUN driver answers EINVAL
    transport.write(harness.packet(b"after the error"))
    assert await harness.outbound(1) == [b"after the error"]
    for _ in range(100):
        if protocol.errors:
            break
        await asyncio.sleep(0.001)
    assert len(protocol.errors) == 1
    assert isinstance(protocol.errors[0], OSError) and protocol.errors[0].errno == errno.EINVAL
    assert not transport.is_closing()
    transport.close()
    await protocol.lost


async def test_batch_hook_gets_whole_batches(harness: Harness) -> None:
    transport, protocol = await harness.connect()
    harness.send_inbound([b"b%d" % i for i in range(100)])  # all queued before the loop runs again
    await protocol.wait_packets(100)
    assert sum(protocol.batches) == 100 + len(protocol.other)
    assert max(protocol.batches) > 1, protocol.batches  # delivered in batches, not one call per packet
    assert len(protocol.batches) < 100
    transport.close()
    await protocol.lost


async def test_exception_in_protocol_is_reported_and_the_transport_keeps_serving(harness: Harness) -> None:
    """As asyncio's datagram transport: a protocol callback that raises is
    reported to the loop's exception handler; packets keep coming."""

    class Explodes(RecordingProtocol):
        def packets_received(self, packets: list[bytes]) -> None:
            super().packets_received(packets)
            if any(harness.unwrap(p) == b"trigger" for p in packets):
                raise RuntimeError("boom")

    loop = asyncio.get_running_loop()
    reported = []
    loop.set_exception_handler(lambda loop, ctx: reported.append(ctx))
    transport, protocol = await harness.connect(Explodes)
    harness.send_inbound([b"trigger"])
    await protocol.wait_packets(1)
    assert [type(ctx.get("exception")) for ctx in reported] == [RuntimeError]
    assert "packets_received" in reported[0]["message"]
    harness.send_inbound([b"after"])
    assert [harness.unwrap(p) for p in await protocol.wait_packets(2)] == [b"trigger", b"after"]
    assert not transport.is_closing()
    transport.close()
    assert await protocol.lost is None


async def test_pause_reading_inside_a_batch_holds_the_rest_of_it(harness: Harness) -> None:
    """A protocol taking one packet at a time pauses after the first of a
    batch: nothing more arrives until it resumes, and nothing is lost."""

    class OneAtATime(aiouring.TunProtocol):
        def __init__(self) -> None:
            self.got: list[bytes | None] = []
            self.lost = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def packet_received(self, packet: bytes) -> None:
            if harness.unwrap(packet) is not None:
                self.got.append(harness.unwrap(packet))
                self.transport.pause_reading()

        def connection_lost(self, exc: BaseException | None) -> None:
            self.lost.set_result(exc)

    transport, protocol = await harness.connect(OneAtATime)
    payloads = [b"p%d" % i for i in range(5)]
    harness.send_inbound(payloads)  # one batch: all queued before the loop runs
    await wait_for_condition(lambda: protocol.got)
    for i in range(1, 6):
        await asyncio.sleep(0)
        assert protocol.got == payloads[:i], "delivered while paused"
        transport.resume_reading()
        if i < 5:
            await wait_for_condition(lambda: len(protocol.got) == i + 1)
    assert protocol.got == payloads
    transport.close()
    await protocol.lost


async def test_device_disappears_after_close(backend: Backend, netns: str) -> None:
    transport, protocol = await aiouring.create_tun_connection(RecordingProtocol, backend=backend)
    name = transport.get_extra_info("name")
    assert name in interface_names()
    transport.close()
    await protocol.lost
    assert name not in interface_names()
