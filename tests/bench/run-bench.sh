#!/usr/bin/env bash
# make bench: proxyd next to nginx/HAProxy/Caddy in ../shared/bench/run.sh.
#   BENCH_DIR      the shared bench folder (default: ../shared/bench next to the repo)
#   PROXIES        built-in proxies to compare (default "nginx-1w nginx-2w haproxy caddy")
#   PROXYD_TLS     1 (default): also benchmark proxyd's TLS listener (PROXYD_TLS_PORT,
#                  8446: tls, tls-new, h2); 0: plain HTTP only (TLS/h2 cells show n/a)
#   PROXYD_WORKERS proxyd worker threads (default 1)
#   PROXYD         the binary (default build/proxyd)
#   BASELINE       a git revision (e.g. HEAD~3 or a tag): it is built into a
#                  temporary worktree and benchmarked as "proxyd-base" next to
#                  "proxyd" in the same run, so before/after share one machine
#                  state (ports 8087/8447). PROXYD_BASE=/path/to/proxyd does the
#                  same with a binary at hand.
#   BASE_LIMIT     1: the second instance ("proxyd-base") runs with a rate limit
#                  on "/" that admits the whole load (PROXYD_LIMIT in
#                  proxyd-bench.sh): with PROXYD_BASE=build/proxyd, the cost of
#                  a limit per request, in one run. BASE_LIMIT=shared: the zone
#                  is shared (`shared = yes`, [cluster]) through a redis-server
#                  this script starts on 127.0.0.1:PROXYD_REDIS_PORT (6390, no
#                  persistence) and stops; `PROXYD_LIMIT=1 BASE_LIMIT=shared
#                  PROXYD_BASE=build/proxyd` compares a local zone (the first
#                  instance) with a shared one in one run. BASE_LIMIT=shared-down:
#                  the shared zone with its Redis down (the local fallback)
#   BASE_BUFFER    yes/no: the second instance's service sets buffer_requests
#                  (PROXYD_BUFFER in proxyd-bench.sh): with PROXYD_BASE=build/proxyd,
#                  buffering on against off in one run
#   BASE_METRICS   1: the second instance runs with metrics_listen set
#                  (PROXYD_METRICS in proxyd-bench.sh): with
#                  PROXYD_BASE=build/proxyd, what the metrics cost, in one run
#   QUICK, DURATION, WARMUP, REPS, CONNS, SCENARIOS, ... pass through (see the bench README)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-$(dirname "$repo")/shared/bench}
export PROXIES=${PROXIES-"nginx-1w nginx-2w haproxy caddy"}

export PROXYD=${PROXYD:-$repo/build/proxyd}
[[ -x "$PROXYD" ]] || { echo "run-bench: $PROXYD is missing: run make" >&2; exit 1; }
[[ -f "$BENCH_DIR/run.sh" ]] || { echo "run-bench: no $BENCH_DIR/run.sh (set BENCH_DIR)" >&2; exit 1; }

# tools: the origin is always nginx; proxies only when selected
declare -A PKG=([nginx]=nginx [haproxy]=haproxy [caddy]=caddy [h2o]=h2o [wrk]=wrk [h2load]=nghttp2-client
                [curl]=curl [openssl]=openssl [taskset]=util-linux)
need=(nginx wrk h2load curl openssl taskset)
for p in $PROXIES; do
  case $p in haproxy|caddy|h2o) need+=("$p") ;; esac
done
missing=()
for t in "${need[@]}"; do
  command -v "$t" >/dev/null 2>&1 || [[ -x /usr/sbin/$t ]] || missing+=("$t")
