#!/bin/sh
# Mutation-fuzz the offload C code (split, coalesce plan/emit/iov) under
# AddressSanitizer and UndefinedBehaviorSanitizer, every buffer exactly sized.
# Usage: sh scripts/offload_fuzz.sh [ITERATIONS [SEED]]
set -eu
cd "$(dirname "$0")/.."
out="${TMPDIR:-/tmp}/aiouring-offload-fuzz"
mkdir -p "$out"
gcc -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wextra -Iaiouring/_native -o "$out/offload_fuzz" tests/native/offload_fuzz.c aiouring/_native/offload.c
python3 tests/native/offload_corpus.py "$out/corpus.bin"
ASAN_OPTIONS="halt_on_error=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
    "$out/offload_fuzz" "$out/corpus.bin" "${1:-200000}" "${2:-1}"
