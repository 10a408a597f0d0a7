"""The status page (GET / on metrics_listen) in headless Chromium.

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
import threading
import unittest

import browser
from common import REPO

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
    "instances": [],
}


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
        self.assertEqual(self.num(zone.find(data_field="limited_total", data_value="456")), 456)
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
        self.assertTrue(p.by_id("instances-wrap").get("hidden") is not None)

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
        doc["instances"] = [{"name": HOSTILE}]
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
        self.assertIn(HOSTILE, p.by_id("instances").text)

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


if __name__ == "__main__":
    unittest.main()
