"""Active health checks of the targets of services that ask for them
(deployed ones, and [service] sections with health_check_path): a target that fails
PX_HEALTH_FALL (3) checks in a row (GET health_check_path, any 2xx passes,
one a second) leaves balancing and comes back after one pass; with none
healthy, 503."""

import time

from harness import SLOW, ProxyTestCase, RecordingBackend, get, wait_until


class ActiveHealth(ProxyTestCase):
    def names_served(self, port, n=8):
        seen = []
        for _ in range(n):
            r = get(port, "/")
            seen.append((r.status, r.body))
        return seen

    def test_unhealthy_target_leaves_and_returns(self):
        a = self.backend(RecordingBackend, name=b"a")
        b = self.backend(RecordingBackend, name=b"b")
        p = self.proxy(self.service_config(a, b) + "health_check_path = /up\n")
        self.assertEqual({body for _, body in self.names_served(p.port)}, {b"a", b"b"})
        b.healthy = False  # its /up answers 503 from now on
        self.assertTrue(wait_until(lambda: len(b.health_requests) >= 3 and
                                   {body for _, body in self.names_served(p.port, 6)} == {b"a"}, 10),
                        "an unhealthy target kept getting requests")
        self.assertIn("out of balancing", p.error_log_text())
        ua = b.health_requests[-1]
        self.assertTrue(ua.header("user-agent", "").startswith("proxyd/"), ua)
        b.healthy = True
        self.assertTrue(wait_until(lambda: b"b" in {body for _, body in self.names_served(p.port, 8)}, 10),
                        "a recovered target did not come back")
        self.assertIn("healthy again", p.error_log_text())

    def test_none_healthy_is_503(self):
        a = self.backend(RecordingBackend, name=b"a", healthy=False)
        p = self.proxy(self.service_config(a) + "health_check_path = /up\n")
        t0 = time.monotonic()
        self.assertTrue(wait_until(lambda: get(p.port, "/").status == 503, 10), "no 503 with no healthy target")
        self.assertGreater(time.monotonic() - t0, 1.0)  # it takes three failed checks, not one
        self.assertEqual(get(p.port, "/health").status, 200)

    def test_no_checks_without_health_check_path(self):
        """A [service] without health_check_path (an app with no /up, as
        behind nginx) is not judged by active checks: it keeps serving."""
        a = self.backend(RecordingBackend, name=b"a", healthy=False)
        p = self.proxy(self.service_config(a))
        time.sleep(4 * SLOW)
        self.assertEqual(get(p.port, "/").status, 200)
        self.assertEqual(a.health_requests, [])
