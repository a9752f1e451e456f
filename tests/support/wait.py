"""Waiting for a condition instead of sleeping for a fixed time."""
from __future__ import annotations

import asyncio
from typing import Callable


async def wait_for_condition(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.001) -> None:
    """Return as soon as ``predicate()`` is true; ``TimeoutError`` naming it after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s: {getattr(predicate, '__qualname__', predicate)}")
        await asyncio.sleep(interval)
