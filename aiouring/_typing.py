"""Types shared by the public signatures.

``Buffer``: any bytes-like object (``bytes``, ``bytearray``, ``memoryview``,
``array.array``...), what ``collections.abc.Buffer`` is from Python 3.12.
Type checkers see ``typing_extensions.Buffer``; at run time (where
``typing.get_type_hints`` and the docs evaluate annotations) Python 3.11 gets
the common bytes-like types by name.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Union

__all__ = ["Buffer"]

if TYPE_CHECKING:
    from typing_extensions import Buffer
elif sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    Buffer = Union[bytes, bytearray, memoryview]
