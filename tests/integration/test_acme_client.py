"""The ACME protocol client (proxy/acme/client.c) against a real pebble,
driven by build/acme-obtain (tests/acme_obtain.c): the client on an event
base of its own, with a small HTTP server answering HTTP-01 from the
tokens it publishes -- the manager's token table is not needed here.

First issuance for two names with real HTTP-01 validation; the chain
verifies against pebble's root; the key matches the certificate; the
account is created once and reused; badNonce survived at pebble's 50%
rejection rate; a refused challenge surfaces "unauthorized" (or
"incorrectResponse") by name; pebble stopped is "network"; renewalInfo is
ok=0 on pebble 2.4.0 (no ARI); a certbot RSA account is left alone; a
cancelled issuance unpublishes its tokens. Under make asan, acme-obtain is
the ASan build: a leak or a sanitizer report fails the test.
"""

import atexit
import base64
import calendar
import glob
import http.server
import json
import os
import re
import shutil
import ssl
import stat
import subprocess
import tempfile
import threading
import time
import unittest

import pebble
from harness import SLOW, build_dir, free_port

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def acme_obtain_path():
    return os.path.join(build_dir(), "acme-obtain")


def openssl(*args, input=None):
    p = subprocess.run(("openssl",) + args, input=input, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    return p.returncode, p.stdout.decode("utf-8", "replace")


class Run:
    def __init__(self, proc, elapsed):
        self.rc = proc.returncode
        self.out = proc.stdout.decode("utf-8", "replace")
        self.err = proc.stderr.decode("utf-8", "replace")
        self.elapsed = elapsed

    def __repr__(self):
        return "rc=%s (%.1fs)\n--- stdout\n%s\n--- stderr\n%s" % (self.rc, self.elapsed, self.out, self.err[-6000:])


# One pebble per configuration for the whole module (each test uses an
# account directory of its own); the runner runs every test as a suite of
# its own, so class fixtures would start and stop one per test anyway.
# pebble.kill_all() stops them at exit.
_SHARED = {}


def shared_pebble(nonce_reject):
    if nonce_reject not in _SHARED:
        port = free_port()
        _SHARED[nonce_reject] = (pebble.Pebble(http_port=port, nonce_reject=nonce_reject), port)
    return _SHARED[nonce_reject]


atexit.register(pebble.kill_all)


class AcmeClientCase(unittest.TestCase):
    nonce_reject = 0
    own_pebble = False  # a pebble for this test alone (it stops it)

    def setUp(self):
        why = pebble.available()
        if why:
            self.skipTest(why)
        if not os.access(acme_obtain_path(), os.X_OK):
            self.skipTest("%s not built (make unit)" % acme_obtain_path())
        if self.own_pebble:
            self.http_port = free_port()
            self.pb = pebble.Pebble(http_port=self.http_port, nonce_reject=self.nonce_reject)
            self.addCleanup(self.pb.stop)
        else:
            self.pb, self.http_port = shared_pebble(self.nonce_reject)
        self.tmp = tempfile.mkdtemp(prefix="proxyd-acme-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.accounts = os.path.join(self.tmp, "accounts")
        self.out = os.path.join(self.tmp, "out")
        os.mkdir(self.out)

    def obtain(self, *names, extra=(), timeout=60):
        argv = [acme_obtain_path(), "--directory", self.pb.directory, "--ca", self.pb.ca_bundle,
                "--accounts", self.accounts, "--out", self.out, "--port", str(self.http_port)]
        argv += list(extra) + list(names)
        t0 = time.monotonic()
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                           timeout=timeout * SLOW)
        r = Run(p, time.monotonic() - t0)
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, r.err, r)
        return r

    def assertIssued(self, r):
        self.assertEqual(r.rc, 0, r)
        self.assertRegex(r.out, r"^issued \d+ \d+$", r)
        for name in ("privkey.pem", "cert.pem", "chain.pem", "fullchain.pem"):
            self.assertTrue(os.path.getsize(os.path.join(self.out, name)) > 0, name)

    def pebble_log(self):
        with open(os.path.join(self.pb.tmp, "pebble.log"), errors="replace") as f:
            return f.read()

    def account_dirs(self):
        return sorted(glob.glob(os.path.join(self.accounts, "127.0.0.1:%d" % self.pb.port, "dir", "*")))


