#!/usr/bin/env bash
# The webhook's admission latency with 1 McpServer indexed, then 10,000, in one operator
# process (`mcptrust run`, controller and webhook) against a real kube-apiserver and etcd
# (envtest): oha drives POST /mutate at a fixed rate with latency correction, 3 runs per
# phase, and the table gives the medians (p50, p99, p99.9) and the operator's RSS. Issue
# 22's goal: the p99 with 10,000 within 10 % of the p99 with 1. The benchmark is the
# ignored test `webhook_index_benchmark` in tests/e2e_burst.rs.
#
#   KUBEBUILDER_ASSETS=/path/to/envtest bash bench/webhook-index.sh
#
# Knobs (environment): WEBHOOK_BENCH_SERVERS (10000), WEBHOOK_BENCH_NAMESPACES (100; 1 puts
# all of them in the pod's namespace), WEBHOOK_BENCH_RATE (2000 req/s),
# WEBHOOK_BENCH_DURATION (30s), WEBHOOK_BENCH_RUNS (3), OHA_VERSION (1.16.0), PROFILE
# (release, or debug), BURST_OPERATOR_BIN (another build of mcptrust to run).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KUBEBUILDER_ASSETS:?set KUBEBUILDER_ASSETS to a directory with kube-apiserver and etcd (../shared/envtest/setup.sh DIR)}"
export KUBEBUILDER_ASSETS
OHA_VERSION=${OHA_VERSION:-1.16.0}
if ! command -v oha >/dev/null || [ "$(oha --version | awk '{print $2}')" != "$OHA_VERSION" ]; then
    echo "cargo install oha $OHA_VERSION (a few minutes, once)" >&2
    cargo install oha --version "$OHA_VERSION" --locked --quiet
fi
export OHA=${OHA:-$(command -v oha)}
profile=${PROFILE:-release}
flag=()
[ "$profile" = release ] && flag=(--release)
cargo test --locked "${flag[@]}" --test e2e_burst -- --ignored --nocapture --exact webhook_index_benchmark
