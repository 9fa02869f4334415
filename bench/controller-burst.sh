#!/usr/bin/env bash
# The controller under a burst, against a real kube-apiserver and etcd (envtest): creates
# $BURST_SERVERS (1,000) mTLS McpServers (one client each, system roots, no probe) with 8
# parallel `kubectl create`, and prints the time from the last create to all Ready, the
# operator's peak RSS (VmHWM) and its CPU and API writes over the $BURST_AFTER_SECS (60) s
# after. The benchmark is the ignored test `burst_benchmark` in tests/e2e_burst.rs.
#
#   KUBEBUILDER_ASSETS=/path/to/envtest bash bench/controller-burst.sh
#   BURST_OPERATOR_BIN=/path/to/an/older/mcptrust bash bench/controller-burst.sh   # compare
#
# PROFILE=release (default) runs a release build of the operator; PROFILE=debug a debug one.
# BURST_CONCURRENCY sets the operator's --reconcile-concurrency (its default otherwise);
# BURST_SERVERS (1000), BURST_NAMESPACES (1: the McpServers go round-robin into that many
# namespaces) and BURST_AFTER_SECS (60) size the run; it also prints the ConfigMaps' bytes. Besides the operator's
# figures it prints the API server's own request profile over the burst (time spent per
# verb and resource, from kube-apiserver's /metrics), kube-apiserver's and etcd's CPU, and
# a restart of the operator with every McpServer Ready (time to reconcile all, writes, RSS).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KUBEBUILDER_ASSETS:?set KUBEBUILDER_ASSETS to a directory with kube-apiserver and etcd (../shared/envtest/setup.sh DIR)}"
export KUBEBUILDER_ASSETS
profile=${PROFILE:-release}
flag=()
[ "$profile" = release ] && flag=(--release)
cargo test --locked "${flag[@]}" --test e2e_burst -- --ignored --nocapture --exact burst_benchmark