class Issuance(AcmeClientCase):
    def test_first_issuance_two_names(self):
        log_before = self.pebble_log().count("POST /sign-me-up")
        r = self.obtain("example.com", "www.example.com")
        self.assertIssued(r)
        # real HTTP-01 validation of both names: pebble asked our responder
        # (Host carries the port; the tool strips it)
        for name in ("example.com", "www.example.com"):
            self.assertRegex(r.err, r"challenge %s /\.well-known/acme-challenge/[\w-]+ 200" % re.escape(name), r)
        # every published token was unpublished (the tool exits 3 otherwise)
        published = re.findall(r"^publish (\S+)$", r.err, re.M)
        self.assertEqual(len(published), 2, r)
        self.assertEqual(sorted(re.findall(r"^unpublish (\S+)$", r.err, re.M)), sorted(published), r)
        self.assertEqual(self.pebble_log().count("POST /sign-me-up") - log_before, 1)

        cert = os.path.join(self.out, "cert.pem")
        rc, text = openssl("x509", "-in", cert, "-noout", "-subject", "-ext", "subjectAltName", "-enddate",
                           "-startdate")
        self.assertEqual(rc, 0, text)
        self.assertRegex(text, r"subject=CN\s*=\s*example\.com")
        self.assertIn("DNS:example.com", text)
        self.assertIn("DNS:www.example.com", text)
        # notBefore/notAfter as the callback reported them
        nb, na = (int(x) for x in r.out.split()[1:3])
        end = re.search(r"notAfter=(.*)", text).group(1).strip()
        self.assertEqual(na, calendar.timegm(time.strptime(end, "%b %d %H:%M:%S %Y %Z")))
        self.assertLessEqual(nb, time.time() + 5)

        # the chain verifies against pebble's root
        roots = self.pb.write_roots(os.path.join(self.tmp, "roots.pem"))
        rc, text = openssl("verify", "-CAfile", roots, "-untrusted", os.path.join(self.out, "chain.pem"), cert)
        self.assertEqual(rc, 0, text)
        self.assertIn(": OK", text)
        with open(os.path.join(self.out, "fullchain.pem")) as f, open(cert) as c, \
                open(os.path.join(self.out, "chain.pem")) as ch:
            self.assertEqual(f.read(), c.read() + ch.read())

        # the key is the certificate's, a new P-256 key
        _, pub_cert = openssl("x509", "-in", cert, "-noout", "-pubkey")
        _, pub_key = openssl("pkey", "-in", os.path.join(self.out, "privkey.pem"), "-pubout")
        self.assertEqual(pub_cert, pub_key)
        _, ktext = openssl("pkey", "-in", os.path.join(self.out, "privkey.pem"), "-noout", "-text")
        self.assertIn("prime256v1", ktext)

        # the account, as certbot keeps it
        ids = self.account_dirs()
        self.assertEqual(len(ids), 1, ids)
        acct = ids[0]
        self.assertRegex(os.path.basename(acct), r"^[0-9a-f]{32}$")
        for d in (self.accounts, os.path.dirname(os.path.dirname(acct)), os.path.dirname(acct), acct):
            self.assertEqual(stat.S_IMODE(os.stat(d).st_mode), 0o700, d)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(acct, "private_key.json")).st_mode), 0o600)
        with open(os.path.join(acct, "private_key.json")) as f:
            jwk = json.load(f)
        self.assertEqual((jwk["kty"], jwk["crv"]), ("EC", "P-256"))
        self.assertTrue(all(k in jwk for k in ("x", "y", "d")))
        with open(os.path.join(acct, "regr.json")) as f:
            regr = json.load(f)
        self.assertTrue(regr["uri"].startswith("https://127.0.0.1:%d/" % self.pb.port), regr)
        self.assertEqual(regr["body"]["status"], "valid")
        self.assertEqual(regr["body"]["key"]["x"], jwk["x"])
        with open(os.path.join(acct, "meta.json")) as f:
            self.assertIn("creation_dt", json.load(f))
        self.assertEqual(glob.glob(os.path.join(acct, "*.tmp")), [])

    def test_account_created_once_and_reused(self):
        before = self.pebble_log().count("POST /sign-me-up")
        self.assertIssued(self.obtain("reuse.example.com"))
        ids = self.account_dirs()
        self.assertEqual(len(ids), 1, ids)
        files = {n: os.stat(os.path.join(ids[0], n)).st_mtime_ns
                 for n in ("private_key.json", "regr.json", "meta.json")}
        r = self.obtain("reuse.example.com", "www.reuse.example.com")
        self.assertIssued(r)
        self.assertNotIn("registered", r.err)
        self.assertEqual(self.account_dirs(), ids)
        for n, mtime in files.items():
            self.assertEqual(os.stat(os.path.join(ids[0], n)).st_mtime_ns, mtime, n)
        # one newAccount for the two runs: the second signed with the kid
        self.assertEqual(self.pebble_log().count("POST /sign-me-up") - before, 1)

    def test_key_without_registration_registers_it(self):
        """private_key.json without regr.json (a crash right after the key
        was written): the same key is registered, no second account made."""
        self.assertIssued(self.obtain("crash.example.com"))
        ids = self.account_dirs()
        os.unlink(os.path.join(ids[0], "regr.json"))
        r = self.obtain("crash.example.com")
        self.assertIssued(r)
        self.assertEqual(self.account_dirs(), ids)
        self.assertTrue(os.path.exists(os.path.join(ids[0], "regr.json")))

    def test_certbot_rsa_account_left_alone(self):
        d = os.path.join(self.accounts, "127.0.0.1:%d" % self.pb.port, "dir", "0123456789abcdef0123456789abcdef")
        os.makedirs(d, 0o700)
        rsa = {"kty": "RSA", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1Wl"
                                  "UzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDpre", "e": "AQAB",
               "d": "AQAB"}
        with open(os.path.join(d, "private_key.json"), "w") as f:
            json.dump(rsa, f)
        with open(os.path.join(d, "regr.json"), "w") as f:
            json.dump({"body": {}, "uri": "https://127.0.0.1:%d/my-account/rsa" % self.pb.port}, f)
        r = self.obtain("rsa.example.com")
        self.assertIssued(r)
        self.assertIn("RSA account key", r.err)
        ids = self.account_dirs()
        self.assertEqual(len(ids), 2, ids)
        with open(os.path.join(d, "private_key.json")) as f:
            self.assertEqual(json.load(f), rsa)  # untouched

    def test_refused_challenge_surfaces_the_error_by_name(self):
        r = self.obtain("refused.example.com", extra=["--refuse"])
        self.assertEqual(r.rc, 1, r)
        m = re.match(r"error (\w+): (.*)", r.out)
        self.assertTrue(m, r)
        self.assertIn(m.group(1), ("unauthorized", "incorrectResponse"), r)
        self.assertIn("404", m.group(2))
        self.assertIn("challenge refused.example.com /.well-known/acme-challenge/", r.err)
        self.assertEqual(r.err.count("unpublish "), 1, r)
        self.assertEqual(os.listdir(self.out), [])

    def test_renewal_info_absent_on_pebble(self):
        self.assertIssued(self.obtain("ari.example.com"))
        argv = [acme_obtain_path(), "--directory", self.pb.directory, "--ca", self.pb.ca_bundle,
                "--accounts", self.accounts, "--renewal-info", os.path.join(self.out, "cert.pem")]
        t0 = time.monotonic()
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30 * SLOW)
        r = Run(p, time.monotonic() - t0)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.out.strip(), "renewal-info ok=0", r)
        self.assertIn("offers no renewalInfo", r.err)
        self.assertLess(r.elapsed, 5 * SLOW, r)
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, r.err, r)

    def test_renewal_info_window(self):
        """A CA that offers renewalInfo (RFC 9773; a stub here, pebble 2.4.0
        has none): the client asks {renewalInfo}/{certID} with the certID
        of pebble's certificate -- base64url(AKI keyIdentifier) "."
        base64url(serial), computed here from openssl's output -- and
        reports the window."""
        self.assertIssued(self.obtain("ari2.example.com"))
        cert = os.path.join(self.out, "cert.pem")
        _, text = openssl("x509", "-in", cert, "-noout", "-serial", "-ext", "authorityKeyIdentifier")
        serial = bytes.fromhex(re.search(r"serial=([0-9A-F]+)", text).group(1).rjust(2, "0"))
        if serial[0] & 0x80:
            serial = b"\0" + serial
        keyid = bytes.fromhex(re.search(r"([0-9A-F]{2}(:[0-9A-F]{2})+)", text.split("Identifier", 1)[1])
                              .group(1).replace(":", ""))
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        cert_id = b64(keyid) + "." + b64(serial)
        asked = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                base = "https://127.0.0.1:%d" % self.server.server_port
                if self.path == "/dir":
                    body = {"newNonce": base + "/nonce", "newAccount": base + "/acct", "newOrder": base + "/order",
                            "renewalInfo": base + "/ari/"}
                elif self.path.startswith("/ari/"):
                    asked.append(self.path[len("/ari/"):])
                    body = {"suggestedWindow": {"start": "2030-01-02T03:04:05Z", "end": "2030-01-03T03:04:05Z"}}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(self.pb.tmp, "cert.pem"), os.path.join(self.pb.tmp, "key.pem"))
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        argv = [acme_obtain_path(), "--directory", "https://127.0.0.1:%d/dir" % srv.server_port,
                "--ca", self.pb.ca_bundle, "--accounts", self.accounts, "--renewal-info", cert]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30 * SLOW)
        r = Run(p, 0)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(asked, [cert_id])
        self.assertEqual(r.out.strip(), "renewal-info ok=1 %d %d" % (calendar.timegm((2030, 1, 2, 3, 4, 5)),
                                                                      calendar.timegm((2030, 1, 3, 3, 4, 5))), r)

    def test_cancel_unpublishes(self):
        """Cancelled while the challenges are out (right after the first
        publish), and at some other moment: every token published is
        unpublished, nothing is called back, nothing leaks (under ASan)."""
        for extra in (["--cancel-on-publish"], ["--cancel-after", "30"]):
            with self.subTest(extra=extra):
                r = self.obtain("cancel.example.com", "www.cancel.example.com", extra=extra)
                self.assertEqual(r.rc, 0, r)
                self.assertEqual(r.out.strip(), "cancelled, 0 tokens left published", r)
                self.assertNotIn("unknown token", r.err)
                published = re.findall(r"^publish (\S+)$", r.err, re.M)
                if extra[0] == "--cancel-on-publish":
                    self.assertEqual(len(published), 2, r)
                self.assertEqual(sorted(re.findall(r"^unpublish (\S+)$", r.err, re.M)), sorted(published), r)


