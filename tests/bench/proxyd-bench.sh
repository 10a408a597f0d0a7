#!/usr/bin/env bash
# PROXY_CMD for ../shared/bench/run.sh: write a proxyd config for the bench
# and exec build/proxyd in the foreground (the harness tracks this PID).
#   PROXYD_HTTP_PORT (8086)   plain listener
#   PROXYD_TLS (1)            also listen_https on PROXYD_TLS_PORT (8446) with
#                             $BENCH_CERT/$BENCH_KEY and no session resumption
#                             (session_timeout = 0, session_tickets = no), as the
#                             bench requires; PROXYD_TLS=0: plain HTTP only
#   PROXYD_WORKERS (1)        worker threads
#   PROXYD (build/proxyd)     the binary
#   PROXYD_INSTANCE (proxyd)  name of its scratch folder (two proxyds in one run)
#   PROXYD_LIMIT (0)          1: a rate limit on "/" that admits the whole load
#                             (1000000r/s per client IP), to measure what a
#                             limit costs per request; shared: the same zone with
#                             `shared = yes` and a [cluster] on the Redis at
#                             127.0.0.1:PROXYD_REDIS_PORT (6390; run-bench.sh starts it);
#                             shared-down: the shared zone with a Redis that is
#                             not there (port 9: the local fallback's cost)
#   PROXYD_METRICS (0)        1: metrics_listen on 127.0.0.1:PROXYD_METRICS_PORT
#                             (9146), to measure what the metrics cost per request
#   PROXYD_BUFFER ()          yes/no: the service's buffer_requests (unset: the
#                             binary's default, yes), to measure what buffering costs
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
proxyd=${PROXYD:-$repo/build/proxyd}
upstream=${BENCH_UPSTREAM:?BENCH_UPSTREAM is set by bench/run.sh}
dir=${BENCH_RUN_DIR:-/tmp/bench-run}/${PROXYD_INSTANCE:-proxyd}
mkdir -p "$dir"
conf=$dir/proxyd.ini

{
  echo "[proxy]"
  echo "workers = ${PROXYD_WORKERS:-1}"
  echo "listen_http = 127.0.0.1:${PROXYD_HTTP_PORT:-8086}"
  echo "access_log = off"
  echo "error_log = -"
  echo "control_socket = $dir/control.sock"
  echo "state_file = $dir/state.json"
  if [[ "${PROXYD_METRICS:-0}" != 0 ]]; then
    echo "metrics_listen = 127.0.0.1:${PROXYD_METRICS_PORT:-9146}"
  fi
  # as the bench's nginx (keepalive 1024: h2 is 50 x 10 streams in flight);
  # a binary older than the key (BASELINE) has no bound at all
  if grep -q upstream_keepalive "$proxyd"; then
    echo "upstream_keepalive = 1024"
  fi
  if [[ "${PROXYD_TLS:-1}" != 0 ]]; then
    echo "listen_https = 127.0.0.1:${PROXYD_TLS_PORT:-8446}"
    echo "redirect_https = no"
    echo
    echo "[tls]"
    echo "certificate = ${BENCH_CERT:?}"
    echo "certificate_key = ${BENCH_KEY:?}"
    echo "session_timeout = 0"
    echo "session_tickets = no"
  fi
  if [[ "${PROXYD_LIMIT:-0}" == shared* ]]; then
    echo
    echo "[cluster]"
    if [[ "${PROXYD_LIMIT}" == shared-down ]]; then
      echo "redis = redis://127.0.0.1:9/0"
    else
      echo "redis = redis://127.0.0.1:${PROXYD_REDIS_PORT:-6390}/0"
    fi
    echo "instance = ${PROXYD_INSTANCE:-proxyd}"
  fi
  if [[ "${PROXYD_LIMIT:-0}" != 0 ]]; then
    echo
    echo "[limit bench]"
    echo "rate = 1000000r/s"
    echo "burst = 1000000"
    if [[ "${PROXYD_LIMIT}" == shared* ]]; then
      echo "shared = yes"
    fi
    echo "[route /]"
    echo "limit = bench"
  fi
  echo
  echo "[service bench]"
  echo "targets = $upstream"
  if [[ -n "${PROXYD_BUFFER:-}" ]]; then
    echo "buffer_requests = $PROXYD_BUFFER"
  fi
} >"$conf"

exec "$proxyd" -c "$conf"
