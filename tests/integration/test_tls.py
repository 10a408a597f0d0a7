"""TLS termination with real clients (curl, openssl s_client): protocol
versions, ECDSA + RSA certificates, SNI, ALPN, the server-side session cache
and tickets, certificate hot reload on SIGHUP. The certificates come from a
throwaway CA made once per module (harness.shared_certs())."""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

from harness import (Proxy, ProxyError, ProxyTestCase, RecordingBackend, SLOW, StreamingBackend, copy_cert, curl,
                     curl_https, get, http_response, proxyd_path, s_client, sha256, shared_certs, tls_config,
                     tls_service_config, TlsClient, wait_until)

HTTP10 = b"GET /resume HTTP/1.0\r\nHost: localhost\r\n\r\n"
HTTP11 = b"GET /resume HTTP/1.1\r\nHost: localhost\r\n\r\n"  # keep-alive


def echo_path(req):
    return http_response(200, req.target, head_only=req.method == "HEAD")


class TlsCase(ProxyTestCase):
    def tls_proxy(self, tls=None, backend=None, extra_proxy="", extra=""):
        b = backend or self.backend(RecordingBackend, response=echo_path)
        p = self.proxy(tls_service_config(b, tls=tls, extra_proxy=extra_proxy, extra=extra))
        return p, b

    def assertHandshake(self, s, protocol=None, cn="localhost"):
        self.assertTrue(s.ok, s)
        self.assertTrue(s.verified, s)
        if cn is not None:
            self.assertEqual(s.subject_cn, cn, s)
        if protocol:
            self.assertRegex(s.out, r"(?m)^New, %s, Cipher is " % protocol.replace(".", r"\."), s)

    def assertProtocolRefused(self, s):
        self.assertFalse(s.ok, s)
        # the server said no (a protocol_version alert), not the client's own policy
        self.assertRegex(s.out, r"alert protocol version|wrong version number|unsupported protocol", s)
        self.assertNotRegex(s.out, r"no protocols available", s)


class Basics(TlsCase):
    def setUp(self):
        self.p, self.b = self.tls_proxy()

    def test_https_request_http11(self):
        r = curl_https(self.p, "/hello?x=1", "--http1.1", "-w", "\n%{http_version} %{ssl_verify_result}")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"/hello?x=1\n1.1 0")
        up = self.b.wait_requests(1)[0]
        self.assertEqual(up.start_line, "GET /hello?x=1 HTTP/1.1")
        self.assertEqual(up.headers.get_all("x-forwarded-proto"), ["https"])
        self.assertEqual(up.header("host"), "localhost:%d" % self.p.https_port)
        e = self.p.wait_access_log(1)[0]
        self.assertEqual((e["proto"], e["tls"], e["status"]), ("HTTP/1.1", True, 200), e)
        self.assertTrue(e["path"].startswith("/hello"), e)

    def test_tls12_and_tls13(self):
        for proto, flag in (("TLSv1.2", "-tls1_2"), ("TLSv1.3", "-tls1_3")):
            with self.subTest(proto=proto):
                self.assertHandshake(s_client(self.p.https_port, flag), proto)

    def test_tls11_and_tls10_refused(self):
        # SECLEVEL=0 so that the client really offers the old version: the refusal is the server's
        for flag in ("-tls1_1", "-tls1"):
            with self.subTest(flag=flag):
                self.assertProtocolRefused(s_client(self.p.https_port, flag, "-cipher", "DEFAULT@SECLEVEL=0"))
        r = curl_https(self.p, "/", "--tlsv1.1", "--tls-max", "1.1", "--ciphers", "DEFAULT@SECLEVEL=0")
        self.assertEqual(r.returncode, 35, r)
        self.assertIn(b"alert protocol version", r.stderr)
        self.assertEqual(self.b.requests, [])

    def test_curl_defaults_verify(self):
        # curl's default: TLS 1.3, ALPN h2, name and chain verified against the test CA
        r = curl_https(self.p, "/v", "-w", "\n%{http_version} %{ssl_verify_result}")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"/v\n2 0")
        # a client without the CA refuses the certificate (it really is the test CA's)
        r = curl("--resolve", "localhost:%d:127.0.0.1" % self.p.https_port, self.p.https_url("/v"))
        self.assertEqual(r.returncode, 60, r)

    def test_health_over_https(self):
        for http in ("--http1.1", "--http2"):
            with self.subTest(http=http):
                r = curl_https(self.p, "/health", http, "-w", "%{http_code}")
                self.assertEqual((r.returncode, r.stdout), (0, b"healthy\n200"), r.stderr)
        self.assertEqual(self.b.requests, [])

    def test_garbage_and_aborted_handshakes(self):
        # plain HTTP on the TLS port, a half ClientHello, a connect-and-close: none may hurt proxyd
        for data in (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                     b""):
            s = socket.create_connection(("127.0.0.1", self.p.https_port), timeout=5)
            try:
                if data:
                    s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(3 * SLOW)
                try:
                    got = s.recv(4096)
                except (socket.timeout, OSError):
                    got = b""
                self.assertNotIn(b"200 OK", got)
            finally:
                s.close()
        self.assertTrue(self.p.alive())
        self.assertHandshake(s_client(self.p.https_port))
        r = curl_https(self.p, "/after", "--http1.1")
        self.assertEqual((r.returncode, r.stdout), (0, b"/after"), r.stderr)


