#!/usr/bin/env bash
# Controller scale in-process: time and memory to build bundles and certificates for
# $SERVERS (1,000) McpServers, first reconcile and steady-state reconcile against an
# in-memory API. Everything is in benches/controller_scale.rs; this only runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
export SERVERS=${SERVERS:-1000}
cargo bench --bench controller_scale
