"""The pytest plugin, used the way a VPN's own test suite would use it."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from packets import echo_reply, ipv4, PROTO_ICMP
from pathlib import Path
from aiouring.testing import FakeRing, FakeTun


async def test_my_vpn_answers_ping(fake_tun: FakeTun) -> None:
    """A user's test: their responder logic on a fake TUN, no root, no io_uring."""
    tun, peer = fake_tun.tun, fake_tun.peer
    request = ipv4("10.0.0.2", "10.0.0.1", PROTO_ICMP, b"\x08\x00\xf7\xff\x00\x00\x00\x00")
    peer.send(request)
    packet = await tun.read()
    answer = echo_reply(packet)
    assert answer is not None  # it was an echo request
    await tun.write(answer)
    reply = await peer.receive()
    assert reply[20] == 0 and reply[12:16] == request[16:20]


async def test_fake_ring_fixture_is_a_working_ring(fake_ring: FakeRing) -> None:
    assert await fake_ring.nop() == 0


def test_plugin_works_in_a_separate_suite_without_privileges_or_io_uring(tmp_path: Path) -> None:
    from support.sandbox import unprivileged_no_uring

    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.asyncio
            async def test_echo(fake_tun):
                fake_tun.peer.send(b"\\x45 hello")
                packet = await fake_tun.tun.read()
                await fake_tun.tun.write(packet)
                assert await fake_tun.peer.receive() == b"\\x45 hello"
            """
        )
    )
    (tmp_path / "test_no_privilege.py").write_text(
        textwrap.dedent(
            """
            import pytest, aiouring

            def test_this_suite_really_runs_unprivileged():
                assert not aiouring.probe().io_uring
                with pytest.raises(PermissionError, match="CAP_NET_ADMIN"):
                    aiouring.TunDevice.open()
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = os.path.dirname(__file__)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=strict", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, preexec_fn=unprivileged_no_uring, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
