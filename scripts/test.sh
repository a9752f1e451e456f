#!/bin/sh
# The whole test suite, with all set-up done first (run as root on Debian).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
