"""Destination addresses (issue 11, items 5, 10, 11, 19, 20, 27, 28): what
``sendto(data, addr)`` does with every kind of address, judged against
``socket.socket.sendto`` (the oracle for the exception a bad address raises)
and asyncio's own endpoint (the oracle for what reaches ``error_received``).

Everything here runs in a fresh network namespace with only ``lo``: no
datagram to a generated address can leave the machine, and name lookups
that would go to a DNS server fail at once."""
from __future__ import annotations

import array
import asyncio
import socket
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import aiouring
from aiouring import sockaddr
from support.udp import BACKENDS, KINDS, Recorder, factory, receive
from aiouring import Backend
from typing import Iterator

pytestmark = pytest.mark.usefixtures("netns")


class Index:
    """An int-like object (``__index__``) that is not an int."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"Index({self.value})"


# Hostile and odd addresses per family.  The expected outcome of each is not
# written here: it is what socket.sendto does with it, asked at run time.
HOSTILE: dict[int, list[Any]] = {
    socket.AF_INET: [
        "127.0.0.1:5", ("127.0.0.1",), ("127.0.0.1", 5, 0), ("127.0.0.1", 5, 0, 0), ["127.0.0.1", 5], None, 5,
        b"127.0.0.1", (), ("127.0.0.1", -1), ("127.0.0.1", 65536), ("127.0.0.1", 2**31), ("127.0.0.1", 2**64),
        ("127.0.0.1", "5"), ("127.0.0.1", 5.0), ("127.0.0.1", None), ("127.0.0.1", True), ("127.0.0.1", Index(5)),
        (None, 5), (5, 5), (b"127.0.0.1", 5), (bytearray(b"127.0.0.1"), 5), (memoryview(b"127.0.0.1"), 5),
        ("127.0.0.1\x00", 5), (b"127.0.0.1\x00x", 5), ("", 5), ("<broadcast>", 5), ("255.255.255.255", 5),
        ("::1", 5), ("\udcff", 5), ("é.invalid", 5), (b"\xff", 5), ("a" * 64 + ".invalid", 5), ("a..b", 5),
        (".", 5), ("a" * 300, 5), ("127.1", 5), ("0x7f.1", 5), ("1.2.3.4.5", 5), (" 127.0.0.1", 5),
        ("localhost", 5), ("nonexistent.invalid", 5), ("nonexistent.invalid", 70000), ("nonexistent.invalid", 2**40),
        ("127.0.0.1", 0), ("192.0.2.1", 5),
    ],
    socket.AF_INET6: [
        "::1", ("::1",), ("::1", 5, 0, 0, 0), ("::1", 5, -1), ("::1", 5, 2**20), ("::1", 5, 2**32), ("::1", 5, 2**32 + 1),
        ("::1", 5, 0, -1), ("::1", 5, 0, 2**32), ("::1", 5, 0, 2**64 + 3), ("::1", 5, 1.0), ("::1", 5, 0, 1.0),
        ("::1", 5, "0"), ("::1", -1), ("::1", 65536), ("", 5), ("<broadcast>", 5), ("<broadcast>", 70000),
        ("127.0.0.1", 5), ("::ffff:127.0.0.1", 5), ("fe80::1%lo", 5), ("fe80::1%nonexistent", 5), ("::1%1", 5),
        ("localhost", 5), (b"::1", 5), (None, 5), ("::1\x00", 5), ("::1", Index(5), Index(0), Index(0)),
        ("nonexistent.invalid", 5, 2**20), ("2001:db8::1", 5),
    ],
    socket.AF_UNIX: [
        "/nonexistent/x", b"/nonexistent/x", bytearray(b"/nonexistent/x"), memoryview(b"/nonexistent/x"),
        array.array("b", b"/nonexistent"), "\0aiouring-nobody", b"\0aiouring-nobody", "a" * 107, "a" * 108,
        "\0" + "a" * 107, "\0" + "a" * 108, "", b"", None, 5, ("a", 1), "/tmp/\udcff", "/tmp/x\0y", ["a"],
    ],
}


def outcome(call: Any) -> tuple[str, Any]:
    """("ok", None), ("refused", exc) for an error of the conversion (the
    address itself: TypeError, OverflowError, gaierror, an OSError without
    errno), or ("kernel", errno) for an error the kernel gave."""
    try:
        call()
    except OSError as exc:
        if isinstance(exc, socket.gaierror) or exc.errno is None:
            return "refused", exc
        return "kernel", exc.errno
    except Exception as exc:
        return "refused", exc
    return "ok", None


def socket_sendto(family: int, addr: Any) -> tuple[str, Any]:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        return outcome(lambda: s.sendto(b"x", addr))


def same_refusal(theirs: BaseException, ours: BaseException) -> bool:
    if type(theirs) is not type(ours):
        return False
    return not isinstance(theirs, socket.gaierror) or theirs.errno == ours.errno  # type: ignore[attr-defined]  # ours is of their type


@pytest.mark.parametrize(
    "family, addr", [(f, a) for f, addrs in HOSTILE.items() for a in addrs], ids=lambda v: repr(v)[:40]
)
def test_address_conversion_refuses_what_socket_sendto_refuses(family: int, addr: Any) -> None:
    """Items 10 and 20: the same exception type (and gaierror errno) as
    socket.sendto for every address it refuses; no exception where it
    converts the address (whatever the kernel then says of it)."""
    theirs = socket_sendto(family, addr)
    ours = outcome(lambda: sockaddr.to_sockaddr(addr, family))
    if theirs[0] == "refused":
        assert ours[0] == "refused" and same_refusal(theirs[1], ours[1]), (theirs, ours)
    else:
        assert ours == ("ok", None), (theirs, ours)


HOSTS = st.one_of(
    st.sampled_from(["127.0.0.1", "::1", "", "<broadcast>", "localhost", "0.0.0.0", "::", "127.1", "fe80::1%lo",
                     "nonexistent.invalid", "1.2.3.4.5", "a..b", "é", "\udcff", "x\x00y", "255.255.255.255"]),
    st.text(max_size=70),
    st.binary(max_size=20),
    st.builds(bytearray, st.binary(max_size=12)),
    st.none(), st.integers(), st.floats(allow_nan=False),
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.integers(min_value=-2, max_value=70000),
    st.booleans(), st.floats(allow_nan=False), st.text(max_size=3), st.none(), st.builds(Index, st.integers(-5, 2**33)),
)
INET_ADDRESSES = st.one_of(
    st.tuples(HOSTS, NUMBERS),
    st.tuples(HOSTS, NUMBERS, NUMBERS),
    st.tuples(HOSTS, NUMBERS, NUMBERS, NUMBERS),
    st.tuples(HOSTS), st.tuples(HOSTS, NUMBERS, NUMBERS, NUMBERS, NUMBERS),
    st.lists(NUMBERS, max_size=2), HOSTS,
)
UNIX_ADDRESSES = st.one_of(
    st.text(max_size=120), st.binary(max_size=120), st.builds(bytearray, st.binary(max_size=110)),
    st.builds(lambda b: memoryview(b), st.binary(max_size=110)), st.none(), st.integers(), st.tuples(st.text(max_size=5)),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(family=st.sampled_from([socket.AF_INET, socket.AF_INET6]), addr=INET_ADDRESSES)
def test_generated_inet_addresses_are_refused_like_socket_sendto(family: int, addr: Any) -> None:
    """Item 20, generated: (host, port[, flowinfo[, scope_id]]) of every type and size."""
    test_address_conversion_refuses_what_socket_sendto_refuses(family, addr)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(addr=UNIX_ADDRESSES)
def test_generated_unix_addresses_are_refused_like_socket_sendto(addr: Any) -> None:
    test_address_conversion_refuses_what_socket_sendto_refuses(socket.AF_UNIX, addr)


def bound(family: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0) if family == socket.AF_INET else ("::1", 0))
    s.setblocking(False)
    return s


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
async def test_a_bad_address_raises_at_the_call_and_sending_goes_on(backend: Backend, family: int) -> None:
    """Items 5 and 10: on both backends sendto() raises what socket.sendto
    raises for a malformed address, at the call ("127.0.0.1:5",
    ("127.0.0.1",), 4-tuples on AF_INET, ...); an address the conversion
    accepts but the system refuses reaches error_received; and after all of
    them the endpoint still sends (a sentinel arrives)."""
    receiver = bound(family)
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    transport, protocol = await aiouring.create_datagram_endpoint(Recorder, local_addr=(host, 0), backend=backend)
    expected_reports = 0
    try:
        for addr in HOSTILE[family]:
            theirs = socket_sendto(family, addr)
            if theirs[0] == "refused" and not isinstance(theirs[1], OSError):
                with pytest.raises(type(theirs[1])):
                    transport.sendto(b"bad", addr)
            else:
                before = len(protocol.errors)
                transport.sendto(b"bad", addr)
                if theirs[0] == "refused":  # gaierror or OSError: to error_received at the call, as asyncio
                    assert len(protocol.errors) == before + 1 and same_refusal(theirs[1], protocol.errors[-1])
                expected_reports += theirs[0] != "ok"
        transport.sendto(b"sentinel", receiver.getsockname())
        await protocol.wait(expected_reports)
        assert await receive(receiver) == b"sentinel"
        assert not transport.is_closing()
    finally:
        transport.close()
        receiver.close()
    assert await protocol.lost is None


async def test_one_endpoint_s_bad_addresses_never_stop_another_s_sends() -> None:
    """Item 28: on one ring and loop, an endpoint sending to addresses the
    call refuses or the kernel refuses (EACCES, EINVAL, ENETUNREACH) interleaved
    with good ones does not stop the other endpoints: every good datagram of
    both arrives, in order."""
    for backend in BACKENDS:
        rx_t, rx = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend)
        rx_t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        bad_t, bad = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend)
        good_t, good = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend)
        target = rx_t.get_extra_info("sockname")
        kernel_refused = [("<broadcast>", 5), ("127.0.0.1", 0), ("192.0.2.1", 5)]
        for i in range(100):
            for addr in (("127.0.0.1",), "127.0.0.1:5", ("127.0.0.1", 5, 0, 0), ("127.0.0.1", 70000)):
                with pytest.raises((TypeError, OverflowError)):
                    bad_t.sendto(b"never", addr)
            bad_t.sendto(b"refused", kernel_refused[i % 3])
            bad_t.sendto(b"bad %d" % i, target)
            good_t.sendto(b"good %d" % i, target)
            if i % 10 == 9:
                await asyncio.sleep(0)
        await rx.wait(200)
        assert [d for d in rx.payloads if d.startswith(b"good")] == [b"good %d" % i for i in range(100)]
        assert [d for d in rx.payloads if d.startswith(b"bad")] == [b"bad %d" % i for i in range(100)]
        await bad.wait(100)
        assert sorted({type(e).__name__ for e in bad.errors}) == ["OSError", "PermissionError"]
        assert good.errors == []
        for t, p in ((rx_t, rx), (bad_t, bad), (good_t, good)):
            t.close()
            assert await p.lost is None


@pytest.mark.oracle_differs_on_uvloop("refuses a name at the call (ValueError)")
@pytest.mark.parametrize("kind", KINDS)
async def test_a_name_that_does_not_resolve_reaches_error_received_as_the_gaierror(kind: str) -> None:
    """Item 19: as asyncio (whose socket.sendto raises it inside the
    transport), the gaierror itself goes to error_received, on both
    backends, and the endpoint goes on."""
    transport, protocol = await factory(kind)(local_addr=("127.0.0.1", 0))
    receiver = bound(socket.AF_INET)
    try:
        transport.sendto(b"x", ("nonexistent.invalid", 5))
        await protocol.wait(1)
        [exc] = protocol.errors
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            with pytest.raises(socket.gaierror) as theirs:
                s.sendto(b"x", ("nonexistent.invalid", 5))
        assert type(exc) is socket.gaierror and exc.errno == theirs.value.errno
        transport.sendto(b"after", receiver.getsockname())
        assert await receive(receiver) == b"after"
    finally:
        transport.close()
        receiver.close()
    assert await protocol.lost is None


@pytest.mark.oracle_differs_on_uvloop("refuses the empty host at the call")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
async def test_the_empty_host_sends_to_the_wildcard_address_as_asyncio(kind: str, family: int) -> None:
    """Item 27: ("", port) is INADDR_ANY / in6addr_any, which the kernel delivers to this host."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    rx_t, rx = await factory(kind)(local_addr=(host, 0))
    tx_t, tx = await factory(kind)(local_addr=(host, 0))
    port = rx_t.get_extra_info("sockname")[1]
    tx_t.sendto(b"wildcard", ("", port))
    tx_t.sendto(b"bytes wildcard", (b"", port))
    await rx.wait(2)
    assert rx.payloads == [b"wildcard", b"bytes wildcard"] and tx.errors == []
    for t, p in ((rx_t, rx), (tx_t, tx)):
        t.close()
        assert await p.lost is None


