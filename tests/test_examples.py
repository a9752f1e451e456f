"""The examples, run as a user would run them, against real tools in a namespace."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest
from aiouring import Backend

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def start(script: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, os.path.join(EXAMPLES, script), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None  # (PIPEs)
    line = proc.stdout.readline()
    assert line.startswith("ready"), line + proc.stderr.read()
    return proc


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return out


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_real_ping_is_answered_through_the_responder(loop: str, backend: Backend, netns: str) -> None:
    proc = start("ping_responder.py", "--address", "10.7.0.1/24", "--backend", backend, "--loop", loop)
    try:
        ping = subprocess.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.7.0.5"], capture_output=True, text=True, timeout=30)
    finally:
        out = stop(proc)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "3 received" in ping.stdout
    answered = re.search(r"answered (\d+) echo requests", out)
    assert answered is not None and answered.group(1) == "3", out


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_reflector_sends_datagrams_back(loop: str, backend: Backend, netns: str) -> None:
    proc = start("reflector.py", "--address", "10.8.0.1/24", "--backend", backend, "--loop", loop)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.bind(("10.8.0.1", 7))
            for i in range(20):
                sock.sendto(b"mirror %d" % i, ("10.8.0.9", 7))
                data, addr = sock.recvfrom(100)
                assert (data, addr) == (b"mirror %d" % i, ("10.8.0.9", 7))
    finally:
        out = stop(proc)
    assert "reflected 20 packets" in out
