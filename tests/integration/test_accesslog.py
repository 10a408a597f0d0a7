"""The access log (DESIGN "Access log and metrics"): the JSON fields with
their exact byte counts over HTTP/1.1 (curl, raw sockets) and HTTP/2
(nghttp), the service's log headers from the config and from a deploy
(kept across a restart), `[route] access_log = off`, `health_log = no`,
`access_log_format = combined` compared field by field with Debian's nginx
for the same requests, and hostile client bytes that never forge a line or
break the syntax in either format (every line parsed)."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from harness import (SLOW, Proxy, ProxyTestCase, RecordingBackend, build_dir, curl, curl_https, free_port,
                     http_response, proxyd_path, raw_request, request_bytes, tls_config, wait_until)

PROXYCTL = os.path.join(build_dir(), "proxyctl")

# nginx's combined line; a field is a run of bytes other than '"' and '\\',
# or \xHH (fail2ban's and GoAccess's nginx recipes read the same shape).
ESC = r'(?:[^"\\]|\\x[0-9A-F]{2})*'
COMBINED_RE = re.compile(r'^(\S+) - (\S+) \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "(%s)" '
                         r'(\d{3}) (\d+) "(%s)" "(%s)"$' % (ESC, ESC, ESC))


def unescape(s):
    """nginx's \\xHH back to the bytes the client sent."""
    return re.sub(r"\\x([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), s).encode("latin-1")


def raw_lines(path):
    """Complete lines of a log file, as bytes."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return []
    return data.split(b"\n")[:-1]


def combined_lines(path):
    out = []
    for line in raw_lines(path):
        text = line.decode("ascii")          # the line is ASCII whatever the client sent
        m = COMBINED_RE.match(text)
        if m is None:
            raise AssertionError("not a combined line: %r" % line)
        out.append(m.groups())
    return out


def respond(req):
    if req.path.startswith("/missing"):
        return http_response(404, b"nothing here\n", head_only=req.method == "HEAD")
    return http_response(200, b"hello world\n", headers=[("X-Runtime", "0.042"), ("Content-Type", "text/plain")],
                         head_only=req.method == "HEAD")


def proxyctl(p, *args):
    r = subprocess.run([PROXYCTL, "--socket", os.path.join(p.tmp, "control.sock")] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=30 * SLOW)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


class Json(ProxyTestCase):
    def setUp(self):
        self.b = self.backend(RecordingBackend, response=respond)

    def test_fields_and_exact_bytes_http1(self):
        p = self.proxy("[proxy]\nredirect_https = no\n[service web]\ntargets = %s\n"
                       "log_response_headers = X-Runtime Missing-Header\n" % self.b.addr)
        req = request_bytes("POST", "/form?x=1", host="app.test",
                            headers=[("User-Agent", "ua/1.0"), ("Referer", "https://ref.test/p"),
                                     ("Cache-Control", "no-cache"), ("Connection", "close")], body=b"a=1&b=2")
        r = raw_request(p.port, req)
        self.assertEqual(r.status, 200, r)
        head, _, body = r.data.partition(b"\r\n\r\n")
        e = p.wait_access_log(1)[0]
        self.assertEqual((e["method"], e["host"], e["path"], e["status"]), ("POST", "app.test", "/form?x=1", 200))
        self.assertEqual(e["bytes_in"], len(req))                   # head and body as sent
        self.assertEqual(e["bytes_out"], len(r.data))               # head and body as received
        self.assertEqual(body, b"hello world\n")
        self.assertEqual((e["service"], e["upstream"], e["upstream_status"]), ("web", self.b.addr, 200))
        self.assertIsInstance(e["upstream_ms"], (int, float))
        self.assertTrue(0 <= e["upstream_ms"] <= e["duration_ms"], e)
        self.assertEqual((e["user_agent"], e["referer"]), ("ua/1.0", "https://ref.test/p"))
        # the default log_request_headers (Kamal's), the configured response ones; absent: no key
        self.assertEqual((e["req_cache_control"], e["req_user_agent"]), ("no-cache", "ua/1.0"))
        self.assertNotIn("req_last_modified", e)
        self.assertEqual(e["resp_x_runtime"], "0.042")
        self.assertNotIn("resp_missing_header", e)

    def test_no_upstream_no_upstream_fields(self):
        p = self.proxy("[proxy]\nredirect_https = no\n[service web]\nhosts = app.test\ntargets = %s\n" % self.b.addr)
        r = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: other.test", p.url("/x"))
        self.assertEqual(r.stdout, b"404", r)
        e = p.wait_access_log(1)[0]
        self.assertEqual((e["status"], e["service"], e["upstream"]), (404, "", ""))
        self.assertNotIn("upstream_status", e)
        self.assertNotIn("upstream_ms", e)
        self.assertEqual(e["user_agent"][:5], "curl/")
        self.assertEqual(e["referer"], "")
        self.assertGreater(e["bytes_in"], 0)
        self.assertGreater(e["bytes_out"], len("404 Not Found\n"))

    def test_http2_decoded_header_bytes_and_data(self):
        p = self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\nredirect_https = no\n" + tls_config() +
                       "[service web]\ntargets = %s\nlog_request_headers = Accept\n" % self.b.addr)
        r = subprocess.run(["nghttp", "-v", "-H", "referer: https://r.test/", "-d", "-",
                            "https://127.0.0.1:%d/h2?q=1" % p.https_port], input=b"0123456789",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20 * SLOW)
        out = r.stdout.decode()
        self.assertEqual(r.returncode, 0, out + r.stderr.decode())
        # what nghttp sent and received, as it prints the decoded fields
        sent = out[out.index("send HEADERS frame"):]
        sent = sent[:sent.index("\n[")]
        fields = re.findall(r"^ {10}(:?[a-z0-9-]+): (.*)$", sent, re.M)
        self.assertIn((":path", "/h2?q=1"), fields)
        recv = re.findall(r"recv \(stream_id=\d+\) (:?[a-z0-9-]+): (.*)$", out, re.M)
        self.assertIn((":status", "200"), recv)
        e = p.wait_access_log(1)[0]
        self.assertEqual((e["proto"], e["tls"], e["method"], e["path"]), ("HTTP/2", True, "POST", "/h2?q=1"))
        self.assertEqual(e["bytes_in"], sum(len(k) + len(v) for k, v in fields) + 10)
        self.assertEqual(e["bytes_out"], sum(len(k) + len(v) for k, v in recv) + len(b"hello world\n"))
        self.assertEqual(e["referer"], "https://r.test/")
        self.assertEqual(e["req_accept"], "*/*")
        self.assertNotIn("req_user_agent", e)                   # not in this service's list
        self.assertEqual(e["user_agent"], dict(fields)["user-agent"])

    def test_stats_count_what_the_log_counts(self):
        p = self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\nredirect_https = no\n" + tls_config() +
                       "[service web]\nhosts = app.test localhost\ntargets = %s\n" % self.b.addr)
        # each logged before the next (another worker may take the next connection)
        self.assertEqual(curl("-o", "/dev/null", "-H", "Host: app.test", p.url("/a")).returncode, 0)
        p.wait_access_log(1)
        self.assertEqual(curl("-o", "/dev/null", "-d", "x" * 1000, "-H", "Host: app.test", p.url("/b")).returncode, 0)
        p.wait_access_log(2)
        self.assertEqual(curl("-o", "/dev/null", "-H", "Host: nope.test", p.url("/c")).returncode, 0)
        p.wait_access_log(3)
        self.assertEqual(curl_https(p, "/d", "--http2", "-o", "/dev/null").returncode, 0)
        lines = p.wait_access_log(4)
        self.assertEqual(len(lines), 4, lines)
        def stats():
            rc, out, err = proxyctl(p, "--json", "status")
            self.assertEqual(rc, 0, err)
            return json.loads(out)["stats"]
        s = wait_until(lambda: (lambda st: st if st["bytes_out"] == sum(e["bytes_out"] for e in lines) else None)(
            stats()), 5.0) or stats()
        self.assertEqual(s["bytes_in"], sum(e["bytes_in"] for e in lines), lines)
        self.assertEqual(s["bytes_out"], sum(e["bytes_out"] for e in lines), lines)
        self.assertGreater(lines[1]["bytes_in"], 1000)

    def test_route_off_and_health_log(self):
        for health_log, want in (("yes", ["/health", "/x"]), ("no", ["/x"])):
            p = self.proxy("[proxy]\nredirect_https = no\nhealth_log = %s\n[route /quiet/]\naccess_log = off\n"
                           "[route /loud/]\naccess_log = on\n[service web]\ntargets = %s\n" % (health_log, self.b.addr))
            for path in ("/health", "/quiet/y", "/x"):
                self.assertEqual(curl("-o", "/dev/null", "-w", "%{http_code}", p.url(path)).stdout, b"200")
            # the last request is logged in both cases: what came before it is all there
            p.wait_access_log(len(want))
            time.sleep(0.1)
            # separate connections may land on both workers: which lines, not their order
            self.assertEqual(sorted(e["path"] for e in p.access_log_lines()), want)
            p.close()

    def test_deploy_log_headers_kept_in_state(self):
        p = self.proxy("[proxy]\nlisten_http = 127.0.0.1:%d\nredirect_https = no\n" % free_port())
        rc, out, err = proxyctl(p, "deploy", "app", "--target", self.b.addr, "--health-check-interval", "100ms",
                                "--log-request-header", "X-Tenant", "--log-request-header", "Accept-Language",
                                "--log-response-header", "X-Runtime")
        self.assertEqual(rc, 0, err)
        with open(os.path.join(p.tmp, "state.json")) as f:
            st = json.load(f)["services"][0]
        self.assertEqual((st["log_request_headers"], st["log_response_headers"]),
                         (["X-Tenant", "Accept-Language"], ["X-Runtime"]))
        hdrs = ["-H", "X-Tenant: acme", "-H", "Accept-Language: fr"]
        self.assertEqual(curl("-o", "/dev/null", *hdrs, p.url("/1")).returncode, 0)
        e = p.wait_access_log(1)[0]
        self.assertEqual((e["req_x_tenant"], e["req_accept_language"], e["resp_x_runtime"]), ("acme", "fr", "0.042"))
        self.assertNotIn("req_user_agent", e)                      # the list replaced the default
        # a restart restores them from the state file
        self.assertEqual(p.stop(), 0)
        p.start()
        self.assertEqual(curl("-o", "/dev/null", *hdrs, p.url("/2")).returncode, 0)
        e = [x for x in p.wait_access_log(2) if x["path"] == "/2"][0]
        self.assertEqual((e["req_x_tenant"], e["resp_x_runtime"]), ("acme", "0.042"))
        # a deploy without the flags keeps them; a bad name is refused
        rc, out, err = proxyctl(p, "deploy", "app", "--target", self.b.addr, "--health-check-interval", "100ms")
        self.assertEqual(rc, 0, err)
        with open(os.path.join(p.tmp, "state.json")) as f:
            self.assertEqual(json.load(f)["services"][0]["log_request_headers"], ["X-Tenant", "Accept-Language"])
        rc, out, err = proxyctl(p, "deploy", "app", "--target", self.b.addr, "--log-request-header", "Bad:Name")
        self.assertNotEqual(rc, 0)
        self.assertIn("header name", err)

    def test_config_errors(self):
        for bad, why in (("[proxy]\naccess_log_format = apache\n", r":\d+: access_log_format: must be json or combined"),
                         ("[service web]\ntargets = 127.0.0.1:9\nlog_request_headers = X-Ok Bad\"Name\n",
                          r":\d+: log_request_headers: not a header name"),
                         ("[route /a/]\naccess_log = maybe\n", r":\d+: access_log: ")):
            p = Proxy(bad, start=False)
            self.addCleanup(p.close)
            r = subprocess.run([proxyd_path(), "-t", "-c", p.config_path], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=10 * SLOW)
            self.assertEqual(r.returncode, 1, r)
            self.assertRegex(r.stderr.decode() + r.stdout.decode(), why)


# hostile bytes the HTTP/1 parser lets through to the log: quotes,
# backslashes, tabs, obs-text (not UTF-8), JSON and log syntax
HOSTILE_PATH = b'/p"\\x22\\\\{}|^`<>"%0A?q="},{"x":1'
HOSTILE_BYTES_PATH = b'/\x80\xff\xc3"\\'   # not UTF-8: answered 404 (no service for its host)
HOSTILE_UA = b'ua "quoted" \\ back\tslash \x80\xfe\xff ", "status": 999 } \\x0A'
HOSTILE_HOST = b"h'o(s)t*+,;=!$&[%]:1"    # what HTTP/1's Host may hold: sub-delims and the rest


class Hostile(ProxyTestCase):
    def hostile_requests(self, p):
        reqs = [
            b"GET " + HOSTILE_PATH + b" HTTP/1.1\r\nHost: app.test\r\nUser-Agent: " + HOSTILE_UA +
            b"\r\nReferer: " + HOSTILE_UA + b"\r\nX-Log: " + HOSTILE_UA + b"\r\nConnection: close\r\n\r\n",
            b"GET /h HTTP/1.1\r\nHost: " + HOSTILE_HOST + b"\r\nConnection: close\r\n\r\n",
            b"GET " + HOSTILE_BYTES_PATH + b" HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
            b"GET /x HTTP/1.1\r\nHost: a\r\nUser-Agent: a\r\n b\r\n\r\n",     # obs-fold: 400
            b"GE\"T / HTTP/1.1\r\nHost: a\r\n\r\n",                              # bad method: 400
            b"GET /\x01\"\n\x00 HTTP/1.1\r\n\r\n",                              # control bytes: 400
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\"\\\r\n\r\n",        # TLS on port 80: 400
        ]
        # one at a time, each logged before the next is sent: two workers
        # write their lines in the order they finish, not the order sent
        # (CI saw the 404 answered at once overtake the proxied 200)
        for i, q in enumerate(reqs):
            raw_request(p.port, q, timeout=2.0)
            self.assertTrue(wait_until(lambda: len(raw_lines(p.access_log_path)) > i, 5.0),
                            "request %d not logged" % i)
        return reqs

    def test_json_every_line_parses(self):
        b = self.backend(RecordingBackend, response=respond)
        p = self.proxy("[proxy]\nredirect_https = no\n[service web]\nhosts = app.test\ntargets = %s\n"
                       "log_request_headers = X-Log User-Agent\n" % b.addr)
        reqs = self.hostile_requests(p)
        self.assertTrue(wait_until(lambda: len(raw_lines(p.access_log_path)) >= len(reqs), 5.0))
        time.sleep(0.1)
        lines = raw_lines(p.access_log_path)
        self.assertEqual(len(lines), len(reqs), lines)                 # one line per request, no more
        entries = [json.loads(line) for line in lines]                  # every line is one JSON object
        for line in lines:
            self.assertTrue(all(0x20 <= c < 0x7f for c in line), line)
        e = entries[0]
        # the client's bytes come back exactly (each byte is its code point)
        self.assertEqual(e["path"].encode("latin-1"), HOSTILE_PATH)
        self.assertEqual(e["user_agent"].encode("latin-1"), HOSTILE_UA)
        self.assertEqual(e["referer"].encode("latin-1"), HOSTILE_UA)
        self.assertEqual(e["req_x_log"].encode("latin-1"), HOSTILE_UA)
        self.assertEqual(e["status"], 200)
        self.assertNotIn("x", e)
        self.assertEqual(entries[1]["host"].encode("latin-1"), HOSTILE_HOST)
        self.assertEqual((entries[2]["path"].encode("latin-1"), entries[2]["status"]), (HOSTILE_BYTES_PATH, 404))
        self.assertEqual([x["status"] for x in entries[3:]], [400, 400, 400, 400])

    def test_combined_every_line_parses(self):
        b = self.backend(RecordingBackend, response=respond)
        p = self.proxy("[proxy]\nredirect_https = no\naccess_log_format = combined\n[service web]\nhosts = app.test\n"
                       "targets = %s\n" % b.addr)
        reqs = self.hostile_requests(p)
        self.assertTrue(wait_until(lambda: len(raw_lines(p.access_log_path)) >= len(reqs), 5.0))
        time.sleep(0.1)
        fields = combined_lines(p.access_log_path)
        self.assertEqual(len(fields), len(reqs))
        addr, user, t, request, status, size, referer, ua = fields[0]
        self.assertEqual((addr, user, status, size), ("127.0.0.1", "-", "200", "12"))
        self.assertEqual(unescape(request), b"GET " + HOSTILE_PATH + b" HTTP/1.1")
        self.assertEqual(unescape(ua), HOSTILE_UA)
        self.assertEqual(unescape(referer), HOSTILE_UA)
        self.assertEqual((unescape(fields[2][3]), fields[2][4]), (b"GET " + HOSTILE_BYTES_PATH + b" HTTP/1.1", "404"))
        self.assertEqual([f[4] for f in fields[3:]], ["400"] * 4)
        # a request line that did not parse is logged as received, up to its end
        self.assertEqual(unescape(fields[4][3]), b"GE\"T / HTTP/1.1")
        self.assertEqual(unescape(fields[6][3]), reqs[6].split(b"\r")[0])
        self.assertEqual((fields[1][6], fields[1][7]), ("-", "-"))


class HostileH2(ProxyTestCase):
    def test_http2_values_json_and_combined(self):
        """HTTP/2 fields carry what HTTP/1 cannot (no Host grammar, any
        obs-text): each stream's line parses, in both formats, and gives the
        bytes back."""
        from harness import H2Client
        b = self.backend(RecordingBackend, response=respond, parse_errors_ok=True)
        ua = b'h2 "ua" \\ \x80\xff\t}{"status":1'
        path = b'/h2"\\x\x80\xff?q="1"'
        for fmt in ("json", "combined"):
            p = self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\nredirect_https = no\naccess_log_format = %s\n" % fmt
                           + tls_config() + "[service web]\ntargets = %s\nlog_request_headers = X-H\n" % b.addr)
            with H2Client(p.https_port, validate=False) as c:
                # bytes go out as they are (str would be UTF-8 encoded)
                s = c.wait_stream(c.request("GET", path, authority="h'o(s)t.test",
                                            headers=[(b"user-agent", ua), (b"referer", ua), (b"x-h", ua)]))
                self.assertIsNotNone(s.status, s)
            self.assertTrue(wait_until(lambda: len(raw_lines(p.access_log_path)) >= 1, 5.0))
            time.sleep(0.1)
            lines = raw_lines(p.access_log_path)
            self.assertEqual(len(lines), 1, lines)
            self.assertTrue(all(0x20 <= ch < 0x7f for ch in lines[0]), lines)
            if fmt == "json":
                e = json.loads(lines[0])
                self.assertEqual(e["path"].encode("latin-1"), path)
                self.assertEqual(e["host"], "h'o(s)t.test")
                self.assertEqual(e["user_agent"].encode("latin-1"), ua)
                self.assertEqual(e["req_x_h"].encode("latin-1"), ua)
                self.assertEqual(e["status"], s.status)
            else:
                f = combined_lines(p.access_log_path)[0]
                self.assertEqual(unescape(f[3]), b"GET " + path + b" HTTP/2.0")
                self.assertEqual((unescape(f[6]), unescape(f[7])), (ua, ua))
                self.assertEqual(f[4], str(s.status))
            p.close()


class Nginx:
    """Debian's nginx on loopback in front of the same backend, logging
    `combined`."""

    def __init__(self, backend):
        self.tmp = tempfile.mkdtemp(prefix="px-nginx-")
        self.port = free_port()
        self.log = os.path.join(self.tmp, "access.log")
        user = "user root;\n" if os.getuid() == 0 else ""
        conf = (user + "worker_processes 1;\ndaemon off;\npid %(t)s/nginx.pid;\nerror_log %(t)s/error.log;\n"
                "events { worker_connections 64; }\n"
                "http {\n  access_log %(t)s/access.log combined;\n"
                "  client_body_temp_path %(t)s/body;\n  proxy_temp_path %(t)s/proxy;\n"
                "  fastcgi_temp_path %(t)s/fcgi;\n  uwsgi_temp_path %(t)s/uwsgi;\n  scgi_temp_path %(t)s/scgi;\n"
                "  server {\n    listen 127.0.0.1:%(port)d;\n"
                "    location / { proxy_pass http://%(b)s; proxy_http_version 1.1; }\n  }\n}\n"
                % {"t": self.tmp, "port": self.port, "b": backend.addr})
        path = os.path.join(self.tmp, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(["nginx", "-e", os.path.join(self.tmp, "error.log"), "-p", self.tmp, "-c", path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

        def up():
            import socket
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        if not wait_until(up, 10.0):
            self.close()
            raise AssertionError("nginx did not start")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class SameAsNginx(ProxyTestCase):
    """The same requests through nginx and proxyd: every combined field but
    the time is equal (nginx 1.22 from Debian)."""

    def test_combined_field_by_field(self):
        if shutil.which("nginx") is None:
            self.skipTest("nginx is not installed")
        b = self.backend(RecordingBackend, response=respond)
        n = Nginx(b)
        self.addCleanup(n.close)
        p = self.proxy("[proxy]\nredirect_https = no\naccess_log_format = combined\n[service web]\ntargets = %s\n"
                       % b.addr)
        close = [("Connection", "close")]
        reqs = [
            request_bytes("GET", "/", host="app.test", headers=[("User-Agent", "Mozilla/5.0 (X11) Firefox/120.0"),
                                                                 ("Referer", "https://app.test/start")] + close),
            request_bytes("GET", "/no-headers", host="app.test", headers=close),
            request_bytes("HEAD", "/head", host="app.test", headers=close),
            request_bytes("POST", "/submit?a=1&b=%22x%22", host="app.test", body=b"k=v" * 50, headers=close),
            request_bytes("GET", "/missing/page.php", host="app.test", headers=[("User-Agent", "sqlmap/1.7")] + close),
            request_bytes("GET", "/", host=None, version="HTTP/1.0"),
            request_bytes("GET", "/q\"uote\\back{}|", host="app.test",
                          headers=[("User-Agent", "ua \"q\" \\ \t\x80\xfe"), ("Referer", "")] + close),
            request_bytes("GET", "http://app.test/absolute?x", host="app.test", headers=close),
        ]
        for i, q in enumerate(reqs):
            for port in (n.port, p.port):
                r = raw_request(port, q, timeout=3.0)
                self.assertTrue(r.data.startswith(b"HTTP/1."), (port, q, r))
            # each line written before the next request (workers log in the order they finish)
            self.assertTrue(wait_until(lambda: len(raw_lines(p.access_log_path)) > i, 5.0), "request %d not logged" % i)
        self.assertTrue(wait_until(lambda: len(raw_lines(n.log)) >= len(reqs), 5.0), raw_lines(n.log))
        self.assertTrue(wait_until(lambda: len(raw_lines(p.access_log_path)) >= len(reqs), 5.0))
        ours, theirs = combined_lines(p.access_log_path), combined_lines(n.log)
        self.assertEqual(len(ours), len(reqs))
        for q, a, b_ in zip(reqs, ours, theirs):
            # every field but $time_local (index 2), which still has nginx's shape
            self.assertEqual(a[:2] + a[3:], b_[:2] + b_[3:], "request %r:\nproxyd %r\nnginx  %r" % (q, a, b_))
            self.assertEqual(a[2][-5:], b_[2][-5:])                      # the same time zone
        # and the raw lines differ only inside [...]
        for a, b_ in zip(raw_lines(p.access_log_path), raw_lines(n.log)):
            self.assertEqual(re.sub(rb"\[[^\]]*\]", b"[]", a), re.sub(rb"\[[^\]]*\]", b"[]", b_))
