#!/usr/bin/env python3
"""Latency of proxied requests during blue-green deploys vs at rest.

DESIGN/issue 8: "a deploy adds no latency spike: p99 of the load during the
soak within 1.2x of p99 at rest". tests/soak_deploy.py checks correctness
with Python clients and backends, whose own latency (the GIL, thread starts)
dominates its percentiles on a 2-core machine. This measures proxyd only:

  - two nginx backends ("blue", "green": `return 200`), no Python on the
    data path;
  - wrk as the load, paced (a Lua delay per request) so that latency is
    service time, not queueing behind a saturated core;
  - deploys and rollbacks of one service, alternating, over one control
    connection (no process started per operation);
  - phases alternate rest / deploys --rounds times, so drift hits both.

Prints wrk's p50/p99 per phase, the deploys done, and the ratio of the
medians of p99 during deploys and at rest. Needs nginx and wrk (Debian
packages). Every process is stopped by PID. Not part of `make test`.

usage: python3 tests/bench/deploy_p99.py [--build build] [--rounds 3] [--seconds 8]
          [--connections 8] [--pace-ms 2] [--workers 2] [--gap-ms 100]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {tmp}/nginx-{name}.pid;
error_log {tmp}/nginx-{name}.err warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/cb-{name};
    proxy_temp_path {tmp}/pt-{name};
    fastcgi_temp_path {tmp}/ft-{name};
    uwsgi_temp_path {tmp}/ut-{name};
    scgi_temp_path {tmp}/st-{name};
    server {{
        listen 127.0.0.1:{port};
        location /up {{ return 200 "up\\n"; }}
        location = /nginx_status {{ stub_status; }}
        location / {{ return 200 "{name}\\n"; }}
    }}
}}
"""

PACE_LUA = """
local pace = tonumber(os.getenv("PACE_MS") or "2")
function delay() return pace end
"""


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


class Control:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("rb")
        self.n = 0

    def call(self, cmd, args):
        self.n += 1
        self.s.sendall((json.dumps({"id": self.n, "cmd": cmd, "args": args}) + "\n").encode())
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError("control connection closed")
            m = json.loads(line)
            if "progress" in m:
                continue
            if not m.get("ok"):
                raise RuntimeError("%s: %s" % (cmd, m.get("error")))
            return m["result"]


def to_ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(port, seconds, conns, pace_ms, lua):
    env = dict(os.environ, PACE_MS=str(pace_ms))
    out = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency", "-s", lua,
                          "http://127.0.0.1:%d/" % port], capture_output=True, text=True, env=env,
                         timeout=seconds + 30).stdout
    res = {}
    for p in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % p, out, re.M)
        res[p] = to_ms(m.group(1), m.group(2)) if m else float("nan")
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = m.group(1) if m else ""
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--pace-ms", type=float, default=2.0, help="each connection waits this long between requests")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--gap-ms", type=float, default=100.0, help="pause between two deploys")
    args = ap.parse_args()
    for exe in ("nginx", "wrk"):
        if not shutil.which(exe) and not os.path.exists("/usr/sbin/" + exe):
            print("deploy_p99: %s not installed (Debian package %s)" % (exe, exe), file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    build = os.path.abspath(args.build)
    tmp = tempfile.mkdtemp(prefix="proxyd-deploy-p99-")
    procs = []
    try:
        ports = {}
        for name in ("blue", "green"):
            ports[name] = free_port()
            conf = os.path.join(tmp, "nginx-%s.conf" % name)
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(tmp=tmp, name=name, port=ports[name]))
            procs.append(subprocess.Popen([nginx, "-c", conf, "-p", tmp], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
            if not wait_port(ports[name]):
                raise RuntimeError("nginx %s did not start" % name)
        lua = os.path.join(tmp, "pace.lua")
        with open(lua, "w") as f:
            f.write(PACE_LUA)
        port = free_port()
        sock = os.path.join(tmp, "control.sock")
        ini = os.path.join(tmp, "proxyd.ini")
        with open(ini, "w") as f:
            f.write("[proxy]\nworkers = %d\nlisten_http = 127.0.0.1:%d\naccess_log = off\nerror_log = %s\n"
                    "control_socket = %s\nstate_file = %s\n" %
                    (args.workers, port, os.path.join(tmp, "error.log"), sock, os.path.join(tmp, "state.json")))
        procs.append(subprocess.Popen([os.path.join(build, "proxyd"), "-c", ini], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        if not wait_port(port):
            raise RuntimeError("proxyd did not start")
        ctl = Control(sock)
        target = {"blue": "127.0.0.1:%d" % ports["blue"], "green": "127.0.0.1:%d" % ports["green"]}
        ctl.call("deploy", {"service": "web", "targets": [target["blue"]], "health_check_interval_ms": 50})

        def deployer(stop, stats):
            k = 0
            while not stop.is_set():
                t0 = time.monotonic()
                if k % 2 == 0:
                    ctl.call("deploy", {"service": "web", "targets": [target["green"]],
                                        "health_check_interval_ms": 50})
                else:
                    ctl.call("rollback", {"service": "web"})
                stats.append(time.monotonic() - t0)
                k += 1
                stop.wait(args.gap_ms / 1000.0)

        run_wrk(port, 2, args.connections, args.pace_ms, lua)  # warm up
        rest, dep, ndeploys, dtimes = [], [], 0, []
        for rnd in range(args.rounds):
            r = run_wrk(port, args.seconds, args.connections, args.pace_ms, lua)
            rest.append(r)
            stop, stats = threading.Event(), []
            t = threading.Thread(target=deployer, args=(stop, stats))
            t.start()
            d = run_wrk(port, args.seconds, args.connections, args.pace_ms, lua)
            stop.set()
            t.join(60)
            dep.append(d)
            ndeploys += len(stats)
            dtimes += stats
            print("round %d: rest p50 %.3f p99 %.3f ms (%d req, %d non-2xx %s) | deploys p50 %.3f p99 %.3f ms "
                  "(%d req, %d non-2xx %s, %d deploys)" %
                  (rnd + 1, r["50"], r["99"], r["requests"], r["non2xx"], r["socket_errors"], d["50"], d["99"],
                   d["requests"], d["non2xx"], d["socket_errors"], len(stats)), flush=True)
        p99r = statistics.median(x["99"] for x in rest)
        p99d = statistics.median(x["99"] for x in dep)
        p50r = statistics.median(x["50"] for x in rest)
        p50d = statistics.median(x["50"] for x in dep)
        print("median p50: rest %.3f ms, deploys %.3f ms (x%.2f)" % (p50r, p50d, p50d / p50r))
        print("median p99: rest %.3f ms, deploys %.3f ms (x%.2f)" % (p99r, p99d, p99d / p99r))
        if dtimes:
            print("deploys: %d, each %.1f ms median, %.1f ms max" %
                  (ndeploys, statistics.median(dtimes) * 1000, max(dtimes) * 1000))
        bad = sum(x["non2xx"] for x in rest + dep)
        print("non-2xx responses: %d" % bad)
        return 1 if bad else 0
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
