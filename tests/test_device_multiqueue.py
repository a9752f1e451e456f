"""Multi-queue devices: more queues of one interface, the kernel spreading
flows across them, and examples/multiqueue.py answering real pings on each."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from aiouring.device import TunDevice
from support.netns import interface_names
from support.wait import wait_for_condition
from aiouring import Backend

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


async def test_open_queues_gives_fds_on_one_interface(netns: str) -> None:
    queues = TunDevice.open_queues("aiouq0", 3)
    try:
        assert [q.name for q in queues] == ["aiouq0"] * 3
        assert len({q.fileno() for q in queues}) == 3 and all(q.multi_queue for q in queues)
        await queues[0].configure(addresses=["10.71.0.1/24"])
        assert interface_names() & {"aiouq0"}
    finally:
        for q in queues:
            q.close()
    assert "aiouq0" not in interface_names()


async def test_the_kernel_spreads_flows_across_queues(netns: str) -> None:
    queues = TunDevice.open_queues(None, 2)
    try:
        await queues[0].configure(addresses=["10.72.0.1/24"])
        flows = 32
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(flows):
                sock.sendto(b"flow %d" % i, (f"10.72.0.{i + 2}", 9))  # one destination, one flow
        got: list[list[bytes]] = [[], []]

        def drain() -> bool:
            for q, into in zip(queues, got):
                while True:
                    try:
                        packet = os.read(q.fileno(), 65535)
                    except BlockingIOError:
                        break
                    if packet[0] >> 4 == 4:
                        into.append(packet)
            return sum(map(len, got)) == flows

        await wait_for_condition(drain)
        assert all(got), [len(g) for g in got]  # both queues had some
        # and each flow went to one queue only
        seen = [{p[16:20] for p in g} for g in got]
        assert not seen[0] & seen[1]
    finally:
        for q in queues:
            q.close()


async def test_open_queue_refuses_a_single_queue_device_and_bad_counts(netns: str) -> None:
    device = TunDevice.open()
    try:
        with pytest.raises(ValueError, match="multi_queue=True"):
            device.open_queue()
    finally:
        device.close()
    with pytest.raises(ValueError, match="count must be from 1 to 256"):
        TunDevice.open_queues(None, 0)
    with pytest.raises(TypeError, match="multi_queue"):
        TunDevice.open_queues(None, 2, multi_queue=False)
    with pytest.raises(ValueError, match="closed"):
        device.open_queue()


def test_queues_fail_together(netns: str) -> None:
    """A queue that cannot be opened (a single-queue interface has the name)
    leaves nothing open."""
    single = TunDevice.open("aiouq1")
    try:
        with pytest.raises(FileExistsError, match="aiouq1"):
            TunDevice.open_queues("aiouq1", 2)
    finally:
        single.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_example_answers_pings_on_more_than_one_queue(loop: str, backend: Backend, netns: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, os.path.join(EXAMPLES, "multiqueue.py"), "--address", "10.70.0.1/24", "--queues", "2",
         "--loop", loop, "--backend", backend],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("ready") and "2 queues" in line, line + proc.stderr.read()  # type: ignore[union-attr]
        destinations = [f"10.70.0.{i}" for i in range(2, 18)]  # 16 flows: the kernel hashes by address pair
        pings = [subprocess.Popen(["ping", "-c", "2", "-i", "0.2", "-W", "3", d], stdout=subprocess.PIPE, text=True)
                 for d in destinations]
        outputs = [p.communicate(timeout=30)[0] for p in pings]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    for d, p, o in zip(destinations, pings, outputs):
        assert p.returncode == 0 and "2 received" in o, (d, o)
    per_queue = {int(q): int(n) for q, n in re.findall(r"queue (\d+) answered (\d+) echo requests", out)}
    assert set(per_queue) == {0, 1}, out
    assert sum(per_queue.values()) == 2 * len(destinations), out
    assert all(n > 0 for n in per_queue.values()), out  # more than one queue served
