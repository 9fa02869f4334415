#!/usr/bin/env bash
# Load benchmark of the admission webhook against an nginx baseline, on 127.0.0.1 only.
#
#   bash bench/webhook-load.sh
#
# 1. installs what is missing: nginx-light and openssl (apt-get), oha (cargo install,
#    pinned version, --locked);
# 2. builds `mcptrust` (release) and makes a P-256 CA and serving certificate with openssl;
# 3. starts `mcptrust webhook` (embedded default config) and nginx on two loopback ports,
#    with the same certificate, TLS 1.3 only, HTTP/1.1 keep-alive and HTTP/2. nginx answers
#    every POST /mutate with a static file holding the webhook's own answer to the same body
#    (same size), after reading and discarding the request body: the physical limit of
#    "TLS request in, JSON out" on this machine. It runs 2 worker processes (one per core)
#    and keeps connections open as long as the webhook does (keepalive_requests 1000000);
# 4. drives both with the same oha: (a) a fixed rate of $RATE req/s for $DURATION with
#    latency correction (coordinated omission), reporting p50, p99, p99.9, max and errors;
#    (b) saturation over HTTP/1.1 ($SAT_CONNS connections) and HTTP/2 ($H2_CONNS connections
#    x $H2_STREAMS streams), reporting requests/s and our fraction of nginx's;
#    (c) the same saturation with a 2-byte body (`{}`), which the webhook refuses as an
#    invalid review without any JSON work and nginx answers with a static copy of that
#    refusal: the transport alone (TLS, HTTP, sockets), ours against nginx's;
# 5. reads the webhook's VmRSS before the load (idle) and VmHWM after it (peak) from
#    /proc/<pid>/status, and prints one table. Servers are stopped on exit (trap).
#
# Knobs (environment): BODY (request body, default the ~8.7 KB pod-typical fixture; the
# fixtures are 3 to 20 KB), RATE (2000), DURATION (30s), SAT_DURATION (15s), SAT_CONNS (50),
# H2_CONNS (4), H2_STREAMS (16), OHA_VERSION (1.16.0), PORT_BASE (18440), SKIP_BUILD (1: use
# the target/release/mcptrust already built), CARGO_FEATURES (extra `cargo build` flags,
# e.g. `--no-default-features` for the system allocator instead of mimalloc, or
# `--features aws-lc-rs` for the aws-lc-rs provider instead of ring), BEFORE_BIN (another
# build of `mcptrust`, e.g. the previous release: served on a third port and driven with
# the same runs, so that one table holds before, after and nginx), RATE_RUNS (3: how many
# times run (a) is repeated per server, for the spread of its p99), RATE_ONLY (1: only run
# (a), for tail studies), SERVER_CPUS and LOAD_CPUS (CPU lists for `taskset -c`, e.g. 0 and
# 1: the servers on one core and oha on the other, so that the load generator does not
# preempt the server it measures), WEBHOOK_WORKERS (the webhook's tokio worker threads,
# TOKIO_WORKER_THREADS; default one per CPU).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BODY=${BODY:-tests/fixtures/admission/pod-typical.json}
RATE=${RATE:-2000}
DURATION=${DURATION:-30s}
SAT_DURATION=${SAT_DURATION:-15s}
SAT_CONNS=${SAT_CONNS:-50}
H2_CONNS=${H2_CONNS:-4}
H2_STREAMS=${H2_STREAMS:-16}
OHA_VERSION=${OHA_VERSION:-1.16.0}
PORT_BASE=${PORT_BASE:-18440}
WEBHOOK_PORT=$PORT_BASE
ADMIN_PORT=$((PORT_BASE + 1))
NGINX_PORT=$((PORT_BASE + 2))
BEFORE_PORT=$((PORT_BASE + 3))
BEFORE_ADMIN_PORT=$((PORT_BASE + 4))
RATE_RUNS=${RATE_RUNS:-3}
RATE_ONLY=${RATE_ONLY:-0}
# Optional CPU pinning: command prefixes (taskset and env exec their command, so `$!` stays
# the server's own PID, whose memory is read below).
SERVER_CPUS=${SERVER_CPUS:-}
LOAD_CPUS=${LOAD_CPUS:-}
server_on=(env)
[ -n "$SERVER_CPUS" ] && server_on=(taskset -c "$SERVER_CPUS")
load_on=(env)
[ -n "$LOAD_CPUS" ] && load_on=(taskset -c "$LOAD_CPUS")
webhook_env=(env)
[ -n "${WEBHOOK_WORKERS:-}" ] && webhook_env+=("TOKIO_WORKER_THREADS=$WEBHOOK_WORKERS")

