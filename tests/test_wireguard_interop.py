"""examples/wireguard against Debian's wireguard-go, in two namespaces over
veth with IPv6 on: handshake known answers, traffic both ways over IPv4 and
IPv6, rekeying, restarts, cookies, packets off the wire replayed, damaged
and forged, and a wg-quick default-route config."""
from __future__ import annotations

import ipaddress
import os
import socket
import struct
import subprocess
import time
from typing import Any, Iterator

import pytest
from pyroute2 import netns as pyroute_netns

from support.wg import (
    A4, A6, B4, B6, INNER, PORT, AiouringWg, Lab, Tap, WireguardGo, config_text, genkey, have_tools, lab, nsrun, ping,
    send_udp, tcp_transfer, wait_ping, wait_until,
)
from wireguard import crypto, noise

pytestmark = pytest.mark.skipif(have_tools() is not None, reason=have_tools() or "")

A_IN4, A_IN6 = INNER["a"]
B_IN4, B_IN6 = INNER["b"]
BAD = ("bad_tag", "replayed", "unknown_index", "expired_keypair", "bad_inner_packet", "disallowed_source", "too_big", "bad_mac1",
       "initiation_invalid", "response_invalid", "cookie_invalid", "internal_error", "truncated", "unknown_type")


def no_bad_drops(counters: dict[str, int]) -> dict[str, int]:
    return {k: counters["drop_" + k] for k in BAD if counters["drop_" + k]}


@pytest.fixture
def net() -> Iterator[Lab]:
    with lab() as names:
        yield names


@pytest.fixture
def keys() -> dict[str, tuple[str, str]]:
    return {"a": genkey(), "b": genkey()}


@pytest.fixture
def procs() -> Iterator[list[AiouringWg | WireguardGo]]:
    started: list[AiouringWg | WireguardGo] = []
    yield started
    for p in reversed(started):
        p.close()


def ours(net: Lab, keys: dict[str, tuple[str, str]], procs: list[AiouringWg | WireguardGo], *, endpoint: str | None = f"{B4}:{PORT}",
         env: dict[str, str] | None = None, allowed: str = f"{B_IN4}/32, {B_IN6}/128",
         extra_peer: dict[str, Any] | None = None, start: bool = True, extra: str = "") -> AiouringWg:
    peer = dict(public=keys["b"][1], endpoint=endpoint, allowed_ips=allowed, **(extra_peer or {}))
    p = AiouringWg(net.a, "a", config_text(keys["a"][0], PORT, [f"{A_IN4}/24", f"{A_IN6}/64"], [peer], extra=extra), env=env)
    procs.append(p)
    return p.start() if start else p


def theirs(net: Lab, keys: dict[str, tuple[str, str]], procs: list[AiouringWg | WireguardGo], *, endpoint: str | None = None, keepalive: int = 0) -> WireguardGo:
    g = WireguardGo(net.b, "b", keys["b"][0])
    procs.append(g)
    return g.start(peers=[dict(public=keys["a"][1], endpoint=endpoint, allowed_ips=f"{A_IN4}/32,{A_IN6}/128", keepalive=keepalive)])


# -- known answers: our handshake code against wireguard-go, message by message ------------------------


def _udp_socket_in(ns: str, port: int) -> socket.socket:
    pyroute_netns.pushns(ns)
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((A4, port))
    finally:
        pyroute_netns.popns()
    s.settimeout(10)
    return s


def _icmp_echo(src: str, dst: str, kind: int, ident: int, seq: int, data: bytes) -> bytes:
    def checksum(b: bytes) -> int:
        if len(b) % 2:
            b += b"\0"
        total: int = sum(struct.unpack(f"!{len(b) // 2}H", b))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    icmp = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + data
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0x4000, 64, 1, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + icmp


