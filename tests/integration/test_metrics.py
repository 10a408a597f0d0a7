"""metrics_listen (px/metrics.h): Prometheus text format on the main thread's
own listener. Known traffic moves each family by exactly the expected amount;
the output passes `promtool check metrics`; a real Prometheus scrapes it;
client input never becomes a label."""

import calendar
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.parse

import pebble

from harness import (SLOW, Client, ProxyTestCase, RecordingBackend, build_dir, free_port, http_response,
                     request_bytes, s_client, shared_certs, tls_config, wait_until)

PROXYCTL = os.path.join(build_dir(), "proxyctl")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metrics_addr(p):
    m = wait_until(lambda: re.search(r"listening metrics (\S+)", p.error_log_text()), 5.0)
    if not m:
        raise AssertionError("no 'listening metrics' line:\n" + p.error_log_text())
    host, _, port = m.group(1).rpartition(":")
    return host, int(port)


def get(p, path="/metrics", method="GET"):
    host, port = metrics_addr(p)
    c = http.client.HTTPConnection(host, port, timeout=10 * SLOW)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def parse(text):
    """{(name, frozenset(labels.items())): value}, and the families' TYPE lines."""
    samples, types, helps = {}, {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
            continue
        if line.startswith("# HELP "):
            helps.add(line.split(" ", 3)[2])
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError("bad line %r" % line)
        labels = dict((k, v) for k, v in _LABEL.findall(m.group(3) or ""))
        samples[(m.group(1), frozenset(labels.items()))] = float(m.group(4))
    return samples, types, helps


def scrape(p):
    status, headers, body = get(p)
    if status != 200:
        raise AssertionError("GET /metrics: %d" % status)
    return parse(body.decode())[0]


def val(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape_when(p, name, value, **labels):
    """A scrape once the series reached value: a worker counts a request
    just after its response left, so a scrape sent the moment the client
    has read it may come first."""
    got = wait_until(lambda: (lambda s: s if val(s, name, **labels) == value else None)(scrape(p)), 10.0,
                     interval=0.05)
    if got is None:
        raise AssertionError("%s%r never reached %r" % (name, labels, value))
    return got


class Basic(ProxyTestCase):
    def test_metrics_and_routes(self):
        b = self.backend(RecordingBackend, response=lambda req: http_response(200, b"hello"))
        p = self.proxy("[proxy]\nmetrics_listen = 127.0.0.1:0\n\n[service web]\nhosts = app.test\ntargets = %s\n"
                       % b.addr)
        self.assertNotIn("not implemented", p.error_log_text())
        s0 = scrape(p)
        with Client(p.port) as c:
            for _ in range(3):
                c.send(request_bytes("GET", "/", host="app.test"))
                self.assertEqual(c.read_response("GET").status, 200)
            c.send(request_bytes("GET", "/", host="nothing.test"))
            self.assertEqual(c.read_response("GET").status, 404)
        s1 = wait_until(lambda: (lambda s: s if val(s, "proxyd_requests_total", service="", code="404",
                                                      proto="HTTP/1.1") == 1 else None)(scrape(p)), 5.0)
        self.assertIsNotNone(s1)
        self.assertEqual(val(s1, "proxyd_requests_total", service="web", code="200", proto="HTTP/1.1")
                         - val(s0, "proxyd_requests_total", service="web", code="200", proto="HTTP/1.1"), 3)
        self.assertEqual(val(s1, "proxyd_request_duration_seconds_count", service="web"), 3)
        self.assertEqual(val(s1, "proxyd_request_duration_seconds_bucket", service="web", le="+Inf"), 3)
        # head and body as on the wire: what the access log counts (DESIGN "Access log and metrics")
        log = [e for e in p.wait_access_log(4) if e["service"] == "web"]
        self.assertEqual(val(s1, "proxyd_response_bytes_total", service="web"), sum(e["bytes_out"] for e in log))
        self.assertEqual(val(s1, "proxyd_target_healthy", service="web", target=b.addr), 1)
        self.assertEqual(val(s1, "proxyd_build_info", version="0.1.0"), 1)
        self.assertGreater(val(s1, "process_resident_memory_bytes"), 1e6)
        # the other paths and methods
        self.assertEqual(get(p, "/status.json")[0], 200)  # the status page (test_status_page)
        self.assertEqual(get(p, "/")[0], 200)
        self.assertEqual(get(p, "/nope")[0], 404)
        st, h, _ = get(p, "/metrics", method="POST")
        self.assertEqual(st, 405)
        self.assertEqual(h.get("allow"), "GET, HEAD")
        st, h, body = get(p, "/metrics", method="HEAD")
        self.assertEqual((st, body), (200, b""))
        # a head over 8 KiB is refused, and proxyd goes on answering
        host, port = metrics_addr(p)
        with socket.create_connection((host, port), timeout=5) as sk:
            sk.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16384 + b"\r\n\r\n")
            sk.settimeout(5)
            got = b""
            try:
                while True:
                    chunk = sk.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            except OSError:
                pass
        self.assertTrue(got.startswith(b"HTTP/1.1 400 "), got[:200])
        self.assertEqual(get(p)[0], 200)


def proxyctl(p, *args, timeout=60):
    return subprocess.run([PROXYCTL, "--socket", os.path.join(p.tmp, "control.sock")] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          timeout=timeout * SLOW)


def diff(s1, s0, name, **labels):
    return val(s1, name, **labels) - val(s0, name, **labels)


def hello(req):
    return http_response(200, b"hello", head_only=req.method == "HEAD")


HTTP10 = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"


class Families(ProxyTestCase):
    def metrics_proxy(self, b, dead):
        return self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\nredirect_https = no\nmetrics_listen = 127.0.0.1:0\n\n"
                          + tls_config() +
                          "[limit api]\nrate = 1r/m\nburst = 0\nzone_size = 1m\n"
                          "[route /api/]\nlimit = api\n"
                          "[service web]\nhosts = app.test localhost\ntargets = %s\n"
                          "[service dead]\nhosts = dead.test\ntargets = %s\n" % (b.addr, dead))

    def test_known_traffic_moves_each_family_exactly(self):
        b = self.backend(RecordingBackend, response=hello)
        dead = "127.0.0.1:%d" % free_port()
        p = self.metrics_proxy(b, dead)
        s0 = scrape(p)

        with Client(p.port) as c:                              # HTTP/1.1: 3 x 200, a 200 and a 429 on /api/, a 502
            got = []
            for host, path in [("app.test", "/")] * 3 + [("app.test", "/api/x")] * 2 + [("dead.test", "/")]:
                c.send(request_bytes("GET", path, host=host, body=b"" if path != "/" or host != "app.test"
                                     else b""))
                got.append(c.read_response("GET").status)
        self.assertEqual(got, [200, 200, 200, 200, 429, 502])
        with Client(p.port) as c:                              # a POST body: request bytes
            c.send(request_bytes("POST", "/", host="app.test", body=b"x" * 100))
            self.assertEqual(c.read_response("POST").status, 200)
        r = subprocess.run(["nghttp", "-n", "https://localhost:%d/" % p.https_port, "https://localhost:%d/a" % p.https_port],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20 * SLOW)
        self.assertEqual(r.returncode, 0, r)                    # HTTP/2: 2 x 200, one new TLS handshake
        d = tempfile.mkdtemp(prefix="proxyd-sess-")
        self.addCleanup(shutil.rmtree, d, True)
        sess = os.path.join(d, "sess.pem")
        s = s_client(p.https_port, "-tls1_3", "-sess_out", sess, "-ign_eof", input=HTTP10)
        self.assertEqual(s.sessions(), ["New"], s)              # HTTP/1.0: a new handshake ...
        s = s_client(p.https_port, "-tls1_3", "-sess_in", sess, "-ign_eof", input=HTTP10)
        self.assertEqual(s.sessions(), ["Reused"], s)           # ... and a resumed one
        with socket.create_connection(("127.0.0.1", p.https_port), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")   # not TLS: a failed handshake
            raw.settimeout(5)
            try:
                while raw.recv(4096):
                    pass
            except OSError:
                pass

        def settled():
            s = scrape(p)
            return s if (val(s, "proxyd_tls_handshakes_total", result="failed") - val(
                s0, "proxyd_tls_handshakes_total", result="failed") >= 1 and
                val(s, "proxyd_connections", state="open") == 0) else None
        s1 = wait_until(settled, 10.0) or scrape(p)
        R = "proxyd_requests_total"
        self.assertEqual(diff(s1, s0, R, service="web", code="200", proto="HTTP/1.1"), 5)
        self.assertEqual(diff(s1, s0, R, service="web", code="200", proto="HTTP/2"), 2)
        self.assertEqual(diff(s1, s0, R, service="web", code="200", proto="HTTP/1.0"), 2)
        self.assertEqual(diff(s1, s0, R, service="", code="429", proto="HTTP/1.1"), 1)
        self.assertEqual(diff(s1, s0, R, service="dead", code="502", proto="HTTP/1.1"), 1)
        total = sum(v for (n, _), v in s1.items() if n == R) - sum(v for (n, _), v in s0.items() if n == R)
        self.assertEqual(total, 11)
        self.assertEqual(diff(s1, s0, "proxyd_request_duration_seconds_count", service="web"), 9)
        self.assertEqual(diff(s1, s0, "proxyd_request_duration_seconds_bucket", service="web", le="+Inf"), 9)
        # head and body as on the wire (inside TLS): the access log's bytes_in / bytes_out
        log = [e for e in p.wait_access_log(11) if e["service"] == "web"]
        self.assertEqual(len(log), 9)
        self.assertEqual(diff(s1, s0, "proxyd_request_bytes_total", service="web"), sum(e["bytes_in"] for e in log))
        self.assertEqual(diff(s1, s0, "proxyd_response_bytes_total", service="web"), sum(e["bytes_out"] for e in log))
        post = [e for e in log if e["method"] == "POST"]
        self.assertEqual(post[0]["bytes_in"], len(request_bytes("POST", "/", host="app.test", body=b"x" * 100)))
        self.assertEqual(diff(s1, s0, "proxyd_limited_requests_total", zone="api", route="/api/"), 1)
        self.assertEqual(diff(s1, s0, "proxyd_upstream_errors_total", service="dead", target=dead, kind="connect"), 1)
        self.assertEqual(diff(s1, s0, "proxyd_tls_handshakes_total", result="new"), 2)
        self.assertEqual(diff(s1, s0, "proxyd_tls_handshakes_total", result="resumed"), 1)
        self.assertEqual(diff(s1, s0, "proxyd_tls_handshakes_total", result="failed"), 1)
        self.assertEqual(diff(s1, s0, "proxyd_connections_accepted_total", listener="http"), 2)
        self.assertEqual(diff(s1, s0, "proxyd_connections_accepted_total", listener="https"), 4)
        self.assertEqual(val(s1, "proxyd_connections", state="open"), 0)
        self.assertEqual(val(s1, "proxyd_connections", state="idle"), 0)
        self.assertEqual(val(s1, "proxyd_target_healthy", service="web", target=b.addr), 1)
        self.assertEqual(val(s1, "proxyd_target_requests_in_flight", service="web", target=b.addr), 0)
        crt = shared_certs().ec[0]
        exp = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", crt], stdout=subprocess.PIPE,
                             check=True).stdout.decode().strip().split("=", 1)[1]
        want = calendar.timegm(time.strptime(exp.replace(" GMT", ""), "%b %d %H:%M:%S %Y"))
        self.assertEqual(val(s1, "proxyd_certificate_expiry_timestamp_seconds", lineage=crt), want)

        # an idle keep-alive connection and a request in flight
        with Client(p.port) as c:
            c.send(request_bytes("GET", "/", host="app.test"))
            self.assertEqual(c.read_response("GET").status, 200)
            s2 = wait_until(lambda: (lambda s: s if val(s, "proxyd_connections", state="idle") == 1 else None)(
                scrape(p)), 5.0)
            self.assertIsNotNone(s2, "no idle connection counted")
            self.assertEqual(val(s2, "proxyd_connections", state="open"), 1)

        # a deploy through proxyctl
        green = self.backend(RecordingBackend, response=hello)
        r = proxyctl(p, "deploy", "web", "--target", green.addr, "--health-check-interval", "100ms",
                     "--health-check-timeout", "1s")
        self.assertEqual(r.returncode, 0, r)
        r = proxyctl(p, "deploy", "nohealth", "--target", dead, "--health-check-interval", "100ms",
                     "--health-check-timeout", "1s", "--deploy-timeout", "1s")
        self.assertNotEqual(r.returncode, 0, r)
        s3 = scrape(p)
        self.assertEqual(val(s3, "proxyd_deploys_total", service="web", result="ok"), 1)
        failed = [(dict(l), v) for (n, l), v in s3.items() if n == "proxyd_deploys_total" and
                  dict(l)["service"] == "nohealth"]
        self.assertEqual(len(failed), 1, failed)
        self.assertNotEqual(failed[0][0]["result"], "ok")
        self.assertEqual(failed[0][1], 1)
        self.assertEqual(val(s3, "proxyd_deploy_duration_seconds_count", service="web"), 1)
        self.assertEqual(val(s3, "proxyd_deploy_duration_seconds_bucket", service="web", le="+Inf"), 1)
        self.assertEqual(val(s3, "proxyd_target_healthy", service="web", target=green.addr), 1)
        self.assertEqual(val(s3, "proxyd_target_healthy", service="web", target=b.addr), 0.0)  # gone from web
        # counters of web survived the deploy (same service, same id)
        self.assertEqual(diff(s3, s0, R, service="web", code="200", proto="HTTP/1.1"), 6)

    def test_promtool_and_a_real_prometheus(self):
        b = self.backend(RecordingBackend, response=hello)
        p = self.metrics_proxy(b, "127.0.0.1:%d" % free_port())
        with Client(p.port) as c:
            for host in ("none.test", "app.test", "dead.test"):  # the 502 closes the connection
                c.send(request_bytes("GET", "/", host=host))
                c.read_response("GET")
        status, headers, body = get(p)
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        r = subprocess.run(["promtool", "check", "metrics"], input=body, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30 * SLOW)
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, b""))
        samples, types, helps = parse(body.decode())
        for fam in ("proxyd_requests_total", "proxyd_request_duration_seconds", "proxyd_request_bytes_total",
                    "proxyd_response_bytes_total", "proxyd_connections", "proxyd_connections_accepted_total",
                    "proxyd_tls_handshakes_total", "proxyd_upstream_errors_total", "proxyd_limited_requests_total",
                    "proxyd_target_healthy", "proxyd_target_requests_in_flight", "proxyd_deploys_total",
                    "proxyd_deploy_duration_seconds", "proxyd_certificate_expiry_timestamp_seconds",
                    "proxyd_acme_renewals_total", "proxyd_build_info", "process_cpu_seconds_total",
                    "process_resident_memory_bytes", "process_open_fds", "process_max_fds",
                    "process_start_time_seconds"):
            self.assertIn(fam, types)
            self.assertIn(fam, helps)
        self.assertEqual(types["proxyd_request_duration_seconds"], "histogram")
        self.assertEqual(types["proxyd_deploy_duration_seconds"], "histogram")

        # a real Prometheus on loopback scrapes it
        d = tempfile.mkdtemp(prefix="proxyd-prom-")
        self.addCleanup(shutil.rmtree, d, True)
        host, port = metrics_addr(p)
        cfg = os.path.join(d, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: proxyd\n"
                    "    static_configs:\n      - targets: ['%s:%d']\n" % (host, port))
        pport = free_port()
        log = open(os.path.join(d, "prometheus.log"), "wb")
        self.addCleanup(log.close)
        prom = subprocess.Popen(["prometheus", "--config.file=" + cfg, "--storage.tsdb.path=" + os.path.join(d, "data"),
                                 "--web.listen-address=127.0.0.1:%d" % pport], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)

        def stop():
            prom.terminate()
            try:
                prom.wait(10)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
        self.addCleanup(stop)

        def query():
            try:
                c = http.client.HTTPConnection("127.0.0.1", pport, timeout=2)
                c.request("GET", "/api/v1/query?query=" + urllib.parse.quote(
                    'proxyd_requests_total{service="web",code="200",proto="HTTP/1.1"}'))
                r = json.loads(c.getresponse().read())
                c.close()
                res = r.get("data", {}).get("result", [])
                return res if res else None
            except (OSError, ValueError, http.client.HTTPException):
                return None
        res = wait_until(query, 30.0, interval=0.5)
        if not res:
            with open(os.path.join(d, "prometheus.log"), "rb") as f:
                self.fail("prometheus never returned proxyd_requests_total:\n" + f.read()[-3000:].decode("utf-8", "replace"))
        self.assertEqual(res[0]["metric"]["job"], "proxyd")
        self.assertEqual(res[0]["value"][1], "1")

    def test_hostile_input_never_becomes_a_label(self):
        b = self.backend(RecordingBackend, response=hello)
        p = self.metrics_proxy(b, "127.0.0.1:%d" % free_port())
        with Client(p.port) as c:
            c.send(request_bytes("GET", "/", host="app.test"))
            c.read_response("GET")
        s0 = scrape_when(p, "proxyd_requests_total", 1, service="web", code="200", proto="HTTP/1.1")
        hostile = [b'ev"il', b"ev\\il", b"a\x01b", b"\xff\xfe", b"x\"} 1\nproxyd_pwned 1"]
        for h in hostile:
            for raw in (b"GET /" + h.replace(b"\n", b"") + b" HTTP/1.1\r\nHost: " + h.replace(b"\n", b"") +
                        b"\r\nX-Evil: " + h.replace(b"\n", b"") + b"\r\nConnection: close\r\n\r\n",
                        b"EV\"IL / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"):
                try:
                    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as sk:
                        sk.sendall(raw)
                        sk.settimeout(5)
                        while sk.recv(4096):
                            pass
                except OSError:
                    pass
        def batch(tag, n=5000):  # n distinct hosts and n distinct paths: 2n requests on one connection
            with Client(p.port) as c:
                for i in range(n):
                    c.send(request_bytes("GET", "/p%s%d" % (tag, i), host="h%s%d.test" % (tag, i)) +
                           request_bytes("GET", "/q%s%d/%d" % (tag, i, i), host="app.test"))
                    self.assertEqual(c.read_response("GET").status, 404)
                    self.assertEqual(c.read_response("GET").status, 200)
        batch("a", 10)
        s1 = scrape_when(p, "proxyd_requests_total", 11, service="web", code="200", proto="HTTP/1.1")
        new = set(s1) - set(s0)
        self.assertTrue(all(dict(l).get("service") == "" for n, l in new if n.startswith("proxyd_req")), new)
        batch("b")
        scrape_when(p, "proxyd_requests_total", 5011, service="web", code="200", proto="HTTP/1.1")
        status, _, body = get(p)
        text = body.decode("utf-8")  # valid UTF-8: no client byte got in
        for needle in ("evil", "ev\\\"il", "ev\\\\il", "a\\x01b", "pwned", "h1.test", "hb1", "/pb1", "/qb1", "EV", "\x01", "\\x", "\ufffd"):
            self.assertNotIn(needle, text)
        s2 = parse(text)[0]
        self.assertEqual(set(s2), set(s1))  # 10,000 distinct hosts and paths: not one series more
        self.assertEqual(diff(s2, s1, "proxyd_requests_total", service="web", code="200", proto="HTTP/1.1"), 5000)
        self.assertEqual(diff(s2, s1, "proxyd_requests_total", service="", code="404", proto="HTTP/1.1"), 5000)


