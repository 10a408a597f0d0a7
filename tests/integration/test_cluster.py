"""Several proxyd instances and one Redis ([cluster], DESIGN "Several
instances"): shared limit zones (`shared = yes`) checked by one script in
Redis with the local zone's arithmetic, across three instances round robin;
several zones, delay; the faults (Redis killed mid-load, stopped with
SIGSTOP, its script cache flushed, a wrong password); heartbeats in
`proxyctl status`; HTTP-01 tokens other instances put in Redis, answered by
every instance.

redis-server (tests/deps-test.txt) is started by each test on an ephemeral
loopback port with no persistence, and killed at the end. Rates are low
(1r/m) where counts are asserted, as in test_limits.py, so that nothing
leaks back during a test; statuses and order are asserted, never timings."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import json
import re

from harness import (SLOW, Client, ProxyTestCase, RecordingBackend, build_dir, curl, free_port, proxyd_path,
                     request_bytes, wait_until)

REDIS = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK)
                                         else None)
PROXYCTL = os.path.join(build_dir(), "proxyctl")
FALLBACK = "shared limit zones fall back"
BACK = "Redis answers again"


def resp_encode(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def resp_read(f):
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    t, rest = line[:1], line[1:-2]
    if t == b"+":
        return rest.decode()
    if t == b"-":
        return RuntimeError(rest.decode())
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode("utf-8", "replace")
    if t == b"*":
        n = int(rest)
        return None if n < 0 else [resp_read(f) for _ in range(n)]
    raise ValueError("bad RESP line %r" % line)


class Redis:
    """A redis-server of the test's own on 127.0.0.1:PORT (no persistence)."""

    def __init__(self, password=None, unix=False):
        self.port = free_port()
        self.password = password
        self.unix = unix
        self.tmp = tempfile.mkdtemp(prefix="proxyd-redis-")
        self.proc = None
        self.start()

    def start(self):
        argv = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.tmp, "--logfile", os.path.join(self.tmp, "redis.log")]
        if self.unix:
            argv[2] = "0"  # no TCP
            argv += ["--unixsocket", self.path]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def up():
            try:
                return self.cmd("PING") == "PONG"
            except OSError:
                return False
        if not wait_until(up, 10):
            raise AssertionError("redis-server did not start on port %d" % self.port)

    @property
    def path(self):
        return os.path.join(self.tmp, "redis.sock")

    def connect(self):
        if not self.unix:
            return socket.create_connection(("127.0.0.1", self.port), timeout=5 * SLOW)
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5 * SLOW)
        s.connect(self.path)
        return s

    def cmd(self, *args):
        with self.connect() as s:
            f = s.makefile("rb")
            if self.password:
                s.sendall(resp_encode("AUTH", self.password))
                resp_read(f)
            s.sendall(resp_encode(*args))
            return resp_read(f)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.kill()
        shutil.rmtree(self.tmp, True)


