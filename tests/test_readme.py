"""The README works when pasted: its testing example passes in a fresh
directory as printed, every Python block compiles, and its two set-up
commands are the ones CI and the demo run."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)


def test_every_python_block_compiles() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 5
    for block in blocks:
        # the snippets may await at top level, as in an asyncio REPL
        compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_the_testing_example_passes_as_pasted(tmp_path: Path) -> None:
    """Issue 13: the README's testing snippet, extracted and run with
    pytest-asyncio in its default (strict) mode, in a directory with no
    configuration of ours."""
    [example] = [b for b in python_blocks() if b.startswith("# test_my_vpn.py")]
    assert example == (ROOT / "docs" / "examples" / "test_my_vpn.py").read_text()  # the docs show the same file
    (tmp_path / "test_my_vpn.py").write_text(example)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "asyncio_mode=strict",
         "-W", "error::ResourceWarning", "test_my_vpn.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout, proc.stdout


def test_the_two_commands_are_the_demo_and_the_suite_ci_runs() -> None:
    first = re.search(r"^```sh\n(.*?)^```", README, flags=re.S | re.M)
    assert first is not None
    commands = [line.split("#")[0].strip() for line in first.group(1).splitlines() if line.strip()]
    assert commands == ["sh scripts/demo.sh", "sh scripts/test.sh"]
    assert "sh scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
