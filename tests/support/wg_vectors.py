"""Records known-answer vectors for examples/wireguard's handshake from a
live wireguard-go (Debian's), into tests/wireguard_vectors.json:

    .venv/bin/python tests/support/wg_vectors.py      # as root

With fixed static keys and a fixed initiator ephemeral key, our initiation
goes to wireguard-go; its response, its answer to an ICMP echo request we
seal with the derived keys, and (after a restart) an initiation of its own
are recorded.  tests/test_wireguard_protocol.py replays them offline."""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time

sys.path[:0] = [os.path.join(os.path.dirname(__file__), ".."), os.path.join(os.path.dirname(__file__), "..", "..", "examples")]

from pyroute2 import netns as pyroute_netns  # noqa: E402

from support.wg import A4, B4, INNER, PORT, WireguardGo, lab  # noqa: E402
from wireguard import crypto, noise  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "wireguard_vectors.json")


def icmp_echo_request(src: str, dst: str, ident: int, seq: int, data: bytes) -> bytes:
    def checksum(b: bytes) -> int:
        b += b"\0" * (len(b) % 2)
        total: int = sum(struct.unpack(f"!{len(b) // 2}H", b))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0x4000, 64, 1, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + icmp


def main() -> None:
    ours, theirs, ephemeral = (crypto.private_bytes(crypto.generate_private()) for _ in range(3))
    wall_ns = time.time_ns()
    with lab() as net:
        pyroute_netns.pushns(net.a)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((A4, PORT))
        finally:
            pyroute_netns.popns()
        sock.settimeout(10)
        go = WireguardGo(net.b, "b", crypto.key_to_base64(theirs))
        try:
            peer = dict(public=crypto.key_to_base64(crypto.public_key(crypto.private_from_bytes(ours))),
                        allowed_ips=f"{INNER['a'][0]}/32", endpoint=f"{A4}:{PORT}")
            go.start(peers=[peer])
            identity = noise.Identity(crypto.private_from_bytes(ours))
            hs = noise.Handshake(identity, crypto.public_key(crypto.private_from_bytes(theirs)))
            initiation = hs.create_initiation(0x11223344, now=0.0, wall_ns=wall_ns, ephemeral=crypto.private_from_bytes(ephemeral))
            sock.sendto(initiation, (B4, PORT))
            response, _ = sock.recvfrom(2048)
            hs.consume_response(response)
            send_key, receive_key, _ = hs.derive_keys()
            their_index = struct.unpack_from("<I", response, 4)[0]
            request = icmp_echo_request(INNER["a"][0], INNER["b"][0], 0x77, 1, b"wireguard known answer")
            request += bytes(-len(request) % 16)
            data = b"\4\0\0\0" + struct.pack("<IQ", their_index, 0) + crypto.aead_encrypt(send_key, 0, request, b"")
            sock.sendto(data, (B4, PORT))
            while True:
                answer, _ = sock.recvfrom(2048)
                if answer[0] == 4 and len(answer) > 32:
                    break
            go.stop()
            go.start(peers=[peer])
            subprocess.Popen(["ip", "netns", "exec", net.b, "ping", "-c", "1", "-W", "3", INNER["a"][0]], stdout=subprocess.DEVNULL).wait()
            while True:
                their_initiation, _ = sock.recvfrom(2048)
                if their_initiation[0] == 1:
                    break
        finally:
            go.close()
            sock.close()
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "wireguard-go"], capture_output=True, text=True).stdout
    vectors = {
        "recorded_with": f"Debian wireguard-go {version}",
        "our_private": ours.hex(), "their_private": theirs.hex(), "our_ephemeral": ephemeral.hex(), "wall_ns": wall_ns,
        "our_index": 0x11223344, "initiation": initiation.hex(), "response": response.hex(),
        "request": request.hex(), "request_message": data.hex(), "answer": answer.hex(), "their_initiation": their_initiation.hex(),
    }
    with open(OUT, "w") as f:
        json.dump(vectors, f, indent=1)
    print("wrote", os.path.abspath(OUT))


if __name__ == "__main__":
    main()
