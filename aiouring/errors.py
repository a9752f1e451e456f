"""aiouring's exceptions and the one function that turns a kernel result into one."""
from __future__ import annotations

import errno
import os

__all__ = ["UnsupportedError", "ClosedError", "check", "oserror"]


class UnsupportedError(OSError):
    """io_uring (or a feature of it) cannot be used here.

    ``reason`` says why in words (for example ``"io_uring_setup: EPERM
    (kernel.io_uring_disabled=2)"``); ``errno`` is the kernel's answer.
    Callers that want to keep going use ``backend="epoll"`` (or ``"auto"``).
    """

    def __init__(self, err: int, reason: str) -> None:
        super().__init__(err, reason)
        self.reason = reason


class ClosedError(OSError):
    """The ring, device or transport was closed (errno ``EBADF``).

    Raised by calls made after ``close()`` and delivered to operations that were
    still waiting when it was closed.
    """

    def __init__(self, what: str) -> None:
        super().__init__(errno.EBADF, what)


def oserror(res: int, context: str | None = None) -> OSError:
    """The ``OSError`` subclass matching a negative kernel result ``res``."""
    code = -res
    message = os.strerror(code)
    if context:
        message = f"{message} ({context})"
    return OSError(code, message)  # OSError() picks the errno's subclass


def check(res: int, context: str | None = None) -> int:
    """Return ``res`` if it is not negative, else raise the matching ``OSError``."""
    if res < 0:
        raise oserror(res, context)
    return res
