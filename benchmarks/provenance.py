"""What a benchmark table was measured on: the commit (with a -dirty mark when
tracked files differ from it) and the date, for every table, JSON and chart."""
from __future__ import annotations

import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commit() -> str:
    """``git rev-parse --short HEAD``, plus ``-dirty`` when tracked files
    were changed since; ``unknown`` outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=ROOT, capture_output=True).returncode != 0
    return head + ("-dirty" if dirty else "")


def stamp() -> dict[str, str]:
    """Taken once when a benchmark starts: {"commit": ..., "date": ...}."""
    return {"commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def label(meta: dict[str, str]) -> str:
    return f"commit {meta['commit']}, {meta['date']}"
