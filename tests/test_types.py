"""Types are part of the contract: ``mypy --strict`` (the ``[tool.mypy]`` of
pyproject.toml) is clean on the package, the examples and the tests, and the
factories are generic in the protocol, so a user's own protocol type comes
back without a cast (tests/typing/factories.py checks it with
``assert_type``; here ``reveal_type`` says it in mypy's own words)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One incremental cache for this module's runs (the first is cold)."""
    return tmp_path_factory.mktemp("mypy_cache")


def run_mypy(cache: Path, *files: str) -> subprocess.CompletedProcess[str]:
    """``python -m mypy`` from the repository root, so pyproject.toml's
    settings apply; no files: the ones pyproject.toml lists."""
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache), *files],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MYPY_FORCE_COLOR": "0"},
    )


def test_mypy_strict_is_clean_on_the_package_the_examples_and_the_tests(mypy_cache: Path) -> None:
    result = run_mypy(mypy_cache)
    assert result.returncode == 0, f"mypy --strict found problems:\n{result.stdout}{result.stderr}"
    assert "Success: no issues found" in result.stdout, result.stdout + result.stderr


def test_the_factories_return_the_factory_s_protocol_type(mypy_cache: Path, tmp_path: Path) -> None:
    snippet = tmp_path / "reveal.py"
    snippet.write_text(textwrap.dedent(
        """
        import asyncio
        from typing import assert_type, reveal_type

        import aiouring


        class MyProto(aiouring.TunProtocol):
            pass


        class MyDgram(asyncio.DatagramProtocol):
            pass


        async def main() -> None:
            reveal_type(await aiouring.create_tun_connection(MyProto))
            reveal_type(await aiouring.create_datagram_endpoint(MyDgram, local_addr=("127.0.0.1", 0)))
            _, protocol = await aiouring.create_tun_connection(MyProto)
            assert_type(protocol, aiouring.TunProtocol)  # what a factory typed without generics gave
        """
    ))
    result = run_mypy(mypy_cache, str(snippet), str(ROOT / "tests" / "typing" / "factories.py"))
    out = result.stdout + result.stderr
    assert 'Revealed type is "tuple[aiouring.transport.TunTransport, reveal.MyProto]"' in out, out
    assert 'Revealed type is "tuple[aiouring.udp.DatagramTransport, reveal.MyDgram]"' in out, out
    # assert_type is live: the non-generic answer is refused, and it is the only error
    # (tests/typing/factories.py, checked in the same run, has none)
    assert 'error: Expression is of type "MyProto", not "TunProtocol"  [assert-type]' in out, out
    assert "Found 1 error in 1 file" in out, out
