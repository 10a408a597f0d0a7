"""Binary upgrade (DESIGN "Installing and running", `proxyctl upgrade` and
SIGUSR2): the new process takes the listening sockets, the control socket
and the carry-over (TLS sessions, rate-limit zones; services come from the
state file); the old one drains and exits once the new one serves. Under
continuous load -- HTTP/1.1 keep-alive, HTTP/2, TLS, a streaming response
in flight and an open WebSocket tunnel -- several upgrades in a row fail no
request. A new binary that does not start changes nothing and the command
says why."""

import os
import signal
import subprocess
import tempfile
import threading
import time

from harness import (SLOW, Client, H2Client, ProxyTestCase, RecordingBackend, StreamingBackend, WebSocketBackend,
                     build_dir, get, s_client, tls_config, wait_until)
from test_systemd import NotifySocket

PROXYCTL = os.path.join(build_dir(), "proxyctl")
UPGRADES = int(os.environ.get("PROXYD_TEST_UPGRADES", "3"))  # the soak: 10
HTTP10 = b"GET /resume HTTP/1.0\r\nHost: localhost\r\n\r\n"
WS_REQ = (b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def ctl(p, *args, timeout=90.0):
    return subprocess.run([PROXYCTL, "--socket", os.path.join(p.tmp, "control.sock")] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          timeout=timeout * SLOW)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


class Load:
    """Clients that send requests back to back until stopped. A request that
    the server never took (a reused keep-alive connection closed before any
    byte of the answer, an HTTP/2 stream above the GOAWAY's last id) is
    retried on a new connection, as every HTTP client does; anything else
    that is not a 200 is a failure."""

    def __init__(self, p, h1=4, h2=1):
        self.p = p
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.retried = 0
        self.failures = []
        self.threads = [threading.Thread(target=self.h1_loop, args=(i,), daemon=True) for i in range(h1)]
        self.threads += [threading.Thread(target=self.h2_loop, daemon=True) for _ in range(h2)]
        for t in self.threads:
            t.start()

    def fail(self, what):
        with self.lock:
            self.failures.append(what)

    def count(self, retried=0):
        with self.lock:
            self.ok += 1
            self.retried += retried

    def h1_loop(self, i):
        c, used = None, 0
        deadline = time.monotonic() + 300
        while not self.stop.is_set() and time.monotonic() < deadline:
            if c is None:
                c, used = Client(self.p.port), 0
            try:
                r = c.request("GET", "/h1/%d" % i, host="test.local")
            except Exception as e:  # noqa: BLE001 - closed, reset, timeout
                c.close()
                c = None
                if used == 0:
                    self.fail("h1: a fresh connection failed: %r" % e)
                    continue
                try:  # the server closed an idle connection: once more on a new one
                    r = get(self.p.port, "/h1/%d" % i, host="test.local")
                except Exception as e2:  # noqa: BLE001
                    self.fail("h1: retry failed: %r" % e2)
                    continue
                if r.status != 200:
                    self.fail("h1: %r" % r)
                else:
                    self.count(1)
                continue
            used += 1
            if r.status != 200:
                self.fail("h1: %r" % r)
            else:
                self.count()
            if (r.header("connection") or "").lower() == "close":
                c.close()
                c = None
        if c:
            c.close()

    def h2_loop(self):
        c = None
        deadline = time.monotonic() + 300
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                if c is None or c.terminated or c.eof:
                    if c:
                        c.close()
                    c = H2Client(self.p.https_port)
                s = c.get("/h2", authority="test.local", timeout=10)
            except Exception as e:  # noqa: BLE001
                self.fail("h2: %r" % e)
                c = None
                continue
            if s.status == 200 and s.ended:
                self.count()
                continue
            # refused by a GOAWAY (stream above its last id) or a connection that
            # ended before answering: never processed, so retried
            refused = (c.terminated and s.id > c.terminated[-1].last_stream_id) or (c.eof and s.headers is None)
            if not refused:
                self.fail("h2: %r goaway=%r" % (s, c.terminated))
                continue
            c.close()
            c = None
            try:
                with H2Client(self.p.https_port) as c2:
                    s = c2.get("/h2", authority="test.local", timeout=10)
                if s.status == 200 and s.ended:
                    self.count(1)
                else:
                    self.fail("h2 retry: %r" % s)
            except Exception as e:  # noqa: BLE001
                self.fail("h2 retry: %r" % e)
        if c:
            c.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30 * SLOW)