class HangingRedis:
    """Answers the first connection's PING (proxyd's start check), then
    accepts every later connection and never answers: a Redis that hangs
    just after proxyd started, while the workers' connections are still
    being set up."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.held = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        first = True
        while not self.stopping.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if first:
                first = False
                c.settimeout(5)
                try:
                    buf = b""
                    while b"PING" not in buf.upper():
                        chunk = c.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                    c.sendall(b"+PONG\r\n")
                except OSError:
                    pass
                c.close()
                continue
            self.held.append(c)  # read by nobody: the kernel buffers what proxyd sends

    def close(self):
        self.stopping.set()
        self.thread.join(5)
        self.lsock.close()
        for c in self.held:
            c.close()


def limit(name="api", rate="1r/m", burst=20, more=""):
    return "[limit %s]\nrate = %s\nburst = %d\nzone_size = 1m\nshared = yes\n%s\n" % (name, rate, burst, more)


def ctl(proxy, *args):
    sock = os.path.join(proxy.tmp, "control.sock")
    p = subprocess.run([PROXYCTL, "--socket", sock] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30 * SLOW)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


class ClusterCase(ProxyTestCase):
    def setUp(self):
        if REDIS is None:
            self.skipTest("redis-server is not installed (tests/deps-test.txt lists it)")
        self.b = self.backend(RecordingBackend)

    def redis(self, **kw):
        r = Redis(**kw)
        self.addCleanup(r.close)
        return r

    def cluster(self, redis, name, more="", timeout="500ms"):
        # 500 ms: a loaded test machine must not make the counts fall back
        return ("[cluster]\nredis = redis://127.0.0.1:%d/0\ninstance = %s\ntimeout = %s\n%s\n"
                % (redis.port, name, timeout, more))

    def instances(self, redis, sections, n=3, extra_proxy="", more="", timeout="500ms"):
        return [self.proxy(self.service_config(self.b, extra_proxy=extra_proxy,
                                               extra=self.cluster(redis, "px%d" % i, more, timeout) + sections))
                for i in range(n)]

    def round_robin(self, proxies, path, n, headers=()):
        clients = [Client(p.port) for p in proxies]
        try:
            return [clients[i % len(clients)].request("GET", path, host="app.test", headers=headers).status
                    for i in range(n)]
        finally:
            for c in clients:
                c.close()

    def statuses(self, p, path, n, headers=()):
        return self.round_robin([p], path, n, headers)


class SharedZones(ClusterCase):
    def test_21_of_40_pass_round_robin_over_three(self):
        """The nginx parity test's burst (test_limits: 21 of 40 with burst
        20) through three instances round robin: one budget, not three."""
        r = self.redis()
        ps = self.instances(r, limit() + "[route /api/]\nlimit = api\n")
        got = self.round_robin(ps, "/api/x", 40)
        self.assertEqual(got, [200] * 21 + [429] * 19)
        self.assertEqual(len(self.b.wait_requests(21)), 21)
        # the state is in Redis, under the prefix, expiring
        self.assertGreater(r.cmd("PTTL", "proxyd:l:api:127.0.0.1"), 0)
        # each instance's local arena was never charged: no fallback happened
        for p in ps:
            self.assertNotIn(FALLBACK, p.error_log_text())
        # another route is not limited
        self.assertEqual(self.round_robin(ps, "/other", 6), [200] * 6)

    def test_refill_after_one_second(self):
        r = self.redis()
        ps = self.instances(r, limit(rate="1r/s", burst=0) + "[route /api/]\nlimit = api\n", n=2)
        self.assertEqual(self.round_robin(ps, "/api/x", 2), [200, 429])
        time.sleep(1.1)
        self.assertEqual(self.round_robin(ps[::-1], "/api/x", 2), [200, 429])

    def test_several_zones_all_or_none(self):
        """As test_limits' several zones: /multi passes 3 (b's burst), and
        a's budget shows only those 3 on /single, across instances."""
        r = self.redis()
        ps = self.instances(r, limit("a", burst=5) + limit("b", burst=2) +
                            "[route /multi/]\nlimit = a b\n[route /single/]\nlimit = a\n")
        self.assertEqual(self.round_robin(ps, "/multi/x", 8), [200] * 3 + [429] * 5)
        self.assertEqual(self.round_robin(ps, "/single/x", 5), [200] * 3 + [429] * 2)
        def logged():
            lines = [e for p in ps for e in p.access_log_lines()]
            return lines if len(lines) >= 13 else None
        lines = wait_until(logged, 5) or []
        self.assertEqual(sorted(e.get("limited") for e in lines if e["status"] == 429), ["a"] * 2 + ["b"] * 5)

    def test_local_and_shared_zones_on_one_route(self):
        """A route mixing a local zone (a, burst 5 per instance) and a shared
        one (b, burst 2 in all): b lets 3 through over both instances, and a
        is charged only for those: instance 0 passed 2 of them, so a lets 4
        more through there on /single."""
        r = self.redis()
        local_a = limit("a", burst=5).replace("shared = yes", "shared = no")
        ps = self.instances(r, local_a + limit("b", burst=2) +
                            "[route /multi/]\nlimit = a b\n[route /single/]\nlimit = a\n", n=2)
        self.assertEqual(self.round_robin(ps, "/multi/x", 8), [200] * 3 + [429] * 5)
        self.assertEqual(self.statuses(ps[0], "/single/x", 5), [200] * 4 + [429])
        self.assertEqual(self.statuses(ps[1], "/single/x", 6), [200] * 5 + [429])

    def test_two_stage_delay(self):
        """delay = 2 with burst 3 (test_limits' two-stage delay) over two
        instances: three at once, the fourth waits, the fifth is rejected."""
        r = self.redis()
        ps = self.instances(r, limit(rate="30r/m", burst=3, more="delay = 2") + "[route /api/]\nlimit = api\n",
                            n=2)
        self.assertEqual(self.round_robin(ps, "/api/a", 3), [200] * 3)  # excess 0, 1, 2
        with Client(ps[1].port) as d, Client(ps[0].port) as e, Client(ps[0].port) as f:
            d.send(request_bytes("GET", "/api/d", host="app.test"))    # excess 3 > delay 2: waits ~2 s
            time.sleep(0.3)
            self.assertEqual(e.request("GET", "/api/e", host="app.test").status, 429)  # excess 4 > burst 3
            self.assertEqual(f.request("GET", "/free/f", host="app.test").status, 200)
            self.assertEqual(d.read_response(timeout=10).status, 200)
        order = [q.path for q in self.b.wait_requests(5)]
        self.assertEqual(order, ["/api/a"] * 3 + ["/free/f", "/api/d"])

    def test_unix_socket(self):
        r = self.redis(unix=True)
        conf = ("[cluster]\nredis = unix:%s\ninstance = u0\ntimeout = 500ms\n" % r.path + limit(burst=2) +
                "[route /api/]\nlimit = api\n")
        ps = [self.proxy(self.service_config(self.b, extra=conf)) for _ in range(2)]
        self.assertEqual(self.round_robin(ps, "/api/x", 6), [200] * 3 + [429] * 3)
        self.assertGreater(r.cmd("PTTL", "proxyd:l:api:127.0.0.1"), 0)

    def test_heartbeats_in_status(self):
        r = self.redis()
        ps = self.instances(r, "")

        def three():
            rc, out, err = ctl(ps[0], "--json", "status")
            cl = json.loads(out).get("cluster", {}) if rc == 0 else {}
            return cl if len(cl.get("instances", [])) == 3 else None
        cl = wait_until(three, 10)
        self.assertTrue(cl, ctl(ps[0], "--json", "status"))
        self.assertEqual(cl["redis"], "up")
        self.assertEqual(cl["instance"], "px0")
        self.assertEqual(sorted(i["name"] for i in cl["instances"]), ["px0", "px1", "px2"])
        by = {i["name"]: i for i in cl["instances"]}
        self.assertEqual(by["px1"]["pid"], ps[1].pid)
        self.assertEqual(by["px2"]["listen"], "127.0.0.1:%d" % ps[2].port)
        line = "cluster  redis up, 3 instances: px0, px1, px2"
        self.assertTrue(wait_until(lambda: line in ctl(ps[1], "status")[1], 10), ctl(ps[1], "status"))
        # a stopped instance leaves the list when its record expires (30 s): not waited for here


