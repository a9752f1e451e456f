"""The distribution as a user or a packager gets it: real builds into temporary
directories.

* the sdist carries LICENSE, CHANGELOG and a test suite that collects after
  unpacking (the same tests as this tree), and builds with no header at all
  (no liburing.h, no Python.h: it compiles nothing);
* the wheel, built from that sdist, carries LICENSE and the native module,
  and imports from where it was unpacked;
* building the extension without liburing's headers stops with the package
  to install;
* ``aiouring.__version__`` is the distribution's version;
* importing from a source tree that was never built, or without
  liburing.so.2, raises an ``ImportError`` that says what fixes it.

Builds use ``python -m build --no-isolation`` (the ``build`` package comes with
the test extra; setuptools, wheel and cffi are already here), so nothing is
downloaded.  The header-less builds run in a private mount namespace
(``unshare -m``, or ``-rm`` when not root) with an empty tmpfs over the
include directories.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest

import aiouring

ROOT = Path(__file__).resolve().parent.parent
DIST = "aiouring-net"
VERSION = aiouring.__version__
BASENAME = f"aiouring_net-{VERSION}"


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{proc.args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "CPATH", "C_INCLUDE_PATH", "PYTHONPATH"))}
    env.update(extra)
    return env


# -- a private mount namespace in which the include directories are empty -------

def _unshare() -> list[str]:
    return ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]


def _namespace_works() -> bool:
    try:
        return _run(_unshare() + ["true"], cwd=ROOT, timeout=30).returncode == 0
    except FileNotFoundError:
        return False


needs_namespace = pytest.mark.skipif(not _namespace_works(), reason="cannot make a mount namespace here (unshare)")

# The system's include directories and this Python's own (Python.h).
_INCLUDE_DIRS = sorted({d for d in ("/usr/include", "/usr/local/include", sysconfig.get_paths()["include"]) if os.path.isdir(d)})
_HIDE_HEADERS = (
    " && ".join(f"mount -t tmpfs aiouring-test {shlex.quote(d)}" for d in _INCLUDE_DIRS)
    + " && test ! -e /usr/include/liburing.h"
    + f" && test ! -e {shlex.quote(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))}"
    + ' && exec "$@"'
)


def _without_headers(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``cmd`` with every include directory empty (or a non-zero exit if they could not be emptied)."""
    return _run(_unshare() + ["sh", "-c", _HIDE_HEADERS, "sh"] + cmd, cwd=cwd, env=_env())


def _build(what: str, srcdir: Path, outdir: Path) -> list[str]:
    return [sys.executable, "-m", "build", f"--{what}", "--no-isolation", "--outdir", str(outdir), str(srcdir)]


# -- builds shared by the tests of this module -----------------------------------

@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    _ok(_run(_build("sdist", ROOT, out), cwd=ROOT, env=_env()))
    (path,) = out.glob("*.tar.gz")
    assert path.name == f"{BASENAME}.tar.gz"
    return path


