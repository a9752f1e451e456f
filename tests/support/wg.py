"""WireGuard test helpers: a namespace pair with IPv4 and IPv6 underlay,
wireguard-go and examples/wireguard as processes, a tap on the veth, and the
traffic checks (ping, a sha256-checked TCP transfer)."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import itertools
import os
import queue
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterator, Sequence

from pyroute2 import netns as pyroute_netns

from .netns import two_namespaces

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "wireguard")
WIREGUARD_GO = shutil.which("wireguard-go")
WG = shutil.which("wg")

A4, B4 = "192.168.77.1", "192.168.77.2"
A6, B6 = "fd77::1", "fd77::2"
INNER = {"a": ("10.60.0.1", "fd60::1"), "b": ("10.60.0.2", "fd60::2")}
PORT = 51820
_names = itertools.count()


def have_tools() -> str | None:
    """Why the interop tests cannot run here, or None."""
    if WIREGUARD_GO is None or WG is None:
        return "wireguard-go / wg missing (apt-get install --no-install-recommends wireguard-go wireguard-tools)"
    return None


def ifname(side: str) -> str:
    """A name unique across namespaces (wg's control sockets are shared)."""
    return f"wt{side}{os.getpid() % 100000}{next(_names)}"[:15]


def nsrun(ns: str, *cmd: str, check: bool = True, timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=check, timeout=timeout, **kw)


def genkey() -> tuple[str, str]:
    private = subprocess.run([WG or "wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
    public = subprocess.run([WG or "wg", "pubkey"], input=private, capture_output=True, text=True, check=True).stdout.strip()
    return private, public


@dataclasses.dataclass
class Lab:
    a: str
    b: str

    def ns(self, side: str) -> str:
        return self.a if side == "a" else self.b


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    """Two namespaces over veth, IPv6 on, underlay 192.168.77.1/.2 and fd77::1/::2."""
    kwargs = {"ipv6": True} if "ipv6" in inspect.signature(two_namespaces).parameters else {}
    with two_namespaces(addresses=(A4, B4), **kwargs) as (a, b):
        for ns, address in ((a, A6), (b, B6)):
            # an older two_namespaces turns IPv6 off; these tests want it on everywhere
            nsrun(ns, "sh", "-c", "for f in /proc/sys/net/ipv6/conf/*/disable_ipv6; do echo 0 > $f; done")
            nsrun(ns, "ip", "-6", "addr", "add", f"{address}/64", "dev", "veth0", "nodad")
        yield Lab(a, b)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# -- wireguard-go -------------------------------------------------------------------------


class WireguardGo:
    """wireguard-go in the foreground in one namespace, configured with wg and ip."""

    def __init__(self, ns: str, side: str, private: str, binary: str | None = None) -> None:
        self.ns, self.side, self.private = ns, side, private
        self.name = ifname(side)
        self.binary = binary or WIREGUARD_GO
        self.proc: subprocess.Popen[bytes] | None = None
        self._keyfile = tempfile.NamedTemporaryFile("w", prefix="wgkey", delete=False)
        self._keyfile.write(private)
        self._keyfile.close()

    def start(self, listen_port: int = PORT, peers: Sequence[dict[str, Any]] = (), mtu: int = 1420, addresses: list[str] | None = None) -> "WireguardGo":
        """Runs it, configures it, gives the interface ``addresses`` (default:
        this side's inner addresses, /24 and /64) and brings it up."""
        env = dict(os.environ, WG_PROCESS_FOREGROUND="1", LOG_LEVEL=os.environ.get("WG_TEST_LOG_LEVEL", "error"))
        log = open(os.environ["WG_TEST_LOG"], "a") if os.environ.get("WG_TEST_LOG") else subprocess.DEVNULL
        assert self.binary is not None, "wireguard-go is not installed"
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, self.binary, "-f", self.name], env=env,
                                     stdout=log, stderr=log)
        if not isinstance(log, int):  # (not subprocess.DEVNULL)
            log.close()
        wait_until(lambda: os.path.exists(f"/var/run/wireguard/{self.name}.sock")
                   and nsrun(self.ns, "ip", "link", "show", self.name, check=False).returncode == 0, 10, what="wireguard-go's interface")
        self.wg("set", self.name, "private-key", self._keyfile.name, "listen-port", str(listen_port))
        for peer in peers:
            self.set_peer(**peer)
        if addresses is None:
            inner4, inner6 = INNER[self.side]
            addresses = [f"{inner4}/24", f"{inner6}/64"]
        for address in addresses:
            nsrun(self.ns, "ip", "addr", "add", address, "dev", self.name, *(["nodad"] if ":" in address else []))
        nsrun(self.ns, "ip", "link", "set", self.name, "mtu", str(mtu), "up")
        return self

    def set_peer(self, public: str, endpoint: str | None = None, allowed_ips: str = "", keepalive: int = 0, psk: str | None = None) -> None:
        args = ["set", self.name, "peer", public, "allowed-ips", allowed_ips, "persistent-keepalive", str(keepalive or "off")]
        if endpoint:
            args += ["endpoint", endpoint]
        if psk:
            path = self._keyfile.name + ".psk"
            with open(path, "w") as f:
                f.write(psk)
            args += ["preshared-key", path]
        self.wg(*args)

    def wg(self, *args: str) -> str:
        return nsrun(self.ns, WG or "wg", *args).stdout

    def latest_handshake(self) -> int:
        """The latest handshake time (Unix seconds) with the one peer, 0 for none."""
        out = self.wg("show", self.name, "latest-handshakes").split()
        return int(out[1]) if len(out) >= 2 else 0

    def transfer(self) -> tuple[int, int]:
        out = self.wg("show", self.name, "transfer").split()
        return int(out[1]), int(out[2])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/var/run/wireguard/{self.name}.sock")

    def close(self) -> None:
        self.stop()
        for path in (self._keyfile.name, self._keyfile.name + ".psk"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


# -- our peer -------------------------------------------------------------------------------


def config_text(private: str, listen_port: int | None, addresses: list[str], peers: Sequence[dict[str, Any]], mtu: int | None = None, extra: str = "") -> str:
    lines = ["[Interface]", f"PrivateKey = {private}"]
    if listen_port is not None:
        lines.append(f"ListenPort = {listen_port}")
    if addresses:
        lines.append("Address = " + ", ".join(addresses))
    if mtu:
        lines.append(f"MTU = {mtu}")
    if extra:
        lines.append(extra)
    for peer in peers:
        lines += ["", "[Peer]", f"PublicKey = {peer['public']}"]
        if peer.get("psk"):
            lines.append(f"PresharedKey = {peer['psk']}")
        if peer.get("endpoint"):
            lines.append(f"Endpoint = {peer['endpoint']}")
        if peer.get("allowed_ips"):
            lines.append(f"AllowedIPs = {peer['allowed_ips']}")
        if peer.get("keepalive"):
            lines.append(f"PersistentKeepalive = {peer['keepalive']}")
    return "\n".join(lines) + "\n"


class AiouringWg:
    """examples/wireguard in one namespace; stdout lines collected by a thread."""

    def __init__(self, ns: str, side: str, config: str, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.ns, self.side, self.config, self.env, self.args = ns, side, config, env or {}, args
        self.name = ifname(side)
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str] = queue.Queue()
        self.ready_line = ""
        self.stderr = ""
        self._conf = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
        self._conf.write(config)
        self._conf.close()
        self.public = ""

    def start(self, timeout: float = 20) -> "AiouringWg":
        env = dict(os.environ, **self.env)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, EXAMPLE, self._conf.name, "--interface", self.name, *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.lines = queue.Queue()
        self._err: list[str] = []
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True),
                         threading.Thread(target=self._pump_err, args=(self.proc.stderr, self._err), daemon=True)]
        for t in self._threads:
            t.start()
        line = self._next_line(lambda l: l.startswith("ready"), timeout)
        self.ready_line = line
        self.public = dict(item.split("=", 1) for item in line.split()[2:] if "=" in item)["public_key"]
        return self

    @staticmethod
    def _pump(stream: Any, out: "queue.Queue[str]") -> None:
        for line in stream:
            out.put(line.rstrip("\n"))
        out.put("")  # EOF marker

    @staticmethod
    def _pump_err(stream: Any, out: list[str]) -> None:
        for line in stream:
            out.append(line)

    def _next_line(self, match: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching line from {self.name} in {timeout} s; stderr: {''.join(self._err)[-3000:]}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line == "" and self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}); stderr: {''.join(self._err)[-3000:]}")
            if match(line):
                return line

    def counters(self, timeout: float = 10) -> dict[str, int]:
        assert self.proc is not None and self.proc.poll() is None, "not running"
        self.proc.send_signal(signal.SIGUSR1)
        return parse_counters(self._next_line(lambda l: l.startswith("counters:"), timeout))

    def wait_counters(self, predicate: Callable[[dict[str, int]], bool], timeout: float, what: str = "counters") -> dict[str, int]:
        last: dict[str, int] = {}

        def check() -> bool:
            nonlocal last
            last = self.counters()
            return predicate(last)

        try:
            wait_until(check, timeout, interval=0.1, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last counters: {last}") from None
        return last

    def stop(self, timeout: float = 20, sig: int = signal.SIGTERM) -> dict[str, int]:
        """SIGTERM (or ``sig``); the final counters (it must exit with status 0)."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not stop on {signal.Signals(sig).name}")
        lines = []
        while True:
            try:
                line = self.lines.get(timeout=5)
            except queue.Empty:
                break
            if line == "":
                break
            lines.append(line)
        rc = self.proc.returncode
        self._reap()
        self.stderr = "".join(self._err)
        assert rc == 0, f"exit status {rc}; stderr: {self.stderr[-3000:]}"
        final = [l for l in lines if l.startswith("counters:")]
        assert final, f"no counters printed; stdout: {lines}; stderr: {self.stderr[-2000:]}"
        return parse_counters(final[-1])

    def _reap(self) -> None:
        for t in self._threads:
            t.join(timeout=5)
        if self.proc is not None:
            assert self.proc.stdout is not None and self.proc.stderr is not None  # (PIPEs)
            self.proc.stdout.close()
            self.proc.stderr.close()
        self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reap()
        for path in (self._conf.name, f"/var/run/wireguard/{self.name}.sock"):  # the socket outlives a SIGKILL
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def parse_counters(line: str) -> dict[str, int]:
    return {k: int(v) for k, v in (item.split("=", 1) for item in line.split()[1:])}


# -- traffic ----------------------------------------------------------------------------------


def ping(ns: str, target: str, count: int = 3, interval: float = 0.2, wait: float = 2) -> subprocess.CompletedProcess[str]:
    return nsrun(ns, "ping", "-c", str(count), "-i", str(interval), "-W", str(wait), target, check=False, timeout=count * (interval + wait) + 10)


def wait_ping(ns: str, target: str, timeout: float = 15) -> None:
    """One ping at a time until one is answered (the first may wait for a handshake)."""
    wait_until(lambda: ping(ns, target, count=1, wait=1).returncode == 0, timeout, interval=0, what=f"a ping to {target} from {ns}")


TCP_SERVER = """
import hashlib, socket, sys
s = socket.create_server((sys.argv[1], 9000), family=socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
print("listening", flush=True)
s.settimeout(30)
c, _ = s.accept(); c.settimeout(30); h = hashlib.sha256(); n = 0
while True:
    data = c.recv(1 << 16)
    if not data: break
    h.update(data); n += len(data)
print(n, h.hexdigest(), flush=True)
"""


def tcp_transfer(src_ns: str, dst_ns: str, dst: str, size: int = 8 << 20) -> None:
    """``size`` random bytes over TCP from src_ns to dst:9000; the receiver's sha256 must match."""
    server = subprocess.Popen(["ip", "netns", "exec", dst_ns, sys.executable, "-c", TCP_SERVER, dst], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().startswith("listening")
        payload = os.urandom(size)
        pyroute_netns.pushns(src_ns)
        try:
            with socket.create_connection((dst, 9000), timeout=30) as c:
                c.sendall(payload)
        finally:
            pyroute_netns.popns()
        out, _ = server.communicate(timeout=60)
        assert out.split() == [str(size), hashlib.sha256(payload).hexdigest()], out
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


# -- the wire ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Datagram:
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


class Tap:
    """Every UDP datagram crossing veth0 in ``ns`` (both directions), from the
    moment it is opened; ``take`` returns those that match."""

    def __init__(self, ns: str, device: str = "veth0") -> None:
        pyroute_netns.pushns(ns)
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
            self.sock.bind((device, 0))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        finally:
            pyroute_netns.popns()
        self.sock.setblocking(False)
        self.seen: list[Datagram] = []

    def _drain(self) -> None:
        while True:
            try:
                frame = self.sock.recv(65535)
            except BlockingIOError:
                return
            d = _parse_frame(frame)
            if d is not None:
                self.seen.append(d)

    def take(self, match: Callable[[Datagram], bool], count: int = 1, timeout: float = 10) -> list[Datagram]:
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            found = [d for d in self.seen if match(d)]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"saw {len(found)} of {count} matching datagrams in {timeout} s")
            select.select([self.sock], [], [], min(remaining, 0.1))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Tap":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _parse_frame(frame: bytes) -> Datagram | None:
    ethertype = frame[12:14]
    ip = frame[14:]
    if ethertype == b"\x08\x00" and len(ip) >= 28 and ip[9] == 17:
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        sport, dport = struct.unpack_from("!HH", ip, ihl)
        return Datagram(socket.inet_ntoa(ip[12:16]), sport, socket.inet_ntoa(ip[16:20]), dport, ip[ihl + 8 : total])
    if ethertype == b"\x86\xdd" and len(ip) >= 48 and ip[6] == 17:
        length = struct.unpack_from("!H", ip, 4)[0]
        sport, dport = struct.unpack_from("!HH", ip, 40)
        return Datagram(socket.inet_ntop(socket.AF_INET6, ip[8:24]), sport, socket.inet_ntop(socket.AF_INET6, ip[24:40]), dport, ip[48 : 40 + length])
    return None


def send_udp(ns: str, payloads: list[bytes], dst: tuple[str, int], sport: int = 0) -> None:
    """Sends datagrams from ``ns`` (from ``sport`` when given)."""
    family = socket.AF_INET6 if ":" in dst[0] else socket.AF_INET
    pyroute_netns.pushns(ns)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            if sport:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", sport))
            for payload in payloads:
                s.sendto(payload, dst)
    finally:
        pyroute_netns.popns()
