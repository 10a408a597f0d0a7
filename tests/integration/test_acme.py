"""ACME inside proxyd, against pebble and pebble-challtestsrv on loopback
(tests/integration/pebble.py): first issuance with real HTTP-01 validation
through proxyd's plain listener; certbot's files, links and modes; the
served chain verified against pebble's root; a forced renewal that runs the
hooks and serves archive N+1 while a connection opened before it keeps
working (and its session resumes); pebble's nonce rejection survived; the
CA gone -> the renewal fails, the old certificate serves, a retry follows;
a renewal that comes due by itself; deploy --tls, across a restart; a
certbot-style lineage on disk served as it is."""

import atexit
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
import time
import unittest

import pebble
import stub_ca
from unittest import mock

from harness import (Client, ProxyError, ProxyTestCase, RecordingBackend, Reader, SLOW, build_dir, curl_https,
                     free_port, http_response, shared_certs, tls_config, wait_until)

PROXYCTL = os.path.join(build_dir(), "proxyctl")
SKIP = pebble.available()
NAMES = ("example.test", "www.example.test")


def hello(req):
    return http_response(200, b"hello " + req.target.encode(), head_only=req.method == "HEAD")


class Ctl:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout.decode("utf-8", "replace")
        self.err = proc.stderr.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return "<proxyctl rc=%s stdout=%r stderr=%r>" % (self.rc, self.out[-2000:], self.err[-2000:])


def read(path):
    with open(path) as f:
        return f.read()


class TlsConn(Client):
    """A TLS client connection verified against pebble's root (SNI = name);
    one context per root, so that a session can be offered again."""

    _contexts = {}

    def __init__(self, port, name, roots, session=None, timeout=5.0):
        ctx = self._contexts.get(roots)
        if ctx is None:
            ctx = self._contexts[roots] = ssl.create_default_context(cadata=roots)
            ctx.set_alpn_protocols(["http/1.1"])
        self.timeout = timeout * SLOW
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=name, session=session)
        except BaseException:
            raw.close()
            raise
        self.reader = Reader(self.sock)

    def der(self):
        return self.sock.getpeercert(binary_form=True)


def pem_der(path):
    return ssl.PEM_cert_to_DER_cert(read(path))


def libcurl_mapped(p):
    with open("/proc/%d/maps" % p.pid) as f:
        return "libcurl" in f.read()


_PEBBLES = {}


def shared_pebble(nonce_reject=0, validity_s=None):
    """One pebble per setting for the whole module (the runner runs each test
    on its own, so class fixtures would be torn down after the first); the
    proxies of the tests listen on its http_port one after the other."""
    key = (nonce_reject, validity_s)
    pb = _PEBBLES.get(key)
    if pb is None or any(p.poll() is not None for p in pb.procs):
        if pb is not None:
            pb.stop()
        pb = _PEBBLES[key] = pebble.Pebble(http_port=free_port(), nonce_reject=nonce_reject, validity_s=validity_s)
        pb.roots = pb.issuer_roots()
        atexit.register(pb.stop)
    return pb