@pytest.mark.oracle_differs_on_uvloop("refuses '<broadcast>' at the call")
@pytest.mark.parametrize("kind", KINDS)
async def test_broadcast_without_allow_broadcast_is_a_permission_error(kind: str) -> None:
    """Item 27: ("<broadcast>", port) without allow_broadcast reaches
    error_received as PermissionError (EACCES), as asyncio; the sentinel behind it arrives."""
    rx_t, rx = await factory(kind)(local_addr=("127.0.0.1", 0))
    tx_t, tx = await factory(kind)(local_addr=("127.0.0.1", 0))
    tx_t.sendto(b"everyone", ("<broadcast>", rx_t.get_extra_info("sockname")[1]))
    tx_t.sendto(b"sentinel", rx_t.get_extra_info("sockname"))
    await rx.wait(1)
    await tx.wait(1)
    assert rx.payloads == [b"sentinel"]
    assert [type(e) for e in tx.errors] == [PermissionError]
    for t, p in ((rx_t, rx), (tx_t, tx)):
        t.close()
        assert await p.lost is None


@pytest.fixture
def cache_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(sockaddr, "_CACHE_LIMIT", 64)
    sockaddr._to_cache.clear()
    yield 64
    sockaddr._to_cache.clear()


def test_the_address_cache_is_bounded(cache_limit: int) -> None:
    """Item 11: thousands of distinct destinations never grow the cache past its limit."""
    for port in range(1, 5000):
        sockaddr.to_sockaddr(("127.0.0.1", port), socket.AF_INET)
        sockaddr.to_sockaddr(("::1", port), socket.AF_INET6)
        assert len(sockaddr._to_cache) <= cache_limit


