"""Where io_uring cannot be set up, aiouring says why and runs on the epoll backend."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from support.netns import sysctl
from typing import Any

HERE = os.path.dirname(__file__)

SNIPPET = textwrap.dedent(
    """
    import asyncio, json, logging, socket, sys
    import aiouring
    from packets import udp_payload

    records = []
    logging.getLogger("aiouring").addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r.getMessage())})())

    async def main():
        out = {"probe": str(aiouring.probe()), "io_uring": aiouring.probe().io_uring, "reason": aiouring.probe().reason}
        try:
            aiouring.Ring()
        except aiouring.UnsupportedError as exc:
            out["ring_error"] = [type(exc).__name__, exc.errno, exc.reason]
        tun = await aiouring.open_tun(addresses=["10.2.0.1/24"])
        out["backend"] = tun.get_extra_info("backend")
        out["read_mode"] = tun.get_extra_info("read_mode")
        out["backend_reason"] = tun.get_extra_info("backend_reason")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(b"fallback works", ("10.2.0.2", 9))
        packet = await asyncio.wait_for(tun.read(), 5)
        while packet[0] >> 4 != 4:  # the kernel's own IPv6 packets
            packet = await asyncio.wait_for(tun.read(), 5)
        out["payload"] = udp_payload(packet).decode()
        sock.close()
        await tun.aclose()
        out["log"] = records
        print(json.dumps(out))

    if LOOP == "uvloop":
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
    """
)


def run_without_io_uring(loop: str, env_extra: dict[str, str] | None = None, seccomp: bool = True) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.path.join(HERE, "..", "examples")]))
    cmd = [sys.executable, "-m", "support.sandbox", loop] if seccomp else [sys.executable, "-c", "import sys; LOOP=sys.argv[1]; exec(sys.stdin.read())", loop]
    proc = subprocess.run(cmd, input=SNIPPET, capture_output=True, text=True, env=env, timeout=60, cwd=HERE)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_seccomp_refusal_falls_back_to_epoll_and_says_why(loop: str, netns: str) -> None:
    out = run_without_io_uring(loop)
    assert out["io_uring"] is False
    assert "EPERM" in out["reason"] and "seccomp" in out["reason"]
    assert out["ring_error"][0] == "UnsupportedError" and out["ring_error"][1] == 1
    assert out["backend"] == "epoll" and out["read_mode"] == "readiness"
    assert out["payload"] == "fallback works"
    assert out["backend_reason"].startswith("io_uring unavailable") and "seccomp" in out["backend_reason"]
    assert any("TUN endpoints use the epoll backend (io_uring unavailable" in line for line in out["log"])
    assert "io_uring unavailable" in out["probe"]


def test_disabled_sysctl_is_reported_and_restored(netns: str) -> None:
    with open("/proc/sys/kernel/io_uring_disabled") as f:
        saved = f.read().strip()
    try:
        sysctl("kernel/io_uring_disabled", "2")
        out = run_without_io_uring("asyncio", seccomp=False)
    finally:
        sysctl("kernel/io_uring_disabled", saved)
    assert out["io_uring"] is False
    assert "kernel.io_uring_disabled=2" in out["reason"]
    assert out["backend"] == "epoll"
    assert out["payload"] == "fallback works"