@unittest.skipIf(SKIP, SKIP)
class AcmeCase(ProxyTestCase):
    nonce_reject = 0
    validity_s = None
    own_pebble = False  # a pebble of its own, stopped after the test (one that stops it)

    def setUp(self):
        if self.own_pebble:
            self.pb = pebble.Pebble(http_port=free_port(), nonce_reject=self.nonce_reject,
                                    validity_s=self.validity_s)
            self.addCleanup(self.pb.stop)
            self.pb.roots = self.pb.issuer_roots()
        else:
            self.pb = shared_pebble(self.nonce_reject, self.validity_s)
        self.http_port = self.pb.http_port
        self.roots = self.pb.roots

    def acme_proxy(self, domains=NAMES, extra_acme="", extra="", extra_proxy="", tls=None, pb=None, tmp=None,
                   start=True, **kw):
        pb = pb or self.pb
        self.b = getattr(self, "b", None) or self.backend(RecordingBackend, response=hello)
        config = ("[proxy]\nlisten_http = 127.0.0.1:%d\nlisten_https = 127.0.0.1:0\nredirect_https = yes\n"
                  "state_file = %s/state.json\n%s\n%s\n"
                  "[acme]\nenabled = yes\ndirectory = %s\nca_bundle = %s\ndomains = %s\nconfig_dir = %s/le\n"
                  "email = ops@example.test\nretry_interval = 1s\ncheck_interval = 1h\n%s\n"
                  "[service web]\ntargets = %s\n%s"
                  % (pb.http_port, tmp or "{tmp}", extra_proxy, tls or tls_config(), pb.directory, pb.ca_bundle,
                     " ".join(domains),
                     tmp or "{tmp}", extra_acme, self.b.addr, extra))
        return self.proxy(config, start=start, **kw)

    def ctl(self, p, *args, timeout=60):
        proc = subprocess.run([PROXYCTL, "--socket", os.path.join(p.tmp, "control.sock")] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              timeout=timeout * SLOW)
        return Ctl(proc)

    def certs(self, p):
        r = self.ctl(p, "cert", "status", "--json")
        self.assertEqual(r.rc, 0, r)
        return {c["name"]: c for c in r.json()["certificates"] if c["source"] == "acme"}

    def wait_version(self, p, name, version, timeout=20.0):
        def ok():
            c = self.certs(p).get(name)
            return c if c and c["version"] >= version and c["served"] and c["outcome"] != "renewing" else None
        c = wait_until(ok, timeout, interval=0.1)
        self.assertTrue(c, "%s never reached version %d: %s\n%s" % (name, version, self.certs(p).get(name),
                                                                 p.error_log_text()[-3000:]))
        return c

    def served_der(self, p, name):
        with TlsConn(p.https_port, name, self.roots) as c:
            return c.der()

    def live(self, p, name, f):
        return os.path.join(p.tmp, "le", "live", name, f)


