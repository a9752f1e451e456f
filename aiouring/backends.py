"""Choosing a backend: ``open_ring``, the per-loop default ``get_ring``, and
what ``backend="auto"`` means for each kind of endpoint."""
from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Literal, Union

from .errors import UnsupportedError
from .ring import ReadinessRing, Ring

__all__ = ["AnyRing", "Backend", "BACKENDS", "Chosen", "choose_backend", "get_ring", "open_ring"]

logger = logging.getLogger("aiouring")

AnyRing = Union[Ring, ReadinessRing]
Backend = Literal["auto", "uring", "epoll"]
Chosen = Literal["uring", "epoll"]  # what "auto" turns into
EndpointKind = Literal["tun", "udp"]
BACKENDS: tuple[Backend, ...] = ("auto", "uring", "epoll")

# What "auto" picks for each kind of endpoint when io_uring is available, and
# why: this project's benchmarks on kernel 6.18 (README, "Benchmarks").  TUN:
# in the per-packet bounce neither backend wins consistently (within ±10%,
# either way by loop and size, commit 248b134); the tie goes to io_uring,
# which submits the TUN writes of one loop iteration in one system call.
# UDP: the tunnel benchmark (TUN + UDP, offloads on) moved 1.12x as much with
# the epoll backend as with io_uring, encrypted and plain (commit 22f5e59);
# why was not profiled (a GSO send is one sendmsg either way).
AUTO_CHOICE: dict[str, tuple[Chosen, str]] = {
    "tun": ("uring", "io_uring: TUN writes batched into the loop's one io_uring_enter (bounce benchmark: a tie)"),
    "udp": ("epoll", "epoll: batched sendmsg/recvmsg in one native call (tunnel benchmark: 1.12x io_uring)"),
}

# Per loop, per backend: the default ring, held weakly (a ring holds its loop,
# so a strong value would keep the weak key alive for ever).  A ring in use is
# held by its transports; one nobody uses is closed when collected.
_defaults: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, weakref.ref[Any]]]" = weakref.WeakKeyDictionary()
_fallback_logged = False
_logged: set[tuple[str, tuple[str, str]]] = set()


def _check_backend(backend: Any) -> None:
    if backend not in BACKENDS or not isinstance(backend, str):
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")


def open_ring(backend: Backend = "auto", *, loop: asyncio.AbstractEventLoop | None = None, **options: Any) -> AnyRing:
    """A new ring for ``loop`` (default: the running loop).

    ``backend="uring"`` gives a ``Ring`` or raises ``UnsupportedError``;
    ``"epoll"`` gives a ``ReadinessRing``; ``"auto"`` tries io_uring and falls
    back to epoll, logging a warning (logger ``aiouring``) with the reason.
    ``options`` go to ``Ring`` (``entries``, ``setup``, ``cq_entries``) or
    ``ReadinessRing`` (``drain_limit``); an option the chosen backend does not
    have raises ``TypeError``.
    """
    global _fallback_logged
    _check_backend(backend)
    if backend == "epoll":
        return ReadinessRing(loop=loop, **options)
    try:
        return Ring(loop=loop, **options)
    except UnsupportedError as exc:
        if backend == "uring":
            raise
        if not _fallback_logged:
            logger.warning("aiouring: io_uring unavailable, using the epoll backend: %s", exc.reason)
            _fallback_logged = True
        return ReadinessRing(loop=loop, warn_unclosed=options.get("warn_unclosed", True))


def choose_backend(backend: Backend, kind: EndpointKind) -> tuple[Chosen, str]:
    """(``"uring"`` or ``"epoll"``, why) for an endpoint of ``kind`` asked
    for with ``backend``."""
    _check_backend(backend)
    if backend != "auto":
        return backend, "asked for"
    from .probe import probe

    info = probe()
    if not info.io_uring:
        choice: tuple[Chosen, str] = ("epoll", f"io_uring unavailable: {info.reason}")
        level = logging.WARNING
    else:
        choice = AUTO_CHOICE[kind]
        level = logging.INFO
    if (kind, choice) not in _logged:
        _logged.add((kind, choice))
        logger.log(level, "aiouring: %s endpoints use the %s backend (%s)", kind.upper(), choice[0], choice[1])
    return choice


def get_ring(backend: Backend = "auto") -> AnyRing:
    """The running loop's default ring for ``backend``, created on first use.

    It is shared by everything on the loop that asks for it, lives while
    something uses it, and is closed (without a warning) when nothing does.
    Closing it is allowed: the next call makes a new one.
    """
    _check_backend(backend)
    loop = asyncio.get_running_loop()
    per_loop = _defaults.get(loop)
    if per_loop is None:
        per_loop = _defaults[loop] = {}
    ref = per_loop.get(backend)
    ring = ref() if ref is not None else None
    if ring is None or ring.closed:
        ring = open_ring(backend, loop=loop, warn_unclosed=False)
        per_loop[backend] = weakref.ref(ring)
    return ring