class UpgradeCase(ProxyTestCase):
    def start(self, extra="", env=None, **kw):
        self.b = self.backend(RecordingBackend)
        cfg = ("[proxy]\nlisten_https = 127.0.0.1:0\npid_file = {tmp}/proxyd.pid\nshutdown_timeout = 30s\nredirect_https = no\n\n" +
               tls_config() + extra + "\n[service web]\ntargets = %s\n" % self.b.addr)
        p = self.proxy(cfg, env=env, **kw)
        self.addCleanup(self.kill_successor, p)
        return p

    def live_pid(self, p):
        with open(os.path.join(p.tmp, "proxyd.pid")) as f:
            return int(f.read().strip())

    def kill_successor(self, p):
        """The upgraded process is not the harness's child: stop it here."""
        try:
            pid = self.live_pid(p)
        except (OSError, ValueError):
            return
        if pid == p.pid or not alive(pid):
            return
        os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not alive(pid), 15):
            os.kill(pid, signal.SIGKILL)

    def upgrade(self, p, *args, wait_exit=True):
        old = self.live_pid(p)
        sock = os.path.join(p.tmp, "control.sock")
        ino = os.stat(sock).st_ino
        r = ctl(p, "--json", "upgrade", *args)
        self.assertEqual(r.returncode, 0, r)
        import json
        res = json.loads(r.stdout)
        self.assertEqual(res["old_pid"], old, res)
        self.assertNotEqual(res["pid"], old, res)
        self.assertEqual(self.live_pid(p), res["pid"])
        if wait_exit:  # the old process drains and exits
            self.assertTrue(wait_until(lambda: not alive(old), 30), "old process %d still runs" % old)
        # the control socket was handed over, not made anew (nor removed by the old one at its exit)
        self.assertEqual(os.stat(sock).st_ino, ino)
        return res["pid"]


