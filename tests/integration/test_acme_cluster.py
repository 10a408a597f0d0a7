"""Certificates shared through Redis ([acme] storage = redis, DESIGN
"Several instances"): several proxyd instances, one redis-server and pebble
on loopback.

- three instances starting together: exactly one order at the CA, all three
  serve the same certificate, each has certbot's layout on disk, the private
  key in Redis is sealed (no "BEGIN"; it opens with secret_file, AAD = the
  key's name, into the key on disk); `cert renew --force` on one: the others
  take the new version from the announcement, run their deploy hooks and
  serve it;
- the lock holder killed with kill -9 while it orders (a pre hook that
  sleeps): another instance orders once the lock expires (lock_timeout 3s);
- Redis down: no order starts (logged once), and one does once Redis is
  back;
- config errors (storage = redis without [cluster] or secret_file).

pebble validates HTTP-01 by connecting to 127.0.0.1:http_port. Here that
port is a responder of the test that answers
/.well-known/acme-challenge/TOKEN from Redis's `P acme:token:TOKEN` (the
key contract with the workers' lookup), so whichever instance orders, the
validation passes only when the token reached Redis before the CA was told
to validate. HttpOnOtherInstance points pebble at an instance that does not
order instead (see its docstring)."""

import base64
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

import pebble
from harness import (SLOW, ProxyTestCase, RecordingBackend, build_dir, free_port, tls_config,
                     wait_until)
from test_cluster import REDIS, Redis

PROXYCTL = os.path.join(build_dir(), "proxyctl")
NAMES = ("example.test", "www.example.test")
PREFIX = "pxt:"
ORDER = "ordering a certificate"
LIVE_FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")

try:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError:  # the check that needs it says so
    AESGCM = None

SKIP = pebble.available() or (None if REDIS else "redis-server is not installed")


