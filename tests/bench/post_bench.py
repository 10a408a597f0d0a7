#!/usr/bin/env python3
"""64 KiB POSTs through proxyd with request buffering on and off.

Issue 17's performance check: what `buffer_requests = yes` costs against
streaming the body (`= no`) on the same binary in the same run. As the
bench (`make bench`, tests/bench/proxyd-bench.sh): one nginx origin
(Debian's, `return 200`, keep-alive, no logging), proxyd with 1 worker and
the access log off (`upstream_keepalive = 1024`), origin and proxy pinned
on CPU 0 and the load generator on CPU 1 (taskset). For each mode a proxyd
of its own: a 1 s warm-up, then `wrk -t1 -c50 -dN --latency` with a Lua
script POSTing a 64 KiB body to "/", the proxy's utime+stime read from
/proc/PID/stat before and after. Prints req/s, proxy CPU µs per request and
wrk's p50/p99 for each mode, and the ratios. --rounds alternates the modes
that many times (machine noise hits both).

Needs nginx and wrk (Debian packages) and a built build/proxyd. Every
process is stopped by PID; the temp dir is removed. Not part of `make test`.

usage: python3 tests/bench/post_bench.py [--seconds 10] [--connections 50] [--rounds 1]
          [--body 65536] [--build build] [--no-pin]
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err warn;
events {{ worker_connections 8192; multi_accept off; }}
http {{
    access_log off;
    server_tokens off;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    client_max_body_size 1m;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "hello world!\\n"; }}
    }}
}}
"""

POST_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("x", tonumber(os.getenv("POST_BYTES") or "65536"))
"""

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def cpu_seconds(pid):
    """utime + stime of the whole process (every thread), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def to_ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(pin, port, seconds, conns, lua, body):
    env = dict(os.environ, POST_BYTES=str(body))
    out = subprocess.run(pin("1") + ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency", "-s", lua,
                                     "http://127.0.0.1:%d/" % port],
                         capture_output=True, text=True, env=env, timeout=seconds + 30).stdout
    res = {}
    for p in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % p, out, re.M)
        res[p] = to_ms(m.group(1), m.group(2)) if m else float("nan")
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)", out)
    res["requests"] = int(m.group(1)) if m else 0
    res["seconds"] = to_ms(m.group(2), m.group(3)) / 1000.0 if m else float(seconds)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = m.group(1) if m else ""
    if not m and res["requests"] == 0:
        raise RuntimeError("wrk: no result:\n" + out)
    return res


def stop(procs):
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except OSError:
            pass
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def measure(args, pin, proxyd, tmp, upstream, lua, mode):
    """One proxyd with buffer_requests = MODE: warm-up, then the measured wrk run."""
    port = free_port()
    d = os.path.join(tmp, "proxyd-" + mode)
    os.makedirs(d, exist_ok=True)
    ini = os.path.join(d, "proxyd.ini")
    with open(ini, "w") as f:
        f.write("[proxy]\nworkers = 1\nlisten_http = 127.0.0.1:%d\naccess_log = off\nerror_log = %s/error.log\n"
                "control_socket = %s/control.sock\nstate_file = %s/state.json\ntemp_dir = %s/tmp\n"
                "upstream_keepalive = 1024\n\n[service bench]\ntargets = %s\nbuffer_requests = %s\n"
                % (port, d, d, d, d, upstream, mode))
    p = subprocess.Popen(pin("0") + [proxyd, "-c", ini], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if not wait_port(port):
            raise RuntimeError("proxyd did not start (see %s/error.log)" % d)
        run_wrk(pin, port, 1, args.connections, lua, args.body)  # warm-up: connections, buffers
        c0 = cpu_seconds(p.pid)
        r = run_wrk(pin, port, args.seconds, args.connections, lua, args.body)
        c1 = cpu_seconds(p.pid)
    finally:
        stop([p])
    r["rps"] = r["requests"] / r["seconds"] if r["seconds"] else 0.0
    r["cpu_us"] = (c1 - c0) * 1e6 / r["requests"] if r["requests"] else float("nan")
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=1, help="runs of each mode, alternated")
    ap.add_argument("--body", type=int, default=65536, help="POST body size in bytes")
    ap.add_argument("--no-pin", action="store_true", help="no taskset (a machine with one CPU)")
    args = ap.parse_args()
    for exe in ("nginx", "wrk") + (() if args.no_pin else ("taskset",)):
        if not shutil.which(exe) and not os.path.exists("/usr/sbin/" + exe):
            print("post_bench: %s not installed (Debian package %s)" % (exe, exe), file=sys.stderr)
            return 2
    proxyd = os.path.join(os.path.abspath(args.build), "proxyd")
    if not os.access(proxyd, os.X_OK):
        print("post_bench: %s not built (make)" % proxyd, file=sys.stderr)
        return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"

    def pin(cpu):
        return [] if args.no_pin else ["taskset", "-c", cpu]

    tmp = tempfile.mkdtemp(prefix="proxyd-post-bench-")
    procs = []
    try:
        oport = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(tmp=tmp, port=oport))
        procs.append(subprocess.Popen(pin("0") + [nginx, "-c", conf, "-p", tmp], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        if not wait_port(oport):
            raise RuntimeError("nginx did not start (see %s/nginx.err)" % tmp)
        lua = os.path.join(tmp, "post.lua")
        with open(lua, "w") as f:
            f.write(POST_LUA)
        upstream = "127.0.0.1:%d" % oport
        print("%d-byte POSTs, wrk -t1 -c%d -d%ds, proxyd 1 worker (%s), %s" %
              (args.body, args.connections, args.seconds, proxyd,
               "no pinning" if args.no_pin else "proxy and nginx on CPU 0, wrk on CPU 1"), flush=True)
        results = {"yes": [], "no": []}
        bad = 0
        for rnd in range(args.rounds):
            for mode in (("yes", "no") if rnd % 2 == 0 else ("no", "yes")):
                r = measure(args, pin, proxyd, tmp, upstream, lua, mode)
                results[mode].append(r)
                bad += r["non2xx"] + (1 if r["socket_errors"] else 0)
                print("buffer_requests = %-3s: %9.0f req/s  %6.1f proxy CPU us/req  p50 %.3f ms  p99 %.3f ms"
                      "  (%d requests%s%s)" %
                      (mode, r["rps"], r["cpu_us"], r["50"], r["99"], r["requests"],
                       ", %d non-2xx" % r["non2xx"] if r["non2xx"] else "",
                       ", socket errors: " + r["socket_errors"] if r["socket_errors"] else ""), flush=True)
        if args.rounds > 1:
            for mode in ("yes", "no"):
                rs = results[mode]
                print("mean buffer_requests = %-3s: %9.0f req/s  %6.1f proxy CPU us/req  p99 %.3f ms" %
                      (mode, sum(r["rps"] for r in rs) / len(rs), sum(r["cpu_us"] for r in rs) / len(rs),
                       sum(r["99"] for r in rs) / len(rs)))

        def mean(mode, k):
            return sum(r[k] for r in results[mode]) / len(results[mode])

        print("buffered / streamed: req/s x%.2f, CPU us/req x%.2f, p99 x%.2f" %
              (mean("yes", "rps") / mean("no", "rps"), mean("yes", "cpu_us") / mean("no", "cpu_us"),
               mean("yes", "99") / mean("no", "99")))
        return 1 if bad else 0
    finally:
        stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
