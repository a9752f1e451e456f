"""examples/tunnel.py end to end: two namespaces joined by a veth pair, a tunnel process in each."""
from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from pyroute2 import netns as pyroute_netns

import tunnel  # examples/tunnel.py: its wire format, to craft datagrams
from packets import udp as udp_packet
from support.netns import two_namespaces
from aiouring import Backend
from typing import Iterator

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
KEY = "5a" * 32
A_UNDERLAY, B_UNDERLAY = "192.168.77.1", "192.168.77.2"
A_INNER, B_INNER = "10.50.0.1", "10.50.0.2"


def start_tunnel(ns: str, inner: str, peer: str, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, os.path.join(EXAMPLES, "tunnel.py"),
         "--address", f"{inner}/24", "--listen", "0.0.0.0:51820", "--peer", f"{peer}:51820", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None  # (PIPEs)
    line = proc.stdout.readline()
    assert line.startswith("ready"), line + proc.stderr.read()
    return proc


def parse_counters(out: str) -> dict[str, int]:
    found = re.search(r"counters: (.*)", out)
    assert found is not None, out
    return {k: int(v) for k, v in (item.split("=") for item in found.group(1).split())}


def stop_tunnel(proc: subprocess.Popen[str]) -> dict[str, int]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return parse_counters(out)


def ping(ns: str, target: str, count: int = 3) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", str(count), "-i", "0.2", "-W", "2", target], capture_output=True, text=True, timeout=60)


TCP_SERVER = """
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9000)); s.listen(1); print("listening", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    data = c.recv(65536)
    if not data: break
    h.update(data); n += len(data)
print(n, h.hexdigest(), flush=True)
"""


def tcp_transfer(src_ns: str, dst_ns: str, dst: str, size: int = 4 << 20) -> None:
    server = subprocess.Popen(["ip", "netns", "exec", dst_ns, sys.executable, "-c", TCP_SERVER, dst], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().startswith("listening")
    payload = os.urandom(size)
    pyroute_netns.pushns(src_ns)
    try:
        with socket.create_connection((dst, 9000), timeout=20) as c:
            c.sendall(payload)
    finally:
        pyroute_netns.popns()
    out, _ = server.communicate(timeout=30)
    assert out.split() == [str(size), hashlib.sha256(payload).hexdigest()]


@pytest.fixture
def lab() -> Iterator[tuple[str, str]]:
    with two_namespaces(addresses=(A_UNDERLAY, B_UNDERLAY)) as names:
        yield names


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_ping_and_a_checked_tcp_transfer_through_the_tunnel(lab: tuple[str, str], backend: Backend, loop: str) -> None:
    a, b = lab
    side_a = start_tunnel(a, A_INNER, B_UNDERLAY, "--key", KEY, "--backend", backend, "--loop", loop)
    side_b = start_tunnel(b, B_INNER, A_UNDERLAY, "--key", KEY, "--backend", backend, "--loop", loop)
    try:
        result = ping(a, B_INNER)
        assert "3 received" in result.stdout, result.stdout + result.stderr
        tcp_transfer(a, b, B_INNER)
    finally:
        counters_a, counters_b = stop_tunnel(side_a), stop_tunnel(side_b)
    assert counters_a["rejected"] == counters_b["rejected"] == 0
    assert counters_a["sent"] > 100 and counters_b["received"] > 100


@pytest.mark.parametrize("offload", ["on", "off"])
def test_offloads_on_and_off_carry_a_checked_transfer_and_on_merges_kernel_calls(lab: tuple[str, str], backend: Backend, offload: str) -> None:
    """--offload on: TUN super-packets and UDP GSO/GRO; the 8 MiB TCP
    transfer arrives intact and each side made far fewer kernel calls than it
    moved packets.  --offload off: one call per packet."""
    a, b = lab
    args = ("--key", KEY, "--backend", backend, "--offload", offload)
    side_a = start_tunnel(a, A_INNER, B_UNDERLAY, *args)
    side_b = start_tunnel(b, B_INNER, A_UNDERLAY, *args)
    try:
        tcp_transfer(a, b, B_INNER, size=8 << 20)
    finally:
        counters_a, counters_b = stop_tunnel(side_a), stop_tunnel(side_b)
    assert counters_a["rejected"] == counters_b["rejected"] == 0
    sent, received = counters_a["sent"], counters_b["received"]
    assert sent > 5000 and received > 5000
    if offload == "on":
        # the sender reads super-packets from its TUN and sends runs of datagrams as one;
        # the receiver gets merged datagrams and writes merged segments
        assert counters_a["tun_reads"] < sent // 4 and counters_a["udp_writes"] < sent // 4, counters_a
        assert counters_b["udp_reads"] < received // 4 and counters_b["tun_writes"] < received // 4, counters_b
    else:
        assert counters_a["udp_writes"] >= sent and counters_b["tun_writes"] >= received, (counters_a, counters_b)


@pytest.mark.parametrize("io", ["stdlib-drain", "stdlib-pipes"])
def test_stdlib_plumbings_used_by_the_benchmark_work_too(lab: tuple[str, str], io: str) -> None:
    a, b = lab
    side_a = start_tunnel(a, A_INNER, B_UNDERLAY, "--plain", "--io", io)
    side_b = start_tunnel(b, B_INNER, A_UNDERLAY, "--plain", "--io", io)
    try:
        assert "3 received" in ping(a, B_INNER).stdout
    finally:
        stop_tunnel(side_a)
        stop_tunnel(side_b)


def capture_tunnel_datagram(ns: str, source: str, port: int = 51820, timeout: float = 5) -> bytes:
    """The UDP payload of one datagram from ``source`` to ``port`` seen on veth0 in ``ns``."""
    pyroute_netns.pushns(ns)
    try:
        # ETH_P_ALL: a packet socket bound to one protocol sees only incoming frames
        sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        sniffer.bind(("veth0", 0))
    finally:
        pyroute_netns.popns()
    sniffer.settimeout(timeout)
    with sniffer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = sniffer.recv(65535)
            if frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] == 17 and socket.inet_ntoa(ip[12:16]) == source and struct.unpack_from("!H", ip, ihl + 2)[0] == port:
                return ip[ihl + 8 : struct.unpack_from("!H", ip, 2)[0]]
    raise AssertionError("no tunnel datagram seen")


def send_from(ns: str, payload: bytes, dst: tuple[str, int]) -> None:
    pyroute_netns.pushns(ns)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(payload, dst)
    finally:
        pyroute_netns.popns()


def socket_in(ns: str, family: int, kind: int) -> socket.socket:
    """A socket created inside namespace ``ns`` (it stays there)."""
    pyroute_netns.pushns(ns)
    try:
        return socket.socket(family, kind)
    finally:
        pyroute_netns.popns()


def nothing_arrives(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        sock.recv(65535)
    except socket.timeout:
        return True
    return False


def test_tampered_and_replayed_datagrams_are_rejected(lab: tuple[str, str]) -> None:
    a, b = lab
    side_a = start_tunnel(a, A_INNER, B_UNDERLAY, "--key", KEY)
    side_b = start_tunnel(b, B_INNER, A_UNDERLAY, "--key", KEY)
    try:
        pinger = subprocess.Popen(["ip", "netns", "exec", a, "ping", "-c", "5", "-i", "0.2", B_INNER], stdout=subprocess.DEVNULL)
        genuine = capture_tunnel_datagram(a, source=A_UNDERLAY)
        pinger.wait(timeout=20)
        tampered = bytearray(genuine)
        tampered[-1] ^= 0x01
        send_from(a, bytes(tampered), (B_UNDERLAY, 51820))
        send_from(a, genuine, (B_UNDERLAY, 51820))  # a replay of a datagram B already took
        time.sleep(0.3)
        assert "3 received" in ping(a, B_INNER).stdout  # the tunnel is unharmed
    finally:
        stop_tunnel(side_a)
        counters_b = stop_tunnel(side_b)
    assert counters_b["rejected"] == 1
    assert counters_b["replayed"] == 1


def test_restarting_one_side_recovers(lab: tuple[str, str]) -> None:
    a, b = lab
    side_a = start_tunnel(a, A_INNER, B_UNDERLAY, "--key", KEY)
    side_b = start_tunnel(b, B_INNER, A_UNDERLAY, "--key", KEY)
    try:
        assert "3 received" in ping(a, B_INNER).stdout
        stop_tunnel(side_b)
        assert "0 received" in ping(a, B_INNER, count=2).stdout
        side_b = start_tunnel(b, B_INNER, A_UNDERLAY, "--key", KEY)  # a new salt, counters from 0
        assert "3 received" in ping(a, B_INNER).stdout
    finally:
        counters_a = stop_tunnel(side_a)
        stop_tunnel(side_b)
    assert counters_a["replayed"] == 0 and counters_a["rejected"] == 0


def test_wrong_key_gets_nothing_through(lab: tuple[str, str]) -> None:
    a, b = lab
    side_a = start_tunnel(a, A_INNER, B_UNDERLAY, "--key", KEY)
    side_b = start_tunnel(b, B_INNER, A_UNDERLAY, "--key", "a5" * 32)
    try:
        assert "0 received" in ping(a, B_INNER, count=2).stdout
    finally:
        stop_tunnel(side_a)
        counters_b = stop_tunnel(side_b)
    assert counters_b["rejected"] >= 2 and counters_b["received"] == 0


PLUMBINGS = [("aiouring", "uring"), ("aiouring", "epoll"), ("stdlib-drain", "auto"), ("stdlib-pipes", "auto")]


@pytest.mark.parametrize("io,backend", PLUMBINGS)
def test_a_dead_tun_makes_the_process_say_so_and_exit_non_zero(lab: tuple[str, str], io: str, backend: Backend) -> None:
    """The TUN interface deleted under a running tunnel (its reads fail with
    EBADFD from then on): the process must not go on as a dead tunnel."""
    a, b = lab
    side_a = start_tunnel(a, A_INNER, B_UNDERLAY, "--plain", "--io", io, "--backend", backend, "--name", "aioutun7")
    try:
        subprocess.run(["ip", "netns", "exec", a, "ip", "link", "del", "aioutun7"], check=True)
        out, err = side_a.communicate(timeout=20)  # the deadline: it must exit by itself
    finally:
        if side_a.poll() is None:
            side_a.kill()
            side_a.communicate()
    assert side_a.returncode not in (0, None), err
    assert "TUN" in err and "exiting" in err, err


def test_a_packet_larger_than_the_local_mtu_from_an_authentic_peer_is_dropped_and_counted(lab: tuple[str, str]) -> None:
    """A has --mtu 1480, B 1420: A's 1458-byte packet authenticates at B but
    cannot go into B's TUN; B drops and counts it and stays up."""
    a, b = lab
    side_a = start_tunnel(a, A_INNER, B_UNDERLAY, "--key", KEY, "--mtu", "1480")
    side_b = start_tunnel(b, B_INNER, A_UNDERLAY, "--key", KEY)
    try:
        big = subprocess.run(["ip", "netns", "exec", a, "ping", "-c", "1", "-W", "1", "-s", "1430", "-M", "dont", B_INNER], capture_output=True, text=True, timeout=30)
        assert "0 received" in big.stdout, big.stdout + big.stderr
        assert "3 received" in ping(a, B_INNER).stdout  # the tunnel is still up
    finally:
        stop_tunnel(side_a)
        counters_b = stop_tunnel(side_b)
    assert counters_b["oversize"] == 1


def test_an_oversize_plain_datagram_from_anyone_is_dropped_and_counted(lab: tuple[str, str]) -> None:
    a, b = lab
    side_a = start_tunnel(a, A_INNER, B_UNDERLAY, "--plain")
    side_b = start_tunnel(b, B_INNER, A_UNDERLAY, "--plain")
    try:
        packet = udp_packet(A_INNER, B_INNER, 1000, 2000, b"x" * 1422)  # 1450 bytes: within the receive buffer, above B's MTU
        send_from(a, b"\0" * tunnel.HEADER.size + packet, (B_UNDERLAY, 51820))
        assert "3 received" in ping(a, B_INNER).stdout
    finally:
        stop_tunnel(side_a)
        counters_b = stop_tunnel(side_b)
    assert counters_b["oversize"] == 1


def test_replays_are_refused_whatever_the_salt_history_and_never_roam(lab: tuple[str, str]) -> None:
    """Record one datagram from each of 6 lives of A (each restart is a new
    salt: more than the 4 salts the first design remembered), then replay them
    all to B from another port.  B must refuse and count every one, and keep
    answering A where A is: a roam would send B's replies to the replayer."""
    a, b = lab
    side_b = start_tunnel(b, B_INNER, A_UNDERLAY, "--key", KEY)
    side_a = None
    recorded = []
    try:
        for _ in range(6):
            side_a = start_tunnel(a, A_INNER, B_UNDERLAY, "--key", KEY)
            pinger = subprocess.Popen(["ip", "netns", "exec", a, "ping", "-c", "5", "-i", "0.2", B_INNER], stdout=subprocess.DEVNULL)
            recorded.append(capture_tunnel_datagram(a, source=A_UNDERLAY))
            pinger.wait(timeout=20)
            stop_tunnel(side_a)
            side_a = None
        side_a = start_tunnel(a, A_INNER, B_UNDERLAY, "--key", KEY)
        assert "3 received" in ping(a, B_INNER).stdout
        replayer = socket_in(a, socket.AF_INET, socket.SOCK_DGRAM)
        with replayer:
            for datagram in recorded:
                replayer.sendto(datagram, (B_UNDERLAY, 51820))
            # B takes datagrams in order: once A's ping is answered, B has dealt
            # with every replay.  Replays of echo requests that got through would
            # have been answered, and after a roam the answers go to the replayer.
            assert "3 received" in ping(a, B_INNER).stdout
            assert nothing_arrives(replayer, within=0.5)
    finally:
        if side_a is not None:
            stop_tunnel(side_a)
        counters_b = stop_tunnel(side_b)
    assert counters_b["replayed"] == len(recorded), counters_b
    assert counters_b.get("roamed", 0) == 0


def test_a_side_refuses_its_own_datagrams_sent_back_to_it(lab: tuple[str, str]) -> None:
    """Both directions share the key: B's own datagram, captured on the wire
    and bounced back to B, authenticates.  B must refuse it (and not roam)."""
    a, b = lab
    side_a = start_tunnel(a, A_INNER, B_UNDERLAY, "--key", KEY)
    side_b = start_tunnel(b, B_INNER, A_UNDERLAY, "--key", KEY)
    try:
        pinger = subprocess.Popen(["ip", "netns", "exec", a, "ping", "-c", "5", "-i", "0.2", B_INNER], stdout=subprocess.DEVNULL)
        own = capture_tunnel_datagram(a, source=B_UNDERLAY)  # B's answer, as it arrives at A
        pinger.wait(timeout=20)
        reflector = socket_in(a, socket.AF_INET, socket.SOCK_DGRAM)
        with reflector:
            reflector.sendto(own, (B_UNDERLAY, 51820))
            # B speaks first now: after a roam its packets would go to the reflector
            assert "3 received" in ping(b, A_INNER).stdout
            assert nothing_arrives(reflector, within=0.5)
    finally:
        stop_tunnel(side_a)
        counters_b = stop_tunnel(side_b)
    assert counters_b["reflected"] == 1, counters_b


def pings_within(ns: str, target: str, seconds: float) -> bool:
    """True as soon as one ping gets an answer, False after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if "1 received" in ping(ns, target, count=1).stdout:
            return True
    return False


def hostile_datagrams(plain: bool) -> tuple[list[bytes], int]:
    """Datagrams anyone could send to a tunnel, and how many of them must be
    counted as ``malformed`` whatever happens to the rest."""
    import random

    rng = random.Random(7)
    header = tunnel.HEADER.pack(b"\0\0\0\1", b"salt", time.time_ns())
    # a datagram sealed under the right key (as by a key holder) whose payload is not IP
    forger = tunnel.Sealer(None if plain else bytes.fromhex(KEY), "10.50.0.9/24")
    forger.counter = 1 << 62  # far above any live counter: it must still move nothing
    not_ip = forger.seal(b"\x00" * 40)
    must_be_malformed = [b"", b"\x45", header, not_ip]
    if not plain:
        must_be_malformed.append(header + b"\xaa" * 15)  # a truncated tag, nothing after it
    others = [
        header + b"\xaa" * 16,  # a tag and no payload
        header + os.urandom(60000),  # huge
        os.urandom(1400),
        forger.seal(udp_packet(A_INNER, B_INNER, 1000, 2000, b"y" * 1500)),  # oversize
    ]
    flood = [os.urandom(rng.randrange(0, 1500)) for _ in range(20000)]
    return must_be_malformed + others + flood, len(must_be_malformed)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("plain", [False, True], ids=["encrypted", "plain"])
def test_hostile_datagrams_are_dropped_and_counted_and_the_tunnel_stays_up(lab: tuple[str, str], backend: Backend, loop: str, plain: bool) -> None:
    a, b = lab
    auth = ["--plain"] if plain else ["--key", KEY]
    side_a = start_tunnel(a, A_INNER, B_UNDERLAY, *auth, "--backend", backend, "--loop", loop)
    side_b = start_tunnel(b, B_INNER, A_UNDERLAY, *auth, "--backend", backend, "--loop", loop)
    try:
        assert "3 received" in ping(a, B_INNER).stdout
        datagrams, malformed = hostile_datagrams(plain)
        attacker = socket_in(a, socket.AF_INET, socket.SOCK_DGRAM)
        with attacker:
            for datagram in datagrams:
                try:
                    attacker.sendto(datagram, (B_UNDERLAY, 51820))
                except OSError:  # EMSGSIZE for none here; a full socket buffer drops, as the wire would
                    pass
            # the flood may still fill B's socket buffer (dropping whatever comes,
            # as the wire would): wait until it has drained, then both directions work
            assert pings_within(a, B_INNER, seconds=20)
            assert "3 received" in ping(a, B_INNER).stdout
            assert "3 received" in ping(b, A_INNER).stdout
            assert nothing_arrives(attacker, within=0.5)  # and B never answered the attacker
        assert side_a.poll() is None and side_b.poll() is None
    finally:
        stop_tunnel(side_a)
        counters_b = stop_tunnel(side_b)
    assert counters_b["malformed"] >= malformed, counters_b
    # the oversize packet and the 60,000-byte datagram: refused as too big to
    # deliver (oversize) or too big for the receive buffers (EMSGSIZE), counted either way
    assert counters_b["oversize"] + counters_b.get("udp_EMSGSIZE", 0) >= 2, counters_b
    if not plain:
        assert counters_b["rejected"] > 1000, counters_b  # the flood, short of what the socket buffer dropped


def test_stdlib_drain_takes_queued_datagrams_in_bounded_batches(lab: tuple[str, str]) -> None:
    """--io stdlib-drain is the best stdlib recipe on both fds: one wake-up of
    its UDP socket takes up to 64 queued datagrams (asyncio's endpoint takes
    one per callback).  B is stopped while 100 datagrams queue, then resumed."""
    a, b = lab
    side_a = start_tunnel(a, A_INNER, B_UNDERLAY, "--plain", "--io", "stdlib-drain")
    side_b = start_tunnel(b, B_INNER, A_UNDERLAY, "--plain", "--io", "stdlib-drain")
    try:
        side_b.send_signal(signal.SIGSTOP)
        try:
            for _ in range(100):
                send_from(a, b"\0" * 20, (B_UNDERLAY, 51820))  # malformed: counted, nothing else
        finally:
            side_b.send_signal(signal.SIGCONT)
        assert "3 received" in ping(a, B_INNER).stdout
    finally:
        stop_tunnel(side_a)
        counters_b = stop_tunnel(side_b)
    assert counters_b["malformed"] == 100, counters_b
    assert counters_b["udp_drain_max"] == 64, counters_b
