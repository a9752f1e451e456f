#!/bin/sh
# Everything a fresh Debian machine needs to build, test and demo aiouring:
# system packages (as root, only those missing), a virtualenv in .venv, and
# the package installed into it with its test and benchmark extras (the test
# extra brings Sphinx and build: the suite builds the docs and the sdist/wheel).
# Idempotent: a second run installs nothing and rebuilds only when sources changed.
set -eu
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

need=""
# wireguard-go and wireguard-tools: the peer the WireGuard example is tested against
# (--no-install-recommends below matters: wireguard-tools recommends a kernel image)
for pkg in liburing-dev iproute2 iputils-ping iperf3 gcc libc6-dev pkg-config wireguard-go wireguard-tools; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    need="$need python3 python3-venv python3-dev"
    PYTHON=python3
elif ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need="$need python3-venv"
fi
if command -v "$PYTHON" >/dev/null 2>&1 && \
   ! [ -f "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then
    need="$need python3-dev"
fi
if [ -n "$need" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "aiouring setup: missing system packages:$need" >&2
        echo "run as root, or: sudo apt-get install$need" >&2
        exit 1
    fi
    echo "aiouring setup: installing$need"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the package's build inputs changed since the last install.
stamp="$VENV/.aiouring-installed"
# (_version.py: the installed metadata carries the version, so a bump reinstalls)
inputs="$(cat pyproject.toml setup.py aiouring/_version.py aiouring/_native/*.c aiouring/_native/*.h aiouring/_native/build.py | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$inputs" ] || ! "$VENV/bin/python" -c 'import aiouring._native._uring' >/dev/null 2>&1; then
    log="$VENV/install.log"
    echo "aiouring setup: installing the package and its test extras into $VENV"
    if ! { "$VENV/bin/pip" install --disable-pip-version-check --upgrade pip setuptools wheel &&
           "$VENV/bin/pip" install --disable-pip-version-check -e ".[test,bench]"; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "aiouring setup: pip install failed (log above, kept in $log)" >&2
        exit 1
    fi
    echo "$inputs" > "$stamp"
fi