class Faults(ClusterCase):
    def test_redis_killed_mid_load_falls_back_then_returns(self):
        """Redis goes away under load: no request fails (only the local
        zone's 429s), the fallback is logged once, and the shared state is
        used again once Redis is back."""
        r = self.redis()
        (p,) = self.instances(r, limit(burst=5) + "[route /api/]\nlimit = api\n", n=1,
                              extra_proxy="trusted_proxies = 127.0.0.1")
        self.assertEqual(self.statuses(p, "/api/x", 3), [200] * 3)  # shared: 3 of 6 used
        # load from other clients (their own keys) while Redis dies
        bad, stop = [], threading.Event()

        def load(i):
            try:
                with Client(p.port) as c:
                    while not stop.is_set():
                        s = c.request("GET", "/api/l", host="app.test",
                                      headers=[("X-Forwarded-For", "10.0.0.%d" % i)]).status
                        if s not in (200, 429):
                            bad.append(s)
            except Exception as e:  # a reset or a timeout is a failed request
                bad.append(repr(e))
        threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.2)
            r.kill()
            time.sleep(0.3)
            # the local arena is fresh: 6 pass (burst 5), then its 429s
            self.assertEqual(self.statuses(p, "/api/x", 8), [200] * 6 + [429] * 2)
            r.start()  # same port, empty
            self.assertTrue(wait_until(lambda: BACK in p.error_log_text(), 10), p.error_log_text()[-2000:])
            # the shared state again: the (new, empty) Redis lets 6 through, the
            # exhausted local arena would have let none
            self.assertEqual(self.statuses(p, "/api/x", 8), [200] * 6 + [429] * 2)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        self.assertEqual(bad, [])
        self.assertEqual(p.error_log_text().count(FALLBACK), 1, p.error_log_text()[-2000:])
        self.assertEqual(p.error_log_text().count(BACK), 1)

    def test_hang_while_workers_connect_is_logged(self):
        """Redis answers the start check, then hangs while every worker's
        first connection is being set up: the checks time out, the local
        zone decides, and the fallback is logged (a connection still being
        set up was counted as down silently, and hid its own failure and
        every other worker's: nothing was ever logged)."""
        fake = HangingRedis()
        self.addCleanup(fake.close)
        p = self.proxy(self.service_config(self.b, extra=self.cluster(fake, "px0", timeout="100ms") +
                                           limit(burst=2) + "[route /api/]\nlimit = api\n"))
        self.assertEqual(self.statuses(p, "/api/x", 5), [200] * 3 + [429] * 2)
        self.assertTrue(wait_until(lambda: FALLBACK in p.error_log_text(), 5), p.error_log_text()[-2000:])
        self.assertEqual(p.error_log_text().count(FALLBACK), 1, p.error_log_text()[-2000:])

    def test_sigstop_falls_back_within_timeout(self):
        """A Redis that stops answering (SIGSTOP): the check waits `timeout`
        and then the local zone decides (its 429s, not the 1 s fail-open's
        200s); no worker stalls. After SIGCONT Redis is used again."""
        r = self.redis()
        (p,) = self.instances(r, limit(burst=2) + "[route /api/]\nlimit = api\n", n=1, timeout="100ms")
        self.assertEqual(self.statuses(p, "/api/x", 1), [200])
        r.signal(signal.SIGSTOP)
        try:
            took = []
            out = []
            with Client(p.port) as c:
                for _ in range(5):
                    t0 = time.monotonic()
                    out.append(c.request("GET", "/api/x", host="app.test").status)
                    took.append(time.monotonic() - t0)
            # local state is fresh: burst 2 lets 3 through; a fail-open would pass all 5
            self.assertEqual(out, [200] * 3 + [429] * 2, took)
            # the worker is not stalled: an unlimited route answers at once meanwhile
            self.assertEqual(self.statuses(p, "/free", 2), [200, 200])
            self.assertIn(FALLBACK, p.error_log_text())
        finally:
            r.signal(signal.SIGCONT)
        self.assertTrue(wait_until(lambda: BACK in p.error_log_text(), 10), p.error_log_text()[-2000:])
        # Redis holds 1 + the timed-out check (it ran after SIGCONT): 2 of 3 used at most
        got = self.statuses(p, "/api/x", 4)
        self.assertIn(got, ([200] + [429] * 3, [200] * 2 + [429] * 2))

    def test_script_flush_recovered(self):
        r = self.redis()
        (p,) = self.instances(r, limit(burst=5) + "[route /api/]\nlimit = api\n", n=1)
        self.assertEqual(self.statuses(p, "/api/x", 3), [200] * 3)
        self.assertEqual(r.cmd("SCRIPT", "FLUSH"), "OK")
        # NOSCRIPT: sent again with EVAL; the shared count goes on (3 left)
        self.assertEqual(self.statuses(p, "/api/x", 5), [200] * 3 + [429] * 2)
        self.assertNotIn(FALLBACK, p.error_log_text())

    def test_password(self):
        r = self.redis(password="s3cret")
        pw = os.path.join(tempfile.mkdtemp(prefix="proxyd-pw-"), "pw")
        self.addCleanup(shutil.rmtree, os.path.dirname(pw), True)
        with open(pw, "w") as f:
            f.write("wrong\n")
        conf = self.service_config(self.b, extra=self.cluster(r, "px0", "password_file = %s\n" % pw) + limit() +
                                   "[route /api/]\nlimit = api\n")
        bad = self.proxy(conf, start=False)
        run = subprocess.run([proxyd_path(), "-c", bad.config_path], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20 * SLOW, cwd=bad.tmp)
        text = run.stderr.decode("utf-8", "replace") + bad.error_log_text()
        self.assertEqual(run.returncode, 1, text)
        self.assertIn("refused the password of password_file", text)
        self.assertIn("127.0.0.1:%d" % r.port, text)
        # the right one: shared limits work
        with open(pw, "w") as f:
            f.write("s3cret\n")
        p = self.proxy(conf)
        self.assertEqual(self.statuses(p, "/api/x", 22), [200] * 21 + [429])
        self.assertGreater(r.cmd("PTTL", "proxyd:l:api:127.0.0.1"), 0)
        # no password against a Redis that wants one: a start error too
        conf2 = self.service_config(self.b, extra=self.cluster(r, "px1") + limit() + "[route /api/]\nlimit = api\n")
        bad2 = self.proxy(conf2, start=False)
        run = subprocess.run([proxyd_path(), "-c", bad2.config_path], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20 * SLOW, cwd=bad2.tmp)
        self.assertEqual(run.returncode, 1)
        self.assertIn("NOAUTH", run.stderr.decode("utf-8", "replace") + bad2.error_log_text())


