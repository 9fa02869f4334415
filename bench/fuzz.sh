#!/usr/bin/env bash
# Runs the libFuzzer target `admission` (fuzz/fuzz_targets/admission.rs) seeded with
# fuzz/seeds/ (the fixtures shrunk, plus variants: fuzz/make-seeds.py) and
# tests/fixtures/admission/, for RUNS executions (default 10,000,000), on one core.
# Needs the nightly toolchain and cargo-fuzz (installed here if missing).
# New corpus entries go to fuzz/corpus/admission (not committed); crashes to
# fuzz/artifacts/admission. Replay a crash on stable: copy it into
# tests/fixtures/admission/regressions/ and run `cargo test --test fuzz_regressions`.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10000000}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
mkdir -p fuzz/corpus/admission
cd fuzz
# No sanitizer: mcptrust forbids unsafe code; debug assertions catch overflows.
exec cargo +nightly fuzz run -s none -a admission corpus/admission seeds ../tests/fixtures/admission -- \
    -dict=admission.dict -runs="$RUNS" -max_len=32768 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "$@"
