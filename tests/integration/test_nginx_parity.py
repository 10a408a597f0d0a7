"""nginx parity the seeds' configs need, checked with curl (HTTP/1.1) and
nghttp (HTTP/2): default_service (nginx's default server: a request by IP
gets it instead of 404), "-NAME =" in a header set (the upstream's
X-Powered-By removed from the response), and request_headers on a [route]
(nginx proxy_set_header: set/replace, "-NAME =" removes a client header)."""

import subprocess

from harness import (SLOW, ProxyTestCase, RecordingBackend, curl, curl_https, http_response, tls_config)


def nghttp(url, *headers):
    """nghttp -v URL (HTTP/2 over TLS); returns (rc, text of the frames it printed)."""
    args = ["nghttp", "-v"]
    for h in headers:
        args += ["-H", h]
    r = subprocess.run(args + [url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                       timeout=20 * SLOW)
    return r.returncode, r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")


def leaky(req):
    """An app that leaks what it runs on, as Next.js does."""
    return http_response(200, b"app", headers=[("X-Powered-By", "Next.js"), ("X-App", "kept")])


class ParityCase(ProxyTestCase):
    def make(self, extra_proxy="", extra=""):
        self.app = self.backend(RecordingBackend, response=leaky)
        self.other = self.backend(RecordingBackend, response=http_response(200, b"other"))
        conf = ("[proxy]\nlisten_https = 127.0.0.1:0\nredirect_https = no\n%s\n\n%s\n%s\n"
                "[service app]\nhosts = localhost app.test\ntargets = %s\n"
                "[service other]\nhosts = other.test\ntargets = %s\n"
                "[service app2]\nhosts = app2.test\npath_prefix = /only\ntargets = %s\n"
                % (extra_proxy, tls_config(), extra, self.app.addr, self.other.addr, self.app.addr))
        self.p = self.proxy(conf)
        return self.p


class DefaultService(ParityCase):
    def test_request_by_ip_gets_the_default_service(self):
        p = self.make(extra_proxy="default_service = other")
        # by IP (Host: 127.0.0.1:PORT, which no service names): the default, not 404
        r = curl("-i", "http://127.0.0.1:%d/by-ip" % p.port)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith(b"HTTP/1.1 200"), r.stdout[:200])
        self.assertTrue(r.stdout.endswith(b"\r\n\r\nother"), r.stdout[-200:])
        self.assertEqual([q.path for q in self.other.wait_requests(1)], ["/by-ip"])
        # a named host still goes to its own service
        r = curl("http://127.0.0.1:%d/named" % p.port, "-H", "Host: app.test")
        self.assertEqual(r.stdout, b"app")
        self.assertEqual([q.path for q in self.app.wait_requests(1)], ["/named"])
        # a host some service names is never the default's: app2.test's prefix misses /x
        r = curl("-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:%d/x" % p.port, "-H", "Host: app2.test")
        self.assertEqual(r.stdout, b"404")
        # over HTTP/2 with an unknown :authority too
        rc, out = nghttp("https://127.0.0.1:%d/h2-by-ip" % p.https_port)
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r":status: 200")
        self.assertEqual([q.path for q in self.other.wait_requests(2)], ["/by-ip", "/h2-by-ip"])

    def test_without_it_404(self):
        p = self.make()
        r = curl("-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:%d/by-ip" % p.port)
        self.assertEqual(r.stdout, b"404")


class RemoveResponseHeader(ParityCase):
    CONF = ("[headers]\nX-Frame-Options = DENY\n-X-Powered-By =\n"
            "[headers hide]\n-X-App =\n[route /hidden/]\nheaders = hide\n")

    def test_curl_http1(self):
        p = self.make(extra=self.CONF)
        r = curl("-sD", "-", "-o", "/dev/null", "http://127.0.0.1:%d/" % p.port, "-H", "Host: app.test")
        head = r.stdout.decode().lower()
        self.assertIn("x-app: kept\r\n", head)
        self.assertIn("x-frame-options: deny\r\n", head)
        self.assertNotIn("x-powered-by", head)
        # a route's set removes one more; [headers]' removal still applies
        r = curl_https(p, "/hidden/x", "-sD", "-", "-o", "/dev/null", "--http1.1")
        head = r.stdout.decode().lower()
        self.assertTrue(head.startswith("http/1.1 200"), head)
        self.assertNotIn("x-app", head)
        self.assertNotIn("x-powered-by", head)
        self.assertIn("x-frame-options: deny\r\n", head)

    def test_nghttp_http2(self):
        p = self.make(extra=self.CONF)
        rc, out = nghttp(p.https_url("/"))
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"recv \(stream_id=\d+\) x-app: kept")
        self.assertRegex(out, r"recv \(stream_id=\d+\) x-frame-options: DENY")
        self.assertNotIn("x-powered-by", out)
        rc, out = nghttp(p.https_url("/hidden/x"))
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r":status: 200")
        self.assertNotIn("x-app", out)
        self.assertNotIn("x-powered-by", out)


class RequestHeaders(ParityCase):
    CONF = ("[headers apihdr]\nX-Api-Gateway = proxyd\n-X-Client-Secret =\n"
            "[route /api/]\nrequest_headers = apihdr\n")

    def check(self, reqs):
        api, plain = reqs
        self.assertEqual(api.path, "/api/v1")
        self.assertEqual(api.headers.get_all("X-Api-Gateway"), ["proxyd"])  # replaced, not added
        self.assertEqual(api.headers.get_all("X-Client-Secret"), [])
        self.assertEqual(api.headers.get_all("X-Other"), ["o"])
        self.assertEqual(len(api.headers.get_all("X-Forwarded-Proto")), 1)
        # a path the route does not cover is forwarded as the client sent it
        self.assertEqual(plain.path, "/web")
        self.assertEqual(plain.headers.get_all("X-Api-Gateway"), ["evil"])
        self.assertEqual(plain.headers.get_all("X-Client-Secret"), ["s3cret"])

    def test_curl_http1(self):
        p = self.make(extra=self.CONF)
        hs = ["-H", "Host: app.test", "-H", "X-Api-Gateway: evil", "-H", "X-Client-Secret: s3cret",
              "-H", "X-Other: o"]
        for path in ("/api/v1", "/web"):
            r = curl("http://127.0.0.1:%d%s" % (p.port, path), *hs)
            self.assertEqual(r.stdout, b"app", r.stderr)
        self.check(self.app.wait_requests(2))

    def test_nghttp_http2(self):
        p = self.make(extra=self.CONF)
        for path in ("/api/v1", "/web"):
            rc, out = nghttp(p.https_url(path), "X-Api-Gateway: evil", "X-Client-Secret: s3cret", "X-Other: o")
            self.assertEqual(rc, 0, out)
            self.assertRegex(out, r":status: 200")
        self.check(self.app.wait_requests(2))