class Issuance(AcmeCase):
    def test_first_issuance_files_and_chain(self):
        p = self.acme_proxy()
        # until the lineage exists, the default certificate answers its names
        c = self.wait_version(p, "example.test", 1)
        self.assertEqual(sorted(c["hosts"]), sorted(NAMES))
        self.assertEqual(c["outcome"], "ok")
        self.assertEqual(c["state"], "valid")
        self.assertIsNone(c["service"])
        self.assertEqual(c["key_type"], "ECDSA-P256")
        self.assertGreaterEqual(c["days_left"], 365)  # pebble: 5 years

        # HTTP-01 was answered on the plain listener, Host with its port, before the redirect
        lines = p.access_log_lines()
        ch = [l for l in lines if l["path"].startswith("/.well-known/acme-challenge/")]
        self.assertTrue(ch, lines)
        self.assertTrue(all(l["status"] == 200 and not l["tls"] for l in ch), ch)
        self.assertEqual({l["host"] for l in ch}, {"%s:%d" % (n, self.http_port) for n in NAMES})
        # the tokens are gone once the order is done
        with Client(p.port) as cl:
            self.assertEqual(cl.request("GET", ch[0]["path"], host="example.test").status, 404)

        # certbot's layout, links and modes
        le = os.path.join(p.tmp, "le")
        for d in ("live", "archive", "accounts"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(le, d)).st_mode), 0o700, d)
        for f in ("cert", "chain", "fullchain", "privkey"):
            link = self.live(p, "example.test", f + ".pem")
            self.assertTrue(os.path.islink(link), link)
            self.assertEqual(os.readlink(link), "../../archive/example.test/%s1.pem" % f)
        self.assertEqual(stat.S_IMODE(os.stat(self.live(p, "example.test", "privkey.pem")).st_mode) & 0o077, 0)
        self.assertTrue(os.path.isfile(os.path.join(le, "renewal", "example.test.conf")))
        self.assertEqual(read(self.live(p, "example.test", "fullchain.pem")).count("BEGIN CERTIFICATE"), 2)

        # served by SNI for both names, chaining to pebble's root (verified by the client)
        for name in NAMES:
            self.assertEqual(self.served_der(p, name), pem_der(self.live(p, "example.test", "cert.pem")), name)
            with TlsConn(p.https_port, name, self.roots) as t:
                r = t.request("GET", "/x", host=name)
                self.assertEqual((r.status, r.body), (200, b"hello /x"))
        # an unrelated name still gets the default certificate
        default = self.proxy_default_der(p)
        self.assertNotEqual(default, pem_der(self.live(p, "example.test", "cert.pem")))
        self.assertIsNone(c.get("error"))
        self.assertNotIn("[error]", p.error_log_text())

    def proxy_default_der(self, p):
        ctx = ssl.create_default_context(cafile=shared_certs().ca)
        with socket.create_connection(("127.0.0.1", p.https_port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return s.getpeercert(binary_form=True)

    def test_forced_renewal_runs_hooks_and_keeps_connections(self):
        # hooks first: the manager leaves existing directories as they are
        p = self.acme_proxy(start=False)
        log = os.path.join(p.tmp, "hooks.log")
        hooks = os.path.join(p.tmp, "le", "renewal-hooks")
        scripts = {
            ("pre", "10-pre"): "",
            ("deploy", "20-second"): "",
            ("deploy", "10-first"): "echo 'deploy hook says hi'; echo 'to stderr' >&2",
            ("deploy", "15-fails"): "exit 3",
            ("post", "10-post"): "",
        }
        for (kind, name), extra in scripts.items():
            os.makedirs(os.path.join(hooks, kind), exist_ok=True)
            path = os.path.join(hooks, kind, name)
            with open(path, "w") as f:
                f.write("#!/bin/sh\necho \"%s/%s|$RENEWED_LINEAGE|$RENEWED_DOMAINS\" >> %s\n%s\n"
                        % (kind, name, log, extra))
            os.chmod(path, 0o755)
        with open(os.path.join(hooks, "deploy", "30-not-executable"), "w") as f:
            f.write("#!/bin/sh\necho never >> %s\n" % log)
        p.start()
        self.wait_version(p, "example.test", 1)
        wait_until(lambda: os.path.exists(log) and "post/" in read(log), 5)
        os.remove(log)  # the first issuance ran them too; look at the renewal's
        v1 = pem_der(self.live(p, "example.test", "cert.pem"))

        # a keep-alive connection and a session from before the renewal
        ka = TlsConn(p.https_port, "example.test", self.roots)
        self.addCleanup(ka.close)
        self.assertEqual(ka.der(), v1)
        self.assertEqual(ka.request("GET", "/before", host="example.test").status, 200)
        session = ka.sock.session

        r = self.ctl(p, "cert", "renew", "--force", "--json")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.json()["renewed"], ["example.test"])
        self.assertEqual(r.json()["failed"], [])

        # hooks: pre, deploy in byte order (a failing one does not stop the rest), post
        ran = read(log).splitlines()
        live_dir = os.path.join(p.tmp, "le", "live", "example.test")
        doms = " ".join(NAMES)
        self.assertEqual([l.split("|")[0] for l in ran],
                         ["pre/10-pre", "deploy/10-first", "deploy/15-fails", "deploy/20-second", "post/10-post"], ran)
        for l in ran:
            _, lin, dm = l.split("|")
            self.assertEqual((lin, dm), (live_dir, doms), l)
        text = p.error_log_text()
        self.assertIn("deploy hook says hi", text)
        self.assertIn("to stderr", text)

        # archive N+1 behind live/, served to new handshakes
        c = self.certs(p)["example.test"]
        self.assertEqual(c["version"], 2)
        self.assertEqual(os.readlink(self.live(p, "example.test", "cert.pem")), "../../archive/example.test/cert2.pem")
        v2 = pem_der(self.live(p, "example.test", "cert.pem"))
        self.assertNotEqual(v1, v2)
        self.assertTrue(wait_until(lambda: self.served_der(p, "example.test") == v2, 3))

        # the connection from before keeps working; the session still resumes
        r = ka.request("GET", "/after", host="example.test")
        self.assertEqual((r.status, r.body), (200, b"hello /after"))
        with TlsConn(p.https_port, "example.test", self.roots, session=session) as again:
            self.assertTrue(again.sock.session_reused)
            self.assertEqual(again.request("GET", "/resumed", host="example.test").status, 200)

    def test_acme_enabled_by_a_reload(self):
        # started without [acme] (libcurl is not even initialised then), turned
        # on by SIGHUP: the certificate is obtained and served without a restart
        p = self.acme_proxy(start=False)
        with_acme = p.config_text
        p.write_config(with_acme.replace("[acme]\nenabled = yes\n", "[acme]\nenabled = no\n"))
        p.start()
        self.assertFalse(libcurl_mapped(p), "libcurl is loaded only when ACME is enabled")
        r = self.ctl(p, "cert", "renew", "--json")
        self.assertEqual(r.rc, 1, r)
        self.assertIn("acme_not_configured", r.err)
        p.reload(with_acme)
        self.assertTrue(libcurl_mapped(p))
        self.wait_version(p, "example.test", 1)
        self.assertEqual(self.served_der(p, "example.test"), pem_der(self.live(p, "example.test", "cert.pem")))

    def test_renew_without_force_skips_what_is_not_due(self):
        p = self.acme_proxy()
        self.wait_version(p, "example.test", 1)
        cert = pem_der(self.live(p, "example.test", "cert.pem"))
        # a reload (SIGHUP) and a cert reload keep serving the lineage
        p.reload(p.config_text)
        self.assertEqual(self.served_der(p, "www.example.test"), cert)
        r = self.ctl(p, "cert", "reload", "--json")
        self.assertEqual((r.rc, r.json()), (0, {"loaded": 2}), r)
        self.assertEqual(self.served_der(p, "example.test"), cert)
        r = self.ctl(p, "cert", "renew", "--json")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual((r.json()["renewed"], r.json()["skipped"]), ([], ["example.test"]))
        self.assertEqual(self.certs(p)["example.test"]["version"], 1)
        # the table
        r = self.ctl(p, "cert", "status")
        self.assertEqual(r.rc, 0, r)
        self.assertRegex(r.out,
                         r"(?m)^NAME +KEY +HOSTS +NOT-AFTER +DAYS-LEFT +SOURCE +LAST-ATTEMPT +OUTCOME +NEXT-CHECK$")
        self.assertRegex(r.out, r"(?m)^example\.test +ECDSA-P256 +example\.test,www\.example\.test +\S+Z +\d+ +acme"
                                r" +\S+Z +ok +\S+Z$")
        self.assertRegex(r.out, r"(?m)^default +ECDSA-P256 +localhost")

    def test_deploy_tls_issues_serves_and_survives_restart(self):
        tmp = self.make_tmp()
        p = self.acme_proxy(domains=("example.test",), tmp=tmp)
        app = self.backend(RecordingBackend, response=lambda req: http_response(200, b"app"))
        r = self.ctl(p, "deploy", "app", "--target", app.addr, "--host", "app.test", "--host", "api.app.test",
                     "--tls", "--force")
        self.assertEqual(r.rc, 0, r)
        self.assertIn("tls: the certificate is obtained", r.err)
        c = self.wait_version(p, "app.test", 1)
        self.assertEqual(c["service"], "app")
        self.assertEqual(sorted(c["hosts"]), ["api.app.test", "app.test"])
        cert = pem_der(os.path.join(tmp, "le", "live", "app.test", "cert.pem"))
        for name in ("app.test", "api.app.test"):
            with TlsConn(p.https_port, name, self.roots) as t:
                self.assertEqual(t.der(), cert)
                self.assertEqual(t.request("GET", "/", host=name).body, b"app")
        with open(os.path.join(tmp, "state.json")) as f:
            self.assertTrue([s for s in json.load(f)["services"] if s["name"] == "app"][0]["tls"])

        # a restart serves it from disk at once, without a new order
        p.stop()
        p2 = self.acme_proxy(domains=("example.test",), tmp=tmp)
        c = self.certs(p2)["app.test"]
        self.assertEqual((c["version"], c["served"], c["last_attempt"]), (1, True, None), c)
        with TlsConn(p2.https_port, "app.test", self.roots) as t:
            self.assertEqual(t.der(), cert)
            self.assertEqual(t.request("GET", "/", host="app.test").body, b"app")

        # removing the service stops serving its lineage
        self.assertEqual(self.ctl(p2, "remove", "app").rc, 0)
        self.assertNotIn("app.test", self.certs(p2))

    def test_deploy_tls_refused_before_anything_changes(self):
        p = self.acme_proxy()
        app = self.backend(RecordingBackend)
        r = self.ctl(p, "deploy", "app", "--target", app.addr, "--tls", "--force")
        self.assertEqual(r.rc, 1, r)
        self.assertIn("bad_request", r.err)
        r = self.ctl(p, "deploy", "app", "--target", app.addr, "--host", "*.app.test", "--tls", "--force")
        self.assertEqual(r.rc, 1, r)
        self.assertIn("wildcard", r.err)
        r = self.ctl(p, "list", "--json")
        self.assertNotIn("app", [s["name"] for s in r.json()["services"]])

    def make_tmp(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="proxyd-acme-")
        self.addCleanup(shutil.rmtree, d, True)
        return d


@unittest.skipUnless(os.geteuid() == 0, "needs root (to drop to nobody)")
class Privileges(AcmeCase):
    def test_config_dir_and_hooks_belong_to_user(self):
        import pwd
        nobody = pwd.getpwnam("nobody")
        p = self.acme_proxy(start=False)
        # what nobody must read after the drop: the CA's bundle, and the [tls] files (a renewal
        # rebuilds the TLS part from them)
        certs = shared_certs()
        pair = []
        for src in certs.ec + (self.pb.ca_bundle,):
            dst = os.path.join(p.tmp, os.path.basename(src))
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o644)
            pair.append(dst)
        os.chmod(p.tmp, 0o711)
        p.write_config(self.acme_proxy_config_text(p, pair))
        p.start()
        le = os.path.join(p.tmp, "le")
        self.assertEqual(os.stat(le).st_uid, nobody.pw_uid)  # made for the user at start
        self.wait_version(p, "example.test", 1)
        for path in ("archive/example.test/privkey1.pem", "live/example.test", "renewal/example.test.conf",
                     "accounts", "renewal-hooks/deploy"):
            self.assertEqual(os.lstat(os.path.join(le, path)).st_uid, nobody.pw_uid, path)
        hook = os.path.join(le, "renewal-hooks", "deploy", "10-whoami")
        with open(hook, "w") as f:
            f.write("#!/bin/sh\nid -u > \"$RENEWED_LINEAGE/../../hook-uid\"\n")
        os.chmod(hook, 0o755)
        r = self.ctl(p, "cert", "renew", "--force")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(read(os.path.join(le, "hook-uid")).strip(), str(nobody.pw_uid))
        self.assertEqual(os.stat(os.path.join(le, "archive", "example.test", "cert2.pem")).st_uid, nobody.pw_uid)
        self.assertEqual(self.served_der(p, "example.test"), pem_der(self.live(p, "example.test", "cert.pem")))

    def acme_proxy_config_text(self, p, pair):
        text = p.config_text.replace("[proxy]\n", "[proxy]\nuser = nobody\n", 1)
        certs = shared_certs()
        return text.replace(certs.ec[0], pair[0]).replace(certs.ec[1], pair[1]).replace(self.pb.ca_bundle, pair[2])


