"""Packet I/O on readiness (epoll): bounded drains of read()/recvmsg() on each
wake-up, and batches of write()/sendmsg() at the flush (see
``aiouring.packet_io`` for the contract)."""
from __future__ import annotations

import errno
from array import array
from typing import Any

from ._native import BR_GRO, BR_VNET, EV_GRO_REFUSED, EV_GSO_REFUSED, EV_GSO_TOO_BIG, KIND_DATAGRAM, SyscallBatch
from ._readiness import ReadinessEngine
from .errors import oserror
from .packet_io import FATAL_RECEIVE_ERRNOS, OnDatagrams, OnError, OnPackets, OnProgress, OnStopped, SinkBase
from .sockaddr import from_sockaddr

__all__ = ["ReadinessDatagramSource", "ReadinessPacketSource", "ReadinessSink"]


class ReadinessPacketSource:
    """Drains up to ``limit`` packets per wake-up with one native call."""

    mode = "readiness"
    _nested = False  # see ReadinessEngine: sockets are watched through the engine's epoll

    def __init__(self, engine: ReadinessEngine, batch: SyscallBatch, fd: int, bufsize: int, on_packets: Any, on_stopped: OnStopped, limit: int, split: bool = False) -> None:
        self._engine = engine
        self._kind = (BR_GRO if self._nested else BR_VNET) if split else 0
        self.reads = 0  # reads that carried data
        self._syscalls = batch
        self.fd = fd
        self._bufsize = bufsize
        self._on_packets = on_packets
        self._on_stopped = on_stopped
        self._limit = limit
        self._stopped = False
        engine.watch(self, fd, self._drain, nested=self._nested)

    @property
    def active(self) -> bool:
        return not self._stopped

    def _drain(self) -> None:
        packets, err = self._syscalls.read(self.fd, self._bufsize, self._limit, self._kind)
        self.reads += self._syscalls.last_reads
        if packets:
            self._engine.done += len(packets)
            self._on_packets(packets)
        if err and not self._stopped:
            exc = EOFError(f"end of file on fd {self.fd}") if err == -errno.ENODATA else oserror(err, f"read on fd {self.fd}")
            self.stop(exc)

    def stop(self, exc: BaseException | None) -> None:
        """Stop watching and report ``exc`` (the engine calls it when it closes)."""
        if self._stopped:
            return
        self._stopped = True
        self._engine.unwatch(self, self.fd, nested=self._nested)
        self._on_stopped(exc)

    def cancel(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._engine.unwatch(self, self.fd, nested=self._nested)
        self._engine.loop.call_soon(self._on_stopped, None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self.fd} mode=readiness {'stopped' if self._stopped else 'armed'}>"


class ReadinessDatagramSource(ReadinessPacketSource):
    """Drains a datagram socket with recvmsg: records are (payload, source address)."""

    _nested = True

    def __init__(self, engine: ReadinessEngine, batch: SyscallBatch, fd: int, bufsize: int, on_datagrams: OnDatagrams, on_stopped: OnStopped, on_error: OnError, limit: int, split: bool = False) -> None:
        self._on_error = on_error
        super().__init__(engine, batch, fd, bufsize, on_datagrams, on_stopped, limit, split)

    def _drain(self) -> None:
        got, err = self._syscalls.recv(self.fd, self._bufsize, self._limit, self._kind)
        self.reads += self._syscalls.last_reads
        if got:
            self._engine.done += len(got)
            self._on_packets([(payload, from_sockaddr(raw)) for raw, payload in got])
        if err and not self._stopped:
            exc = oserror(err, f"receive on fd {self.fd}")
            if -err in FATAL_RECEIVE_ERRNOS:
                self.stop(exc)
            else:
                self._on_error(exc)  # one datagram's error (ICMP, truncation): receiving goes on


class ReadinessSink(SinkBase):
    """Packets leave at the flush, one native call writing the whole batch; a
    fd that cannot take more (EAGAIN) is waited for with ``add_writer``."""

    __slots__ = ("_syscalls",)

    def __init__(self, engine: ReadinessEngine, batch: SyscallBatch, fd: int, kind: int, on_error: OnError, on_progress: OnProgress, flags: int = 0) -> None:
        super().__init__(engine, fd, kind, on_error, on_progress, flags)
        self._syscalls = batch

    def _hand_over(self, data: list[bytes], lens: array[int], addrs: list[bytes], alens: array[int], nbytes: int) -> int:
        joined = b"".join(data)
        datagrams = self.kind == KIND_DATAGRAM
        done, writes, refused, events, seg = self._syscalls.send(
            self.fd, self.kind, self.flags, self.gso_max, joined, lens, len(data),
            b"".join(addrs) if datagrams else b"", alens if datagrams else None,
        )
        self.engine.done += done
        self.writes += writes
        if events & EV_GSO_TOO_BIG:
            self.refused(-errno.EMSGSIZE, seg)
        if events & (EV_GRO_REFUSED | EV_GSO_REFUSED):
            self.refused(-errno.EINVAL, 0)  # the packets were resent one by one already
        for index, res in refused:
            self._error(oserror(res, "sendmsg" if datagrams else f"write to fd {self.fd}"), data[index])
        if done < len(data):
            self._blocked = True
            self.engine.watch(self, self.fd, self._writable, writable=True, nested=self.kind == KIND_DATAGRAM)
        self._progress()
        return done

    def _writable(self) -> None:
        self.engine.unwatch(self, self.fd, writable=True, nested=self.kind == KIND_DATAGRAM)
        self.unblocked()

    def stop(self, exc: BaseException | None) -> None:
        """The ring closed: drop what waits."""
        self.close()

    def close(self) -> None:
        if self._blocked:
            self.engine.unwatch(self, self.fd, writable=True, nested=self.kind == KIND_DATAGRAM)
            self._blocked = False
        super().close()
