"""Per-service options (issue 17; DESIGN "Config" [service] and "kamal-proxy
compatibility"): canonical_host, strip_path_prefix, several path prefixes,
a certificate per service, tls_redirect per service, forward_headers,
health_check_port, target_timeout, error_pages; Go durations in proxyctl and
the config; every option through a restart (the state file). From the
user's side: curl (--resolve, Host), openssl s_client, proxyctl.
"""

import json
import os
import shutil
import tempfile
import time

from harness import (ProxyTestCase, RecordingBackend, SilentBackend, curl, get, http_response, s_client,
                     shared_certs, tls_config)
from test_deploy import FAST, proxyctl


def http_code(r):
    """curl -w '%{http_code} %{redirect_url}' output -> (code, location)."""
    code, _, loc = r.stdout.decode().partition(" ")
    return int(code), loc


def curl_head(proxy_port, host, path, scheme="http"):
    """curl SCHEME://HOST:PORT/PATH resolved to 127.0.0.1 (no redirect
    following): (status, Location)."""
    r = curl("-k", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
             "--resolve", "%s:%d:127.0.0.1" % (host, proxy_port), "%s://%s:%d%s" % (scheme, host, proxy_port, path))
    return http_code(r)


class Named(RecordingBackend):
    def __init__(self, name, **kw):
        super().__init__(name=name, **kw)