REDIS_CLI = shutil.which("redis-cli")
TOKEN = "tok_0-Abc"
KEYAUTH = TOKEN + ".thumbprint-_0123456789"


def curl_challenge(proxy, token, method=None):
    """(status, body) of curl's GET (or -X method) of TOKEN on proxy's plain port."""
    args = ["-o", "-", "-w", "\n%{http_code}"] + (["-X", method] if method else [])
    out = curl(*(args + ["http://127.0.0.1:%d/.well-known/acme-challenge/%s" % (proxy.port, token)])).stdout
    body, _, code = out.rpartition(b"\n")
    return int(code), body.decode("utf-8", "replace")


class ChallengeTokens(ClusterCase):
    """HTTP-01 tokens in Redis (KEY_PREFIX "acme:token:" TOKEN, put there by
    the instance that ordered): every instance answers them, though its own
    token table is empty (no [acme] here at all)."""

    def test_any_instance_answers_token_from_redis(self):
        r = self.redis()
        ps = self.instances(r, "", n=2)
        if REDIS_CLI:
            out = subprocess.run([REDIS_CLI, "-p", str(r.port), "SET", "proxyd:acme:token:" + TOKEN, KEYAUTH,
                                  "PX", "60000"], stdout=subprocess.PIPE, timeout=10 * SLOW).stdout
            self.assertEqual(out.strip(), b"OK")
        else:
            self.assertEqual(r.cmd("SET", "proxyd:acme:token:" + TOKEN, KEYAUTH, "PX", 60000), "OK")
        for p in ps:
            self.assertEqual(curl_challenge(p, TOKEN), (200, KEYAUTH))
            self.assertEqual(curl_challenge(p, TOKEN + "?x=1"), (200, KEYAUTH))
            self.assertEqual(curl_challenge(p, "absent_token")[0], 404)
            self.assertEqual(curl_challenge(p, TOKEN, "POST")[0], 404)  # as the local table: GET and HEAD
        with Client(ps[1].port) as c:  # keep-alive: the parked request answers, the next one follows
            for _ in range(3):
                resp = c.request("GET", "/.well-known/acme-challenge/" + TOKEN, host="ca.test:80")
                self.assertEqual((resp.status, resp.body), (200, KEYAUTH.encode()))
            resp = c.request("HEAD", "/.well-known/acme-challenge/" + TOKEN, host="ca.test")
            self.assertEqual(resp.status, 200)
            resp = c.request("GET", "/.well-known/acme-challenge/nope", host="ca.test")
            self.assertEqual(resp.status, 404)
        # a value that is not this token's key authorization is not served
        for bad in ("other.thumb", TOKEN + ".", TOKEN + ".has space", TOKEN + ".x\n", TOKEN + "." + "x" * 300,
                    TOKEN):
            self.assertEqual(r.cmd("SET", "proxyd:acme:token:" + TOKEN, bad), "OK")
            self.assertEqual(curl_challenge(ps[0], TOKEN)[0], 404, bad)
        # a key of another type (an error reply) is absent too
        r.cmd("DEL", "proxyd:acme:token:" + TOKEN)
        self.assertEqual(r.cmd("LPUSH", "proxyd:acme:token:" + TOKEN, KEYAUTH), 1)
        self.assertEqual(curl_challenge(ps[0], TOKEN)[0], 404)
        # challenges never reach the service
        self.assertEqual(self.b.requests, [])
        for p in ps:
            self.assertNotIn(FALLBACK, p.error_log_text())

    def test_custom_key_prefix(self):
        r = self.redis()
        (p,) = self.instances(r, "", n=1, more="key_prefix = site1:\n")
        self.assertEqual(r.cmd("SET", "proxyd:acme:token:" + TOKEN, KEYAUTH), "OK")
        self.assertEqual(curl_challenge(p, TOKEN)[0], 404)
        self.assertEqual(r.cmd("SET", "site1:acme:token:" + TOKEN, KEYAUTH), "OK")
        self.assertEqual(curl_challenge(p, TOKEN), (200, KEYAUTH))

    def test_redis_stopped_then_back(self):
        """SIGSTOP: the lookup waits `timeout`, then 404; meanwhile the
        worker (one) serves other requests; Redis counts as down then, so
        the next lookup is 404 at once; after SIGCONT tokens are served
        again."""
        r = self.redis()
        (p,) = self.instances(r, "", n=1, extra_proxy="workers = 1", timeout="900ms")
        self.assertEqual(r.cmd("SET", "proxyd:acme:token:" + TOKEN, KEYAUTH), "OK")
        self.assertEqual(curl_challenge(p, TOKEN), (200, KEYAUTH))
        r.signal(signal.SIGSTOP)
        try:
            with Client(p.port) as ch, Client(p.port) as other:
                ch.send(request_bytes("GET", "/.well-known/acme-challenge/" + TOKEN, host="ca.test"))
                time.sleep(0.05)
                self.assertEqual(other.request("GET", "/free", host="app.test").status, 200)
                self.assertEqual(ch.read_response(timeout=10).status, 404)
            self.assertEqual(curl_challenge(p, TOKEN)[0], 404)
            self.assertEqual(self.statuses(p, "/free", 2), [200, 200])
        finally:
            r.signal(signal.SIGCONT)
        self.assertTrue(wait_until(lambda: curl_challenge(p, TOKEN) == (200, KEYAUTH), 15),
                        p.error_log_text()[-2000:])
        self.assertEqual(self.b.wait_requests(3)[0].path, "/free")

    def test_redis_killed(self):
        r = self.redis()
        (p,) = self.instances(r, "", n=1)
        self.assertEqual(r.cmd("SET", "proxyd:acme:token:" + TOKEN, KEYAUTH), "OK")
        self.assertEqual(curl_challenge(p, TOKEN), (200, KEYAUTH))
        r.kill()
        for _ in range(3):
            self.assertEqual(curl_challenge(p, TOKEN)[0], 404)
            self.assertEqual(self.statuses(p, "/app", 1), [200])
        r.start()  # same port, empty
        self.assertEqual(r.cmd("SET", "proxyd:acme:token:" + TOKEN, KEYAUTH), "OK")
        self.assertTrue(wait_until(lambda: curl_challenge(p, TOKEN) == (200, KEYAUTH), 15),
                        p.error_log_text()[-2000:])
        self.assertEqual(len(self.b.wait_requests(3)), 3)

    def test_client_gone_while_lookup_pending(self):
        """Clients that close while their lookup waits on a stopped Redis:
        the lookups are cancelled (those still waiting) or answered at the
        timeout, and the late replies after SIGCONT find nothing to answer
        (run under make asan-build too)."""
        r = self.redis()
        (p,) = self.instances(r, "", n=1, extra_proxy="workers = 1", timeout="300ms")
        self.assertEqual(r.cmd("SET", "proxyd:acme:token:" + TOKEN, KEYAUTH), "OK")
        self.assertEqual(curl_challenge(p, TOKEN), (200, KEYAUTH))
        r.signal(signal.SIGSTOP)
        try:
            socks = []
            for i in range(4):
                s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
                s.sendall(request_bytes("GET", "/.well-known/acme-challenge/%s%d" % (TOKEN, i), host="ca.test"))
                socks.append(s)
            time.sleep(0.05)
            for s in socks[:2]:  # gone before the timeout: cancelled
                s.close()
            for s in socks[2:]:  # the others are answered 404 at the timeout; then gone
                s.settimeout(5)
                self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 404"))
                s.close()
        finally:
            r.signal(signal.SIGCONT)
        # the late replies come and are dropped; the worker goes on
        self.assertTrue(wait_until(lambda: curl_challenge(p, TOKEN) == (200, KEYAUTH), 15),
                        p.error_log_text()[-2000:])
        self.assertEqual(self.statuses(p, "/app", 2), [200, 200])
        self.assertIsNone(p.proc.poll())


