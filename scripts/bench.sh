#!/bin/sh
# The TUN benchmarks (benchmarks/run.py --help for options), set-up first.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
exec .venv/bin/python benchmarks/run.py "$@"
