#!/usr/bin/env bash
# Captures the README's `kubectl get mcps` / `-o wide` / `describe` transcripts from a real
# kube-apiserver: runs the e2e operator test (tests/e2e_operator.rs), which reconciles the
# README's mTLS McpServer with `mcptrust run` and saves what kubectl printed under
# target/e2e-transcripts/, then prints them.
#   bash bench/readme-transcripts.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${KUBEBUILDER_ASSETS:-}" ]; then
  KUBEBUILDER_ASSETS=$(../shared/envtest/setup.sh "$PWD/target/envtest" | tail -n 1)
  export KUBEBUILDER_ASSETS
fi
[ -f target/chart-render/default.yaml ] || python3 ci/helm-lint.py >/dev/null
rm -rf target/e2e-transcripts
MCPTRUST_E2E_REQUIRED=1 cargo test --locked --quiet --test e2e_operator >/dev/null
for f in get get-wide describe; do
  cat "target/e2e-transcripts/$f.txt"
  echo
done
