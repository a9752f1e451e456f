#!/bin/sh
# Build the native module with AddressSanitizer into .venv-asan and run the
# ring, TUN, transport, reliability, UDP and tunnel tests against it (as root, on Debian).
# CPython itself is not instrumented, so libasan is preloaded and leak
# detection is off (the interpreter keeps memory until exit by design).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
VENV=.venv-asan
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip setuptools wheel cffi
"$VENV/bin/pip" install -q --disable-pip-version-check ".[test]"
rm -rf build
AIOURING_CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g -O1" AIOURING_LDFLAGS="-fsanitize=address" \
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps .
rm -rf build
# The pytest script, not `python -m pytest`: the source tree (with its own,
# uninstrumented build) must not shadow the installed package.
cd tests
ASAN_OPTIONS="detect_leaks=0:halt_on_error=1" LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
    "../$VENV/bin/pytest" -p no:cacheprovider -q -c ../pyproject.toml --rootdir=.. \
    test_ring.py test_tun.py test_transport.py test_fake_ring.py test_reliability.py test_udp.py test_tunnel.py "$@"