@pytest.fixture(scope="module")
def unpacked(sdist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    return dest / BASENAME


@pytest.fixture(scope="module")
def wheel(unpacked: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the unpacked sdist, as pip would build it (-O0: the
    build is checked here, not the code's speed)."""
    out = tmp_path_factory.mktemp("wheel")
    _ok(_run(_build("wheel", unpacked, out), cwd=unpacked, env=_env(AIOURING_CFLAGS="-O0"), timeout=300))
    (path,) = out.glob("*.whl")
    assert path.name.startswith(f"{BASENAME}-")
    return path


@pytest.fixture(scope="module")
def installed_wheel(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked into a directory of its own (what an install puts in site-packages)."""
    dest = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(dest)
    for so in (dest / "aiouring" / "_native").glob("*.so"):
        so.chmod(0o755)
    return dest


def _collected(cwd: Path, env: dict[str, str]) -> Counter[str]:
    """The test ids pytest collects in ``cwd`` (object addresses in a few
    parametrized ids, ``<memory at 0x...>``, differ from run to run: masked)."""
    # -P: the directory pytest runs in is not put on sys.path, so a source
    # tree's unbuilt aiouring/ cannot shadow the one under test
    proc = _ok(_run([sys.executable, "-P", "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"], cwd=cwd, env=env))
    ids = Counter(re.sub(r"0x[0-9a-f]+", "0x?", line) for line in proc.stdout.splitlines() if "::" in line)
    assert ids, proc.stdout
    return ids


# -- the sdist ---------------------------------------------------------------------

def test_sdist_carries_the_license_changelog_and_what_the_tests_need(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        license_text = tar.extractfile(f"{BASENAME}/LICENSE").read().decode()  # type: ignore[union-attr]
    assert "MIT License" in license_text and "the aiouring authors" in license_text
    for needed in (
        "LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "setup.py", "MANIFEST.in",
        "aiouring/_version.py", "aiouring/py.typed", "aiouring/_native/helpers.c", "aiouring/_native/cdef.h",
        "tests/conftest.py", "tests/support/netns.py", "tests/native/offload_fuzz.c", "tests/wireguard_vectors.json",
        "examples/tunnel.py", "examples/wireguard/__init__.py", "scripts/setup.sh", "docs/conf.py",
    ):
        assert needed in names, f"{needed} is not in the sdist"
    for path in names:
        assert not re.search(r"(\.so|\.o|\.pyc)$|__pycache__|^\.venv/|/\.hypothesis/", path), f"{path} should not be in the sdist"
    tests_here = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert tests_here <= names, f"missing from the sdist: {sorted(tests_here - names)}"


def test_the_unpacked_sdist_collects_the_same_tests_as_this_tree(unpacked: Path, installed_wheel: Path) -> None:
    """The sdist's suite, run against the wheel built from the sdist itself."""
    env = _env(PYTHONPATH=str(installed_wheel))
    where = _ok(_run([sys.executable, "-P", "-c", "import aiouring; print(aiouring.__file__)"], cwd=unpacked, env=env))
    assert where.stdout.strip().startswith(str(installed_wheel)), where.stdout
    here = _collected(ROOT, _env())
    there = _collected(unpacked, env)
    assert there == here, f"only in the sdist: {sorted(there - here)[:10]}; only here: {sorted(here - there)[:10]}"
    assert sum(here.values()) > 1000


@needs_namespace
def test_the_sdist_builds_with_no_headers_at_all(tmp_path: Path) -> None:
    """Neither liburing.h nor Python.h: the sdist step compiles nothing."""
    proc = _ok(_without_headers(_build("sdist", ROOT, tmp_path), cwd=ROOT))
    assert [p.name for p in tmp_path.iterdir()] == [f"{BASENAME}.tar.gz"], proc.stdout


@needs_namespace
def test_building_the_extension_without_liburing_headers_names_the_package(unpacked: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(unpacked, src)
    proc = _without_headers(_build("wheel", src, tmp_path / "out"), cwd=src)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "liburing.h" in output and "apt-get install liburing-dev" in output, output[-3000:]


# -- the wheel ---------------------------------------------------------------------

def test_the_wheel_carries_the_license_and_the_native_module(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"{BASENAME}.dist-info/METADATA").decode()
    assert f"{BASENAME}.dist-info/licenses/LICENSE" in names
    assert any(re.fullmatch(r"aiouring/_native/_uring\..*so", n) for n in names), sorted(names)
    assert "aiouring/py.typed" in names
    assert not any(n.startswith(("tests/", "examples/", "docs/")) for n in names)
    assert f"Version: {VERSION}\n" in metadata
    assert "License-Expression: MIT\n" in metadata
    assert "Project-URL: Changelog, " in metadata
    for classifier in ("Programming Language :: Python :: 3.11", "Programming Language :: Python :: 3.13",
                       "Topic :: System :: Networking", "Intended Audience :: Developers"):
        assert f"Classifier: {classifier}\n" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    runtime = [line for line in requires if "extra ==" not in line]
    assert not any("pyroute2" in line for line in runtime), runtime
    assert any("pyroute2" in line and "extra == \"test\"" in line for line in requires)
    assert any("pytest-asyncio" in line and "extra == \"testing\"" in line for line in requires)
    assert any(line.startswith("Requires-Dist: sphinx") and "extra == \"docs\"" in line for line in requires)


def test_the_wheel_imports_and_runs_from_where_it_was_unpacked(installed_wheel: Path, tmp_path: Path) -> None:
    proc = _ok(_run(
        [sys.executable, "-P", "-c",
         "import aiouring; print(aiouring.__file__); print(aiouring.__version__); print(aiouring.probe().kernel)"],
        cwd=tmp_path, env=_env(PYTHONPATH=str(installed_wheel)),
    ))
    where, version, _ = proc.stdout.splitlines()
    assert where.startswith(str(installed_wheel)) and version == VERSION


# -- the version -----------------------------------------------------------------

def test_the_version_is_the_installed_distributions() -> None:
    assert aiouring.__version__ == importlib.metadata.version(DIST) == VERSION
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)
    assert f"## {VERSION}\n" in (ROOT / "CHANGELOG.md").read_text(), "CHANGELOG.md has no entry for this version"


# -- importing what was not built ------------------------------------------------

def _copy_package(dest: Path, with_project_files: bool) -> None:
    shutil.copytree(ROOT / "aiouring", dest / "aiouring", ignore=shutil.ignore_patterns("*.so", "__pycache__", "_uring.c"))
    if with_project_files:
        for name in ("setup.py", "pyproject.toml"):
            shutil.copy(ROOT / name, dest / name)


def _import_error(cwd: Path, *flags: str) -> str:
    proc = _run([sys.executable, *flags, "-c", "import aiouring"], cwd=cwd, env=_env())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("site", [True, False], ids=["with-site-packages", "bare-python"])
def test_importing_an_unbuilt_checkout_says_how_to_build_it(tmp_path: Path, site: bool) -> None:
    """As ``git clone ... && cd clone && python3 -c 'import aiouring'``: the
    checkout's aiouring/ shadows any installed one, so the advice must be to
    build it there, not to install the package."""
    _copy_package(tmp_path, with_project_files=True)
    last = _import_error(tmp_path, *([] if site else ["-S"]))
    assert last.startswith("ImportError: aiouring is imported from the source tree at "), last
    assert str(tmp_path) in last
    assert "'pip install -e .'" in last and "'sh scripts/setup.sh'" in last and "liburing-dev" in last


def test_a_broken_install_says_to_reinstall(tmp_path: Path) -> None:
    _copy_package(tmp_path, with_project_files=False)
    last = _import_error(tmp_path)
    assert last.startswith("ImportError: aiouring's native module (aiouring._native._uring) is missing"), last
    assert "pip install --force-reinstall" in last


@needs_namespace
def test_a_missing_liburing_names_the_package_to_install(tmp_path: Path) -> None:
    with open("/proc/self/maps") as maps:
        libs = {line.split()[-1] for line in maps if re.search(r"/liburing\.so[.\d]*$", line.strip())}
    assert len(libs) == 1, libs  # this process imported aiouring, so liburing is mapped
    (lib,) = libs
    proc = _run(
        _unshare() + ["sh", "-c", 'mount --bind /dev/null "$1" && shift && exec "$@"', "sh", lib,
                      sys.executable, "-c", "import aiouring"],
        cwd=tmp_path, env=_env(),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: aiouring's native module needs liburing at run time"), last
    assert "apt-get install liburing2" in last