class TokenResponder:
    """pebble's HTTP-01 port: answers from Redis only (P acme:token:TOKEN)."""

    def __init__(self, redis):
        self.redis = redis
        self.hits = []  # (token, found)
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                m = re.match(r"^/\.well-known/acme-challenge/([A-Za-z0-9_-]+)$", self.path)
                v = outer.redis.cmd("GET", PREFIX + "acme:token:" + m.group(1)) if m else None
                outer.hits.append((m.group(1) if m else self.path, isinstance(v, str)))
                body = v.encode() if isinstance(v, str) else b"not found"
                self.send_response(200 if isinstance(v, str) else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def served_der(port, name="example.test"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            return s.getpeercert(binary_form=True)


def read(path):
    with open(path) as f:
        return f.read()


@unittest.skipIf(SKIP, SKIP)
class AcmeClusterCase(ProxyTestCase):
    def setUp(self):
        self.r = Redis()
        self.addCleanup(self.r.close)
        self.secret_dir = tempfile.mkdtemp(prefix="proxyd-secret-")
        self.addCleanup(shutil.rmtree, self.secret_dir, True)
        self.secret = os.urandom(32)
        self.secret_file = os.path.join(self.secret_dir, "secret")
        with open(self.secret_file, "wb") as f:
            f.write(self.secret)
        self.b = self.backend(RecordingBackend)
        self.pids = []  # hook processes to kill at the end
        self.addCleanup(self._kill_pids)

    def _kill_pids(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def start_pebble(self, http_port=None):
        if http_port is None:
            self.resp = TokenResponder(self.r)
            self.addCleanup(self.resp.close)
            http_port = self.resp.port
        self.pb = pebble.Pebble(http_port=http_port)
        self.addCleanup(self.pb.stop)

    def instance(self, name, start=True, listen_http="127.0.0.1:0", redis_port=None, hooks=None, **kw):
        config = ("[proxy]\nlisten_http = %s\nlisten_https = 127.0.0.1:0\n%s\n"
                  "[acme]\nenabled = yes\ndirectory = %s\nca_bundle = %s\ndomains = %s\nconfig_dir = {tmp}/le\n"
                  "retry_interval = 1s\ncheck_interval = 1h\nstorage = redis\nlock_timeout = 3s\n"
                  "[cluster]\nredis = redis://127.0.0.1:%d/0\nkey_prefix = %s\ninstance = %s\ntimeout = 500ms\n"
                  "secret_file = %s\n"
                  "[service web]\ntargets = %s\n"
                  % (listen_http, tls_config(), self.pb.directory, self.pb.ca_bundle, " ".join(NAMES),
                     redis_port or self.r.port, PREFIX, name, self.secret_file, self.b.addr))
        p = self.proxy(config, start=False, **kw)
        p.name = name
        p.hooks_log = os.path.join(p.tmp, "hooks.log")
        for (kind, hname), body in (hooks or {}).items():
            d = os.path.join(p.tmp, "le", "renewal-hooks", kind)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, hname), "w") as f:
                f.write("#!/bin/sh\n" + body.replace("{log}", p.hooks_log).replace("{tmp}", p.tmp) + "\n")
            os.chmod(os.path.join(d, hname), 0o755)
        if start:
            p.start()
        return p

    def ctl(self, p, *args, timeout=60):
        return subprocess.run([PROXYCTL, "--socket", os.path.join(p.tmp, "control.sock")] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              timeout=timeout * SLOW)

    def serving(self, p, der=None):
        """The certificate p serves for example.test when it is pebble's (a
        lineage: not the [tls] default), and == der when given."""
        try:
            got = served_der(p.https_port)
        except OSError:
            return None
        if der is not None:
            return got if got == der else None
        live = os.path.join(p.tmp, "le", "live", "example.test", "cert.pem")
        return got if os.path.exists(live) and got == ssl.PEM_cert_to_DER_cert(read(live)) else None

    def orders(self, procs):
        return sum(p.error_log_text().count(ORDER) for p in procs)

    def logs(self, procs):
        return "\n".join("---- %s\n%s" % (p.name, p.error_log_text()[-3000:]) for p in procs)

    def unseal(self, key, value):
        self.assertTrue(value.startswith("pxenc1:"), value[:40])
        raw = base64.b64decode(value[len("pxenc1:"):])
        return AESGCM(self.secret).decrypt(raw[:12], raw[12:], key.encode()).decode()


class ThreeInstances(AcmeClusterCase):
    def test_one_order_same_certificate_then_forced_renewal_announced(self):
        self.start_pebble()
        deploy = {("deploy", "10-log"): "echo \"deploy $RENEWED_LINEAGE\" >> {log}"}
        ps = [self.instance("px%d" % i, start=False, hooks=deploy) for i in range(3)]
        for p in ps:  # together: each one's first check runs at once
            p.start()
        ok = wait_until(lambda: all(self.serving(p) for p in ps), 40, interval=0.2)
        self.assertTrue(ok, self.logs(ps))
        ders = [self.serving(p) for p in ps]
        self.assertEqual(ders[0], ders[1])
        self.assertEqual(ders[0], ders[2])
        self.assertEqual(self.orders(ps), 1, self.logs(ps))
        # the HTTP-01 answer came from Redis, and was there before pebble asked
        self.assertTrue(self.resp.hits and all(found for _, found in self.resp.hits), self.resp.hits)
        taken = sum("(taken from Redis)" in p.error_log_text() for p in ps)
        self.assertEqual(taken, 2, self.logs(ps))

        key = PREFIX + "acme:cert:example.test"
        h = self.r.cmd("HGETALL", key)
        h = dict(zip(h[::2], h[1::2]))
        self.assertEqual(h["version"], "1")
        self.assertEqual(h["names"].split(), list(NAMES))
        for p in ps:
            live = os.path.join(p.tmp, "le", "live", "example.test")
            for f in LIVE_FILES:
                self.assertTrue(os.path.islink(os.path.join(live, f)), (p.name, f))
                self.assertEqual(os.readlink(os.path.join(live, f)), "../../archive/example.test/%s" %
                                 f.replace(".pem", "1.pem"))
            self.assertTrue(os.path.exists(os.path.join(p.tmp, "le", "renewal", "example.test.conf")))
            self.assertEqual(read(os.path.join(live, "fullchain.pem")), h["fullchain"])
            self.assertIn("deploy " + live, read(p.hooks_log))
        # the private key is sealed, and opens into the one on disk
        self.assertNotIn("BEGIN", h["privkey"])
        if AESGCM is None:
            self.skipTest("python3-cryptography is not installed: the sealed key is not opened")
        self.assertEqual(self.unseal(key, h["privkey"]), read(os.path.join(ps[1].tmp, "le", "live", "example.test",
                                                                             "privkey.pem")))
        accounts = [k for k in self.r.cmd("KEYS", PREFIX + "acme:account:*")]
        self.assertEqual(accounts, [PREFIX + "acme:account:" + self.pb.directory])
        pk = self.r.cmd("HGET", accounts[0], "private_key")
        self.assertNotIn('"d"', pk)
        self.assertIn('"d"', self.unseal(accounts[0], pk))

        # a forced renewal on one: the others take it from the announcement
        for p in ps:
            os.remove(p.hooks_log)
        r = self.ctl(ps[0], "cert", "renew", "--force")
        self.assertEqual(r.returncode, 0, (r, self.logs(ps)))
        self.assertEqual(self.orders(ps), 2, self.logs(ps))
        new = self.serving(ps[0])
        self.assertNotEqual(new, ders[0])
        ok = wait_until(lambda: all(self.serving(p, new) for p in ps[1:]), 15, interval=0.1)
        self.assertTrue(ok, self.logs(ps))
        self.assertEqual(self.r.cmd("HGET", key, "version"), "2")
        # one account for all: registered once, the renewal used Redis's
        text = "\n".join(p.error_log_text() for p in ps)
        self.assertEqual(len(re.findall(r"acme: account \S+ registered", text)), 1, self.logs(ps))
        acct_id = self.r.cmd("HGET", accounts[0], "id")
        acct_dir = os.path.join(ps[0].tmp, "le", "accounts", self.pb.directory.split("://")[1], acct_id)
        self.assertTrue(os.path.exists(os.path.join(acct_dir, "private_key.json")), acct_dir)
        uri = json.loads(self.r.cmd("HGET", accounts[0], "regr"))["uri"]
        self.assertIn("acme: account %s (%s)" % (uri, acct_dir), ps[0].error_log_text())
        for p in ps[1:]:
            self.assertIn("version 2 announced", p.error_log_text())
            live = os.path.join(p.tmp, "le", "live", "example.test")
            self.assertEqual(os.readlink(os.path.join(live, "cert.pem")), "../../archive/example.test/cert2.pem")
            self.assertTrue(wait_until(lambda: os.path.exists(p.hooks_log), 5))
            self.assertIn("deploy " + live, read(p.hooks_log))
        self.assertEqual(self.orders(ps), 2, self.logs(ps))


class LateInstances(AcmeClusterCase):
    def test_late_instance_takes_wrong_secret_takes_nothing(self):
        self.start_pebble()
        a = self.instance("pxA")
        self.assertTrue(wait_until(lambda: self.serving(a), 30, interval=0.2), a.error_log_text())
        der = self.serving(a)
        # an instance that starts later with an empty config_dir: taken, not ordered
        d = self.instance("pxD")
        self.assertTrue(wait_until(lambda: self.serving(d, der), 15, interval=0.1), self.logs([a, d]))
        self.assertIn("taking version 1 from Redis (ordered by pxA)", d.error_log_text())
        self.assertEqual(self.orders([a, d]), 1, self.logs([a, d]))
        # one with another secret_file: the sealed key does not open; it
        # neither takes the certificate nor orders one over it
        with open(self.secret_file, "wb") as f:
            f.write(os.urandom(32))
        e = self.instance("pxE")
        msg = "the certificate in Redis is not taken: the private key in %sacme:cert:example.test: it does not " \
              "decrypt" % PREFIX
        self.assertTrue(wait_until(lambda: msg in e.error_log_text(), 10), e.error_log_text())
        time.sleep(2 * SLOW)  # retry_interval 1s: the attempts after it are put off silently
        self.assertEqual(e.error_log_text().count(msg), 1, e.error_log_text())
        self.assertEqual(self.orders([a, d, e]), 1, self.logs([a, d, e]))
        self.assertIsNone(self.serving(e))
        self.assertFalse(os.path.exists(os.path.join(e.tmp, "le", "live", "example.test", "cert.pem")))
        self.assertEqual(self.r.cmd("HGET", PREFIX + "acme:cert:example.test", "version"), "1")


class KilledHolder(AcmeClusterCase):
    def test_kill_9_holder_another_renews_after_the_lock_expires(self):
        self.start_pebble()
        a = self.instance("pxA", hooks={("pre", "10-sleep"): "echo $$ > {tmp}/hook.pid\nexec sleep 30"})
        pidfile = os.path.join(a.tmp, "hook.pid")
        self.assertTrue(wait_until(lambda: os.path.exists(pidfile) and read(pidfile).strip(), 10), self.logs([a]))
        self.pids.append(int(read(pidfile)))
        lock = self.r.cmd("GET", PREFIX + "acme:lock:example.test")
        self.assertTrue(lock and lock.startswith("pxA "), lock)
        b = self.instance("pxB")
        self.assertTrue(wait_until(lambda: "the Redis lock is held (pxA" in b.error_log_text(), 10),
                        self.logs([a, b]))
        a.proc.kill()  # kill -9 while it holds the lock
        a.proc.wait(5)
        ok = wait_until(lambda: self.serving(b), 30, interval=0.2)
        self.assertTrue(ok, self.logs([a, b]))
        self.assertEqual(self.orders([b]), 1, self.logs([b]))
        self.assertEqual(self.r.cmd("HGET", PREFIX + "acme:cert:example.test", "instance"), "pxB")
        # the fence went up: B's lock is a later one than A's
        self.assertGreater(int(self.r.cmd("GET", PREFIX + "acme:fence")), int(lock.split()[1]))


class LostLock(AcmeClusterCase):
    def test_holder_that_lost_the_lock_stores_nothing(self):
        self.start_pebble()
        lock_key = PREFIX + "acme:lock:example.test"
        a = self.instance("pxA", hooks={("pre", "10-wait"): "echo $$ > {tmp}/hook.pid\nsleep 1.5"})
        pidfile = os.path.join(a.tmp, "hook.pid")
        self.assertTrue(wait_until(lambda: os.path.exists(pidfile), 10), a.error_log_text())
        held = self.r.cmd("GET", lock_key)
        self.assertTrue(held and held.startswith("pxA "), held)
        # the lock is someone else's now (as after an expiry and a new holder)
        self.assertEqual(self.r.cmd("SET", lock_key, "pxZ 999999", "PX", "60000"), "OK")
        self.assertTrue(wait_until(lambda: "lock_lost" in a.error_log_text(), 20), a.error_log_text())
        self.assertEqual(self.orders([a]), 1)
        self.assertIn("the Redis lock expired while ordering", a.error_log_text())
        # nothing stored, in Redis or on disk; the other holder's lock untouched
        self.assertEqual(self.r.cmd("EXISTS", PREFIX + "acme:cert:example.test"), 0)
        self.assertFalse(os.path.exists(os.path.join(a.tmp, "le", "live", "example.test", "cert.pem")))
        self.assertEqual(self.r.cmd("GET", lock_key), "pxZ 999999")
        # the other holder goes away: A orders again and stores it
        self.assertTrue(wait_until(lambda: "the Redis lock is held (pxZ 999999)" in a.error_log_text(), 10),
                        a.error_log_text())
        self.r.cmd("DEL", lock_key)
        self.assertTrue(wait_until(lambda: self.serving(a), 30, interval=0.2), a.error_log_text())
        self.assertEqual(self.orders([a]), 2)
        self.assertEqual(self.r.cmd("HGET", PREFIX + "acme:cert:example.test", "instance"), "pxA")


class RedisDown(AcmeClusterCase):
    def test_no_order_while_redis_is_down_then_one(self):
        self.start_pebble()
        port = self.r.port
        self.r.kill()
        p = self.instance("px0")
        msg = "no certificate is ordered until it answers"
        self.assertTrue(wait_until(lambda: msg in p.error_log_text(), 10), p.error_log_text())
        time.sleep(1.5 * SLOW)  # retry_interval 1s: the next attempts are put off too, silently
        self.assertEqual(p.error_log_text().count(msg), 1, p.error_log_text())
        self.assertEqual(self.orders([p]), 0)
        self.r.start()  # the same port
        self.assertEqual(self.r.port, port)
        ok = wait_until(lambda: self.serving(p), 30, interval=0.2)
        self.assertTrue(ok, p.error_log_text())
        self.assertEqual(self.orders([p]), 1)
        self.assertIn("Redis answers again: certificates may be ordered", p.error_log_text())


class HttpOnOtherInstance(AcmeClusterCase):
    def test_validation_reaches_an_instance_that_did_not_order(self):
        """pebble validates on instance B's listener while instance A holds
        the lock and orders: B answers the token from Redis.

        NOTE: this passes only once the workers' Redis token lookup (the
        other helper's part of issue 19: local table first, then
        `P acme:token:TOKEN`) is merged; until then B answers 404 and the
        order fails."""
        b_port = free_port()
        self.start_pebble(http_port=b_port)
        a = self.instance("pxA", hooks={("pre", "10-wait"): "sleep 2"})
        self.assertTrue(wait_until(lambda: (self.r.cmd("GET", PREFIX + "acme:lock:example.test") or "")
                                   .startswith("pxA "), 10), a.error_log_text())
        b = self.instance("pxB", listen_http="127.0.0.1:%d" % b_port)
        ok = wait_until(lambda: self.serving(a) and self.serving(b), 40, interval=0.2)
        self.assertTrue(ok, self.logs([a, b]))
        self.assertEqual(self.orders([a, b]), 1, self.logs([a, b]))
        self.assertEqual(self.orders([a]), 1)
        self.assertEqual(self.serving(a), self.serving(b))


class Config(ProxyTestCase):
    def test_storage_errors(self):
        acme = "[acme]\nenabled = yes\ndomains = a.test\nconfig_dir = {tmp}/le\nstorage = %s\n"
        base = "[service web]\ntargets = 127.0.0.1:9\n"
        rc, out = self.check_config(base + acme % "redis")
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"proxyd\.ini:\d+: .*storage: redis needs a \[cluster\] section")
        line = [i + 1 for i, l in enumerate(self.proxy(base + acme % "redis", start=False).config_text.splitlines())
                if l.startswith("storage")][0]
        self.assertIn("proxyd.ini:%d:" % line, out)
        rc, out = self.check_config(base + acme % "redis" + "[cluster]\nredis = redis://127.0.0.1:1/0\n")
        self.assertEqual(rc, 1, out)
        self.assertIn("storage: redis needs [cluster] secret_file", out)
        rc, out = self.check_config(base + acme % "s3")
        self.assertEqual(rc, 1, out)
        self.assertIn("must be file or redis", out)
        rc, out = self.check_config(base + acme % "file" + "lock_timeout = 5s\n")
        self.assertEqual(rc, 0, out)


if __name__ == "__main__":
    unittest.main()
