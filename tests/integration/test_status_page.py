"""The status page (GET / on metrics_listen) in headless Chromium.

LiveStatus: known traffic through a live proxyd (three services, a 429, a
502, a deploy, hostile Host and path), then /metrics, /status.json and the
page as Chromium renders it show the same numbers, and no client value
appears anywhere. A screenshot goes to build/test-artifacts/.

StatusPageFixture: the page as the binary embeds it (proxy/status_page.html)
served by a small Python server next to a fixture status.json, so the page's
rendering, escaping and staleness are tested apart from proxyd: every number
of the fixture is on the page under its data attribute, a hostile value in
every string field stays text, and when status.json stops answering the
page keeps the last figures and says since when they are stale.
"""

import copy
import http.server
import json
import os
import socket
import threading
import time
import unittest

import browser
import test_cluster as tc
import test_metrics as tm
from common import REPO, SLOW, wait_until
from harness import (Client, ProxyTestCase, RecordingBackend, SilentBackend, free_port, raw_request, request_bytes,
                     tls_config)

PAGE = os.path.join(REPO, "proxy", "status_page.html")
SKIP = None if browser.available() else "chromium not installed (tests/deps-test.txt)"

HOSTILE = "x\"'><script>document.title='pwned'</script><img src=x onerror=alert(1)>\n\u2028&amp;"

FIXTURE = {
    "version": "0.16.0-test", "time": 1796600000, "uptime_s": 93784,
    "connections": {"open": 17, "idle": 5},
    "requests": {"total": 123456, "rate_1m": 42.5},
    "services": [
        {"name": "web", "hosts": ["example.com", "www.example.com"], "path_prefixes": ["/"], "state": "running",
         "active": [{"target": "127.0.0.1:3000", "health": "healthy", "in_flight": 3},
                    {"target": "127.0.0.1:3001", "health": "failing 1/3", "in_flight": 0}],
         "previous": [{"target": "127.0.0.1:2999", "health": "draining", "in_flight": 1}],
         "requests_total": 120000, "rate_1m": 40.25, "p50_ms": 3.2, "p99_ms": 87.0, "error_rate_1m": 0.0125,
         "codes": {"200": 119000, "404": 900, "502": 100}},
        {"name": "api", "hosts": ["api.example.com"], "path_prefixes": ["/v1", "/v2"], "state": "paused",
         "active": [{"target": "127.0.0.1:4000", "health": "unhealthy", "in_flight": 0}], "previous": [],
         "requests_total": 3456, "rate_1m": 0, "p50_ms": None, "p99_ms": None, "error_rate_1m": 0,
         "codes": {"200": 3000, "429": 456}},
    ],
    "limits": [{"zone": "api", "rate": "10r/s", "burst": 20, "limited_total": 456,
                "routes": [{"route": "/api/", "limited_total": 400}, {"route": "api.example.com/login", "limited_total": 56}]}],
    "certificates": [{"lineage": "example.com", "names": ["example.com", "www.example.com"],
                      "not_after": "2027-01-20T00:00:00Z", "days_left": 5.5,
                      "last_acme": {"time": "2026-12-06T20:00:00Z", "result": "rateLimited",
                                    "message": "too many certificates already issued"}},
                     {"lineage": "/etc/proxyd/api.pem", "names": ["api.example.com"],
                      "not_after": "2027-03-01T00:00:00Z", "days_left": 84.0, "last_acme": None}],
    "deploys": [{"service": "web", "result": "ok", "time": "2026-12-06T23:20:00Z", "duration_s": 4.2,
                 "targets": ["127.0.0.1:3000", "127.0.0.1:3001"]},
                {"service": "api", "result": "target_unhealthy", "time": "2026-12-06T23:10:00Z", "duration_s": 30.0,
                 "targets": ["127.0.0.1:4001"]}],
}
# with [cluster] (absent without): as `proxyctl status --json` shows it
CLUSTER = {"instance": "edge-1", "redis": "up",
           "instances": [{"name": "edge-1", "version": "0.16.0-test", "pid": 4242, "listen": "10.0.0.1:443"},
                         {"name": "edge-2", "version": "0.16.0-test", "pid": 777, "listen": "10.0.0.2:443"}]}


