"""The reference in docs/ builds from the docstrings with warnings as errors,
documents every public name, and its testing example passes as printed.

This is how CI builds the docs: the suite runs this file.  Sphinx comes with
the ``test`` extra (``docs`` alone: ``pip install "aiouring-net[docs]"``).
"""
from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import aiouring
import aiouring.offload
import aiouring.testing

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/ built to HTML exactly as CI does: sphinx-build -W --keep-going -n."""
    out = tmp_path_factory.mktemp("html")
    proc = _run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), str(DOCS), str(out)],
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"sphinx-build failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def _inventory(path: Path) -> set[str]:
    """Object names in a Sphinx objects.inv (version 2: four header lines,
    then zlib-compressed lines 'name domain:role priority uri dispname')."""
    raw = path.read_bytes()
    body = raw.split(b"\n", 4)[4]
    names = set()
    for line in zlib.decompress(body).decode().splitlines():
        name, _, rest = line.partition(" ")
        if rest.startswith("py:"):
            names.add(name)
    return names


def test_the_reference_builds_without_a_warning(built_docs: Path) -> None:
    for page in ("index", "install", "guide", "testing", "api"):
        assert (built_docs / f"{page}.html").is_file(), page
    assert aiouring.__version__ in (built_docs / "index.html").read_text()


@pytest.mark.parametrize(
    "module", [aiouring, aiouring.testing, aiouring.offload], ids=lambda m: m.__name__
)
def test_every_public_name_is_in_the_reference(built_docs: Path, module: object) -> None:
    documented = _inventory(built_docs / "objects.inv")
    public = [f"{module.__name__}.{name}" for name in module.__all__]  # type: ignore[attr-defined]
    missing = [name for name in public if name not in documented]
    assert not missing, f"not in docs/: {missing}"


def test_the_guide_covers_its_topics(built_docs: Path) -> None:
    guide = (built_docs / "guide.html").read_text()
    for topic in ("Backends", "Cancellation", "Threads and fork", "Limits", "Offloads", "Counters", "Testing"):
        assert f">{topic}<" in guide, topic
    for term in ("backend_reason", "AIOURING_DISABLE_OFFLOADS", "get_extra_info(&quot;stats&quot;)", "get_extra_info(&quot;offload&quot;)"):
        assert term in guide, term


def test_the_testing_page_shows_the_example_that_is_run() -> None:
    """docs/testing.rst includes docs/examples/test_my_vpn.py, the file the
    README prints and tests/test_readme.py runs in a fresh directory under
    pytest-asyncio's default (strict) mode."""
    assert "literalinclude:: examples/test_my_vpn.py" in (DOCS / "testing.rst").read_text()