def test_known_answers_wireguard_go_initiates_and_our_responder_code_completes_it(net: Lab, keys: dict[str, tuple[str, str]], procs: list[AiouringWg | WireguardGo]) -> None:
    """A bare UDP socket plays our side with examples/wireguard's noise module:
    wireguard-go's initiation must pass our mac1 check and decrypt to its
    static key and a current TAI64N timestamp; our response must be taken;
    its first transport message must decrypt under our derived key to the
    ping it was asked to send, and our sealed echo reply must reach ping."""
    sock = _udp_socket_in(net.a, PORT)
    try:
        theirs(net, keys, procs, endpoint=f"{A4}:{PORT}")
        pinger = subprocess.Popen(["ip", "netns", "exec", net.b, "ping", "-c", "1", "-W", "15", A_IN4], stdout=subprocess.PIPE, text=True)
        initiation, source = sock.recvfrom(2048)
        identity = noise.Identity(crypto.private_from_bytes(crypto.key_from_base64(keys["a"][0])))
        assert len(initiation) == 148 and initiation[:4] == b"\1\0\0\0"
        import hashlib

        mac1_key = hashlib.blake2s(b"mac1----" + identity.public).digest()
        assert initiation[116:132] == hashlib.blake2s(initiation[:116], digest_size=16, key=mac1_key).digest()
        assert noise.check_mac1(identity, initiation) and initiation[132:] == bytes(16)
        preamble = noise.open_initiation(identity, initiation)
        assert preamble.remote_static == crypto.key_from_base64(keys["b"][1])
        handshake = noise.Handshake(identity, preamble.remote_static)
        noise.finish_initiation(handshake, preamble, initiation, now=time.monotonic())
        tai_seconds = struct.unpack("!Q", handshake.last_timestamp[:8])[0] - ((1 << 62) + 10)
        assert abs(tai_seconds - time.time()) < 30
        response = handshake.create_response(local_index=0x01020304, now=time.monotonic())
        send_key, receive_key, initiator = handshake.derive_keys()
        assert not initiator
        sock.sendto(response, source)
        message, _ = sock.recvfrom(2048)
        assert message[:8] == b"\4\0\0\0" + struct.pack("<I", 0x01020304)
        counter = struct.unpack_from("<Q", message, 8)[0]
        packet = crypto.aead_decrypt(receive_key, counter, message[16:], b"")
        assert len(packet) % 16 == 0  # padded
        length = struct.unpack_from("!H", packet, 2)[0]
        request = packet[:length]
        assert (request[9], request[12:16], request[16:20], request[20]) == (1, socket.inet_aton(B_IN4), socket.inet_aton(A_IN4), 8)
        ident, seq = struct.unpack_from("!HH", request, 24)
        reply = _icmp_echo(A_IN4, B_IN4, 0, ident, seq, request[28:])
        reply += bytes(-len(reply) % 16)
        sender = struct.unpack_from("<I", initiation, 4)[0]
        sock.sendto(b"\4\0\0\0" + struct.pack("<IQ", sender, 0) + crypto.aead_encrypt(send_key, 0, reply, b""), source)
        out, _ = pinger.communicate(timeout=20)
        assert "1 received" in out, out
    finally:
        sock.close()


def test_known_answers_our_initiation_is_taken_by_wireguard_go(net: Lab, keys: dict[str, tuple[str, str]], procs: list[AiouringWg | WireguardGo]) -> None:
    """Our initiator code against wireguard-go: the response must carry a mac1
    we verify and complete our handshake; data sealed with our derived keys
    must get an answer sealed with theirs."""
    sock = _udp_socket_in(net.a, PORT)
    try:
        go = theirs(net, keys, procs)
        identity = noise.Identity(crypto.private_from_bytes(crypto.key_from_base64(keys["a"][0])))
        handshake = noise.Handshake(identity, crypto.key_from_base64(keys["b"][1]))
        sock.sendto(handshake.create_initiation(0xA1A2A3A4, now=time.monotonic()), (B4, PORT))
        response, _ = sock.recvfrom(2048)
        assert len(response) == 92 and response[:4] == b"\2\0\0\0"
        assert struct.unpack_from("<I", response, 8)[0] == 0xA1A2A3A4
        assert noise.check_mac1(identity, response)
        handshake.consume_response(response)
        send_key, receive_key, initiator = handshake.derive_keys()
        assert initiator
        their_index = struct.unpack_from("<I", response, 4)[0]
        request = _icmp_echo(A_IN4, B_IN4, 8, 0x4242, 1, b"known answer" * 4)
        request += bytes(-len(request) % 16)
        sock.sendto(b"\4\0\0\0" + struct.pack("<IQ", their_index, 0) + crypto.aead_encrypt(send_key, 0, request, b""), (B4, PORT))
        while True:  # a keepalive may come first
            message, _ = sock.recvfrom(2048)
            assert message[:8] == b"\4\0\0\0" + struct.pack("<I", 0xA1A2A3A4)
            packet = crypto.aead_decrypt(receive_key, struct.unpack_from("<Q", message, 8)[0], message[16:], b"")
            if packet:
                break
        assert packet[20] == 0 and packet[12:16] == socket.inet_aton(B_IN4)  # an echo reply from them
        assert struct.unpack_from("!HH", packet, 24) == (0x4242, 1)
        assert go.latest_handshake() > 0
    finally:
        sock.close()