class UnderLoad(UpgradeCase):
    def test_upgrades_in_a_row_fail_nothing(self):
        stream = self.backend(StreamingBackend, total=1024 * 1024, pieces=40, delay=0.1)  # ~4 s
        ws = self.backend(WebSocketBackend)
        zone = "[limit api]\nrate = 1r/m\nburst = 2\nzone_size = 1m\n[route /api/]\nlimit = api\n"
        extra = ("[service stream]\nhosts = stream.test\ntargets = %s\n[service ws]\nhosts = ws.test\n"
                 "targets = %s\n" % (stream.addr, ws.addr)) + zone
        p = self.start(extra)
        # a deployed service (the state file carries it over)
        dep = self.backend(RecordingBackend, response=lambda req: b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ndep")
        r = ctl(p, "deploy", "dep", "--target", dep.addr, "--host", "dep.test", "--health-check-interval", "100ms")
        self.assertEqual(r.returncode, 0, r)
        listed = ctl(p, "list").stdout
        # TLS: a session to resume after the upgrades
        sess = os.path.join(p.tmp, "sess.pem")
        s = s_client(p.https_port, "-sess_out", sess, "-ign_eof", input=HTTP10)
        self.assertTrue(s.ok and os.path.exists(sess), s)
        self.assertEqual(s.sessions(), ["New"], s)
        # a client at its burst: 3 pass (burst 2), then limited
        with Client(p.port) as c:
            got = [c.request("GET", "/api/x", host="test.local").status for _ in range(4)]
        self.assertEqual(got, [200, 200, 200, 429])
        # the WebSocket tunnel, open across every upgrade
        wsc = Client(p.port)
        self.addCleanup(wsc.close)
        wsc.send(WS_REQ)
        self.assertEqual(wsc.read_response().status, 101)

        load = Load(p)
        self.addCleanup(load.finish)
        pids = [self.live_pid(p)]
        # a streaming response in flight during the first upgrade
        streamc = Client(p.port, timeout=60)
        self.addCleanup(streamc.close)
        streamc.send(b"GET /big HTTP/1.1\r\nHost: stream.test\r\n\r\n")
        wait_until(lambda: load.ok > 20, 10)
        for i in range(UPGRADES):
            before = load.ok
            pids.append(self.upgrade(p, wait_exit=False))
            # the new process serves the load
            self.assertTrue(wait_until(lambda: load.ok > before + 20, 15), "no progress after upgrade %d" % i)
            wsc.send(b"ping-%d" % i)
            self.assertEqual(wsc.reader.exact(len(b"ping-%d" % i), time.monotonic() + 5 * SLOW), b"ping-%d" % i)
        load.finish()
        big = streamc.read_response()
        self.assertEqual(big.status, 200)
        self.assertEqual(big.body, stream.body)
        # the first process keeps the tunnel (a graceful stop waits for tunnels,
        # up to shutdown_timeout) until the client closes it
        self.assertTrue(alive(pids[0]))
        wsc.close()
        self.assertEqual(load.failures, [], "%d ok, %d retried" % (load.ok, load.retried))
        self.assertGreater(load.ok, 100)
        self.assertEqual(len(set(pids)), UPGRADES + 1, pids)
        for old in pids[:-1]:
            self.assertTrue(wait_until(lambda: not alive(old), 30), "old process %d still runs" % old)
        # carried over: services, the zone's bucket, the TLS session
        self.assertEqual(ctl(p, "list").stdout, listed)
        self.assertEqual(get(p.port, "/", host="dep.test").body, b"dep")
        self.assertEqual(get(p.port, "/api/x", host="test.local").status, 429)
        s = s_client(p.https_port, "-sess_in", sess, "-ign_eof", input=HTTP10)
        self.assertTrue(s.ok, s)
        self.assertEqual(s.sessions(), ["Reused"], s)
        # the pid file and the control socket name the last process
        st = ctl(p, "--json", "status")
        import json
        self.assertEqual(json.loads(st.stdout)["pid"], pids[-1])


class Carry(UpgradeCase):
    def test_ticket_keys_carried(self):
        """With session_tickets = yes a ticket issued by the old process is
        accepted by the new one (stateless: only the keys go across)."""
        p = self.start()
        p.write_config(p.config_text.replace("[tls]\n", "[tls]\nsession_tickets = yes\n"))
        p2 = self.upgrade(p)
        sess = os.path.join(p.tmp, "t.pem")
        s = s_client(p.https_port, "-sess_out", sess, "-ign_eof", input=HTTP10)
        self.assertTrue(s.ok and os.path.exists(sess), s)
        self.upgrade(p)
        s = s_client(p.https_port, "-sess_in", sess, "-ign_eof", input=HTTP10)
        self.assertEqual(s.sessions(), ["Reused"], s)
        self.assertIn("upgrade: carried over", p.error_log_text())
        self.assertFalse(alive(p2))

    def test_workers_change(self):
        """Fewer workers: the inherited sockets (one per old worker, each its
        own accept queue) are spread over the new ones, none is left without
        a worker; more: the extra workers' sockets join the group."""
        p = self.start()
        for n in (1, 3, 2):
            p.write_config(p.config_text.replace("[proxy]\n", "[proxy]\nworkers = %d\n" % n, 1)
                           if "workers =" not in p.config_text else
                           __import__("re").sub(r"workers = \d+", "workers = %d" % n, p.config_text))
            self.upgrade(p)
            # fresh connections from many source ports land on every socket of the group
            got = [get(p.port, "/", host="test.local", timeout=5).status for _ in range(40)]
            self.assertEqual(got, [200] * 40, "workers = %d" % n)
            self.assertIn("%d workers, pid %d" % (n, self.live_pid(p)), p.error_log_text())

    def test_sigusr2(self):
        p = self.start()
        old = self.live_pid(p)
        os.kill(old, signal.SIGUSR2)
        self.assertTrue(wait_until(lambda: self.live_pid(p) != old, 15))
        self.assertTrue(wait_until(lambda: not alive(old), 30))
        self.assertEqual(get(p.port, "/", host="test.local").status, 200)
        self.assertEqual(p.wait(5), 0)


    def test_metrics_listen_is_handed_over(self):
        import urllib.request
        from common import free_port
        port = free_port()
        p = self.start(start=False)
        p.write_config(p.config_text.replace("[proxy]\n", "[proxy]\nmetrics_listen = 127.0.0.1:%d\n" % port, 1))
        p.start()

        def scrape():
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
                return r.read().decode()
        self.assertEqual(get(p.port, "/", host="test.local").status, 200)
        self.assertIn("proxyd_requests_total", scrape())
        for _ in range(2):  # the same port after each upgrade: handed over, not bound again
            pid = self.upgrade(p)
            self.assertIn("proxyd_build_info", scrape())
        self.assertEqual(self.live_pid(p), pid)


class Failures(UpgradeCase):
    def check_unchanged(self, p, pid):
        self.assertTrue(alive(pid))
        self.assertEqual(self.live_pid(p), pid)
        self.assertEqual(get(p.port, "/", host="test.local").status, 200)
        r = ctl(p, "--json", "status")
        self.assertEqual(r.returncode, 0, r)
        self.assertIn('"pid":%d' % pid, r.stdout.decode().replace(" ", ""))

    def test_binary_exits_1(self):
        p = self.start()
        pid = self.live_pid(p)
        with Client(p.port) as idle:
            self.assertEqual(idle.request("GET", "/", host="test.local").status, 200)
            d = tempfile.mkdtemp(dir=p.tmp)
            bad = os.path.join(d, "proxyd-broken")
            with open(bad, "w") as f:
                f.write("#!/bin/sh\necho 'proxyd-broken: cannot load libfoo.so' >&2\nexit 1\n")
            os.chmod(bad, 0o755)
            r = ctl(p, "upgrade", "--binary", bad)
            self.assertEqual(r.returncode, 1, r)
            err = r.stderr.decode()
            self.assertIn("upgrade_failed", err)
            self.assertIn("status 1", err)
            self.assertIn("cannot load libfoo.so", err)
            self.check_unchanged(p, pid)
            # a keep-alive connection opened before is still served
            self.assertEqual(idle.request("GET", "/", host="test.local").status, 200)

    def test_not_executable(self):
        p = self.start()
        pid = self.live_pid(p)
        r = ctl(p, "upgrade", "--binary", os.path.join(p.tmp, "proxyd.ini"))
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("Permission denied", r.stderr.decode())
        self.check_unchanged(p, pid)

    def test_config_that_fails_t(self):
        p = self.start()
        pid = self.live_pid(p)
        good = p.config_text
        p.write_config(good + "\n[service other]\nhosts = other.test\nbogus_key = 1\n")
        r = ctl(p, "upgrade")
        self.assertEqual(r.returncode, 1, r)
        err = r.stderr.decode()
        self.assertIn("upgrade_failed", err)
        self.assertIn("bogus_key", err)
        self.check_unchanged(p, pid)
        # fixed: the next one goes through
        p.write_config(good)
        self.upgrade(p)

    def test_never_ready(self):
        p = self.start()
        pid = self.live_pid(p)
        d = tempfile.mkdtemp(dir=p.tmp)
        slow = os.path.join(d, "proxyd-hangs")
        with open(slow, "w") as f:
            f.write("#!/bin/sh\nexec sleep 60\n")
        os.chmod(slow, 0o755)
        r = ctl(p, "upgrade", "--binary", slow, "--timeout", "1s")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("not ready within the timeout", r.stderr.decode())
        self.check_unchanged(p, pid)


    def test_refused_while_a_deploy_runs(self):
        """The new process reads the services from the state file: an upgrade
        waits for no deploy, it is refused while one runs."""
        p = self.start()
        pid = self.live_pid(p)
        sick = self.backend(RecordingBackend, healthy=False)
        dep = subprocess.Popen([PROXYCTL, "--socket", os.path.join(p.tmp, "control.sock"), "deploy", "web",
                                "--target", sick.addr, "--deploy-timeout", "3s", "--health-check-interval",
                                "100ms"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(dep.wait, 30)
        self.assertTrue(wait_until(lambda: "deploy web: waiting" in p.error_log_text(), 10))
        r = ctl(p, "upgrade")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("a deploy or rollback is running", r.stderr.decode())
        self.check_unchanged(p, pid)
        self.assertEqual(dep.wait(30), 1)  # the deploy fails on its own; then the upgrade goes
        self.upgrade(p)


class Systemd(UpgradeCase):
    def test_mainpid(self):
        n = NotifySocket()
        self.addCleanup(n.close)
        p = self.start(env=dict(os.environ, NOTIFY_SOCKET=n.path))
        n.wait_for("READY=1")
        new = self.upgrade(p)
        m = n.wait_for("READY=1")
        self.assertIn("MAINPID=%d" % new, "\n".join(n.messages), n.messages)
        self.assertEqual(m.get("STATUS"), "serving")
        self.assertNotIn("STOPPING=1", "\n".join(n.messages), "the old process told systemd it stops")


if __name__ == "__main__":
    import unittest
    unittest.main()