log() { printf '>>> %s\n' "$*" >&2; }

# --- 1. tools ------------------------------------------------------------------------------
need_apt=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # Debian starts nginx on :80 when it installs it; this benchmark runs its own.
    if command -v systemctl >/dev/null; then systemctl stop nginx 2>/dev/null || true; fi
    [ -f /run/nginx.pid ] && kill "$(cat /run/nginx.pid)" 2>/dev/null || true
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if ! command -v oha >/dev/null || [ "$(oha --version | awk '{print $2}')" != "$OHA_VERSION" ]; then
    log "cargo install oha $OHA_VERSION (a few minutes, once)"
    cargo install oha --version "$OHA_VERSION" --locked --quiet
fi
OHA=$(command -v oha)

# --- 2. build and certificates -------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release --bin mcptrust"
    # shellcheck disable=SC2086
    cargo build --release --bin mcptrust --quiet ${CARGO_FEATURES:-}
fi
MCPTRUST=$ROOT/target/release/mcptrust

WORK=$(mktemp -d /tmp/mcptrust-load.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=mcptrust bench CA" -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=mcptrust-webhook" -keyout "$WORK/tls.key" -out "$WORK/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$WORK/ext"
openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/ext" -out "$WORK/tls.crt" 2>/dev/null

# --- 3. servers ----------------------------------------------------------------------------
log "starting mcptrust webhook on 127.0.0.1:$WEBHOOK_PORT"
MCPTRUST_LOG=warn "${server_on[@]}" "${webhook_env[@]}" "$MCPTRUST" webhook \
    --tls-cert-file "$WORK/tls.crt" --tls-key-file "$WORK/tls.key" \
    --webhook-listen "127.0.0.1:$WEBHOOK_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    >"$WORK/webhook.log" 2>&1 &
WEBHOOK_PID=$!
PIDS+=("$WEBHOOK_PID")
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null

if [ -n "${BEFORE_BIN:-}" ]; then
    log "starting the before build ($BEFORE_BIN) on 127.0.0.1:$BEFORE_PORT"
    MCPTRUST_LOG=warn "${server_on[@]}" "${webhook_env[@]}" "$BEFORE_BIN" webhook \
        --tls-cert-file "$WORK/tls.crt" --tls-key-file "$WORK/tls.key" \
        --webhook-listen "127.0.0.1:$BEFORE_PORT" --admin-listen "127.0.0.1:$BEFORE_ADMIN_PORT" \
        >"$WORK/before.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$BEFORE_ADMIN_PORT/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fs "http://127.0.0.1:$BEFORE_ADMIN_PORT/readyz" >/dev/null
fi

rss_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
RSS_START=$(rss_kib "$WEBHOOK_PID" VmRSS)

mkdir -p "$WORK/www" "$WORK/nginx"
curl -fs --cacert "$WORK/ca.crt" -H 'Content-Type: application/json' \
    --data-binary "@$BODY" "https://127.0.0.1:$WEBHOOK_PORT/mutate" -o "$WORK/www/mutate"
python3 - "$WORK/www/mutate" <<'EOF'
import base64, json, sys
v = json.load(open(sys.argv[1]))
r = v["response"]
assert r["allowed"] and r.get("patchType") == "JSONPatch", r
assert len(json.loads(base64.b64decode(r["patch"]))) > 0
EOF
RESPONSE_BYTES=$(stat -c %s "$WORK/www/mutate")
# (c) the transport alone: the webhook's refusal of `{}`, served as is by nginx.
printf '{}' >"$WORK/tiny.json"
curl -s --cacert "$WORK/ca.crt" -H 'Content-Type: application/json' \
    --data-binary "@$WORK/tiny.json" "https://127.0.0.1:$WEBHOOK_PORT/mutate" -o "$WORK/www/invalid"
grep -q '"allowed":false' "$WORK/www/invalid"
chmod 644 "$WORK/www/invalid"
# nginx workers run as www-data: let them read the answer file.
chmod 755 "$WORK" "$WORK/www"
chmod 644 "$WORK/www/mutate"

cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_max_body_size 3m;
    client_body_buffer_size 64k;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl http2;
        ssl_certificate $WORK/tls.crt;
        ssl_certificate_key $WORK/tls.key;
        ssl_protocols TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        root $WORK/www;
        default_type application/json;
        # The static module answers POST with 405; serve the file instead (the request
        # body is read and discarded first).
        location = /mutate { error_page 405 =200 \$uri; }
        location = /invalid { error_page 405 =200 \$uri; }
    }
}
EOF
log "starting nginx (2 workers) on 127.0.0.1:$NGINX_PORT"
"${server_on[@]}" "$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx.out" 2>&1 &
PIDS+=("$!")
for _ in $(seq 50); do
    curl -fs --cacert "$WORK/ca.crt" -o /dev/null -X POST --data-binary "@$BODY" \
        "https://127.0.0.1:$NGINX_PORT/mutate" && break
    sleep 0.1