@unittest.skipIf(pebble.available(), pebble.available())
class Acme(ProxyTestCase):
    def test_renewal_counted_and_expiry_by_lineage(self):
        pb = pebble.Pebble(http_port=free_port())
        self.addCleanup(pb.stop)
        b = self.backend(RecordingBackend, response=hello)
        p = self.proxy("[proxy]\nlisten_http = 127.0.0.1:%d\nlisten_https = 127.0.0.1:0\nredirect_https = yes\n"
                       "metrics_listen = 127.0.0.1:0\n\n%s\n"
                       "[acme]\nenabled = yes\ndirectory = %s\nca_bundle = %s\ndomains = example.test\n"
                       "config_dir = {tmp}/le\nemail = ops@example.test\nretry_interval = 1s\ncheck_interval = 1h\n"
                       "[service web]\ntargets = %s\n" % (pb.http_port, tls_config(), pb.directory, pb.ca_bundle,
                                                          b.addr))
        ok = lambda s: val(s, "proxyd_acme_renewals_total", lineage="example.test", result="ok")  # noqa: E731
        s1 = wait_until(lambda: (lambda s: s if ok(s) == 1 else None)(scrape(p)), 60.0, interval=0.2)
        self.assertIsNotNone(s1, p.error_log_text()[-3000:])
        r = proxyctl(p, "cert", "renew", "--force", "--json")
        self.assertEqual(r.returncode, 0, r)
        s2 = wait_until(lambda: (lambda s: s if ok(s) == 2 else None)(scrape(p)), 60.0, interval=0.2)
        self.assertIsNotNone(s2, p.error_log_text()[-3000:])
        self.assertEqual(sum(v for (n, l), v in s2.items() if n == "proxyd_acme_renewals_total"), 2)
        live = os.path.join(p.tmp, "le", "live", "example.test", "cert.pem")
        exp = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", live], stdout=subprocess.PIPE,
                             check=True).stdout.decode().strip().split("=", 1)[1]
        want = calendar.timegm(time.strptime(exp.replace(" GMT", ""), "%b %d %H:%M:%S %Y"))
        got = wait_until(lambda: val(scrape(p), "proxyd_certificate_expiry_timestamp_seconds",
                                     lineage="example.test") == want, 10.0)
        self.assertTrue(got, [k for k in scrape(p) if k[0].startswith("proxyd_cert")])
        crt = shared_certs().ec[0]
        self.assertGreater(val(s2, "proxyd_certificate_expiry_timestamp_seconds", lineage=crt), 0)