class NonceRejection(AcmeCase):
    nonce_reject = 50

    def test_issuance_survives_bad_nonces(self):
        p = self.acme_proxy()
        self.wait_version(p, "example.test", 1, timeout=30)
        self.assertEqual(self.served_der(p, "www.example.test"), pem_der(self.live(p, "example.test", "cert.pem")))


class DueByExpiry(AcmeCase):
    validity_s = 60

    def test_renewed_when_due_without_being_asked(self):
        # 60 s certificates, renewed 55 s before expiry: due 5 s after issuance
        p = self.acme_proxy(extra_acme="renew_before = 55s\n")
        c1 = self.wait_version(p, "example.test", 1)
        c2 = self.wait_version(p, "example.test", 2, timeout=20)
        self.assertGreater(c2["not_after"], c1["not_after"])
        self.assertTrue(wait_until(lambda: self.served_der(p, "example.test") ==
                                   pem_der(self.live(p, "example.test", "cert.pem")), 3))


class CaDown(AcmeCase):
    own_pebble = True

    def test_renewal_fails_old_certificate_serves_and_retries(self):
        p = self.acme_proxy()
        self.wait_version(p, "example.test", 1)
        v1 = pem_der(self.live(p, "example.test", "cert.pem"))

        self.pb.stop_server()
        r = self.ctl(p, "cert", "renew", "--force")
        self.assertEqual(r.rc, 1, r)
        self.assertIn("renewal_failed: example.test: ", r.err)
        c = self.certs(p)["example.test"]
        self.assertEqual((c["outcome"], c["version"], c["failures"]), ("failed", 1, 1), c)
        self.assertTrue(c["error"]["type"], c)
        self.assertIn("example.test: %s: %s" % (c["error"]["type"], c["error"]["detail"]), r.err)
        log = p.error_log_text()
        self.assertIn("acme example.test: renewal failed: %s: " % c["error"]["type"], log)
        self.assertIn("the current certificate stays in service", log)
        # the old certificate serves, and the table says why
        self.assertEqual(self.served_der(p, "example.test"), v1)
        r = self.ctl(p, "cert", "status")
        self.assertIn("example.test: %s: " % c["error"]["type"], r.out)
        # retried by itself after retry_interval (1 s), then after 2 s
        def retried():
            x = self.certs(p)["example.test"]
            return x if x["failures"] >= 2 else None
        c2 = wait_until(retried, 8, interval=0.2)
        self.assertTrue(c2, self.certs(p)["example.test"])
        self.assertGreater(c2["last_attempt"], c["last_attempt"])
        self.assertEqual(c2["version"], 1)
        self.assertEqual(self.served_der(p, "example.test"), v1)