done
NGINX_BYTES=$(curl -fs --cacert "$WORK/ca.crt" -X POST --data-binary "@$BODY" \
    "https://127.0.0.1:$NGINX_PORT/mutate" | wc -c)
[ "$NGINX_BYTES" = "$RESPONSE_BYTES" ] || { log "nginx answers $NGINX_BYTES bytes, expected $RESPONSE_BYTES"; exit 1; }

# --- 4. load -------------------------------------------------------------------------------
run_oha() { # name url args...
    local name=$1 url=$2
    shift 2
    "${load_on[@]}" "$OHA" --no-tui --output-format json -w --insecure -m POST -T application/json -D "${SEND:-$BODY}" "$@" "$url" \
        >"$WORK/$name.json" 2>"$WORK/$name.err"
}
WEBHOOK_URL=https://127.0.0.1:$WEBHOOK_PORT/mutate
NGINX_URL=https://127.0.0.1:$NGINX_PORT/mutate
BEFORE_URL=https://127.0.0.1:$BEFORE_PORT/mutate
TARGETS="webhook nginx"
[ -n "${BEFORE_BIN:-}" ] && TARGETS="before webhook nginx"
target_url() {
    case $1 in
    webhook) echo "$WEBHOOK_URL" ;;
    before) echo "$BEFORE_URL" ;;
    nginx) echo "$NGINX_URL" ;;
    esac
}

# A short warm-up of each (connections, allocator, caches).
for target in $TARGETS; do
    run_oha "warm-$target" "$(target_url "$target")" -z 2s -c 8
done
sleep 1
RSS_IDLE=$(rss_kib "$WEBHOOK_PID" VmRSS)

for target in $TARGETS; do
    url=$(target_url "$target")
    for i in $(seq "$RATE_RUNS"); do
        log "$target: $RATE req/s for $DURATION (HTTP/1.1, 16 connections, latency correction), run $i of $RATE_RUNS"
        run_oha "rate-$target-$i" "$url" -z "$DURATION" -q "$RATE" --latency-correction -c 16
        sleep 1
    done
    cp "$WORK/rate-$target-1.json" "$WORK/rate-$target.json"
    [ "$RATE_ONLY" = 1 ] && continue
    log "$target: saturation for $SAT_DURATION (HTTP/1.1, $SAT_CONNS connections)"
    run_oha "sat-h1-$target" "$url" -z "$SAT_DURATION" -c "$SAT_CONNS"
    sleep 1
    log "$target: saturation for $SAT_DURATION (HTTP/2, $H2_CONNS connections x $H2_STREAMS streams)"
    run_oha "sat-h2-$target" "$url" -z "$SAT_DURATION" --http2 -c "$H2_CONNS" -p "$H2_STREAMS"
    sleep 1
    tiny_url=$url
    [ $target = nginx ] && tiny_url=${url%/mutate}/invalid
    log "$target: transport only, saturation for $SAT_DURATION (HTTP/1.1, $SAT_CONNS connections, body {})"
    SEND=$WORK/tiny.json run_oha "tiny-h1-$target" "$tiny_url" -z "$SAT_DURATION" -c "$SAT_CONNS"
    sleep 1
done
RSS_AFTER=$(rss_kib "$WEBHOOK_PID" VmRSS)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
RSS_PEAK=$(rss_kib "$WEBHOOK_PID" VmHWM)