class ServiceOptionsTest(ProxyTestCase):
    def tmpdir(self):
        d = tempfile.mkdtemp(prefix="proxyd-svcopts-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    # -- canonical_host ------------------------------------------------------
    def test_canonical_host_301_keeps_path_and_query_from_both_ports(self):
        b = self.backend(Named, name="site")
        p = self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\n" + tls_config() +
                       "[service web]\nhosts = example.com www.example.com\ncanonical_host = example.com\n"
                       "targets = %s\n" % b.addr)
        # https, the other host: straight to the canonical one
        self.assertEqual(curl_head(p.https_port, "www.example.com", "/a/b?x=1&y=%20", "https"),
                         (301, "https://example.com/a/b?x=1&y=%20"))
        # port 80, the other host: one hop to https://CANONICAL (not via https://www first)
        self.assertEqual(curl_head(p.port, "www.example.com", "/a/b?x=1"), (301, "https://example.com/a/b?x=1"))
        self.assertEqual(curl_head(p.port, "example.com", "/a?q"), (301, "https://example.com/a?q"))
        self.assertEqual(curl_head(p.https_port, "example.com", "/a", "https"), (200, ""))
        self.assertEqual([r.path for r in b.requests], ["/a"])

    def test_canonical_host_without_tls_redirects_to_http(self):
        b = self.backend(Named, name="site")
        p = self.proxy("[service web]\nhosts = example.com www.example.com\ncanonical_host = example.com\n"
                       "targets = %s\n" % b.addr)
        self.assertEqual(curl_head(p.port, "www.example.com", "/x?y=1"), (301, "http://example.com/x?y=1"))
        self.assertEqual(curl_head(p.port, "example.com", "/x"), (200, ""))

    # -- path prefixes -------------------------------------------------------
    def test_strip_path_prefix(self):
        app, keep, web = self.backend(Named, name="app"), self.backend(Named, name="keep"), \
            self.backend(Named, name="web")
        p = self.proxy("[service app]\npath_prefix = /app\nstrip_path_prefix = yes\ntargets = %s\n"
                       "[service keep]\npath_prefix = /keep\ntargets = %s\n"
                       "[service web]\ntargets = %s\n" % (app.addr, keep.addr, web.addr))
        for path in ("/app/x/y?q=1", "/app", "/app?z", "/keep/x", "/apple"):
            r = curl("-o", "/dev/null", "-w", "%{http_code}", p.url(path))
            self.assertEqual(r.stdout, b"200", (path, r))
        self.assertEqual([r.target for r in app.requests], ["/x/y?q=1", "/", "/?z"])
        self.assertEqual([r.path for r in keep.requests], ["/keep/x"])  # default: not stripped
        self.assertEqual([r.path for r in web.requests], ["/apple"])

    def test_several_path_prefixes(self):
        api, web = self.backend(Named, name="api"), self.backend(Named, name="web")
        p = self.proxy("[service api]\nhosts = example.com\npath_prefix = /api /admin/\ntargets = %s\n"
                       "[service web]\nhosts = example.com\ntargets = %s\n" % (api.addr, web.addr))
        got = {}
        for path in ("/api/v1", "/admin", "/admin/users?x=1", "/", "/administrator", "/apix"):
            r = curl("-H", "Host: example.com", p.url(path))
            got[path] = r.stdout
        self.assertEqual(got, {"/api/v1": b"api", "/admin": b"api", "/admin/users?x=1": b"api", "/": b"web",
                               "/administrator": b"web", "/apix": b"web"})
        # the same through proxyctl: --path-prefix repeated, --strip-path-prefix
        dep = self.backend(Named, name="dep")
        r = proxyctl(p, "deploy", "docs", "--target", dep.addr, "--host", "docs.example.com", "--path-prefix",
                     "/guide", "--path-prefix", "/faq", "--strip-path-prefix", *FAST)
        self.assertEqual(r.rc, 0, r)
        for path in ("/guide/a", "/faq", "/other"):
            curl("-H", "Host: docs.example.com", p.url(path))
        self.assertEqual([x.path for x in dep.requests], ["/a", "/"])
        # a claim on one of the prefixes conflicts
        r = proxyctl(p, "deploy", "clash", "--target", dep.addr, "--host", "example.com", "--path-prefix", "/admin",
                     *FAST)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("conflicts with service api", r.err)

    # -- certificates ----------------------------------------------------------
    def test_per_service_certificate_by_sni(self):
        certs = shared_certs()
        b, o = self.backend(Named, name="web"), self.backend(Named, name="other")
        p = self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\n" + tls_config(certs) +
                       "[service other]\nhosts = other.test\ntls_certificate = %s\ntls_certificate_key = %s\n"
                       "targets = %s\n[service web]\nhosts = localhost\ntargets = %s\n"
                       % (certs.other_ec[0], certs.other_ec[1], o.addr, b.addr))
        self.assertEqual(s_client(p.https_port, servername="other.test").subject_cn, "other.test")
        self.assertEqual(s_client(p.https_port, servername="localhost").subject_cn, "localhost")
        # a deployed service brings its own: served for its hosts once deploy answers
        w = self.backend(Named, name="wild")
        r = proxyctl(p, "deploy", "wild", "--target", w.addr, "--host", "a.wild.test",
                     "--tls-certificate-path", certs.wild[0], "--tls-private-key-path", certs.wild[1], *FAST)
        self.assertEqual(r.rc, 0, r)
        sc = s_client(p.https_port, servername="a.wild.test")
        self.assertEqual(sc.subject_cn, "*.wild.test", sc)
        r = curl("--cacert", certs.ca, "--resolve", "a.wild.test:%d:127.0.0.1" % p.https_port,
                 "https://a.wild.test:%d/" % p.https_port)
        self.assertEqual((r.returncode, r.stdout), (0, b"wild"), r)
        # a bad file: a clear error, nothing changes
        r = proxyctl(p, "deploy", "bad", "--target", w.addr, "--host", "bad.test",
                     "--tls-certificate-path", "/nonexistent/cert.pem", "--tls-private-key-path", certs.wild[1],
                     *FAST)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("/nonexistent/cert.pem", r.err)
        names = [s["name"] for s in proxyctl(p, "list", "--json").json()["services"]]
        self.assertNotIn("bad", names)

    def test_bad_certificate_in_config_is_a_config_error(self):
        certs = shared_certs()
        p = self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\n" + tls_config(certs) +
                       "[service other]\nhosts = other.test\ntls_certificate = %s\ntls_certificate_key = %s\n"
                       "targets = 127.0.0.1:9\n" % (certs.other_ec[0], certs.ec[1]), start=False)
        import subprocess
        from harness import proxyd_path
        r = subprocess.run([proxyd_path(), "-t", "-c", p.config_path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        self.assertEqual(r.returncode, 1)
        self.assertRegex((r.stdout + r.stderr).decode(), r"proxyd.ini:\d+: tls_certificate: .*other")

    # -- tls_redirect ------------------------------------------------------------
    def test_tls_redirect_off_for_one_service(self):
        api, web = self.backend(Named, name="api"), self.backend(Named, name="web")
        p = self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\nredirect_https = yes\n" + tls_config() +
                       "[service api]\nhosts = api.example.com\ntls_redirect = no\ntargets = %s\n"
                       "[service web]\nhosts = example.com\ntargets = %s\n" % (api.addr, web.addr))
        r = curl("--resolve", "api.example.com:%d:127.0.0.1" % p.port, "http://api.example.com:%d/x" % p.port)
        self.assertEqual(r.stdout, b"api")
        self.assertEqual(curl_head(p.port, "example.com", "/x"), (301, "https://example.com/x"))
        self.assertEqual([x.path for x in api.requests], ["/x"])

    # -- forward_headers -----------------------------------------------------------
    def test_forward_headers_on_and_off(self):
        on, off = self.backend(Named, name="on"), self.backend(Named, name="off")
        p = self.proxy("[service on]\nhosts = on.test\nforward_headers = yes\ntargets = %s\n"
                       "[service off]\nhosts = off.test\ntargets = %s\n" % (on.addr, off.addr))
        hdrs = ["-H", "X-Forwarded-For: 203.0.113.7", "-H", "X-Forwarded-Proto: https",
                "-H", "X-Forwarded-Host: shop.example.com"]
        curl(*hdrs, "-H", "Host: on.test", p.url("/"))
        curl(*hdrs, "-H", "Host: off.test", p.url("/"))
        a, b = on.wait_requests(1)[0], off.wait_requests(1)[0]
        self.assertEqual((a.header("x-forwarded-for"), a.header("x-forwarded-proto"), a.header("x-forwarded-host")),
                         ("203.0.113.7, 127.0.0.1", "https", "shop.example.com"))
        self.assertEqual((b.header("x-forwarded-for"), b.header("x-forwarded-proto"), b.header("x-forwarded-host")),
                         ("127.0.0.1", "http", "off.test"))

    # -- health_check_port -----------------------------------------------------------
    def test_health_check_port(self):
        app = self.backend(Named, name="app", healthy=False)  # its own port's /up says 503
        health = self.backend(Named, name="health")
        p = self.proxy("[proxy]\n")
        r = proxyctl(p, "deploy", "web", "--target", app.addr, "--deploy-timeout", "1s", *FAST)
        self.assertEqual(r.rc, 1, r)
        health_port = str(health.port)
        r = proxyctl(p, "deploy", "web", "--target", app.addr, "--health-check-port", health_port, *FAST)
        self.assertEqual(r.rc, 0, r)
        self.assertGreater(len(health.health_requests), 0)
        self.assertEqual(get(p.port, "/").body, b"app")
        r = proxyctl(p, "deploy", "web", "--target", app.addr, "--health-check-port", "70000", *FAST)
        self.assertEqual(r.rc, 2, r)

    # -- target_timeout -----------------------------------------------------------------
    def test_target_timeout_per_service(self):
        late = self.backend(RecordingBackend, response=lambda req: [1.5, http_response(200, b"late")])
        hang = self.backend(SilentBackend)
        p = self.proxy("[proxy]\nupstream_read_timeout = 20s\n"
                       "[service quick]\nhosts = quick.test\ntarget_timeout = 0.5s\ntargets = %s\n"
                       "[service patient]\nhosts = patient.test\ntargets = %s\n" % (hang.addr, late.addr))
        r = get(p.port, "/", host="quick.test", timeout=15)
        self.assertEqual(r.status, 504, r)
        r = get(p.port, "/", host="patient.test", timeout=15)  # 1.5 s: within the global 20 s
        self.assertEqual((r.status, r.body), (200, b"late"), r)
        # the same through proxyctl, in Go's syntax
        r = proxyctl(p, "deploy", "patient", "--target", late.addr, "--host", "patient.test",
                     "--target-timeout", "500ms", *FAST)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(get(p.port, "/", host="patient.test", timeout=15).status, 504)

    # -- error_pages -------------------------------------------------------------------------
    def test_error_pages_stop_message_escaped(self):
        d = self.tmpdir()
        with open(os.path.join(d, "503.html"), "w") as f:
            f.write("<html><h1>{{ .Status }}</h1><p>{{ .Message }}</p></html>\n")
        with open(os.path.join(d, "502.html"), "w") as f:
            f.write("<p>bad gateway {{.Status}}</p>")
        b = self.backend(Named, name="web")
        p = self.proxy("[proxy]\n")
        r = proxyctl(p, "deploy", "web", "--target", b.addr, "--error-pages", d, *FAST)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(proxyctl(p, "stop", "web", "--message", "<b>Back</b> at 5 & \"soon\"").rc, 0)
        r = curl("-i", p.url("/"))
        head, _, body = r.stdout.partition(b"\r\n\r\n")
        self.assertIn(b"HTTP/1.1 503", head)
        self.assertIn(b"content-type: text/html", head.lower())
        self.assertEqual(body, b"<html><h1>503</h1><p>&lt;b&gt;Back&lt;/b&gt; at 5 &amp; &#34;soon&#34;</p></html>\n")
        # a status without a page: proxyd's own text
        self.assertEqual(proxyctl(p, "resume", "web").rc, 0)
        b.close()
        r = curl("-i", p.url("/"))
        self.assertIn(b"<p>bad gateway 502</p>", r.stdout)
        # a directory that is not there: refused
        r = proxyctl(p, "deploy", "web", "--target", b.addr, "--error-pages", os.path.join(d, "nope"), *FAST)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("error_pages", r.err)

    # -- durations ---------------------------------------------------------------------------------
    def test_go_durations_in_proxyctl_and_config(self):
        b = self.backend(Named, name="web")
        p = self.proxy("[proxy]\nkeepalive_timeout = 1m30s\n[service cfg]\nhosts = cfg.test\n"
                       "health_check_interval = 0.5s\ntargets = %s\n" % b.addr)
        r = proxyctl(p, "deploy", "web", "--target", b.addr, "--health-check-interval", "0.5s",
                     "--health-check-timeout=1.5s", "--deploy-timeout", "1m30s", "--drain-timeout", "500ms")
        self.assertEqual(r.rc, 0, r)
        with open(os.path.join(p.tmp, "state.json")) as f:
            saved = json.load(f)["services"][0]
        self.assertEqual((saved["health_check_interval_ms"], saved["health_check_timeout_ms"],
                          saved["deploy_timeout_ms"]), (500, 1500, 90000))
        r = proxyctl(p, "deploy", "web", "--target", b.addr, "--health-check-interval", "0.5x")
        self.assertEqual(r.rc, 2, r)
        self.assertIn("--health-check-interval: bad duration", r.err)

    # -- booleans ------------------------------------------------------------------------------------
    def test_boolean_flags_take_true_and_false(self):
        b = self.backend(Named, name="web")
        p = self.proxy("[proxy]\n")
        r = proxyctl(p, "deploy", "web", "--target", b.addr, "--path-prefix=/x", "--strip-path-prefix=false",
                     "--forward-headers=true", "--tls-redirect=false", *FAST)
        self.assertEqual(r.rc, 0, r)
        opts = proxyctl(p, "list", "--json").json()["services"][0]["options"]
        self.assertEqual(opts, {"forward_headers": True, "tls_redirect": False})
        r = proxyctl(p, "deploy", "web", "--target", b.addr, "--forward-headers=maybe", *FAST)
        self.assertEqual(r.rc, 2, r)

    # -- the state file ------------------------------------------------------------------------------
    def test_every_option_survives_a_restart(self):
        certs = shared_certs()
        d = self.tmpdir()
        with open(os.path.join(d, "503.html"), "w") as f:
            f.write("page {{ .Status }}: {{ .Message }}")
        sd = self.tmpdir()
        b, health = self.backend(Named, name="web"), self.backend(Named, name="health")
        cfg = "[proxy]\nlisten_https = 127.0.0.1:0\nstate_file = {sd}/state.json\n" + tls_config(certs)
        p1 = self.proxy(cfg, subst={"sd": sd})
        r = proxyctl(p1, "deploy", "web", "--target", b.addr, "--host", "other.test", "--host", "www.other.test",
                     "--path-prefix", "/app", "--path-prefix", "/api", "--strip-path-prefix",
                     "--health-check-port", str(health.port), "--target-timeout", "1m30s", "--forward-headers",
                     "--tls-redirect=false", "--tls-certificate-path", certs.other_ec[0],
                     "--tls-private-key-path", certs.other_ec[1], "--canonical-host", "other.test",
                     "--error-pages", d, *FAST)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(proxyctl(p1, "stop", "web", "--message", "a&b").rc, 0)
        before = proxyctl(p1, "list", "--json").json()["services"][0]["options"]
        want = {"path_prefix": ["/app", "/api"], "strip_path_prefix": True, "forward_headers": True,
                "tls_redirect": False, "health_check_port": health.port, "target_timeout_ms": 90000,
                "canonical_host": "other.test", "tls_certificate_path": certs.other_ec[0],
                "tls_private_key_path": certs.other_ec[1], "error_pages": d}
        self.assertEqual(before, want)
        self.assertEqual(p1.stop(), 0)

        p2 = self.proxy(cfg, subst={"sd": sd})
        self.assertEqual(proxyctl(p2, "list", "--json").json()["services"][0]["options"], want)
        # and they act after the restart
        self.assertEqual(s_client(p2.https_port, servername="other.test").subject_cn, "other.test")
        r = curl("-H", "Host: other.test", p2.url("/app/x"))
        self.assertEqual(r.stdout, b"page 503: a&amp;b")  # no redirect (tls_redirect off), the error page
        r = curl("-k", "--http2", "-i", "--resolve", "other.test:%d:127.0.0.1" % p2.https_port,
                 "https://other.test:%d/api" % p2.https_port)
        self.assertIn(b"HTTP/2 503", r.stdout)
        self.assertIn(b"content-type: text/html", r.stdout.lower())
        self.assertTrue(r.stdout.endswith(b"\r\n\r\npage 503: a&amp;b"), r.stdout)
        self.assertEqual(curl_head(p2.port, "www.other.test", "/api?q=1"), (301, "http://other.test/api?q=1"))
        self.assertEqual(proxyctl(p2, "resume", "web").rc, 0)
        curl("-H", "Host: other.test", "-H", "X-Forwarded-Proto: https", p2.url("/app/x?y"))
        req = b.wait_requests(1)[-1]
        self.assertEqual((req.target, req.header("x-forwarded-proto")), ("/x?y", "https"))
        self.assertTrue(health.health_requests)


if __name__ == "__main__":
    import unittest
    unittest.main()
