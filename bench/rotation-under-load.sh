#!/usr/bin/env bash
# Rotation and SIGTERM under load against the real `mcptrust webhook` binary on 127.0.0.1:
# 1,000 req/s for 30 s while the serving certificate is rotated 10 times (5 by a
# kubelet-style `..data` rename in the watched directory, 5 by SIGHUP alone), counting
# failed requests; then SIGTERM during load, counting failures among the requests sent
# before the signal. Everything is in benches/rotation_under_load.rs; this only runs it.
#
#   bash bench/rotation-under-load.sh            # RATE=1000 DURATION_SECS=30 by default
set -euo pipefail
cd "$(dirname "$0")/.."
export RATE=${RATE:-1000} DURATION_SECS=${DURATION_SECS:-30}
cargo bench --bench rotation_under_load
