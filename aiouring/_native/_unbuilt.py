"""Why the compiled module ``aiouring._native._uring`` did not import, in words
that say what fixes it (``aiouring._native`` raises the ``ImportError`` this
builds).  No cffi here: this must work when nothing was built."""
from __future__ import annotations

import glob
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _source_tree() -> bool:
    """Whether aiouring is imported from a source tree (a checkout or an
    unpacked sdist) rather than from an installed package."""
    return os.path.exists(os.path.join(ROOT, "setup.py")) and os.path.exists(os.path.join(ROOT, "pyproject.toml"))


def explain(exc: ImportError) -> str:
    """The message for the ``ImportError`` raised in place of ``exc``."""
    text = str(exc)
    if "liburing" in text:
        return (
            f"aiouring's native module needs liburing at run time and could not load it ({text}). "
            "Install liburing 2.x: on Debian/Ubuntu, apt-get install liburing2."
        )
    if exc.name == "_cffi_backend":
        return f"aiouring's native module needs cffi at run time ({text}): pip install cffi."
    if exc.name not in ("aiouring._native._uring", None) or not isinstance(exc, ModuleNotFoundError):
        return f"aiouring's native module (aiouring._native._uring) failed to import: {text}"
    built = sorted(os.path.basename(p) for p in glob.glob(os.path.join(HERE, "_uring*.so")))
    other = f" (found {', '.join(built)}, built for another Python)" if built else ""
    if _source_tree():
        return (
            f"aiouring is imported from the source tree at {ROOT}, and its native module "
            f"(aiouring/_native/_uring*.so) has not been built there{other}. "
            f"Build it in place: run 'pip install -e .' in {ROOT} inside a virtual environment "
            "(it needs liburing's headers and a C compiler: apt-get install liburing-dev gcc python3-dev), "
            "or run 'sh scripts/setup.sh', which does all of it into .venv (then use .venv/bin/python). "
            "To use an installed aiouring instead, run Python from another directory."
        )
    return (
        f"aiouring's native module (aiouring._native._uring) is missing from {HERE}{other}: "
        "this installation is broken. Reinstall it: pip install --force-reinstall --no-cache-dir aiouring-net "
        "(building it needs liburing's headers: apt-get install liburing-dev)."
    )