# -- the program against wireguard-go ----------------------------------------------------------------


def test_we_initiate_then_ping_and_tcp_both_ways_over_ipv4_and_ipv6(net: Lab, keys: dict[str, tuple[str, str]], procs: list[AiouringWg | WireguardGo]) -> None:
    go = theirs(net, keys, procs)
    us = ours(net, keys, procs)
    assert us.public == keys["a"][1]  # our X25519 public key is wg's
    wait_ping(net.a, B_IN4)
    assert "3 received" in ping(net.a, B_IN6).stdout
    assert "3 received" in ping(net.b, A_IN4).stdout
    tcp_transfer(net.a, net.b, B_IN4, 8 << 20)
    tcp_transfer(net.b, net.a, A_IN6, 8 << 20)
    dump = nsrun(net.a, "wg", "show", us.name, "dump").stdout.splitlines()  # through our UAPI socket
    peer_line = dump[1].split("\t")
    assert peer_line[0] == keys["b"][1] and peer_line[2] == f"{B4}:{PORT}"
    assert int(peer_line[4]) > 0 and int(peer_line[5]) > 8 << 20 and int(peer_line[6]) > 8 << 20
    assert go.latest_handshake() > 0
    counters = us.stop()
    assert counters["sent_initiation"] >= 1 and counters["received_initiation"] == 0
    assert counters["received_data"] > 5000 and counters["sent_data"] > 5000
    assert no_bad_drops(counters) == {}


def test_wireguard_go_initiates_over_an_ipv6_underlay(net: Lab, keys: dict[str, tuple[str, str]], procs: list[AiouringWg | WireguardGo]) -> None:
    us = ours(net, keys, procs, endpoint=None)
    with Tap(net.a) as tap:
        go = theirs(net, keys, procs, endpoint=f"[{A6}]:{PORT}")
        wait_ping(net.b, A_IN6)
        initiation = tap.take(lambda d: d.src == B6 and d.payload[:1] == b"\1")[0].payload
    assert "3 received" in ping(net.a, B_IN4).stdout
    tcp_transfer(net.b, net.a, A_IN4, 8 << 20)
    dump = nsrun(net.a, "wg", "show", us.name, "endpoints").stdout.split()
    assert dump[1] == f"[{B6}]:{PORT}"  # learnt from their authenticated packets
    send_udp(net.b, [initiation], (A6, PORT), sport=40001)  # an old initiation again: its timestamp is not new
    counters = us.wait_counters(lambda c: c["drop_initiation_replayed"] == 1, timeout=10)
    assert nsrun(net.a, "wg", "show", us.name, "endpoints").stdout.split()[1] == f"[{B6}]:{PORT}"
    counters = us.stop()
    assert counters["received_initiation"] >= 1 and counters["sent_initiation"] == 0 and counters["sent_response"] == counters["received_initiation"]
    assert no_bad_drops(counters) == {}
    assert go.latest_handshake() > 0


def test_rekey_with_shortened_timers_and_stale_keys_refused(net: Lab, keys: dict[str, tuple[str, str]], procs: list[AiouringWg | WireguardGo]) -> None:
    go = theirs(net, keys, procs)
    us = ours(net, keys, procs, env={"AIOURING_WG_REKEY_AFTER_TIME": "1.5", "AIOURING_WG_REKEY_TIMEOUT": "1"})
    with Tap(net.a) as tap:
        wait_ping(net.a, B_IN4)
        ping(net.a, B_IN4, count=2, interval=0.1)
        old = [d.payload for d in tap.take(lambda d: d.src == B4 and d.payload[:1] == b"\4", count=2)]
        first_handshake = go.latest_handshake()
        # traffic all along, none lost; the initiator (us) rekeys once a keypair is 1.5 s old
        deadline = time.monotonic() + 40
        while us.counters()["handshakes_completed"] < 4:
            assert time.monotonic() < deadline, us.counters()
            out = ping(net.a, B_IN4, count=10, interval=0.1).stdout
            assert " 0% packet loss" in out, out
        wait_until(lambda: go.latest_handshake() > first_handshake, 10, what="wireguard-go to see a new handshake")
        tcp_transfer(net.a, net.b, B_IN6, 4 << 20)
        before = us.counters()
        send_udp(net.b, old, (A4, PORT))  # keys two or more generations old are gone
        after = us.wait_counters(lambda c: c["drop_unknown_index"] >= before["drop_unknown_index"] + 2, timeout=10)
    assert after["received_data"] == before["received_data"]
    assert no_bad_drops(us.stop()).keys() <= {"unknown_index"}