# --- 5. table ------------------------------------------------------------------------------
python3 - "$WORK" "$BODY" "$RESPONSE_BYTES" "$RATE" "$DURATION" "$SAT_DURATION" \
    "$RSS_START" "$RSS_IDLE" "$RSS_AFTER" "$RSS_PEAK" "$SAT_CONNS" "$H2_CONNS" "$H2_STREAMS" \
    "$LOADAVG" "$TARGETS" "$RATE_RUNS" "$RATE_ONLY" "$SERVER_CPUS" "$LOAD_CPUS" \
    "${WEBHOOK_WORKERS:-}" <<'EOF'
import json, os, sys
(work, body, resp_bytes, rate, duration, sat_duration, rss_start, rss_idle, rss_after,
 rss_peak, sat_conns, h2_conns, h2_streams, loadavg, targets, rate_runs, rate_only,
 server_cpus, load_cpus, workers) = sys.argv[1:]
targets = targets.split()

def load(name):
    with open(os.path.join(work, name + ".json")) as f:
        return json.load(f)

def errors(r):
    codes = r.get("statusCodeDistribution", {})
    bad = sum(n for c, n in codes.items() if c != "200")
    errs = r.get("errorDistribution", {})
    # oha stops in-flight requests at the deadline; those are not server errors.
    errs = {k: v for k, v in errs.items() if "deadline" not in k}
    return bad + sum(errs.values()), sum(codes.values())

def ms(x):
    return "-" if x is None else f"{x * 1000:.2f}"

print()
print(f"body: {body} ({os.path.getsize(body)} bytes), answer {resp_bytes} bytes; "
      f"TLS 1.3, keep-alive; machine: {os.cpu_count()} CPUs, load average after the runs {loadavg}")
print(f"servers on CPUs {server_cpus or 'any'}, oha on CPUs {load_cpus or 'any'}, "
      f"webhook worker threads {workers or 'one per CPU'}")
print()
print(f"| {'run':<40} | {'server':<8} | {'req/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} | "
      f"{'p99.9 ms':>8} | {'max ms':>7} | {'errors':>11} |")
print("|" + "|".join("-" * (w + 2) for w in (40, 8, 9, 7, 7, 8, 7, 11)) + "|")
runs = [(f"(a) {rate} req/s for {duration}, HTTP/1.1", "rate"),
        (f"(b) saturation {sat_duration}, HTTP/1.1 x{sat_conns}", "sat-h1"),
        (f"(b) saturation {sat_duration}, HTTP/2 {h2_conns}x{h2_streams}", "sat-h2"),
        (f"(c) transport only, {{}} x{sat_conns}, HTTP/1.1", "tiny-h1")]
if rate_only == "1":
    runs = runs[:1]
rps = {}
for label, key in runs:
    for target in targets:
        r = load(f"{key}-{target}")
        s = r["summary"]
        p = r.get("latencyPercentiles", {})
        bad, total = errors(r)
        rps[(key, target)] = s["requestsPerSec"]
        print(f"| {label:<40} | {target:<8} | {s['requestsPerSec']:>9.0f} | {ms(p.get('p50')):>7} | "
              f"{ms(p.get('p99')):>7} | {ms(p.get('p99.9')):>8} | {ms(s.get('slowest')):>7} | "
              f"{f'{bad}/{total}':>11} |")
print()
for key, label in (() if rate_only == "1" else
                   (("sat-h1", "HTTP/1.1"), ("sat-h2", "HTTP/2"),
                    ("tiny-h1", "transport only (body {}, HTTP/1.1)"))):
    for target in (t for t in targets if t != "nginx"):
        print(f"saturation ratio {target}/nginx, {label}: "
              f"{rps[(key, target)] / rps[(key, 'nginx')]:.2f}")
print()
for target in targets:
    p99s = []
    for i in range(1, int(rate_runs) + 1):
        p = load(f"rate-{target}-{i}").get("latencyPercentiles", {})
        if p.get("p99") is not None:
            p99s.append(p["p99"] * 1000)
    if p99s:
        print(f"(a) p99 of {target} over {len(p99s)} runs: "
              + ", ".join(f"{x:.2f}" for x in p99s)
              + f" ms (min {min(p99s):.2f}, max {max(p99s):.2f})")
mib = lambda k: f"{int(k) / 1024:.1f} MiB"
print(f"webhook RSS: at start {mib(rss_start)}, idle after warm-up {mib(rss_idle)}, "
      f"after the load {mib(rss_after)}, peak (VmHWM) {mib(rss_peak)}")
EOF