def test_the_address_cache_is_per_family() -> None:
    """Item 11: the same address object means different bytes in each
    family, whichever family converted it first; a cached entry never
    answers for an equal object that socket.sendto would refuse."""
    for first, second in ((socket.AF_INET, socket.AF_INET6), (socket.AF_INET6, socket.AF_INET)):
        sockaddr._to_cache.clear()
        for family in (first, second):
            raw = sockaddr.to_sockaddr(("", 7), family)
            assert int.from_bytes(raw[:2], "little") == family
            assert len(raw) == (16 if family == socket.AF_INET else 28)
    sockaddr.to_sockaddr(("127.0.0.1", 7), socket.AF_INET)
    with pytest.raises(TypeError):  # 7.0 == 7 and hashes alike
        sockaddr.to_sockaddr(("127.0.0.1", 7.0), socket.AF_INET)


@pytest.fixture
def dual_name(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """``dual.test`` resolves to ::1 for AF_INET6 and 127.0.0.1 for AF_INET,
    and ``moving.test`` to whatever ``targets`` says at the time of the lookup
    (/etc/hosts here has no IPv6 name, and names must not be looked up on the network)."""
    real = socket.getaddrinfo
    targets: dict[str, str] = {}

    def getaddrinfo(host: Any, port: Any, family: int = 0, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        flags = args[2] if len(args) > 2 else kwargs.get("flags", 0)  # (type, proto, flags)
        if name in ("dual.test", "moving.test") and flags & socket.AI_NUMERICHOST:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if name == "dual.test":
            return real("::1" if family == socket.AF_INET6 else "127.0.0.1", port, family, *args, **kwargs)
        if name == "moving.test":
            return real(targets["moving.test"], port, family, *args, **kwargs)
        return real(host, port, family, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield targets


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_name_used_from_ipv6_then_ipv4_gets_each_family_s_address(backend: Backend, dual_name: dict[str, str]) -> None:
    """Item 11: a name's resolution is per family; the IPv4 endpoint does not
    get the IPv6 endpoint's sockaddr for the same (name, port)."""
    rx4_t, rx4 = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend)
    port = rx4_t.get_extra_info("sockname")[1]
    try:
        rx6_t, rx6 = await aiouring.create_datagram_endpoint(Recorder, local_addr=("::1", port), backend=backend)
    except OSError:  # the port is taken on ::1: use the one the IPv6 side got
        rx6_t, rx6 = await aiouring.create_datagram_endpoint(Recorder, local_addr=("::1", 0), backend=backend)
        rx4_t.close()
        await rx4.lost
        port = rx6_t.get_extra_info("sockname")[1]
        rx4_t, rx4 = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", port), backend=backend)
    tx6_t, tx6 = await aiouring.create_datagram_endpoint(Recorder, local_addr=("::1", 0), backend=backend)
    tx4_t, tx4 = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend)
    tx6_t.sendto(b"six", ("dual.test", port))
    tx4_t.sendto(b"four", ("dual.test", port))
    await rx6.wait(1)
    await rx4.wait(1)
    assert (rx6.payloads, rx4.payloads, tx6.errors, tx4.errors) == ([b"six"], [b"four"], [], [])
    for t, p in ((rx4_t, rx4), (rx6_t, rx6), (tx6_t, tx6), (tx4_t, tx4)):
        t.close()
        assert await p.lost is None


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_name_is_resolved_at_each_send(backend: Backend, dual_name: dict[str, str]) -> None:
    """Item 11: resolutions are not kept: when a name starts resolving
    elsewhere, the next datagram goes to the new address."""
    a_t, a = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend)
    port = a_t.get_extra_info("sockname")[1]
    b_t, b = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.2", port), backend=backend)
    tx_t, tx = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend)
    dual_name["moving.test"] = "127.0.0.1"
    tx_t.sendto(b"first", ("moving.test", port))
    await a.wait(1)
    dual_name["moving.test"] = "127.0.0.2"
    tx_t.sendto(b"second", ("moving.test", port))
    await b.wait(1)
    assert (a.payloads, b.payloads) == ([b"first"], [b"second"])
    for t, p in ((a_t, a), (b_t, b), (tx_t, tx)):
        t.close()
        assert await p.lost is None