def test_restarting_either_side_recovers(net: Lab, keys: dict[str, tuple[str, str]], procs: list[AiouringWg | WireguardGo]) -> None:
    fast = {"AIOURING_WG_KEEPALIVE_TIMEOUT": "1", "AIOURING_WG_REKEY_TIMEOUT": "1"}
    go = theirs(net, keys, procs)
    us = ours(net, keys, procs, env=fast)
    wait_ping(net.a, B_IN4)
    # wireguard-go restarts: it forgot the session; our data goes unanswered
    # and our new-handshake timer (KEEPALIVE + REKEY_TIMEOUT, shortened) starts over
    go.stop()
    go.start(peers=[dict(public=keys["a"][1], allowed_ips=f"{A_IN4}/32,{A_IN6}/128")])
    wait_ping(net.a, B_IN4, timeout=20)
    # we restart: a new process, a new session on our first packet
    us.stop()
    us.start()
    wait_ping(net.a, B_IN6, timeout=20)
    assert "3 received" in ping(net.b, A_IN4).stdout
    assert no_bad_drops(us.stop()).keys() <= {"unknown_index"}


def test_replayed_damaged_forged_and_stray_packets_are_dropped_and_counted(net: Lab, keys: dict[str, tuple[str, str]], procs: list[AiouringWg | WireguardGo]) -> None:
    go = theirs(net, keys, procs)
    us = ours(net, keys, procs)
    with Tap(net.a) as tap:
        wait_ping(net.a, B_IN4)
        assert "3 received" in ping(net.a, B_IN4).stdout
        genuine = [d.payload for d in tap.take(lambda d: d.src == B4 and d.payload[:1] == b"\4" and len(d.payload) > 32, count=3)][:3]
        response = tap.take(lambda d: d.src == B4 and d.payload[:1] == b"\2")[0].payload
    before = us.counters()
    forged = bytearray(genuine[0])
    forged[-1] ^= 0x80
    stale = genuine[0][:4] + struct.pack("<I", struct.unpack_from("<I", genuine[0], 4)[0] ^ 0xFFFF) + genuine[0][8:]
    bad_mac1 = bytearray(response)
    bad_mac1[70] ^= 1
    expected = {"replayed": 3, "truncated": 2, "bad_tag": 1, "unknown_index": 1, "bad_mac1": 1, "unknown_type": 1}
    # from another port on their host: none of it may move our endpoint
    send_udp(net.b, genuine + [genuine[0][:20], response[:50], bytes(forged), stale, bytes(bad_mac1), b"\x09" + bytes(40)], (A4, PORT), sport=40000)
    after = us.wait_counters(lambda c: all(c["drop_" + k] >= before["drop_" + k] + n for k, n in expected.items()), timeout=10)
    assert {k: after["drop_" + k] - before["drop_" + k] for k in expected} == expected
    assert after["received_data"] == before["received_data"] and after["drop_internal_error"] == 0
    assert nsrun(net.a, "wg", "show", us.name, "endpoints").stdout.split()[1] == f"{B4}:{PORT}"
    assert "3 received" in ping(net.a, B_IN4).stdout  # the tunnel is unharmed


def test_under_load_we_answer_with_a_cookie_and_wireguard_go_retries_with_mac2(net: Lab, keys: dict[str, tuple[str, str]], procs: list[AiouringWg | WireguardGo]) -> None:
    us = ours(net, keys, procs, endpoint=None, env={"AIOURING_WG_UNDER_LOAD": "0"})
    theirs(net, keys, procs, endpoint=f"{A4}:{PORT}")
    wait_ping(net.b, A_IN4, timeout=25)  # wireguard-go retries after its REKEY_TIMEOUT (5 s)
    counters = us.stop()
    assert counters["sent_cookie"] >= 1 and counters["drop_cookie_required"] >= 1
    assert counters["received_initiation"] >= 1 and counters["handshakes_completed"] >= 1
    assert no_bad_drops(counters) == {}


