"""metrics_listen (px/metrics.h): Prometheus text format on the main thread's
own listener. Known traffic moves each family by exactly the expected amount;
the output passes `promtool check metrics`; a real Prometheus scrapes it;
client input never becomes a label."""

import http.client
import os
import re
import shutil
import socket
import subprocess

from harness import (SLOW, Client, ProxyTestCase, RecordingBackend, build_dir, free_port, http_response,
                     request_bytes, wait_until)

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
        self.assertEqual(val(s1, "proxyd_response_bytes_total", service="web"), 15)
        self.assertEqual(val(s1, "proxyd_target_healthy", service="web", target=b.addr), 1)
        self.assertEqual(val(s1, "proxyd_build_info", version="0.1.0"), 1)
        self.assertGreater(val(s1, "process_resident_memory_bytes"), 1e6)
        # the other paths and methods
        self.assertEqual(get(p, "/status.json")[0], 404)
        self.assertEqual(get(p, "/")[0], 404)
        self.assertEqual(get(p, "/nope")[0], 404)
        st, h, _ = get(p, "/metrics", method="POST")
        self.assertEqual(st, 405)
        self.assertEqual(h.get("allow"), "GET, HEAD")
        st, h, body = get(p, "/metrics", method="HEAD")
        self.assertEqual((st, body), (200, b""))
