"""A hypothesis state machine over TunTransport on the fake ring.

Random interleavings of packets arriving, writes, write failures, read
errors, cancel races, batches and reordering of completions, pause/resume of
reading and writing, close and abort.  Invariants checked after every step:

* the application got a prefix of the packets the kernel delivered: each
  once, in order (the rest is still queued somewhere);
* what reached the device is the application's writes in order, minus the
  ones reported failed (and, after abort, minus the dropped tail);
* callbacks come in a legal order, none after ``connection_lost``, which is
  called exactly once by the end;
* the ring holds no op for a transport that has finished tearing down.
"""
from __future__ import annotations

import asyncio
import errno

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import uvloop

import aiouring
from aiouring.testing import FakeRing, fake_device
from support.harness import RecordingProtocol
from typing import Any, Callable


class TransportMachine(RuleBasedStateMachine):
    loop_factory = staticmethod(asyncio.new_event_loop)

    def __init__(self) -> None:
        super().__init__()
        self.loop = self.loop_factory()
        self.reported: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, ctx: self.reported.append(ctx))
        self.ring = self.loop.run_until_complete(self._make_ring())
        device, self.device = fake_device(self.ring, "fsm0")
        self.fd = device.fileno()
        self.transport, self.protocol = self.loop.run_until_complete(
            aiouring.create_tun_connection(RecordingProtocol, device=device, ring=self.ring)
        )
        self.injected: list[bytes] = []
        self.written: list[bytes] = []  # every packet the application handed to write()
        self.failed_writes = 0
        self.closing = False
        self.aborted = False
        self.fatal = False
        self.counter = 0
        self.steps = 0
        self.settle()

    async def _make_ring(self) -> FakeRing:
        return FakeRing(buffers_per_group=4)

    def settle(self, rounds: int = 6) -> None:
        for _ in range(rounds):
            self.loop.run_until_complete(asyncio.sleep(0))

    def settle_until(self, done: Callable[[], bool], limit: int = 5000) -> None:
        """Run the loop until ``done()`` (a 3-slot write pool drains a few packets per iteration)."""
        for _ in range(limit):
            if done():
                return
            self.loop.run_until_complete(asyncio.sleep(0))

    def packet(self) -> bytes:
        self.counter += 1
        return b"\x45pkt-%06d" % self.counter

    # -- the network side ---------------------------------------------------------

    @rule(n=st.integers(1, 12))
    def packets_arrive(self, n: int) -> None:
        packets = [self.packet() for _ in range(n)]
        self.injected += packets
        self.device.inject(*packets)

    @rule(err=st.sampled_from([errno.EAGAIN, errno.EINTR, errno.ENOBUFS, errno.ECANCELED]))
    def read_interrupted_and_rearmed(self, err: int) -> None:
        ops = self.ring.pending("read_multishot", self.fd)
        if ops:
            self.ring.fail(ops[0], err)

    @precondition(lambda self: not self.closing and self.steps >= 12)
    @rule()
    def read_fails_fatally(self) -> None:
        ops = [op for op in self.ring.pending("read_multishot", self.fd)]
        if ops and self.transport.is_reading():
            self.ring.fail(ops[-1], errno.EIO)  # the live reader's read, not a cancelled one
            self.fatal = True
            self.closing = True

    @rule(policy=st.sampled_from(["cancel", "ignore"]))
    def kernel_cancel_behaviour(self, policy: str) -> None:
        # "ignore": a cancel answers -EALREADY and the read keeps delivering
        self.ring.cancel_policy = policy

    @rule(err=st.sampled_from([errno.EINVAL, errno.EIO, errno.EFAULT]), count=st.integers(1, 3))
    def device_refuses_writes(self, err: int, count: int) -> None:
        self.device.fail_writes(err, count)

    # -- the application side -----------------------------------------------------------

    @precondition(lambda self: not self.closing)
    @rule(n=st.integers(1, 10))
    def application_writes(self, n: int) -> None:
        for _ in range(n):
            packet = self.packet()
            self.transport.write(packet)
            self.written.append(packet)

    @precondition(lambda self: not self.closing)
    @rule()
    def pause_reading(self) -> None:
        self.transport.pause_reading()
        assert not self.transport.is_reading()

    @precondition(lambda self: not self.closing)
    @rule()
    def resume_reading(self) -> None:
        self.transport.resume_reading()
        assert self.transport.is_reading()

    @precondition(lambda self: not self.closing)
    @rule(high=st.integers(0, 200))
    def write_limits(self, high: int) -> None:
        self.transport.set_write_buffer_limits(high=high)

    @rule(rounds=st.integers(1, 4))
    def loop_runs(self, rounds: int) -> None:
        self.settle(rounds)

    # close, abort and fatal errors end the interesting part: let traffic build up first
    @precondition(lambda self: not self.closing and self.steps >= 12)
    @rule()
    def close(self) -> None:
        self.transport.close()
        self.closing = True

    @precondition(lambda self: not self.aborted and self.steps >= 12)
    @rule()
    def abort(self) -> None:
        self.transport.abort()
        self.closing = True
        self.aborted = True

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def received_each_packet_once_in_order(self) -> None:
        got = self.protocol.packets
        assert got == self.injected[: len(got)]

    @invariant()
    def device_got_the_writes_in_order(self) -> None:
        written = self.device.written
        it = iter(self.written)
        assert all(any(p == w for w in it) for p in written), "device saw writes out of order or never made"
        assert len(written) + len(self.protocol.errors) <= len(self.written)

    @invariant()
    def count_steps(self) -> None:
        self.steps += 1

    @invariant()
    def callbacks_are_legal(self) -> None:
        events = self.protocol.events
        assert events[0] == "connection_made"
        assert events.count("connection_lost") <= 1
        if "connection_lost" in events:
            assert events[-1] == "connection_lost"

    def finish_doomed_reads(self) -> None:
        """Reads whose cancel was answered -EALREADY ("completes shortly"): complete them."""
        self.settle_until(lambda: self.protocol.lost.done() or not self.transport._stopping)
        for op in self.ring.pending("read_multishot"):
            self.ring.fail(op, errno.ECANCELED)
        self.settle_until(lambda: self.protocol.lost.done())

    def teardown(self) -> None:
        try:
            if not self.closing:
                # a live transport: everything must come through
                self.ring.cancel_policy = "cancel"
                self.transport.resume_reading()
                self.settle_until(
                    lambda: len(self.protocol.packets) == len(self.injected)
                    and len(self.device.written) + len(self.protocol.errors) == len(self.written)
                )
                assert self.protocol.packets == self.injected
                assert len(self.device.written) + len(self.protocol.errors) == len(self.written)
                self.transport.close()
            self.ring.cancel_policy = "cancel"
            self.finish_doomed_reads()
            assert self.protocol.events.count("connection_lost") == 1
            if not self.aborted and not self.fatal:
                # close() flushes: every write reached the device or was reported failed
                assert len(self.device.written) + len(self.protocol.errors) == len(self.written)
            assert self.ring.in_flight == 0, self.ring.pending()
            unexpected = [c for c in self.reported if not isinstance(c.get("exception"), OSError)]
            assert not unexpected, unexpected
        finally:
            if not self.protocol.lost.done():
                self.transport.abort()  # a failed check must not leak the device as well
                self.settle_until(lambda: self.protocol.lost.done())
            self.ring.close()
            self.loop.close()


class UvloopTransportMachine(TransportMachine):
    loop_factory = staticmethod(uvloop.new_event_loop)


_settings = settings(max_examples=200, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TestTransportOnAsyncio = TransportMachine.TestCase
TestTransportOnAsyncio.settings = _settings
TestTransportOnUvloop = UvloopTransportMachine.TestCase
TestTransportOnUvloop.settings = _settings