class FixtureServer:
    """GET / -> the page, GET /status.json -> the document, with the headers
    proxyd sends. answer(n) limits how many status.json requests succeed
    (the rest get a 503): a proxyd that goes away. Records every path asked."""

    CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
           "connect-src 'self'; img-src data:")

    def __init__(self, doc, answer=None):
        self.doc, self.left, self.paths = doc, answer, []
        self.lock = threading.Lock()
        with open(PAGE, "rb") as f:
            page = f.read()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                with outer.lock:
                    outer.paths.append(self.path)
                    ok = outer.left is None or outer.left > 0
                    if self.path == "/status.json" and outer.left is not None:
                        outer.left -= 1
                if self.path == "/":
                    self.send(200, "text/html; charset=utf-8", page)
                elif self.path == "/status.json" and ok:
                    self.send(200, "application/json", json.dumps(outer.doc).encode())
                else:
                    self.send(503 if self.path == "/status.json" else 404, "text/plain", b"no\n")

            def send(self, code, ctype, body):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Security-Policy", outer.CSP)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d/" % self.httpd.server_address[1]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@unittest.skipIf(SKIP, SKIP)
class StatusPageFixture(unittest.TestCase):
    def serve(self, doc, answer=None):
        s = FixtureServer(doc, answer)
        self.addCleanup(s.close)
        return s

    def num(self, e):
        return float(e.get("data-value"))

    def test_every_figure_of_the_document_is_on_the_page(self):
        s = self.serve(FIXTURE)
        shot = os.path.join(browser.artifacts_dir(), "status_page_fixture.png")
        p = browser.Page(browser.render(s.url, screenshot=shot))
        body = p.find("body")
        self.assertGreaterEqual(int(body.get("data-loaded")), 1)
        self.assertIsNone(body.get("data-stale"))
        self.assertEqual(p.by_id("g-version").text, "0.16.0-test")
        self.assertEqual(p.by_id("g-uptime").text, "1d 2h")
        self.assertEqual(self.num(p.by_id("g-conn-open")), 17)
        self.assertEqual(self.num(p.by_id("g-conn-idle")), 5)
        self.assertEqual(self.num(p.by_id("g-requests-total")), 123456)
        self.assertEqual(p.by_id("g-requests-total").text, "123k")
        self.assertEqual(self.num(p.by_id("g-rate")), 42.5)

        self.assertEqual(len(p.find_all("section", data_service=None)), 2)
        web = p.find("section", data_service="web")
        self.assertEqual(web.field("state").text, "running")
        self.assertEqual(web.field("hosts").text, "example.com, www.example.com")
        self.assertEqual(self.num(web.field("requests_total")), 120000)
        self.assertEqual(self.num(web.field("rate_1m")), 40.25)
        self.assertEqual(web.field("rate_1m").text, "40.3")
        self.assertEqual(web.field("p50_ms").text, "3.2 ms")
        self.assertEqual(web.field("p99_ms").text, "87 ms")
        self.assertEqual(web.field("error_rate_1m").text, "1.3%")
        self.assertIn("t-warn", web.field("error_rate_1m").get("class"))
        self.assertEqual(self.num(web.field("targets")), 2)
        rows = [(r.get("data-role"), r.get("data-target"), r.field("health").text, self.num(r.field("in_flight")))
                for r in web.find_all("tr", data_target=None)]
        self.assertEqual(rows, [("active", "127.0.0.1:3000", "healthy", 3), ("active", "127.0.0.1:3001", "failing 1/3", 0),
                                ("previous", "127.0.0.1:2999", "draining", 1)])
        self.assertEqual({c.get("data-code"): int(c.get("data-value")) for c in web.find_all(data_code=None)},
                         {"200": 119000, "404": 900, "502": 100})

        api = p.find("section", data_service="api")
        self.assertEqual(api.field("state").text, "paused")
        self.assertIn("s-paused", api.get("class"))
        self.assertEqual(api.field("hosts").text, "api.example.com  /v1, /v2")
        self.assertEqual((api.field("p50_ms").text, api.field("p99_ms").text), ("–", "–"))
        self.assertEqual(api.field("p99_ms").get("data-value"), "")
        self.assertEqual(api.find("tr", data_target="127.0.0.1:4000").field("health").text, "unhealthy")

        zone = p.find("tr", data_zone="api")
        self.assertEqual(self.num(zone.find("td", data_field="limited_total")), 456)
        self.assertEqual(self.num(zone.find(data_field="burst")), 20)
        self.assertEqual(self.num(zone.find("span", data_route="/api/").field("limited_total")), 400)
        self.assertEqual(self.num(zone.find("span", data_route="api.example.com/login").field("limited_total")), 56)

        cert = p.find("tr", data_lineage="example.com")
        self.assertEqual(cert.field("days_left").text, "5.5")
        self.assertIn("t-bad", cert.field("days_left").get("class"))
        self.assertEqual(cert.field("acme_result").text, "rateLimited")
        self.assertEqual(cert.field("acme_message").text, "too many certificates already issued")
        self.assertEqual(p.find("tr", data_lineage="/etc/proxyd/api.pem").field("days_left").text, "84.0")

        deploys = [(d.field("service").text, d.field("result").text, self.num(d.field("duration_s")), d.field("targets").text)
                   for d in p.find_all("tr", data_deploy_service=None)]
        self.assertEqual(deploys, [("web", "ok", 4.2, "127.0.0.1:3000, 127.0.0.1:3001"),
                                   ("api", "target_unhealthy", 30.0, "127.0.0.1:4001")])
        self.assertTrue(p.by_id("cluster-wrap").get("hidden") is not None)  # no "cluster": no block

        # Self-contained: the browser asked for the page and status.json only
        # (the server's CSP would also have blocked anything else).
        self.assertEqual(set(s.paths), {"/", "/status.json"})
        self.assertGreater(os.path.getsize(shot), 10000)

    def test_hostile_strings_stay_text(self):
        doc = copy.deepcopy(FIXTURE)
        web = doc["services"][0]
        doc["version"] = HOSTILE
        web["name"] = HOSTILE
        web["hosts"] = [HOSTILE]
        web["path_prefixes"] = ["/" + HOSTILE]
        web["active"][0]["target"] = HOSTILE
        web["active"][0]["health"] = HOSTILE
        web["codes"] = {HOSTILE: 1}
        doc["limits"][0]["zone"] = HOSTILE
        doc["limits"][0]["rate"] = HOSTILE
        doc["limits"][0]["routes"][0]["route"] = HOSTILE
        cert = doc["certificates"][0]
        cert["lineage"], cert["names"], cert["not_after"] = HOSTILE, [HOSTILE], HOSTILE
        cert["last_acme"] = {"time": HOSTILE, "result": HOSTILE, "message": HOSTILE}
        doc["deploys"][0].update(service=HOSTILE, result=HOSTILE, time=HOSTILE, targets=[HOSTILE])
        doc["cluster"] = {"instance": HOSTILE, "redis": HOSTILE,
                          "instances": [{"name": HOSTILE, "version": HOSTILE, "pid": HOSTILE, "listen": HOSTILE}]}
        s = self.serve(doc)
        dom = browser.render(s.url, screenshot=os.path.join(browser.artifacts_dir(), "status_page_hostile.png"))
        p = browser.Page(dom)
        self.assertGreaterEqual(int(p.find("body").get("data-loaded")), 1)
        # No markup came in: one script (the page's own), no img, no handler.
        self.assertEqual(len(p.find_all("script")), 1)
        self.assertEqual(p.find_all("img"), [])
        self.assertEqual([e.tag for e in p.root.iter() if any(k.startswith("on") for k in e.attrs)], [])
        self.assertEqual(p.find("title").text, "proxyd " + HOSTILE + " status")
        self.assertNotIn("<script>document", dom)
        self.assertNotIn("<img", dom)
        # Each value arrived whole, as text, where it belongs.
        self.assertEqual(p.by_id("g-version").text, HOSTILE)
        svc = p.find("section", data_service=HOSTILE)
        self.assertEqual(svc.field("name").text, HOSTILE)
        self.assertEqual(svc.find("tr", data_target=HOSTILE).field("health").text, HOSTILE)
        self.assertEqual(svc.find(data_code=HOSTILE).text, HOSTILE + " × 1")
        self.assertEqual(p.find("tr", data_zone=HOSTILE).find("span", data_route=HOSTILE).text.count(HOSTILE), 1)
        self.assertEqual(p.find("tr", data_lineage=HOSTILE).field("acme_message").text, HOSTILE)
        self.assertEqual(p.find("tr", data_deploy_service=HOSTILE).field("result").text, HOSTILE)
        inst = p.find("tr", data_instance=HOSTILE)
        self.assertEqual(inst.field("name").text, HOSTILE + " (this one)")
        self.assertEqual((inst.field("version").text, inst.field("listen").text), (HOSTILE, HOSTILE))
        self.assertEqual(inst.field("pid").text, "–")
        self.assertEqual(p.by_id("cluster").find("b", data_field="instance").text, HOSTILE)
        self.assertEqual(p.by_id("cluster").field("redis").text, "unreachable")  # only "up" is up

    def test_cluster_block(self):
        doc = copy.deepcopy(FIXTURE)
        doc["cluster"] = CLUSTER
        p = browser.Page(browser.render(self.serve(doc).url))
        self.assertIsNone(p.by_id("cluster-wrap").get("hidden"))
        self.assertEqual(p.by_id("n-instances").text, "(2 live)")
        cl = p.by_id("cluster")
        self.assertEqual(cl.find("b", data_field="instance").text, "edge-1")
        self.assertEqual(cl.field("redis").text, "reachable")
        self.assertIn("ok", cl.field("redis").get("class"))
        rows = [(r.get("data-instance"), r.field("name").text, r.field("version").text, self.num(r.field("pid")),
                 r.field("listen").text) for r in cl.find_all("tr", data_instance=None)]
        self.assertEqual(rows, [("edge-1", "edge-1 (this one)", "0.16.0-test", 4242, "10.0.0.1:443"),
                                ("edge-2", "edge-2", "0.16.0-test", 777, "10.0.0.2:443")])
        # Redis unreachable from this instance: said, and no stale list
        doc["cluster"] = dict(CLUSTER, redis="down", instances=[])
        cl = browser.Page(browser.render(self.serve(doc).url)).by_id("cluster")
        self.assertEqual(cl.field("redis").text, "unreachable")
        self.assertIn("bad", cl.field("redis").get("class"))
        self.assertEqual([e.text for e in cl.find_all("div") if e.get("class") == "empty"],
                         ["instances unknown while Redis is unreachable"])
        self.assertEqual(cl.find_all("tr", data_instance=None), [])

    def test_proxyd_going_away_keeps_the_figures_and_says_since_when(self):
        s = self.serve(FIXTURE, answer=1)
        p = browser.Page(browser.render(s.url))
        body = p.find("body")
        self.assertEqual(body.get("data-loaded"), "1")
        self.assertRegex(body.get("data-stale"), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
        self.assertIn("stale since", p.by_id("conn").text)
        self.assertIn("the figures below are stale since " + body.get("data-stale"), p.by_id("banner").text)
        self.assertIn("HTTP 503", p.by_id("banner").text)
        # The last good figures are still there.
        self.assertEqual(self.num(p.find("section", data_service="web").field("requests_total")), 120000)
        self.assertGreaterEqual(s.paths.count("/status.json"), 2)

    def test_unreachable_from_the_start(self):
        s = self.serve(FIXTURE, answer=0)
        p = browser.Page(browser.render(s.url))
        self.assertEqual(p.find("body").get("data-stale"), "never")
        self.assertEqual(p.by_id("conn").text, "unreachable")
        self.assertEqual(p.find_all("section", data_service=None), [])


# Values from the config that look like markup: shown as text.
CONFIG_PREFIX = "/p\"<b>alert(6)</b>"
CONFIG_ROUTE = "/r'<i>alert(4)</i>/"
CLIENT_HOSTILE = "evil\"'><script>alert(7)</script>"


@unittest.skipIf(SKIP, SKIP)
class LiveStatus(ProxyTestCase):
    def status(self, p):
        st, headers, body = tm.get(p, "/status.json")
        self.assertEqual(st, 200)
        self.assertEqual(headers["content-type"], "application/json")
        return json.loads(body), body

    def test_page_shows_what_metrics_counts(self):
        web = self.backend(RecordingBackend, response=tm.hello)
        green = self.backend(RecordingBackend, response=tm.hello)
        slow = self.backend(SilentBackend)
        dead = "127.0.0.1:%d" % free_port()
        p = self.proxy("[proxy]\nmetrics_listen = 127.0.0.1:0\n\n"
                       "[limit api]\nrate = 1r/m\nburst = 0\nzone_size = 1m\n"
                       "[route /api/]\nlimit = api\n"
                       "[route %s]\nlimit = api\n"
                       "[service web]\nhosts = web.test www.web.test\ntargets = %s\n"
                       "[service down]\nhosts = down.test\npath_prefix = /app\ntargets = %s\n"
                       "[service odd]\nhosts = odd.test\npath_prefix = %s\ntargets = %s\n"
                       "[service slow]\nhosts = slow.test\ntargets = %s\n"
                       % (CONFIG_ROUTE, web.addr, dead, CONFIG_PREFIX, web.addr, slow.addr))
        st, headers, page = tm.get(p, "/")
        self.assertEqual((st, headers["content-type"]), (200, "text/html; charset=utf-8"))
        self.assertIn("default-src 'none'", headers["content-security-policy"])
        with open(PAGE, "rb") as f:
            self.assertEqual(page, f.read())  # the build embedded the page as it is

        with Client(p.port) as c:  # 4 x 200 and a 200 then a 429 on /api/
            got = []
            for path in ["/"] * 4 + ["/api/x"] * 2:
                c.send(request_bytes("GET", path, host="web.test"))
                got.append(c.read_response("GET").status)
        self.assertEqual(got, [200] * 5 + [429])
        for _ in range(2):  # 2 x 502 (the connection is closed after each)
            with Client(p.port) as c:
                c.send(request_bytes("GET", "/app/x", host="down.test"))
                self.assertEqual(c.read_response("GET").status, 502)
        # Client input that must never reach the page: a Host and a path.
        with Client(p.port) as c:
            c.send(request_bytes("GET", "/", host=CLIENT_HOSTILE))
            self.assertIn(c.read_response("GET").status, (400, 404))
        raw_request(p.port, b"GET /%3Cscript%3Ealert(8)%3C/script%3E\"><script>alert(9)</script> HTTP/1.1\r\n"
                            b"Host: nothing.test\r\nConnection: close\r\n\r\n")
        r = tm.proxyctl(p, "deploy", "green", "--target", green.addr, "--host", "green.test",
                        "--health-check-interval", "100ms", "--health-check-timeout", "1s")
        self.assertEqual(r.returncode, 0, r)
        with Client(p.port) as c:
            c.send(request_bytes("GET", "/", host="green.test"))
            self.assertEqual(c.read_response("GET").status, 200)

        # A request in flight on slow (its backend never answers) while the
        # page is read; odd paused.
        hold = socket.create_connection(("127.0.0.1", p.port), timeout=10 * SLOW)
        self.addCleanup(hold.close)
        hold.sendall(request_bytes("GET", "/", host="slow.test"))
        self.assertTrue(wait_until(lambda: tm.val(tm.scrape(p), "proxyd_target_requests_in_flight", service="slow",
                                                  target=slow.addr) == 1, 10.0, 0.1))
        r = tm.proxyctl(p, "pause", "odd")
        self.assertEqual(r.returncode, 0, r)

        # The last-minute window has a sample after the traffic (a 1 s timer).
        def sampled():
            doc = self.status(p)[0]
            svc = {s["name"]: s for s in doc["services"]}
            return doc if svc["down"]["rate_1m"] > 0 and svc["green"]["rate_1m"] > 0 else None
        doc = wait_until(sampled, 10.0, 0.2)
        self.assertTrue(doc, self.status(p)[0])
        m = tm.scrape(p)
        doc, raw = self.status(p)
        shot = os.path.join(browser.artifacts_dir(), "status_page_live.png")
        dom = browser.render("http://%s:%d/" % tm.metrics_addr(p), screenshot=shot)
        pg = browser.Page(dom)
        self.assertEqual(pg.find("body").get("data-stale"), None)
        self.assertGreaterEqual(int(pg.find("body").get("data-loaded")), 1)

        def requests_of(service):
            return sum(v for (n, l), v in m.items() if n == "proxyd_requests_total" and dict(l)["service"] == service)
        svc = {s["name"]: s for s in doc["services"]}
        self.assertEqual(sorted(svc), ["down", "green", "odd", "slow", "web"])
        for name, total, codes in [("web", 5, {"200": 5}), ("down", 2, {"502": 2}), ("green", 1, {"200": 1}),
                                   ("odd", 0, {}), ("slow", 0, {})]:
            self.assertEqual(requests_of(name), total)
            self.assertEqual(svc[name]["requests_total"], total)
            self.assertEqual(svc[name]["codes"], codes)
            card = pg.find("section", data_service=name)
            self.assertEqual(float(card.field("requests_total").get("data-value")), total)
            self.assertEqual({c.get("data-code"): int(c.get("data-value")) for c in card.find_all(data_code=None)},
                             codes)
            # targets: as many as /metrics has, with the same health
            targets = [dict(l)["target"] for (n, l), v in m.items()
                       if n == "proxyd_target_healthy" and dict(l)["service"] == name]
            self.assertEqual(len(svc[name]["active"]), len(targets))
            self.assertEqual(float(card.field("targets").get("data-value")), len(targets))
            for t in svc[name]["active"]:
                healthy = tm.val(m, "proxyd_target_healthy", service=name, target=t["target"])
                self.assertEqual(t["health"], "healthy" if healthy == 1 else "unhealthy")
                row = card.find("tr", data_target=t["target"])
                self.assertEqual(row.field("health").text, t["health"])
                in_flight = tm.val(m, "proxyd_target_requests_in_flight", service=name, target=t["target"])
                self.assertEqual(t["in_flight"], in_flight)
                self.assertEqual(float(row.field("in_flight").get("data-value")), in_flight)
        self.assertEqual(svc["slow"]["active"][0]["in_flight"], 1)
        self.assertEqual(svc["web"]["active"][0]["in_flight"], 0)
        self.assertEqual(svc["odd"]["state"], "paused")
        self.assertEqual(pg.find("section", data_service="odd").field("state").text, "paused")
        self.assertEqual(pg.find("section", data_service="web").field("state").text, "running")
        self.assertEqual(svc["web"]["hosts"], ["web.test", "www.web.test"])
        self.assertEqual(svc["down"]["path_prefixes"], ["/app"])
        self.assertEqual(svc["down"]["active"][0]["target"], dead)
        self.assertEqual(svc["down"]["error_rate_1m"], 1.0)  # every request in the window was a 502
        self.assertEqual(pg.find("section", data_service="down").field("error_rate_1m").text, "100%")
        self.assertEqual(svc["web"]["error_rate_1m"], 0)
        self.assertIsNotNone(svc["web"]["p50_ms"])
        self.assertEqual(svc["green"]["state"], "running")
        # the whole: every request /metrics counts (the 429, the 404, the 400 too)
        total = sum(v for (n, l), v in m.items() if n == "proxyd_requests_total")
        self.assertEqual(doc["requests"]["total"], total)
        self.assertEqual(float(pg.by_id("g-requests-total").get("data-value")), total)
        # the limit zone
        limited = tm.val(m, "proxyd_limited_requests_total", zone="api", route="/api/")
        self.assertEqual(limited, 1)
        self.assertEqual(doc["limits"], [{"zone": "api", "rate": "1r/m", "burst": 0, "limited_total": 1,
                                          "routes": [{"route": "/api/", "limited_total": 1},
                                                     {"route": CONFIG_ROUTE, "limited_total": 0}]}])
        zone = pg.find("tr", data_zone="api")
        self.assertEqual(zone.find("td", data_field="limited_total").get("data-value"), "1")
        self.assertEqual(zone.find("span", data_route="/api/").field("limited_total").get("data-value"), "1")
        # the deploy
        self.assertEqual(tm.val(m, "proxyd_deploys_total", service="green", result="ok"), 1)
        self.assertEqual([(d["service"], d["result"], d["targets"]) for d in doc["deploys"]],
                         [("green", "ok", [green.addr])])
        row = pg.find("tr", data_deploy_service="green")
        self.assertEqual((row.field("result").text, row.field("targets").text), ("ok", green.addr))
        # no client value anywhere; the config's markup-like values as text
        for text in (raw.decode(), dom):
            for bad in ("alert(7)", "alert(8)", "alert(9)", "evil"):
                self.assertNotIn(bad, text)
        self.assertEqual(svc["odd"]["path_prefixes"], [CONFIG_PREFIX])
        self.assertEqual(pg.find("section", data_service="odd").field("hosts").text, "odd.test  " + CONFIG_PREFIX)
        self.assertEqual(pg.find("tr", data_zone="api").find("span", data_route=CONFIG_ROUTE).text,
                         CONFIG_ROUTE + " (0)")
        self.assertNotIn("<b>alert", dom)
        self.assertNotIn("<i>alert", dom)
        self.assertEqual(pg.find_all("i"), [])
        self.assertEqual([e for e in pg.find_all("b") if not e.get("id")], [])  # the header's own only
        self.assertEqual(len(pg.find_all("script")), 1)
        self.assertGreater(os.path.getsize(shot), 10000)

    def test_certificates_and_the_last_acme_attempt(self):
        """The [tls] file as /metrics labels it, with its expiry; an ACME
        lineage whose CA is down: not served yet, its failed attempt as
        proxyd_acme_renewals_total counted it."""
        b = self.backend(RecordingBackend, response=tm.hello)
        p = self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\nredirect_https = no\nmetrics_listen = 127.0.0.1:0\n"
                       "state_file = {tmp}/state.json\n\n" + tls_config() +
                       "[acme]\nenabled = yes\ndirectory = https://127.0.0.1:%d/dir\ndomains = app.test\n"
                       "config_dir = {tmp}/le\nemail = ops@example.test\nretry_interval = 1h\ncheck_interval = 1h\n"
                       "[service web]\ntargets = %s\n" % (free_port(), b.addr))

        def attempted():
            doc = self.status(p)[0]
            c = [c for c in doc["certificates"] if c["lineage"] == "app.test"]
            return doc if c and c[0]["last_acme"] else None
        doc = wait_until(attempted, 15.0, 0.2)
        self.assertTrue(doc, self.status(p)[0])
        m = tm.scrape(p)
        expiry = {dict(l)["lineage"]: v for (n, l), v in m.items() if n == "proxyd_certificate_expiry_timestamp_seconds"}
        renewals = {(dict(l)["lineage"], dict(l)["result"]): v for (n, l), v in m.items()
                    if n == "proxyd_acme_renewals_total"}
        certs = {c["lineage"]: c for c in doc["certificates"]}
        self.assertEqual(len(expiry), 1)
        (path, not_after), = expiry.items()
        self.assertTrue(path.endswith(".crt") or path.endswith(".pem"), path)
        self.assertEqual(sorted(certs), sorted([path, "app.test"]))
        f = certs[path]
        self.assertEqual(f["not_after"], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(not_after)))
        self.assertAlmostEqual(f["days_left"], (not_after - doc["time"]) / 86400.0, delta=2 / 86400.0)
        self.assertIsNone(f["last_acme"])
        lineage = certs["app.test"]
        self.assertEqual((lineage["not_after"], lineage["days_left"], lineage["names"]), (None, None, ["app.test"]))
        result = lineage["last_acme"]["result"]
        self.assertNotEqual(result, "ok")
        self.assertTrue(lineage["last_acme"]["message"])
        self.assertEqual(renewals, {("app.test", result): 1})

        pg = browser.Page(browser.render("http://%s:%d/" % tm.metrics_addr(p),
                                         screenshot=os.path.join(browser.artifacts_dir(), "status_page_certs.png")))
        row = pg.find("tr", data_lineage=path)
        self.assertAlmostEqual(float(row.field("days_left").get("data-value")), f["days_left"], delta=0.01)
        row = pg.find("tr", data_lineage="app.test")
        self.assertEqual(row.field("acme_result").text, result)
        self.assertEqual(row.field("acme_message").text, lineage["last_acme"]["message"])
        self.assertEqual(row.field("days_left").get("data-value"), "")


