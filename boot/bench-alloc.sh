#!/usr/bin/env bash
# bench-alloc.sh — capture + restore throughput of ferry builds on the
# cached Debian fixture (tests/bench/bench.sh makes it), to choose the
# static (musl) agent's global allocator.
#   boot/bench-alloc.sh NAME=FERRY_BINARY...
# Prints one line per build: capture and restore seconds and MB/s of the
# image's size. Restores are checked byte-identical with cmp.
set -euo pipefail
IMG=${FERRY_BENCH_IMG:-$(ls /var/cache/ferry/fixtures/*/debian.img | head -1)}
WORK=$(mktemp -d /var/tmp/ferry-bench-alloc.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
size=$(stat -c %s "$IMG")
cat "$IMG" >/dev/null
for spec in "$@"; do
  name=${spec%%=*}; bin=${spec#*=}
  rm -rf "$WORK/lib" "$WORK/out.img"
  t0=$(date +%s.%N)
  "$bin" capture "$IMG" --library "$WORK/lib" --name v1 >/dev/null 2>&1
  sync; t1=$(date +%s.%N)
  "$bin" restore v1 "$WORK/out.img" --library "$WORK/lib" >/dev/null 2>&1
  sync; t2=$(date +%s.%N)
  cmp "$IMG" "$WORK/out.img"
  awk -v n="$name" -v a="$t0" -v b="$t1" -v c="$t2" -v s="$size" 'BEGIN {
    printf "%-14s capture %6.1f s %7.1f MB/s   restore %6.1f s %7.1f MB/s\n", n, b-a, s/(b-a)/1e6, c-b, s/(c-b)/1e6 }'
done
