"""The sliding replay window of one receiving key (RFC 6479's ring of blocks).

The window covers the last (BLOCKS - 1) * 64 = 8128 counters below the
highest one seen, like wireguard-go's.  A counter is accepted once: a repeat,
one that fell behind the window, or one at or past REJECT_AFTER_MESSAGES is
refused.  Called only after the packet was authenticated, so a forger cannot
move the window.
"""
from __future__ import annotations

from .constants import REJECT_AFTER_MESSAGES

BLOCK_BITS = 64
BLOCKS = 128
WINDOW = (BLOCKS - 1) * BLOCK_BITS
_BLOCK_MASK = BLOCKS - 1
_EMPTY = [0] * BLOCKS


class ReplayWindow:
    __slots__ = ("last", "ring")

    def __init__(self) -> None:
        self.last = 0
        self.ring = [0] * BLOCKS

    def accept(self, counter: int) -> bool:
        """True the first time ``counter`` is seen inside the window."""
        last = self.last
        if counter > last:
            if counter >= REJECT_AFTER_MESSAGES:
                return False
            block = counter >> 6
            current = last >> 6
            ring = self.ring
            if block != current:  # the window moves on: blocks it enters are cleared
                if block - current >= BLOCKS:
                    ring[:] = _EMPTY
                else:
                    for i in range(current + 1, block + 1):
                        ring[i & _BLOCK_MASK] = 0
            self.last = counter
            ring[block & _BLOCK_MASK] |= 1 << (counter & 63)
            return True
        if last - counter > WINDOW:
            return False
        index = (counter >> 6) & _BLOCK_MASK
        bit = 1 << (counter & 63)
        old = self.ring[index]
        if old & bit:
            return False
        self.ring[index] = old | bit
        return True