@unittest.skipIf(SKIP or tc.REDIS is None, SKIP or "redis-server is not installed")
class ClusterStatus(tc.ClusterCase):
    """Two instances on one redis-server: each status.json has a "cluster"
    block listing both, with the fields `proxyctl status --json` has, and
    the page shows them."""

    def test_two_instances_list_each_other(self):
        r = self.redis()
        ps = self.instances(r, "", n=2, extra_proxy="metrics_listen = 127.0.0.1:0")

        def both(p):
            st, _, body = tm.get(p, "/status.json")
            cl = json.loads(body).get("cluster") if st == 200 else None
            return cl if cl and len(cl["instances"]) == 2 and cl["redis"] == "up" else None
        for i, p in enumerate(ps):
            cl = wait_until(lambda: both(p), 10)
            self.assertTrue(cl, tm.get(p, "/status.json"))
            self.assertEqual(cl["instance"], "px%d" % i)
            by = {x["name"]: x for x in cl["instances"]}
            self.assertEqual(sorted(by), ["px0", "px1"])
            for j, q in enumerate(ps):
                self.assertEqual((by["px%d" % j]["pid"], by["px%d" % j]["listen"]), (q.pid, "127.0.0.1:%d" % q.port))
            # the same block as proxyctl status --json
            rc, out, err = tc.ctl(p, "--json", "status")
            self.assertEqual(rc, 0, err)
            ctl = json.loads(out)["cluster"]
            self.assertEqual((ctl["instance"], ctl["redis"], sorted(x["name"] for x in ctl["instances"])),
                             (cl["instance"], cl["redis"], ["px0", "px1"]))
            self.assertEqual(set(ctl["instances"][0]), set(cl["instances"][0]))

        pg = browser.Page(browser.render("http://%s:%d/" % tm.metrics_addr(ps[1]),
                                         screenshot=os.path.join(browser.artifacts_dir(), "status_page_cluster.png")))
        cl = pg.by_id("cluster")
        self.assertIsNone(pg.by_id("cluster-wrap").get("hidden"))
        self.assertEqual(cl.find("b", data_field="instance").text, "px1")
        self.assertEqual(cl.field("redis").text, "reachable")
        rows = {row.get("data-instance"): (row.field("name").text, row.field("pid").text, row.field("listen").text)
                for row in cl.find_all("tr", data_instance=None)}
        self.assertEqual(rows, {"px0": ("px0", str(ps[0].pid), "127.0.0.1:%d" % ps[0].port),
                                "px1": ("px1 (this one)", str(ps[1].pid), "127.0.0.1:%d" % ps[1].port)})

        # without [cluster]: no block in status.json
        q = self.proxy(self.service_config(self.b, extra_proxy="metrics_listen = 127.0.0.1:0"))
        self.assertNotIn("cluster", json.loads(tm.get(q, "/status.json")[2]))


if __name__ == "__main__":
    unittest.main()
