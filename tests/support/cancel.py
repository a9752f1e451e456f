"""Reading under random cancellation, the way real code gets cancelled."""
from __future__ import annotations

import asyncio
import random

import aiouring


async def read_or_cancel(tun: aiouring.Tun, rng: random.Random) -> bytes | None:
    """One ``tun.read()`` that is often cancelled: by ``wait_for``, by
    ``asyncio.timeout`` or by ``Task.cancel`` after 0-2 loop iterations (before,
    during or after the wake-up).  Returns the packet, or None if cancelled."""
    roll = rng.random()
    try:
        if roll < 0.33:
            return await asyncio.wait_for(tun.read(), rng.choice([1e-6, 1e-5, 1e-4, 1e-3]))
        if roll < 0.66:
            async with asyncio.timeout(rng.choice([1e-6, 1e-5, 1e-4])):
                return await tun.read()
        task = asyncio.ensure_future(tun.read())
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return None
    except (asyncio.TimeoutError, TimeoutError):
        return None