class Config(TlsCase):
    def test_protocols_tls13_only(self):
        p, _ = self.tls_proxy(tls_config(protocols="TLSv1.3"))
        self.assertHandshake(s_client(p.https_port, "-tls1_3"), "TLSv1.3")
        self.assertProtocolRefused(s_client(p.https_port, "-tls1_2"))

    def test_protocols_tls12_only(self):
        p, _ = self.tls_proxy(tls_config(protocols="TLSv1.2"))
        self.assertHandshake(s_client(p.https_port, "-tls1_2"), "TLSv1.2")
        self.assertProtocolRefused(s_client(p.https_port, "-tls1_3"))
        r = curl_https(p, "/x", "--http1.1")
        self.assertEqual((r.returncode, r.stdout), (0, b"/x"), r.stderr)

    def test_protocols_old_rejected_by_config(self):
        for value in ("TLSv1.1", "TLSv1 TLSv1.2", "SSLv3"):
            with self.subTest(value=value):
                p = Proxy(tls_service_config("127.0.0.1:9", tls=tls_config(protocols=value)), start=False)
                self.addCleanup(p.close)
                r = subprocess.run([proxyd_path(), "-t", "-c", p.config_path], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, timeout=10 * SLOW)
                self.assertEqual(r.returncode, 1, r)
                self.assertIn(b"protocols", r.stdout + r.stderr)

    def test_ciphers(self):
        p, _ = self.tls_proxy(tls_config(ciphers="ECDHE-ECDSA-AES256-GCM-SHA384"))
        s = s_client(p.https_port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384")
        self.assertHandshake(s, "TLSv1.2")
        self.assertRegex(s.out, r"Cipher is ECDHE-ECDSA-AES256-GCM-SHA384")
        s = s_client(p.https_port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertFalse(s.ok, s)

    def missing_cert_config(self):
        c = shared_certs()
        return tls_service_config("127.0.0.1:9", tls=tls_config(pairs=[(c.dir + "/nope.crt", c.ec[1])]))

    def test_missing_certificate_file_fails_start(self):
        with self.assertRaises(ProxyError) as cm:
            self.proxy(self.missing_cert_config())
        self.assertIn("nope.crt", str(cm.exception))

    def test_check_mode_loads_certificates(self):
        # proxyd -t reports what would stop a start (nginx -t loads the certificates too)
        p = Proxy(self.missing_cert_config(), start=False)
        self.addCleanup(p.close)
        r = subprocess.run([proxyd_path(), "-t", "-c", p.config_path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=10 * SLOW)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(b"nope.crt", r.stdout + r.stderr)


class DualCertificate(TlsCase):
    """certificate = ECDSA RSA: the client's capabilities pick one."""

    def setUp(self):
        c = shared_certs()
        self.p, self.b = self.tls_proxy(tls_config(pairs=[c.ec, c.rsa]))

    def test_tls12_cipher_picks_key_type(self):
        s = s_client(self.p.https_port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
        self.assertHandshake(s, "TLSv1.2")
        self.assertEqual(s.key_bits, 2048, s)
        s = s_client(self.p.https_port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertHandshake(s, "TLSv1.2")
        self.assertEqual(s.key_bits, 256, s)

    def test_tls13_sigalgs_pick_key_type(self):
        s = s_client(self.p.https_port, "-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256")
        self.assertHandshake(s, "TLSv1.3")
        self.assertEqual(s.key_bits, 2048, s)
        s = s_client(self.p.https_port, "-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256")
        self.assertHandshake(s, "TLSv1.3")
        self.assertEqual(s.key_bits, 256, s)

    def test_request_over_rsa(self):
        r = curl_https(self.p, "/rsa", "--http1.1", "--tls-max", "1.2", "--ciphers", "ECDHE-RSA-AES128-GCM-SHA256")
        self.assertEqual((r.returncode, r.stdout), (0, b"/rsa"), r.stderr)

    def test_rsa_only(self):
        p, _ = self.tls_proxy(tls_config(pairs=[shared_certs().rsa]))
        s = s_client(p.https_port)
        self.assertHandshake(s)
        self.assertEqual(s.key_bits, 2048, s)


class Sni(TlsCase):
    def setUp(self):
        c = shared_certs()
        self.c = c
        self.p, self.b = self.tls_proxy(tls_config(sni=[("other.test", c.other_ec), ("other.test", c.other_rsa),
                                                        ("*.wild.test", c.wild)]))

    def test_name_picks_certificate(self):
        cases = [("other.test", "other.test"), ("OTHER.test", "other.test"), ("a.wild.test", "*.wild.test"),
                 ("unknown.test", "localhost"), ("localhost", "localhost"), (None, "localhost")]
        for name, cn in cases:
            with self.subTest(servername=name):
                s = s_client(self.p.https_port, servername=name)
                self.assertHandshake(s, cn=cn)

    def test_sni_name_with_two_key_types(self):
        s = s_client(self.p.https_port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256", servername="other.test")
        self.assertHandshake(s, "TLSv1.2", cn="other.test")
        self.assertEqual(s.key_bits, 2048, s)
        s = s_client(self.p.https_port, "-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256", servername="other.test")
        self.assertHandshake(s, "TLSv1.3", cn="other.test")
        self.assertEqual(s.key_bits, 256, s)

    def test_wildcard_verifies_hostname(self):
        s = s_client(self.p.https_port, "-verify_hostname", "b.wild.test", servername="b.wild.test")
        self.assertHandshake(s, cn="*.wild.test")

    def test_curl_per_name(self):
        port = self.p.https_port
        for host in ("other.test", "x.wild.test", "localhost"):
            with self.subTest(host=host):
                self.b.reset()
                r = curl_https(self.p, "/n", "-w", " %{ssl_verify_result}", host=host)
                self.assertEqual((r.returncode, r.stdout), (0, b"/n 0"), r.stderr)
                self.assertEqual(self.b.wait_requests(1)[0].header("host"), "%s:%d" % (host, port))


class Resumption(TlsCase):
    """Server-side session cache shared by the workers; tickets off unless enabled."""

    def sess_file(self):
        d = tempfile.mkdtemp(prefix="proxyd-sess-")
        self.addCleanup(shutil.rmtree, d, True)
        return os.path.join(d, "sess.pem")

    def resumed(self, port, flag, n=6):
        """One full handshake (and an HTTP/1.0 request: proxyd closes, after any
        TLS 1.3 ticket) saving the session, then n connections offering it;
        returns the 'New'/'Reused' of those n (all 'New' when there was no
        session to save)."""
        f = self.sess_file()
        s = s_client(port, flag, "-sess_out", f, "-ign_eof", input=HTTP10)
        self.assertHandshake(s)
        self.assertEqual(s.sessions(), ["New"], s)
        self.assertIn("HTTP/1.", s.out)
        if not os.path.exists(f):
            return ["New"] * n
        out = []
        for _ in range(n):
            s = s_client(port, flag, "-sess_in", f, "-ign_eof", input=HTTP10)
            self.assertTrue(s.ok, s)
            out += s.sessions()
        return out

    def test_cache_shared_by_workers(self):
        # workers = 2 (harness default): six connections from new source ports land on both workers
        p, _ = self.tls_proxy()
        for flag in ("-tls1_2", "-tls1_3"):
            with self.subTest(flag=flag):
                self.assertEqual(self.resumed(p.https_port, flag), ["Reused"] * 6)

    def test_reconnect(self):
        # s_client -reconnect: a handshake, then five more offering its session; the client
        # ends each connection itself (close_notify), so the session must survive that
        p, _ = self.tls_proxy()
        s = s_client(p.https_port, "-tls1_2", "-reconnect")
        self.assertHandshake(s)
        got = s.sessions()
        # The first reconnect leaves the instant the client has the server's
        # Finished; OpenSSL's server puts the session in its cache just after
        # sending it, so on a loaded machine that reconnect can come first and
        # make a new session (seen once under `make asan` beside `make test`).
        # Every later connection offers a session the cache has: all reused.
        self.assertEqual(len(got), 6, s)
        self.assertEqual(got[0], "New", s)
        self.assertIn(got[1], ("Reused", "New"), s)
        self.assertEqual(got[2:], ["Reused"] * 4, s)

    def test_session_survives_client_close(self):
        # the client, not proxyd, ends the connection (close_notify, then close), as browsers do
        p, _ = self.tls_proxy()
        with self.subTest("TLS 1.2, s_client closes after the handshake"):
            f = self.sess_file()
            s = s_client(p.https_port, "-tls1_2", "-sess_out", f)
            self.assertHandshake(s, "TLSv1.2")
            s = s_client(p.https_port, "-tls1_2", "-sess_in", f, "-ign_eof", input=HTTP10)
            self.assertTrue(s.ok, s)
            self.assertEqual(s.sessions(), ["Reused"], s)
        with self.subTest("TLS 1.3, keep-alive request, the client closes"):
            sess = None
            for i in range(2):
                with TlsClient(p.https_port, session=sess) as c:
                    self.assertEqual(c.sock.version(), "TLSv1.3")
                    if i == 1:
                        self.assertTrue(c.sock.session_reused, "TLS 1.3 session not resumed")
                    c.send(HTTP11)
                    self.assertEqual(c.read_response().status, 200)
                    sess = c.sock.session
                    try:
                        c.sock.unwrap()  # close_notify from the client (proxyd need not answer it)
                    except (ssl.SSLError, OSError):
                        pass

    def test_truncated_stream_is_an_error(self):
        """An EOF without close_notify is a truncation, not a clean end: proxyd
        treats it as an error, so (unlike a clean close) the TLS session is not
        kept for resumption."""
        p, _ = self.tls_proxy()
        ctx = ssl.create_default_context(cafile=shared_certs().ca)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2

        def connect(session=None):
            raw = socket.create_connection(("127.0.0.1", p.https_port), timeout=5 * SLOW)
            return ctx.wrap_socket(raw, server_hostname="localhost", session=session)

        def answered(sock):
            data = b""
            deadline = time.monotonic() + 5 * SLOW
            while b"\r\n\r\n" not in data and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.1 200")

        s = connect()
        s.sendall(HTTP11)
        self.assertTrue(answered(s))
        sess = s.session
        s.unwrap()  # a clean end
        s.close()
        s = connect(sess)
        self.assertTrue(s.session_reused, "a cleanly closed session must resume")
        s.sendall(b"GET /half HTTP/1.1\r\nHost: localhost\r\n")  # half a head, then
        s.shutdown(socket.SHUT_RDWR)  # TCP FIN without close_notify: truncated
        s.close()
        time.sleep(0.3 * SLOW)
        s = connect(sess)
        try:
            self.assertFalse(s.session_reused, "a truncated connection's session was kept")
            s.sendall(HTTP11)
            self.assertTrue(answered(s), "proxyd must go on serving")
        finally:
            s.close()

    def test_session_timeout_zero_disables_cache(self):
        p, _ = self.tls_proxy(tls_config(session_timeout="0"))
        for flag in ("-tls1_2", "-tls1_3"):
            with self.subTest(flag=flag):
                self.assertEqual(self.resumed(p.https_port, flag, n=2), ["New"] * 2)

    def test_tickets_off_by_default(self):
        p, _ = self.tls_proxy()
        s = s_client(p.https_port, "-tls1_2", "-ign_eof", input=HTTP10)
        self.assertHandshake(s, "TLSv1.2")
        self.assertNotIn("TLS session ticket:", s.out)
        self.assertNotIn("TLS session ticket lifetime hint", s.out)

    def test_tickets_enabled(self):
        # tickets alone (no server cache) resume a session
        p, _ = self.tls_proxy(tls_config(session_tickets="yes", session_timeout="0"))
        s = s_client(p.https_port, "-tls1_2", "-ign_eof", input=HTTP10)
        self.assertHandshake(s, "TLSv1.2")
        self.assertIn("TLS session ticket lifetime hint", s.out)
        self.assertEqual(self.resumed(p.https_port, "-tls1_2", n=3), ["Reused"] * 3)


class LiveCertCase(TlsCase):
    """A certificate pair in a temp dir that a test replaces in place."""

    def setUp(self):
        self.c = shared_certs()
        self.dir = tempfile.mkdtemp(prefix="proxyd-reload-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.live = copy_cert(self.c.ec, self.dir, "live")
        self.tls = tls_config(pairs=[self.live])

    def install(self, pair):
        """Replace the live files atomically (like certbot's symlink switch)."""
        for src, dst in zip(pair, self.live):
            shutil.copyfile(src, dst + ".tmp")
            os.replace(dst + ".tmp", dst)

    def write_live(self, crt_bytes=None, key_bytes=None):
        for data, dst in ((crt_bytes, self.live[0]), (key_bytes, self.live[1])):
            if data is not None:
                with open(dst + ".tmp", "wb") as f:
                    f.write(data)
                os.replace(dst + ".tmp", dst)


class HotReload(LiveCertCase):
    """SIGHUP rebuilds the TLS contexts: new handshakes get the new files, open
    connections go on; a bad certificate keeps the old configuration."""

    def test_reload_swaps_certificate_keeps_downloads(self):
        b = self.backend(StreamingBackend, total=3 * 1024 * 1024, pieces=30, delay=0.1)  # ~3 s
        p = self.proxy(tls_service_config(b, tls=self.tls))
        s = s_client(p.https_port)
        self.assertHandshake(s, cn="localhost")
        self.assertEqual(s.leaf_pem(), self.c.pem("ec"))
        outs, procs = [], []
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        for http in ("--http1.1", "--http2"):
            out = os.path.join(self.dir, "dl" + http.strip("-"))
            outs.append(out)
            procs.append(subprocess.Popen(
                ["curl", "-sS", "--noproxy", "*", "--max-time", str(30 * SLOW), http, "--cacert", self.c.ca,
                 "--resolve", "localhost:%d:127.0.0.1" % p.https_port, "-o", out, "-w", "%{http_code}",
                 p.https_url("/big")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env))
        try:
            self.assertEqual(len(b.wait_requests(2)), 2)
            time.sleep(0.3)
            self.install(self.c.v2)
            log = p.reload(p.config_text)
            self.assertNotIn("reload failed", log)
            self.assertTrue(all(pr.poll() is None for pr in procs), "downloads ended before the reload")
            s = s_client(p.https_port)
            self.assertHandshake(s, cn="localhost-v2")
            self.assertEqual(s.leaf_pem(), self.c.pem("v2"))
            r = curl_https(p, "/health", "--http1.1")
            self.assertEqual((r.returncode, r.stdout), (0, b"healthy\n"), r.stderr)
            for pr, out in zip(procs, outs):
                o, e = pr.communicate(timeout=30 * SLOW)
                self.assertEqual((pr.returncode, o), (0, b"200"), e)
                with open(out, "rb") as f:
                    self.assertEqual(sha256(f.read()), sha256(b.body), out)
        finally:
            for pr in procs:
                if pr.poll() is None:
                    pr.kill()
                    pr.wait(5)

    def test_bad_certificate_reload_keeps_old(self):
        b = self.backend(RecordingBackend, response=echo_path)
        p = self.proxy(tls_service_config(b, tls=self.tls))
        with open(self.c.v2[0], "rb") as f:
            v2_crt = f.read()
        cases = [
            ("garbage certificate", b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n", None),
            ("empty certificate", b"", None),
            ("key does not match", v2_crt, None),
            ("garbage key", None, b"not a key\n"),
        ]
        for name, crt, key in cases:
            with self.subTest(case=name):
                self.install(self.c.ec)
                self.write_live(crt, key)
                log = p.reload(p.config_text)
                self.assertIn("reload failed, keeping the running configuration", log)
                self.assertTrue(p.alive())
                s = s_client(p.https_port)
                self.assertHandshake(s, cn="localhost")
                self.assertEqual(s.leaf_pem(), self.c.pem("ec"))
                r = curl_https(p, "/still", "--http1.1")
                self.assertEqual((r.returncode, r.stdout), (0, b"/still"), r.stderr)
        # and good files afterwards are taken
        self.install(self.c.v2)
        log = p.reload(p.config_text)
        self.assertNotIn("reload failed", log)
        self.assertHandshake(s_client(p.https_port), cn="localhost-v2")

    def test_missing_file_reload_keeps_old(self):
        b = self.backend(RecordingBackend, response=echo_path)
        p = self.proxy(tls_service_config(b, tls=self.tls))
        os.unlink(self.live[0])
        log = p.reload(p.config_text)
        self.assertIn("reload failed, keeping the running configuration", log)
        self.assertIn("live.crt", log)
        self.assertHandshake(s_client(p.https_port), cn="localhost")


class ReloadKeepsSessions(LiveCertCase):
    """The session cache and the ticket keys outlive a SIGHUP that leaves the
    [tls] session settings alone, even when the certificate files changed
    (certbot renews in place): a session from before the reload resumes after
    it, while new full handshakes get the new certificate."""

    def save_session(self, port, flag):
        f = os.path.join(self.dir, "sess%s.pem" % flag)
        s = s_client(port, flag, "-sess_out", f, "-ign_eof", input=HTTP10)
        self.assertHandshake(s, cn=None)
        self.assertEqual(s.sessions(), ["New"], s)
        self.assertTrue(os.path.exists(f), "no session to save")
        return f

    def offer(self, port, flag, f):
        s = s_client(port, flag, "-sess_in", f, "-ign_eof", input=HTTP10)
        self.assertTrue(s.ok, s)
        self.assertIn("HTTP/1.", s.out)
        return s.sessions()

    def check(self, tls_keys, new_cert):
        b = self.backend(RecordingBackend, response=echo_path)
        p = self.proxy(tls_service_config(b, tls=tls_config(pairs=[self.live], **tls_keys)))
        for flag in ("-tls1_2", "-tls1_3"):
            with self.subTest(flag=flag):
                f = self.save_session(p.https_port, flag)
                self.assertEqual(self.offer(p.https_port, flag, f), ["Reused"])
                if new_cert:
                    self.install(self.c.v2 if flag == "-tls1_2" else self.c.ec)
                log = p.reload(p.config_text)
                self.assertNotIn("reload failed", log)
                self.assertIn("configuration reloaded", log)
                self.assertEqual(self.offer(p.https_port, flag, f), ["Reused"],
                                 "session from before the SIGHUP not resumed")
                if new_cert:
                    cn = "localhost-v2" if flag == "-tls1_2" else "localhost"
                    self.assertHandshake(s_client(p.https_port, flag), cn=cn)

    def test_default_cache_survives_reload(self):
        self.check({}, new_cert=False)

    def test_cache_survives_certificate_renewal(self):
        self.check({}, new_cert=True)

    def test_ticket_keys_survive_reload(self):
        # tickets alone: only the ticket keys can resume the session
        self.check({"session_tickets": "yes", "session_timeout": "0"}, new_cert=True)

    def test_tickets_and_cache_survive_reload(self):
        self.check({"session_tickets": "yes"}, new_cert=False)

    def test_changed_session_settings_start_afresh(self):
        # a change of the session settings themselves is a new cache (documented)
        b = self.backend(RecordingBackend, response=echo_path)
        p = self.proxy(tls_service_config(b, tls=tls_config(pairs=[self.live])))
        f = self.save_session(p.https_port, "-tls1_2")
        log = p.reload(tls_service_config(b, tls=tls_config(pairs=[self.live], session_timeout="2h")))
        self.assertNotIn("reload failed", log)
        self.assertEqual(self.offer(p.https_port, "-tls1_2", f), ["New"])


class AllOrNothingReload(LiveCertCase):
    """A reload applies everything or nothing: new log files are opened and
    the certificates loaded first; when a certificate fails, the logs are not
    switched either."""

    def read(self, path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def test_bad_certificate_keeps_old_logs(self):
        b = self.backend(RecordingBackend, response=echo_path)
        old_access = os.path.join(self.dir, "old-access.log")
        new_access = os.path.join(self.dir, "new-access.log")
        new_error = os.path.join(self.dir, "new-error.log")
        p = self.proxy(tls_service_config(b, tls=self.tls, extra_proxy="access_log = %s" % old_access))
        old_error = p.error_log_path
        self.assertEqual(get(p.port, "/before").status, 301)  # plain listener: redirect, logged
        p.wait_access_log(1, path=old_access)
        self.write_live(b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n", None)
        before = len(self.read(old_error))
        p.write_config(tls_service_config(b, tls=self.tls, extra_proxy="access_log = %s\nerror_log = %s" % (
            new_access, new_error)))
        p.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: "reload failed" in self.read(old_error)[before:], 5 * SLOW),
                        "no 'reload failed' in the old error log; new error log:\n" + self.read(new_error))
        self.assertIn("live.crt", self.read(old_error)[before:])
        self.assertNotIn("reload failed", self.read(new_error))
        for i in range(3):
            self.assertEqual(get(p.port, "/after%d" % i).status, 301)
        r = curl_https(p, "/tls-after", "--http1.1")
        self.assertEqual((r.returncode, r.stdout), (0, b"/tls-after"), r.stderr)
        lines = p.wait_access_log(5, path=old_access)
        # all four in the old log; in any order: two workers each write a line
        # after their response has gone, so a worker preempted between the two
        # can log after the other worker's next request (nginx's log phase too)
        self.assertEqual(sorted(e["path"] for e in lines[-4:]), ["/after0", "/after1", "/after2", "/tls-after"])
        self.assertEqual(self.read(new_access), "", "requests logged to the new access_log of a failed reload")
        self.assertHandshake(s_client(p.https_port), cn="localhost")
        # the same reload with good files switches everything
        self.install(self.c.v2)
        p.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: "configuration reloaded" in self.read(new_error), 5 * SLOW),
                        self.read(old_error)[before:])
        self.assertEqual(get(p.port, "/new").status, 301)
        self.assertEqual([e["path"] for e in p.wait_access_log(1, path=new_access)], ["/new"])
        self.assertHandshake(s_client(p.https_port), cn="localhost-v2")


if __name__ == "__main__":
    import unittest
    unittest.main()
