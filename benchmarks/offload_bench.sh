#!/bin/sh
# Time the offload C functions natively (see offload_bench.c). Measures, asserts nothing.
set -eu
cd "$(dirname "$0")/.."
out="${TMPDIR:-/tmp}/aiouring-offload-bench"
gcc -O2 -Wall -Wextra -Iaiouring/_native -o "$out" benchmarks/offload_bench.c aiouring/_native/offload.c
"$out" "$@"