class BadNonce(AcmeClientCase):
    nonce_reject = 50

    def test_bad_nonce_retried(self):
        r = self.obtain("nonce.example.com", "www.nonce.example.com")
        self.assertIssued(r)
        # half of the nonces were refused: the retries happened, and worked
        self.assertIn("badNonce from", r.err, r)


class CaDown(AcmeClientCase):
    own_pebble = True

    def test_pebble_stopped_is_network(self):
        self.pb.stop_server()
        r = self.obtain("down.example.com", timeout=30)
        self.assertEqual(r.rc, 1, r)
        self.assertRegex(r.out, r"^error network: ", r)
        self.assertLess(r.elapsed, 15 * SLOW, r)
        self.assertFalse(os.path.exists(self.accounts))

    def test_timeout(self):
        """The overall limit: a CA that accepts and never answers."""
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        self.addCleanup(s.close)
        argv = [acme_obtain_path(), "--directory", "https://127.0.0.1:%d/dir" % s.getsockname()[1],
                "--accounts", self.accounts, "--out", self.out, "--port", str(self.http_port),
                "--timeout", "500", "silent.example.com"]
        t0 = time.monotonic()
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30 * SLOW)
        r = Run(p, time.monotonic() - t0)
        self.assertEqual(r.rc, 1, r)
        self.assertRegex(r.out, r"^error timeout: ", r)
        self.assertLess(r.elapsed, 10 * SLOW, r)


if __name__ == "__main__":
    unittest.main()