class ClusterMetrics(ClusterCase):
    """The proxyd_cluster_* families (README "Metrics"): real values after
    known traffic, Redis killed and restarted; promtool accepts them; absent
    without [cluster]."""

    def test_metrics_follow_redis(self):
        import test_metrics as tm
        r = self.redis()
        (p,) = self.instances(r, limit(burst=100) + "[route /api/]\nlimit = api\n", n=1,
                              extra_proxy="metrics_listen = 127.0.0.1:0")
        up = lambda v: (lambda s: s if tm.val(s, "proxyd_cluster_redis_up") == v else None)(tm.scrape(p))
        s0 = wait_until(lambda: up(1), 10)
        self.assertTrue(s0, tm.get(p)[2].decode()[-3000:])
        self.assertEqual(self.statuses(p, "/api/x", 10), [200] * 10)
        self.assertEqual(self.statuses(p, "/free", 2), [200] * 2)  # no shared zone: no Redis
        st, _, body = tm.get(p)
        run = subprocess.run(["promtool", "check", "metrics"], input=body, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=30 * SLOW)
        self.assertEqual((run.returncode, run.stdout + run.stderr), (0, b""))
        samples, types, helps = tm.parse(body.decode())
        for fam, typ in (("proxyd_cluster_redis_up", "gauge"), ("proxyd_cluster_fallbacks_total", "counter"),
                         ("proxyd_cluster_redis_commands_total", "counter"),
                         ("proxyd_cluster_redis_errors_total", "counter"),
                         ("proxyd_cluster_redis_seconds", "histogram")):
            self.assertEqual(types.get(fam), typ, fam)
            self.assertIn(fam, helps)
        s1 = samples
        # one limit check (one round trip) per shared-limited request
        C, N = "proxyd_cluster_redis_commands_total", "proxyd_cluster_redis_seconds_count"
        self.assertEqual(tm.val(s1, N) - tm.val(s0, N), 10)
        self.assertGreaterEqual(tm.val(s1, C) - tm.val(s0, C), 10)
        self.assertEqual(tm.val(s1, "proxyd_cluster_redis_seconds_bucket", le="+Inf"), tm.val(s1, N))
        self.assertGreater(tm.val(s1, "proxyd_cluster_redis_seconds_sum"), 0)
        self.assertEqual(tm.val(s1, "proxyd_cluster_fallbacks_total", zone="api"), 0)
        self.assertIn(("proxyd_cluster_fallbacks_total", frozenset({("zone", "api")})), s1)  # listed at 0
        for kind in ("timeout", "connection", "reply"):
            self.assertEqual(tm.val(s1, "proxyd_cluster_redis_errors_total", kind=kind), 0, kind)
        self.assertGreater(r.cmd("PTTL", "proxyd:l:api:127.0.0.1"), 0)

        # every proxyd_cluster_ family the Grafana dashboard uses is served
        with open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               "conf", "grafana-proxyd.json")) as f:
            dash = f.read()
        used = set(re.findall(r"\b(proxyd_cluster_[a-z_]+)\b", dash))
        self.assertTrue(used)
        have = {n for n, _ in s1} | set(types)
        self.assertEqual(sorted(u for u in used if u not in have), [])

        # Redis killed: down, and every decision of the zone is made locally and counted
        r.kill()
        s2 = wait_until(lambda: up(0), 10)
        self.assertTrue(s2)
        self.assertEqual(self.statuses(p, "/api/x", 4), [200] * 4)
        s3 = tm.scrape(p)
        self.assertEqual(tm.val(s3, "proxyd_cluster_fallbacks_total", zone="api")
                         - tm.val(s2, "proxyd_cluster_fallbacks_total", zone="api"), 4)
        self.assertGreaterEqual(tm.val(s3, "proxyd_cluster_redis_errors_total", kind="connection"), 1)
        self.assertEqual(tm.val(s3, N), tm.val(s1, N))  # no round trip
        # back: up again, the zone asks Redis again (no new fallback)
        r.start()
        s4 = wait_until(lambda: up(1), 15)
        self.assertTrue(s4, tm.get(p)[2].decode()[-3000:])
        self.assertEqual(self.statuses(p, "/api/x", 3), [200] * 3)
        s5 = tm.scrape(p)
        self.assertEqual(tm.val(s5, N) - tm.val(s4, N), 3)
        self.assertEqual(tm.val(s5, "proxyd_cluster_fallbacks_total", zone="api"),
                         tm.val(s3, "proxyd_cluster_fallbacks_total", zone="api"))
        self.assertGreater(r.cmd("PTTL", "proxyd:l:api:127.0.0.1"), 0)  # the new Redis holds the bucket

        # without [cluster]: no proxyd_cluster_ family at all
        q = self.proxy(self.service_config(self.b, extra_proxy="metrics_listen = 127.0.0.1:0"))
        self.assertNotIn(b"proxyd_cluster_", tm.get(q)[2])