class CertbotLineage(ProxyTestCase):
    """A lineage certbot made (tests/unit/fixtures/certbot: certbot 2.1
    against pebble), on disk before proxyd starts, is served as it is: no
    order (the CA here does not even exist)."""

    FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "unit", "fixtures",
                           "certbot")

    def status(self, p):
        r = subprocess.run([PROXYCTL, "--socket", os.path.join(p.tmp, "control.sock"), "cert", "status", "--json"],
                           stdout=subprocess.PIPE, timeout=10 * SLOW)
        return [c for c in json.loads(r.stdout)["certificates"] if c["source"] == "acme"][0]

    def test_existing_lineage_served_without_issuing(self):
        p = self.proxy(start=False)
        le = os.path.join(p.tmp, "le")
        shutil.copytree(self.FIXTURE, le, symlinks=True)
        for d in ("live", "archive"):
            os.chmod(os.path.join(le, d), 0o700)
        p.write_config("[proxy]\nlisten_https = 127.0.0.1:0\n%s\n[acme]\nenabled = yes\n"
                       "directory = https://127.0.0.1:1/dir\ndomains = %s\nconfig_dir = %s\n"
                       "[service web]\ntargets = 127.0.0.1:9\n" % (tls_config(), " ".join(NAMES), le))
        p.start()
        c = self.status(p)
        self.assertEqual((c["name"], c["version"], c["served"], c["state"], c["last_attempt"]),
                         ("example.test", 1, True, "valid", None), c)
        self.assertEqual(sorted(c["hosts"]), sorted(NAMES))
        want = pem_der(os.path.join(le, "archive", "example.test", "cert1.pem"))
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the pebble that issued it is long gone
        for name in NAMES:
            with socket.create_connection(("127.0.0.1", p.https_port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname=name) as s:
                    self.assertEqual(s.getpeercert(binary_form=True), want, name)
        time.sleep(0.3)  # the first check has run: still nothing ordered
        c = self.status(p)
        self.assertIsNone(c["last_attempt"], c)
        self.assertEqual(c["version"], 1)


class NotConfigured(ProxyTestCase):
    """Without [acme]: cert status lists the files, renew and deploy --tls are refused."""

    def test_cert_commands_without_acme(self):
        b = self.backend(RecordingBackend)
        cs = shared_certs()
        p = self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\n%s\n[service web]\ntargets = %s\n"
                       % (tls_config(pairs=[cs.ec, cs.rsa], sni=[("other.test", cs.other_ec)]), b.addr))
        sock = os.path.join(p.tmp, "control.sock")

        def ctl(*a):
            return Ctl(subprocess.run([PROXYCTL, "--socket", sock] + list(a), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, timeout=10 * SLOW))
        r = ctl("cert", "status", "--json")
        self.assertEqual(r.rc, 0, r)
        certs = r.json()["certificates"]
        # the default name's ECDSA and RSA certificates, told apart by key type and file
        self.assertEqual([(c["name"], c["source"], c["key_type"], c["file"]) for c in certs],
                         [("default", "file", "ECDSA-P256", cs.ec[0]), ("default", "file", "RSA-2048", cs.rsa[0]),
                          ("other.test", "file", "ECDSA-P256", cs.other_ec[0])])
        self.assertEqual(certs[0]["hosts"], ["localhost"])
        self.assertGreater(certs[0]["days_left"], 0)
        r = ctl("cert", "status")
        self.assertEqual(r.rc, 0, r)
        rows = [line.split() for line in r.out.splitlines()]
        self.assertEqual([row[:3] for row in rows], [["NAME", "KEY", "HOSTS"], ["default", "ECDSA-P256", "localhost"],
                                                     ["default", "RSA-2048", "localhost"],
                                                     ["other.test", "ECDSA-P256", "other.test"]])
        r = ctl("cert", "renew")
        self.assertEqual(r.rc, 1, r)
        self.assertIn("acme_not_configured", r.err)
        r = ctl("deploy", "x", "--target", b.addr, "--host", "x.test", "--tls")
        self.assertEqual(r.rc, 1, r)
        self.assertIn("acme_not_configured", r.err)
        r = ctl("cert", "reload", "--json")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.json()["loaded"], 2)



