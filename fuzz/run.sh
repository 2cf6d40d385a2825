#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (FERRY_FUZZ_SECONDS, default 60
# per target) starting from the committed seeds in fuzz/seeds/<target>.
# New inputs go to a scratch corpus (fuzz/corpus/, not committed); crashes
# to fuzz/artifacts/<target>/. Exits non-zero if a target crashes, leaks,
# times out or runs out of memory; prints a loud SKIPPED line and exits 0
# when `cargo +nightly` or cargo-fuzz is missing.
#   FERRY_FUZZ_SECONDS=600 ./fuzz/run.sh            all targets
#   ./fuzz/run.sh ext4_walk                         one target
set -euo pipefail
cd "$(dirname "$0")"
secs=${FERRY_FUZZ_SECONDS:-60}
targets=("$@")
((${#targets[@]})) || targets=(ext4_walk library_objects)

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "SKIPPED fuzzing: no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "SKIPPED fuzzing: cargo-fuzz is not installed (cargo install cargo-fuzz)"
  exit 0
fi

status=0
for t in "${targets[@]}"; do
  # The seeds dir must exist: libFuzzer fails on a missing corpus directory.
  mkdir -p "corpus/$t" "artifacts/$t" "seeds/$t"
  log=artifacts/$t/fuzz.log
  echo "== fuzzing $t for ${secs}s (log: fuzz/$log)"
  # -rss_limit_mb: an input that makes the parser allocate > 2 GiB is a bug.
  # -timeout: one input taking > 20 s is a hang.
  if cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 >"$log" 2>&1; then
    grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|cov: .*corp:" "$log" | tail -n 4
  else
    grep -E "panicked at|attempt to|ERROR: libFuzzer|SUMMARY|out-of-memory|Test unit written|^thread" "$log" | head -n 20
    echo "FUZZ FAILURE in $t: see fuzz/$log and fuzz/artifacts/$t/ (reproduce: cargo +nightly fuzz run $t <file>)"
    status=1
  fi
done
exit $status