class ClusterConfig(ProxyTestCase):
    def test_errors(self):
        base = "[service web]\ntargets = 127.0.0.1:9\n"
        rc, out = self.check_config(base + limit() + "[route /api/]\nlimit = api\n")
        self.assertEqual(rc, 1, out)
        self.assertIn("shared: [limit api] is shared but there is no [cluster] section", out)
        rc, out = self.check_config(base + "[cluster]\nredis = http://x\n")
        self.assertEqual(rc, 1, out)
        self.assertIn("redis: must be redis://HOST:PORT/DB or unix:PATH", out)
        d = tempfile.mkdtemp(prefix="proxyd-secret-")
        self.addCleanup(shutil.rmtree, d, True)
        with open(os.path.join(d, "s"), "wb") as f:
            f.write(b"x" * 31)
        rc, out = self.check_config(base + "[cluster]\nsecret_file = %s\n" % os.path.join(d, "s"))
        self.assertEqual(rc, 1, out)
        self.assertIn("has 31 bytes, needs at least 32", out)
        text = self.proxy(base + "[cluster]\nsecret_file = %s\n" % os.path.join(d, "s"), start=False).config_text
        line = [i + 1 for i, l in enumerate(text.splitlines()) if l.startswith("secret_file")][0]
        self.assertIn("proxyd.ini:%d: secret_file: " % line, out)
        # start reads it too (before the privilege drop): a short or missing one is a start error
        short = self.proxy(base + "[cluster]\nredis = redis://127.0.0.1:9/0\nsecret_file = %s\n"
                           % os.path.join(d, "s"), start=False)
        with self.assertRaises(Exception):
            short.start(timeout=3)
        self.assertEqual(short.wait(5), 1)
        self.assertIn("[cluster] secret_file: %s has 31 bytes" % os.path.join(d, "s"), short.error_log_text())
        rc, out = self.check_config(base + "[cluster]\nsecret_file = %s\n" % os.path.join(d, "missing"))
        self.assertEqual(rc, 1, out)
        self.assertIn("secret_file: %s: No such file or directory" % os.path.join(d, "missing"), out)
        with open(os.path.join(d, "s"), "wb") as f:
            f.write(b"x" * 32)
        rc, out = self.check_config(base + "[cluster]\nredis = redis://[::1]:6380/2\nsecret_file = %s\n"
                             % os.path.join(d, "s") + limit() + "[route /api/]\nlimit = api\n")
        self.assertEqual(rc, 0, out)


if __name__ == "__main__":
    import unittest
    unittest.main()