class WrongCertificate(ProxyTestCase):
    """A CA that issues a certificate for names other than the order's (or one
    outside its dates): nothing is written, the working certificate keeps
    serving, the attempt fails with bad_certificate and is retried."""

    def test_wrong_names_or_dates_are_refused(self):
        ca = stub_ca.StubCA(["site.test"])
        self.addCleanup(ca.close)
        b = self.backend(RecordingBackend, response=hello)
        p = self.proxy("[proxy]\nlisten_http = 127.0.0.1:0\nlisten_https = 127.0.0.1:0\n%s\n"
                       "[acme]\nenabled = yes\ndirectory = %s\nca_bundle = %s\ndomains = site.test\n"
                       "config_dir = {tmp}/le\nretry_interval = 1h\n[service web]\ntargets = %s\n"
                       % (tls_config(), ca.directory, ca.ca_crt, b.addr))
        sock = os.path.join(p.tmp, "control.sock")
        roots = read(ca.ca_crt)

        def ctl(*a):
            return Ctl(subprocess.run([PROXYCTL, "--socket", sock] + list(a), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, timeout=30 * SLOW))

        def status():
            r = ctl("cert", "status", "--json")
            return {c["name"]: c for c in r.json()["certificates"]}.get("site.test")

        c = wait_until(lambda: (lambda c: c if c and c["version"] == 1 and c["served"] else None)(status()), 20)
        self.assertTrue(c, p.error_log_text()[-3000:])
        live = os.path.join(p.tmp, "le", "live", "site.test", "cert.pem")
        v1 = pem_der(live)
        with TlsConn(p.https_port, "site.test", roots) as t:
            self.assertEqual(t.der(), v1)

        cases = [("DNS:wrong.example", 0, "it does not cover site.test (1 of the 1 names ordered)"),
                 ("DNS:site.test", -90, "expired"),
                 ("DNS:site.test", 2, "not valid yet")]
        for n, (san, start_days, why) in enumerate(cases, 1):
            ca.san, ca.start_days = san, start_days
            r = ctl("cert", "renew", "--force")
            self.assertEqual(r.rc, 1, r)
            self.assertIn("site.test: bad_certificate: ", r.err)
            self.assertIn("the certificate the CA issued is not the one ordered: " + why, r.err)
            # nothing written: no archive 2, live/ still on 1, the same certificate served
            self.assertFalse(os.path.exists(os.path.join(p.tmp, "le", "archive", "site.test", "cert2.pem")))
            self.assertEqual(os.readlink(live), "../../archive/site.test/cert1.pem")
            with TlsConn(p.https_port, "site.test", roots) as t:
                self.assertEqual(t.der(), v1)
            c = status()
            self.assertEqual((c["version"], c["state"], c["outcome"], c["failures"], c["error"]["type"]),
                             (1, "valid", "failed", n, "bad_certificate"), c)
            self.assertNotEqual(c["next_check"], "now")
        self.assertIn("renewal failed: bad_certificate: ", p.error_log_text())
        self.assertIn("the current certificate stays in service, next attempt in", p.error_log_text())

        # the CA fixed: the next attempt installs version 2
        ca.san, ca.start_days = "DNS:site.test", 0
        r = ctl("cert", "renew", "--force")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(os.readlink(live), "../../archive/site.test/cert2.pem")
        self.assertEqual(status()["failures"], 0)


