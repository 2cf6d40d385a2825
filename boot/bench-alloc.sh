#!/usr/bin/env bash
# bench-alloc.sh — capture + restore throughput of ferry builds on the
# cached Debian fixture (tests/bench/bench.sh makes it), to choose the
# static (musl) agent's global allocator.
#   boot/bench-alloc.sh NAME=FERRY_BINARY...
# Prints one line per build: capture and restore wall seconds, MB/s of the
# image's size, and CPU seconds (user+sys, less disturbed by other load on
# a shared machine). Restores are checked byte-identical with cmp.
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
  /usr/bin/time -o "$WORK/cc" -f '%U %S' "$bin" capture "$IMG" --library "$WORK/lib" --name v1 >/dev/null 2>&1
  cc=$(tail -1 "$WORK/cc")
  sync; t1=$(date +%s.%N)
  /usr/bin/time -o "$WORK/rc" -f '%U %S' "$bin" restore v1 "$WORK/out.img" --library "$WORK/lib" >/dev/null 2>&1
  rc=$(tail -1 "$WORK/rc")
  sync; t2=$(date +%s.%N)
  cmp "$IMG" "$WORK/out.img"
  awk -v n="$name" -v a="$t0" -v b="$t1" -v c="$t2" -v s="$size" -v cc="$cc" -v rc="$rc" 'BEGIN {
    split(cc, x, " "); split(rc, y, " ")
    printf "%-14s capture %5.1f s %6.1f MB/s cpu %5.1f s   restore %5.1f s %6.1f MB/s cpu %5.1f s\n", n, b-a, s/(b-a)/1e6, x[1]+x[2], c-b, s/(c-b)/1e6, y[1]+y[2] }'
done
