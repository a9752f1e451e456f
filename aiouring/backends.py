"""Choosing a backend: ``open_ring`` and the per-loop default ``get_ring``."""
from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Union

from .errors import UnsupportedError
from .readiness import ReadinessRing
from .ring import Ring

__all__ = ["AnyRing", "BACKENDS", "open_ring", "get_ring"]

logger = logging.getLogger("aiouring")

AnyRing = Union[Ring, ReadinessRing]
BACKENDS = ("auto", "uring", "epoll")

_defaults: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]]" = weakref.WeakKeyDictionary()
_fallback_logged = False


def open_ring(backend: str = "auto", *, loop: asyncio.AbstractEventLoop | None = None, **options: Any) -> AnyRing:
    """A new ring for ``loop`` (default: the running loop).

    ``backend="uring"`` gives a ``Ring`` or raises ``UnsupportedError``;
    ``"epoll"`` gives a ``ReadinessRing``; ``"auto"`` tries io_uring and falls
    back to epoll, logging a warning (logger ``aiouring``) with the reason.
    ``options`` go to ``Ring`` (``entries``, ``setup``, ``cq_entries``,
    ``write_slots``); ``write_slots`` also sizes the epoll backend's write queue.
    """
    global _fallback_logged
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    readiness_options = {k: v for k, v in options.items() if k == "write_slots"}
    if backend == "epoll":
        return ReadinessRing(loop=loop, **readiness_options)
    try:
        return Ring(loop=loop, **options)
    except UnsupportedError as exc:
        if backend == "uring":
            raise
        if not _fallback_logged:
            logger.warning("aiouring: io_uring unavailable, using the epoll backend: %s", exc.reason)
            _fallback_logged = True
        return ReadinessRing(loop=loop, **readiness_options)


def get_ring(backend: str = "auto") -> AnyRing:
    """The running loop's default ring for ``backend``, created on first use.

    It lives as long as the loop; closing it is allowed (the next call makes a
    new one).  It does not warn when collected with the loop.
    """
    loop = asyncio.get_running_loop()
    per_loop = _defaults.setdefault(loop, {})
    ring = per_loop.get(backend)
    if ring is None or ring.closed:
        ring = open_ring(backend, loop=loop)
        ring._warn_on_gc = False
        per_loop[backend] = ring
    return ring
