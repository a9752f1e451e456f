"""Argument checks shared by every layer: each raises the exception a Python
programmer expects (``TypeError`` for a wrong type, ``ValueError`` for a value
out of range), naming the argument and what was given, before anything is
allocated or submitted."""
from __future__ import annotations

from typing import Any, Collection

__all__ = [
    "MAX_RW",
    "bytes_like",
    "choice",
    "fd",
    "int_in_range",
    "nbytes",
    "offset",
    "writable",
]

# The most one read() or write() moves on Linux (MAX_RW_COUNT); io_uring's
# length field is 32 bits, and a larger request would only allocate in vain.
MAX_RW = 0x7FFFF000


def fd(value: Any) -> int:
    """A file descriptor: a non-negative int (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"fd must be an int file descriptor, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"fd must be a non-negative file descriptor, not {value}")
    return value


def int_in_range(name: str, value: Any, low: int, high: int | None = None) -> int:
    """An int (not a bool) in ``[low, high]``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {bound}, not {value}")
    return value


def nbytes(value: Any) -> int:
    """A read size: 0 to ``MAX_RW``."""
    return int_in_range("nbytes", value, 0, MAX_RW)


def offset(value: Any) -> int:
    """A file offset, or -1 for the file position."""
    return int_in_range("offset", value, -1)


def choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """One of ``choices`` (compared with ``==`` after a type check against the first)."""
    if value not in choices or type(value) is not type(next(iter(choices))):
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}, not {value!r}")
    return value


def bytes_like(value: Any, name: str = "data") -> None:
    """A bytes-like object (anything exporting the buffer protocol)."""
    if isinstance(value, (bytes, bytearray)):
        return
    try:
        memoryview(value)
    except TypeError:
        raise TypeError(f"{name} must be a bytes-like object, not {type(value).__name__}") from None


def writable(value: Any, name: str = "buffer") -> Any:
    """A writable bytes-like object; returns it."""
    try:
        view = memoryview(value)
    except TypeError:
        raise TypeError(f"{name} must be a writable bytes-like object, not {type(value).__name__}") from None
    if view.readonly:
        raise TypeError(f"{name} must be writable, not a read-only {type(value).__name__}")
    return value