class Libcurl(ProxyTestCase):
    """libcurl is dlopen()ed when ACME is first enabled, never before; when it
    cannot be loaded, a config with [acme] is refused with a message naming the
    library and the package (start and reload), and nothing crashes."""

    ACME = ("[acme]\nenabled = yes\ndirectory = https://127.0.0.1:%d/dir\ndomains = example.test\n"
            "config_dir = {tmp}/le\nretry_interval = 1h\n")

    def config(self, acme):
        self.b = getattr(self, "b", None) or self.backend(RecordingBackend, response=hello)
        return ("[proxy]\nlisten_http = 127.0.0.1:0\nlisten_https = 127.0.0.1:0\n%s\n%s\n[service web]\ntargets = %s\n"
                % (tls_config(), self.ACME % free_port() if acme else "", self.b.addr))

    def test_not_mapped_without_acme_then_loaded_by_a_reload(self):
        p = self.proxy(self.config(False))
        self.assertEqual(curl_https(p, "/x").returncode, 0)
        self.assertFalse(libcurl_mapped(p))
        log = p.reload(self.config(True))
        self.assertIn("configuration reloaded", log)
        self.assertTrue(libcurl_mapped(p))
        self.assertEqual(curl_https(p, "/y").returncode, 0)

    def test_started_with_acme_maps_it(self):
        p = self.proxy(self.config(True))
        self.assertTrue(libcurl_mapped(p))

    def test_missing_libcurl_refuses_acme_and_keeps_serving(self):
        # a libcurl.so.4 that is no shared object, found first on LD_LIBRARY_PATH
        d = tempfile.mkdtemp(prefix="proxyd-libcurl-")
        self.addCleanup(shutil.rmtree, d, True)
        lib = os.path.join(d, "libcurl.so.4")
        with open(lib, "w") as f:
            f.write("not a library\n")
        with mock.patch.dict(os.environ, {"LD_LIBRARY_PATH": os.path.dirname(lib)}):
            p = self.proxy(self.config(True), start=False)
            with self.assertRaises(ProxyError):
                p.start(timeout=5)
            self.assertNotEqual(p.proc.wait(10), 0)
            log = p.error_log_text()
            self.assertIn("ACME is unavailable: libcurl.so.4 cannot be loaded", log)
            self.assertIn("install the libcurl4 package", log)
            # proxyd -t says the same
            t = subprocess.run([os.path.join(build_dir(), "proxyd"), "-t", "-c", p.config_path],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10 * SLOW)
            self.assertEqual(t.returncode, 1, t)
            self.assertIn(b"ACME is unavailable: libcurl.so.4 cannot be loaded", t.stderr)
            q = self.proxy(self.config(False))
        self.assertEqual(curl_https(q, "/x").returncode, 0)
        log = q.reload(self.config(True))
        self.assertIn("reload failed, keeping the running configuration: ACME is unavailable: libcurl.so.4", log)
        self.assertTrue(q.alive())
        self.assertFalse(libcurl_mapped(q))
        self.assertEqual(curl_https(q, "/y").returncode, 0)


if __name__ == "__main__":
    unittest.main()
