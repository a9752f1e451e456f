"""The README's first command runs examples/demo.py (after set-up): it must
work end to end — ping through an aiouring TUN, the bounce comparison with
every contender moving packets, and the encrypted tunnel carrying a TCP flow."""
from __future__ import annotations

import os
import re
import subprocess
import sys

DEMO = os.path.join(os.path.dirname(__file__), "..", "examples", "demo.py")


def test_the_demo_runs_end_to_end() -> None:
    proc = subprocess.run([sys.executable, DEMO], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "5 packets transmitted, 5 received" in out, out
    assert "failed" not in out, out
    assert re.search(r"aiouring \(Transport/Protocol\) moved [0-9.]+x the packets of the add_reader drain recipe", out), out
    rate = re.search(r"one TCP flow for \d+ s through the encrypted tunnel: ([0-9.]+) Gbit/s", out)
    assert rate is not None and float(rate.group(1)) > 0, out
    assert out.count("counters: sent=") == 2 and "rejected=0" in out, out