done
if ((${#missing[@]})); then
  pkgs=()
  for t in "${missing[@]}"; do pkgs+=("${PKG[$t]}"); done
  if [[ $(id -u) != 0 ]]; then
    echo "run-bench: missing ${missing[*]}; as root: apt-get install -y --no-install-recommends ${pkgs[*]}" >&2
    exit 1
  fi
  echo "run-bench: installing ${pkgs[*]}"
  # keep postinst from starting the packaged services (we start our own, by hand)
  made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" || rc=$?
  ((made_policy)) && rm -f /usr/sbin/policy-rc.d
  ((rc == 0)) || { echo "run-bench: apt-get failed ($rc)" >&2; exit 1; }
  for svc in "${missing[@]}"; do   # the packaged services are never used: disable/stop them
    case $svc in nginx|haproxy|caddy|h2o) ;; *) continue ;; esac
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
    service "$svc" stop >/dev/null 2>&1 || true
  done
  for t in "${missing[@]}"; do
    command -v "$t" >/dev/null 2>&1 || [[ -x /usr/sbin/$t ]] || { echo "run-bench: still missing $t" >&2; exit 1; }
  done
fi

export PATH=$PATH:/usr/sbin
export CERT_DIR=${CERT_DIR:-/tmp/bench-run/certs}
export RESULTS_DIR=${RESULTS_DIR:-/tmp/bench-run/results}
export PROXY_NAME=proxyd
export PROXY_HTTP_PORT=${PROXYD_HTTP_PORT:-8086}
export PROXYD_TLS=${PROXYD_TLS:-1}
if [[ "$PROXYD_TLS" != 0 ]]; then
  export PROXY_TLS_PORT=${PROXYD_TLS_PORT:-8446}
else
  export PROXY_TLS_PORT=   # PROXYD_TLS=0: plain HTTP only
fi
export PROXY_CMD="bash '$repo/tests/bench/proxyd-bench.sh'"

wt= redis_pid=
cleanup() {
  if [[ -n "$redis_pid" ]]; then kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; fi
  if [[ -n "$wt" ]]; then git -C "$repo" worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"; fi
  return 0
}
trap cleanup EXIT

# A shared zone needs a Redis: the run's own.
if [[ "${PROXYD_LIMIT:-0}" == shared || "${BASE_LIMIT:-0}" == shared ]]; then
  command -v redis-server >/dev/null 2>&1 || { echo "run-bench: a shared zone needs redis-server" >&2; exit 1; }
  export PROXYD_REDIS_PORT=${PROXYD_REDIS_PORT:-6390}
  redis-server --port "$PROXYD_REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir /tmp \
    --logfile "" >/dev/null 2>&1 &
  redis_pid=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PROXYD_REDIS_PORT") 2>/dev/null && break; sleep 0.1; done
fi

# Before/after in one run: the harness takes one PROXY_CMD, so run a copy of
# it that starts a second one (PROXY2_*) right after the first.
if [[ -n "${BASELINE:-}" && -z "${PROXYD_BASE:-}" ]]; then
  wt=$(mktemp -d /tmp/proxyd-baseline.XXXXXX)
  git -C "$repo" worktree add --detach -q "$wt" "$BASELINE"
  make -C "$wt" -j2 build/proxyd >/dev/null
  mkdir -p /tmp/bench-run
  cp "$wt/build/proxyd" /tmp/bench-run/proxyd-base.bin
  PROXYD_BASE=/tmp/bench-run/proxyd-base.bin
  echo "run-bench: baseline $(git -C "$repo" rev-parse --short "$BASELINE") as proxyd-base"
fi
if [[ -n "${PROXYD_BASE:-}" ]]; then
  [[ -x "$PROXYD_BASE" ]] || { echo "run-bench: $PROXYD_BASE is not executable" >&2; exit 1; }
  export PROXY2_NAME=proxyd-base PROXY2_HTTP_PORT=8087
  if [[ "$PROXYD_TLS" != 0 ]]; then export PROXY2_TLS_PORT=8447; else export PROXY2_TLS_PORT=; fi
  export PROXY2_CMD="env PROXYD='$PROXYD_BASE' PROXYD_LIMIT=${BASE_LIMIT:-0} PROXYD_METRICS=${BASE_METRICS:-0} PROXYD_BUFFER=${BASE_BUFFER:-} PROXYD_INSTANCE=proxyd-base PROXYD_HTTP_PORT=8087 PROXYD_TLS_PORT=8447 bash '$repo/tests/bench/proxyd-bench.sh'"
  patched=$(mktemp /tmp/bench-run-two.XXXXXX.sh)
  sed -e "s|^BENCH_DIR=.*|BENCH_DIR='$BENCH_DIR'|" \
      -e 's|^start_custom$|start_custom; [[ -z "${PROXY2_CMD:-}" ]] \|\| PROXY_CMD=$PROXY2_CMD PROXY_NAME=$PROXY2_NAME PROXY_HTTP_PORT=$PROXY2_HTTP_PORT PROXY_TLS_PORT=$PROXY2_TLS_PORT start_custom|' \
      "$BENCH_DIR/run.sh" >"$patched"
  grep -q 'PROXY2_CMD' "$patched" || { echo "run-bench: cannot add the baseline to $BENCH_DIR/run.sh" >&2; exit 1; }
  rc=0
  bash "$patched" || rc=$?
  rm -f "$patched"
  exit $rc
fi
rc=0
bash "$BENCH_DIR/run.sh" || rc=$?
exit $rc