def test_a_wg_quick_full_tunnel_config_works_unchanged(net: Lab, keys: dict[str, tuple[str, str]], procs: list[AiouringWg | WireguardGo]) -> None:
    """AllowedIPs = 0.0.0.0/0, ::/0: wg-quick's policy routing (fwmark on our
    socket, a table of its own, suppress_prefixlength 0 on main); the
    underlay keeps working and the rules go away on exit."""
    theirs(net, keys, procs)
    marker = f"/tmp/aiouring-wg-test-{os.getpid()}"
    hooks = f"DNS = 192.0.2.53\nPostUp = touch {marker}-%i\nPostDown = rm {marker}-%i"
    us = ours(net, keys, procs, allowed="0.0.0.0/0, ::/0", extra=hooks)
    assert os.path.exists(f"{marker}-{us.name}")  # PostUp ran, with %i
    rules = nsrun(net.a, "ip", "rule").stdout
    assert "not from all fwmark 0xca6c lookup 51820" in rules and "suppress_prefixlength 0" in rules
    wait_ping(net.a, B_IN4)
    # the TUN's own IPv6 packets match ::/0 from the first moment: the handshake
    # they start must not be lost while the interface comes up
    assert us.counters()["sent_initiation"] == 1
    assert "3 received" in ping(net.a, B_IN6).stdout
    assert "3 received" in ping(net.a, B4).stdout  # the underlay, outside the tunnel
    assert f"dev {us.name}" in nsrun(net.a, "ip", "route", "get", "10.99.0.1").stdout  # everything else: the tunnel
    us.stop()
    assert not os.path.exists(f"{marker}-{us.name}")  # PostDown ran
    assert "DNS" in us.stderr  # said it does not apply it
    assert "51820" not in nsrun(net.a, "ip", "rule").stdout
    assert "51820" not in nsrun(net.a, "ip", "-6", "rule").stdout


def test_two_wireguard_go_peers_routed_by_allowed_ips_and_held_to_their_sources(net: Lab, keys: dict[str, tuple[str, str]], procs: list[AiouringWg | WireguardGo]) -> None:
    """Two wireguard-go peers in B's namespace (ports 51820 and 51821, inner
    10.60.0.2 and 10.61.0.2): we pick the peer by destination, and a packet
    from peer 1 carrying peer 2's address is dropped as disallowed_source."""
    second = genkey()
    go1 = theirs(net, keys, procs)
    go2 = WireguardGo(net.b, "c", second[0])
    procs.append(go2)
    go2.start(listen_port=PORT + 1, peers=[dict(public=keys["a"][1], allowed_ips=f"{A_IN4}/32")], addresses=["10.61.0.2/32"])
    # B answers from 10.61.0.2 through the second interface only
    nsrun(net.b, "ip", "rule", "add", "from", "10.61.0.2", "table", "100")
    nsrun(net.b, "ip", "route", "add", f"{A_IN4}/32", "dev", go2.name, "table", "100")
    config = config_text(keys["a"][0], PORT, [f"{A_IN4}/24", f"{A_IN6}/64"], [
        dict(public=keys["b"][1], endpoint=f"{B4}:{PORT}", allowed_ips=f"{B_IN4}/32, {B_IN6}/128"),
        dict(public=second[1], endpoint=f"[{B6}]:{PORT + 1}", allowed_ips="10.61.0.0/24"),
    ])
    us = AiouringWg(net.a, "a", config)
    procs.append(us)
    us.start()
    wait_ping(net.a, B_IN4)
    wait_ping(net.a, "10.61.0.2")
    tcp_transfer(net.a, net.b, "10.61.0.2", 4 << 20)
    assert go1.latest_handshake() > 0 and go2.latest_handshake() > 0
    before = us.counters()
    # now B sends from 10.61.0.2 through peer 1: not peer 1's address
    nsrun(net.b, "ip", "rule", "del", "from", "10.61.0.2", "table", "100")
    nsrun(net.b, "ip", "route", "add", f"{A_IN4}/32", "dev", go1.name)
    nsrun(net.b, "ip", "route", "replace", f"{A_IN4}/32", "dev", go1.name, "src", "10.61.0.2")
    go1.set_peer(public=keys["a"][1], allowed_ips=f"{A_IN4}/32,{A_IN6}/128")
    ping(net.b, A_IN4, count=3, interval=0.1, wait=1)
    after = us.wait_counters(lambda c: c["drop_disallowed_source"] >= before["drop_disallowed_source"] + 3, timeout=10)
    assert after["received_data"] == before["received_data"]