class Dashboards(ProxyTestCase):
    def test_prometheus_config_and_grafana_dashboard(self):
        r = subprocess.run(["promtool", "check", "config", os.path.join(ROOT, "conf", "prometheus.yml")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30 * SLOW)
        self.assertEqual(r.returncode, 0, r.stdout)
        with open(os.path.join(ROOT, "conf", "prometheus.yml")) as f:
            self.assertIn("'127.0.0.1:9145'", f.read())
        with open(os.path.join(ROOT, "conf", "grafana-proxyd.json")) as f:
            dash = json.load(f)
        self.assertIsInstance(dash["schemaVersion"], int)
        self.assertIn("datasource", [v["name"] for v in dash["templating"]["list"] if v["type"] == "datasource"])
        exprs = [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
        self.assertTrue(any("proxyd_deploys_total" in e for e in exprs), exprs)
        ids = set()
        for p in dash["panels"]:
            self.assertEqual(set(p["gridPos"]) >= {"x", "y", "w", "h"}, True, p)
            self.assertLessEqual(p["gridPos"]["x"] + p["gridPos"]["w"], 24, p)
            self.assertNotIn(p["id"], ids)
            ids.add(p["id"])
            if p["type"] != "row":
                self.assertEqual(p["datasource"]["uid"], "${datasource}", p["title"])
                self.assertTrue(p["targets"], p["title"])
            exprs += [t["expr"] for t in p.get("targets", [])]
        used = set(re.findall(r"\b((?:proxyd|process)_[a-z_]+)\b", " ".join(exprs)))
        for fam in ("proxyd_requests_total", "proxyd_request_duration_seconds_bucket", "proxyd_target_healthy",
                    "proxyd_limited_requests_total", "proxyd_certificate_expiry_timestamp_seconds"):
            self.assertIn(fam, used)

        # a live /metrics has every one of them (a family's TYPE line, or a histogram's series)
        b = self.backend(RecordingBackend, response=hello)
        p = self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\nredirect_https = no\nmetrics_listen = 127.0.0.1:0\n\n"
                       + tls_config() + "[service web]\ntargets = %s\n" % b.addr)
        with Client(p.port) as c:
            c.send(request_bytes("GET", "/", host="app.test"))
            self.assertEqual(c.read_response("GET").status, 200)
        _, _, body = get(p)
        samples, types, _ = parse(body.decode())
        have = set(types) | {n for n, _ in samples}
        for t, typ in types.items():
            if typ == "histogram":
                have |= {t + "_bucket", t + "_sum", t + "_count"}
        # the proxyd_cluster_ families exist with [cluster] only: test_cluster
        # checks them against a live /metrics with Redis
        self.assertEqual(sorted(u for u in used - have if not u.startswith("proxyd_cluster_")), [])
