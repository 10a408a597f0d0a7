#!/bin/sh
# make run: proxyd on conf/dev.ini in front of tests/demo_backend.py.
# The demo backend is stopped (by PID) whenever this script ends; SIGINT and
# SIGTERM stop proxyd gracefully first (in-flight requests finish), then it.
#   PROXYD, CONF, BACKEND_PORT override the binary, the config and the port.
set -eu
cd "$(dirname "$0")/.."

PROXYD=${PROXYD:-build/proxyd}
CONF=${CONF:-conf/dev.ini}
BACKEND_PORT=${BACKEND_PORT:-3000}   # the port the config's targets name

[ -x "$PROXYD" ] || { echo "run-dev: $PROXYD is missing: run make" >&2; exit 1; }
[ -f "$CONF" ] || { echo "run-dev: $CONF is missing" >&2; exit 1; }
mkdir -p /tmp/proxyd-dev

if python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $BACKEND_PORT)) != 0)"; then
    echo "run-dev: something already listens on 127.0.0.1:$BACKEND_PORT; stop it first" >&2
    exit 1
fi

backend_pid=
proxyd_pid=
# proxyd and the backend run in sessions of their own, so that a stop meant
# for make run (Ctrl-C, `timeout`, a process-group TERM) reaches this script
# alone, and it stops them in order: proxyd first, gracefully (it finishes
# in-flight requests, up to shutdown_timeout), then the backend they need.
cleanup() {
    trap '' INT TERM
    if [ -n "$proxyd_pid" ]; then
        kill -TERM "$proxyd_pid" 2>/dev/null || true
        wait "$proxyd_pid" 2>/dev/null || true
    fi
    if [ -n "$backend_pid" ]; then
        kill -TERM "$backend_pid" 2>/dev/null || true
        wait "$backend_pid" 2>/dev/null || true
    fi
    backend_pid=
    proxyd_pid=
}
# A stop (INT or TERM) is how make run is meant to end: once proxyd is up,
# the script exits with proxyd's status, 0 for a clean graceful stop, so
# that make says nothing ("make: *** [run] Error 143" was a clean stop
# reported as a failure). A stop before proxyd runs exits 128+signal.
stop() {
    trap '' INT TERM
    rc=$1
    if [ -n "$proxyd_pid" ]; then
        kill -TERM "$proxyd_pid" 2>/dev/null || true
        rc=0
        wait "$proxyd_pid" || rc=$?
        proxyd_pid=
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'stop 130' INT
trap 'stop 143' TERM

setsid python3 tests/demo_backend.py --host 127.0.0.1 --port "$BACKEND_PORT" &
backend_pid=$!

# wait (bounded) for the backend to answer
i=0
until python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $BACKEND_PORT)))" 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -le 50 ] || { echo "run-dev: demo backend did not start" >&2; exit 1; }
    kill -0 "$backend_pid" 2>/dev/null || { echo "run-dev: demo backend exited" >&2; backend_pid=; exit 1; }
    sleep 0.1
done

echo "proxyd on http://127.0.0.1:8080/ and https://localhost:8443/ (HTTP/2) -> demo backend on 127.0.0.1:$BACKEND_PORT"
echo "try: curl -i http://127.0.0.1:8080/   or   curl -i --http2 --cacert certs-dev/ca.crt https://localhost:8443/"
# proxyd runs as a child (not exec) so that the trap can stop the backend when it exits.
setsid "$PROXYD" -c "$CONF" &
proxyd_pid=$!
set +e
wait "$proxyd_pid"
rc=$?
set -e
proxyd_pid=
exit "$rc"
