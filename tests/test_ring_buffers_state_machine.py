"""A hypothesis state machine over the ring's own ops on the fake kernel:
reads into caller buffers, cancelled at random, cancels that win or lose
their race, completions in any order and in batches, close.

Invariant: a buffer is never released while the kernel may still write into
it (its op has no CQE yet), and is released once its op's CQE is processed.
"""
from __future__ import annotations

import asyncio
import itertools
import errno
import gc
import weakref

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aiouring import ClosedError
from aiouring.testing import FakeOp, FakeRing
from typing import Any

import uvloop


class Buffer(bytearray):
    """A bytearray a weakref can watch."""


class RingBufferMachine(RuleBasedStateMachine):
    loop_factory = staticmethod(asyncio.new_event_loop)

    def __init__(self) -> None:
        super().__init__()
        self.loop = self.loop_factory()
        self.reported: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, ctx: self.reported.append(ctx))
        self.ring = self.loop.run_until_complete(self._ring())
        self.tasks: list[asyncio.Task[int]] = []
        self.watch: dict[int, weakref.ref[Any]] = {}  # fake op ud -> its buffer
        # fake op ud -> number of the task that asked (numbers, not tasks: a
        # task held here would hold its frame, and the buffer with it)
        self.task_of: dict[int, int] = {}
        self.number: "weakref.WeakKeyDictionary[asyncio.Task[int], int]" = weakref.WeakKeyDictionary()
        self.cancelled: set[int] = set()
        self.counter = itertools.count()
        self.late: list[int] = []  # what on_late received
        self.expected_late: list[int] = []  # reads completed with data after their task was cancelled
        self.closed = False

    async def _ring(self) -> FakeRing:
        return FakeRing(batch_limit=3)

    def run(self, rounds: int = 3) -> None:
        for _ in range(rounds):
            self.loop.run_until_complete(asyncio.sleep(0))
        # Drop finished tasks, as real code does: their tracebacks would hold
        # the op's frame, and with it the buffer, hiding an early release.
        still = []
        task: asyncio.Task[int] | None
        for task in self.tasks:
            if not task.done():
                still.append(task)
            elif not task.cancelled() and task.exception() is not None:
                assert isinstance(task.exception(), (OSError, ClosedError)), task.exception()
        self.tasks = still
        task = None  # noqa: F841

    def pending(self) -> list[FakeOp]:
        return self.ring.pending("readinto") + self.ring.pending("read")

    @precondition(lambda self: not self.closed)
    @rule(size=st.integers(1, 64))
    def start_read(self, size: int) -> None:
        buf = Buffer(size)
        task = self.loop.create_task(self.ring.readinto(7, buf, on_late=self.late.append))
        self.tasks.append(task)
        self.number[task] = next(self.counter)
        del buf
        self.run(1)
        for op in self.pending():
            if op.ud not in self.watch:
                self.watch[op.ud] = op.buffer  # the fake kernel's own weak reference
                self.task_of[op.ud] = self.number[task]

    @rule(data=st.data())
    def cancel_a_task(self, data: st.DataObject) -> None:
        live = [t for t in self.tasks if not t.done()]
        if live:
            task = data.draw(st.sampled_from(live))
            task.cancel()
            self.cancelled.add(self.number[task])
            del task
            self.run(2)
            # a cancelled task's frames sit in reference cycles: collect them, so
            # a buffer released too early is really gone when the kernel writes
            gc.collect()

    @rule(data=st.data())
    def cancel_loses_the_race(self, data: st.DataObject) -> None:
        """The kernel had read the data when the cancel came: -EALREADY, then the read's CQE."""
        by_number = {n: ud for ud, n in self.task_of.items()}
        live = [t for t in self.tasks if not t.done() and self.number[t] in by_number]
        if not live:
            return
        task = data.draw(st.sampled_from(live))
        ud = by_number[self.number[task]]
        policy = self.ring.cancel_policy
        self.ring.cancel_policy = "ignore"
        task.cancel()
        self.cancelled.add(self.number[task])
        del task
        self.run(2)
        (op,) = [o for o in self.pending() if o.ud == ud]
        size = min(op.size, 5)
        self.ring.complete(op, data=b"y" * size)
        self.expected_late.append(size)
        self.ring.cancel_policy = policy
        self.run(3)

    @rule(policy=st.sampled_from(["cancel", "ignore"]))
    def kernel_cancel_behaviour(self, policy: str) -> None:
        self.ring.cancel_policy = policy

    @rule(data=st.data(), n=st.integers(1, 4))
    def kernel_completes(self, data: st.DataObject, n: int) -> None:
        ops = self.pending()
        for op in data.draw(st.permutations(ops))[:n]:
            outcome = data.draw(st.sampled_from(["data", "error"]))
            if outcome == "data":
                size = min(op.size, 5)
                self.ring.complete(op, data=b"x" * size)
                if self.task_of.get(op.ud) in self.cancelled:
                    self.expected_late.append(size)  # the read won the race: its bytes must reach on_late
            else:
                self.ring.fail(op, errno.EIO)
        self.run(3)

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self) -> None:
        self.ring.cancel_policy = "cancel"
        self.ring.close()
        self.closed = True
        self.run(3)

    @invariant()
    def late_reads_reach_on_late_and_nothing_is_reported(self) -> None:
        assert self.late == self.expected_late
        assert self.reported == [], self.reported

    @invariant()
    def buffers_live_exactly_while_the_kernel_owns_them(self) -> None:
        # no gc.collect() here: a buffer freed too early goes by reference count
        owned = {op.ud for op in self.pending()} if not self.closed else set()
        for ud, ref in self.watch.items():
            if ud in owned:
                assert ref() is not None, "a buffer was released while the kernel owns it"

    def teardown(self) -> None:
        try:
            if not self.closed:
                self.ring.cancel_policy = "cancel"
                for op in self.pending():
                    self.ring.fail(op, errno.ECANCELED)
                self.run(5)
                self.ring.close()
            self.run(5)
            assert not self.tasks, "a read never finished"
            gc.collect()
            leaked = [ud for ud, ref in self.watch.items() if ref() is not None]
            assert not leaked, f"buffers still held after every op completed: {leaked}"
        finally:
            self.loop.close()


class UvloopRingBufferMachine(RingBufferMachine):
    loop_factory = staticmethod(uvloop.new_event_loop)


_settings = settings(max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TestRingBuffersOnAsyncio = RingBufferMachine.TestCase
TestRingBuffersOnAsyncio.settings = _settings
TestRingBuffersOnUvloop = UvloopRingBufferMachine.TestCase
TestRingBuffersOnUvloop.settings = _settings
