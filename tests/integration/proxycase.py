"""ProxyTestCase: the unittest base that starts backends and proxies and
checks them at cleanup. Part of harness.py."""

import subprocess
import unittest

from backends import RecordingBackend
from common import SLOW, proxyd_path
from proxyproc import Proxy


class ProxyTestCase(unittest.TestCase):
    """Starts backends and proxies whose cleanup is registered with the test."""

    maxDiff = 4000

    def backend(self, cls=RecordingBackend, **kw):
        """A backend closed with the test; parse_errors_ok=True when the test
        expects proxyd to send it a malformed request (else cleanup fails)."""
        b = cls(**kw)
        self.addCleanup(self._check_backend_parse, b)
        self.addCleanup(b.close)
        return b

    def _check_backend_parse(self, b):
        """After the backend closed (cleanups run last-in first-out), as the
        sanitizer check: a request from proxyd that the backend could not
        parse strictly (backends.ParseError: request line, header line,
        Content-Length, chunked framing, bytes after a close) fails the test,
        unless the backend was made with parse_errors_ok=True."""
        with b.lock:
            errs = list(getattr(b, "parse_errors", ()))
        if errs and not getattr(b, "parse_errors_ok", False):
            self.fail("backend %s saw %d malformed request%s from proxyd (parse_errors_ok=True "
                      "if the test expects it):\n%s" % (b.addr, len(errs), "" if len(errs) == 1 else "s",
                                                        "\n".join(errs[:10])))

    def proxy(self, config="", **kw):
        p = Proxy(config, **kw)
        self._proxies = getattr(self, "_proxies", []) + [p]
        self.addCleanup(self._check_sanitizers, p)
        self.addCleanup(p.close)
        return p

    def check_config(self, config):
        """`proxyd -t` on config (rendered as proxy() would, not started):
        (exit status, stdout + stderr)."""
        p = self.proxy(config, start=False)
        run = subprocess.run([proxyd_path(), "-t", "-c", p.config_path], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20 * SLOW, cwd=p.tmp)
        return run.returncode, run.stdout.decode() + run.stderr.decode()

    SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "WARNING: ThreadSanitizer")

    def _check_sanitizers(self, p):
        """After proxyd stopped (cleanups run last-in first-out): a sanitizer
        report in its error log fails the test (make asan)."""
        try:
            text = p.error_log_text() + getattr(p, "_final_stderr", "")
        except Exception:
            return
        for mark in self.SANITIZER_MARKS:
            if mark in text:
                i = text.index(mark)
                self.fail("proxyd sanitizer report:\n" + text[max(0, i - 200):i + 3000])

    def service_config(self, *backends, extra_proxy="", extra=""):
        """A catch-all service over the given backends."""
        return "[proxy]\n%s\n%s\n[service web]\ntargets = %s\n" % (
            extra_proxy, extra, " ".join(b if isinstance(b, str) else b.addr for b in backends))

    def assertSecurityHeaders(self, resp):
        self.assertEqual(resp.headers.get_all("x-frame-options"), ["DENY"], resp)
        self.assertEqual(resp.headers.get_all("x-content-type-options"), ["nosniff"], resp)
        self.assertEqual(resp.headers.get_all("x-xss-protection"), ["1; mode=block"], resp)
        self.assertIsNone(resp.header("strict-transport-security"), resp)
