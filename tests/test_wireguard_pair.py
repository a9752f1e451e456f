"""Two examples/wireguard peers talking to each other, in two namespaces over
veth with IPv6 on: traffic both ways, PersistentKeepalive, a cookie consumed
by our own initiator, restarts, SIGTERM while traffic flows."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

from support.wg import A4, A6, B4, B6, INNER, PORT, AiouringWg, Lab, config_text, genkey, have_tools, lab, ping, tcp_transfer, wait_ping
from aiouring import Backend
from typing import Iterator

pytestmark = pytest.mark.skipif(have_tools() is not None, reason=have_tools() or "")

A_IN4, A_IN6 = INNER["a"]
B_IN4, B_IN6 = INNER["b"]


@pytest.fixture
def net() -> Iterator[Lab]:
    with lab() as names:
        yield names


@pytest.fixture
def procs() -> Iterator[list[AiouringWg]]:
    started: list[AiouringWg] = []
    yield started
    for p in reversed(started):
        p.close()


def peer(ns: str, side: str, keys: dict[str, tuple[str, str]], procs: list[AiouringWg], *, endpoint: str | None = None,
         keepalive: int = 0, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> AiouringWg:
    other = "b" if side == "a" else "a"
    o4, o6 = INNER[other]
    s4, s6 = INNER[side]
    p = AiouringWg(ns, side, config_text(keys[side][0], PORT, [f"{s4}/24", f"{s6}/64"],
                                         [dict(public=keys[other][1], endpoint=endpoint, allowed_ips=f"{o4}/32, {o6}/128", keepalive=keepalive)]),
                   env=env, args=args)
    procs.append(p)
    return p.start()


@pytest.mark.parametrize("loop, backend", [("asyncio", "uring"), ("uvloop", "uring"), ("asyncio", "epoll")])
def test_two_aiouring_peers_carry_ping_and_tcp_over_ipv4_and_ipv6(net: Lab, procs: list[AiouringWg], loop: str, backend: Backend) -> None:
    keys = {"a": genkey(), "b": genkey()}
    args = ("--loop", loop, "--backend", backend)
    a = peer(net.a, "a", keys, procs, endpoint=f"[{B6}]:{PORT}", args=args)
    b = peer(net.b, "b", keys, procs, endpoint=f"{A4}:{PORT}", args=args)
    assert a.ready_line.endswith(f"backend={backend}")
    wait_ping(net.a, B_IN6)
    assert "3 received" in ping(net.b, A_IN4).stdout
    tcp_transfer(net.a, net.b, B_IN4, 16 << 20)
    tcp_transfer(net.b, net.a, A_IN6, 8 << 20)
    ca, cb = a.stop(), b.stop()
    for c in (ca, cb):
        assert c["drop_bad_tag"] == c["drop_replayed"] == c["drop_internal_error"] == c["drop_disallowed_source"] == 0
    assert ca["sent_data"] > 10000 and cb["received_data"] > 10000


def test_persistent_keepalive_brings_the_session_up_unasked(net: Lab, procs: list[AiouringWg]) -> None:
    keys = {"a": genkey(), "b": genkey()}
    b = peer(net.b, "b", keys, procs)
    a = peer(net.a, "a", keys, procs, endpoint=f"{B4}:{PORT}", keepalive=1)
    b.wait_counters(lambda c: c["received_keepalive"] >= 2 and c["handshakes_completed"] >= 1, timeout=15, what="keepalives")
    assert a.counters()["sent_initiation"] >= 1
    wait_ping(net.b, A_IN4)  # b learnt a's endpoint from it
    assert a.stop(sig=signal.SIGINT)["sent_keepalive"] >= 2  # Ctrl-C stops it cleanly too
    assert not os.path.exists(f"/var/run/wireguard/{a.name}.sock")


def test_our_initiator_takes_a_cookie_from_our_responder_under_load(net: Lab, procs: list[AiouringWg]) -> None:
    keys = {"a": genkey(), "b": genkey()}
    b = peer(net.b, "b", keys, procs, env={"AIOURING_WG_UNDER_LOAD": "0"})
    a = peer(net.a, "a", keys, procs, endpoint=f"{B4}:{PORT}", env={"AIOURING_WG_REKEY_TIMEOUT": "0.5"})
    wait_ping(net.a, B_IN4, timeout=20)
    ca, cb = a.stop(), b.stop()
    assert cb["sent_cookie"] >= 1 and cb["drop_cookie_required"] >= 1
    assert ca["received_cookie"] >= 1 and ca["drop_cookie_invalid"] == 0
    assert cb["handshakes_completed"] >= 1


def test_restarts_and_sigterm_under_traffic(net: Lab, procs: list[AiouringWg]) -> None:
    keys = {"a": genkey(), "b": genkey()}
    fast = {"AIOURING_WG_KEEPALIVE_TIMEOUT": "1", "AIOURING_WG_REKEY_TIMEOUT": "1"}
    a = peer(net.a, "a", keys, procs, endpoint=f"{B4}:{PORT}", env=fast)
    b = peer(net.b, "b", keys, procs, endpoint=f"{A4}:{PORT}", env=fast)
    wait_ping(net.a, B_IN4)
    flood = subprocess.Popen(["ip", "netns", "exec", net.a, "ping", "-f", "-c", "20000", "-s", "1300", B_IN4], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        b.stop()  # while packets are arriving: it must still exit cleanly with its counters
    finally:
        flood.kill()
        flood.wait()
    b.start()
    wait_ping(net.b, A_IN6, timeout=20)
    a.stop()
    a.start()
    wait_ping(net.a, B_IN4, timeout=20)
    wait_ping(net.b, A_IN4, timeout=20)
