#!/usr/bin/env bash
# build-agent.sh — builds the agent: ferry as one static x86_64 musl binary
# (symbols stripped, no debug info), for `ferry boot` to put in the ramdisk.
# Needs Debian's musl-tools (musl-gcc compiles ring, blake3, zstd and
# mimalloc) and the rustup target x86_64-unknown-linux-musl.
# Output: target/x86_64-unknown-linux-musl/release/ferry
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl ||
  rustup target add x86_64-unknown-linux-musl
export CC_x86_64_unknown_linux_musl=musl-gcc
# mimalloc commits its arenas eagerly on Linux (overcommit) and then never
# purges freed pages back to the kernel: bring-up's transient buffers
# (modules, survey, TLS) stayed resident and the idle agent sat at
# 30-43 MB RSS. With lazy arena commit, freed pages are purged
# (MADV_DONTNEED); with both settings below the idle RSS measured 12-21 MB
# in the boot tests (issue 6 target: <= 30 MB; boot/bench-boot.sh).
# MIMALLOC_ARENA_EAGER_COMMIT and MIMALLOC_ALLOW_THP still override them.
# Nor transparent huge pages (mimalloc then sets PR_SET_THP_DISABLE): a 2 MiB
# page per touched arena region inflated the idle RSS, and zeroing them
# under TCG stalled a vCPU for tens of seconds (soft lockups) mid-capture.
export CFLAGS_x86_64_unknown_linux_musl="${CFLAGS_x86_64_unknown_linux_musl:-} -DMI_DEFAULT_ARENA_EAGER_COMMIT=0 -DMI_DEFAULT_ALLOW_THP=0"
export CARGO_PROFILE_RELEASE_DEBUG=none
export CARGO_PROFILE_RELEASE_STRIP=symbols
cargo build --release --locked --target x86_64-unknown-linux-musl --bin ferry "$@"
out=target/x86_64-unknown-linux-musl/release/ferry
file "$out" | grep -q 'static' || { echo "build-agent: $out is not statically linked" >&2; exit 1; }
ls -l "$out"
