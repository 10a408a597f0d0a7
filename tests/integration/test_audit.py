"""The control audit trail (DESIGN "Access log and metrics", README
"proxyctl"): every command that changes state writes a "[notice] control:"
line to the error log when it is received (command, service, the peer's
uid and pid from SO_PEERCRED) and one when it ends (ok or the error code,
duration); a refused peer gets one line; a SIGHUP reload is logged the same
way with the peer shown as signal=SIGHUP. Read-only commands write none."""

import os
import re
import shutil
import subprocess
import time
import unittest

from harness import SLOW, ProxyTestCase, RecordingBackend, build_dir, tls_config, wait_until

PROXYCTL = os.path.join(build_dir(), "proxyctl")
FAST = ["--health-check-interval", "100ms", "--health-check-timeout", "1s"]
NUM = r"\d+\.\d{3}s"


class Run:
    def __init__(self, rc, pid, out, err):
        self.rc, self.pid, self.out, self.err = rc, pid, out, err

    def __repr__(self):
        return "<proxyctl pid=%d rc=%s out=%r err=%r>" % (self.pid, self.rc, self.out[-800:], self.err[-800:])


def ctl(proxy, *args, prefix=(), timeout=30.0):
    """Run proxyctl against proxy's socket; the Run has its pid (what the
    daemon's SO_PEERCRED sees, setpriv exec()s in place)."""
    sock = os.path.join(proxy.tmp, "control.sock")
    p = subprocess.Popen(list(prefix) + [PROXYCTL, "--socket", sock] + list(args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout * SLOW)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return Run(p.returncode, p.pid, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


class AuditCase(ProxyTestCase):
    def control_lines(self, proxy):
        return [ln for ln in proxy.error_log_text().splitlines() if "control: " in ln and "control socket" not in ln]

    def pair(self, proxy, cmd, service, run, result):
        """Wait for the two lines of one command run by `run` (a Run) and
        check them: received, then `result` ("ok" or "failed (code)")."""
        svc = " service=%s" % service if service else ""
        peer = "uid=%d pid=%d" % (os.geteuid(), run.pid)
        start = re.compile(r"\[notice\] control: %s%s %s received$" % (re.escape(cmd), re.escape(svc), peer))
        end = re.compile(r"\[notice\] control: %s%s %s %s %s(: .*)?$"
                         % (re.escape(cmd), re.escape(svc), peer, re.escape(result), NUM))
        self.assertTrue(wait_until(lambda: any(end.search(ln) for ln in self.control_lines(proxy)), 5 * SLOW),
                        "no end line %r in:\n%s" % (end.pattern, "\n".join(self.control_lines(proxy))))
        lines = self.control_lines(proxy)
        starts = [i for i, ln in enumerate(lines) if start.search(ln)]
        ends = [i for i, ln in enumerate(lines) if end.search(ln)]
        self.assertEqual((len(starts), len(ends)), (1, 1), "\n".join(lines))
        self.assertLess(starts[0], ends[0])
        return lines[ends[0]]


class TestAudit(AuditCase):

    def test_deploy_ok_and_failed(self):
        good = self.backend(RecordingBackend)
        bad = self.backend(RecordingBackend, healthy=False)
        p = self.proxy("[proxy]\n")
        r = ctl(p, "deploy", "web", "--target", good.addr, *FAST)
        self.assertEqual(r.rc, 0, r)
        self.pair(p, "deploy", "web", r, "ok")
        r = ctl(p, "deploy", "web", "--target", bad.addr, "--deploy-timeout", "500ms", *FAST)
        self.assertEqual(r.rc, 1, r)
        line = self.pair(p, "deploy", "web", r, "failed (health_check_failed)")
        self.assertIn(bad.addr, line)  # the message says which target

    def test_state_commands_and_a_refused_one(self):
        blue = self.backend(RecordingBackend)
        green = self.backend(RecordingBackend)
        p = self.proxy("[proxy]\n")
        for t in (blue, green):
            r = ctl(p, "deploy", "web", "--target", t.addr, *FAST)
            self.assertEqual(r.rc, 0, r)
        runs = [("rollback", ["rollback", "web"]), ("stop", ["stop", "web", "--message", "back soon"]),
                ("resume", ["resume", "web"]), ("pause", ["pause", "web", "--max-pause", "5s"]),
                ("resume", ["resume", "web"]), ("remove", ["remove", "web"])]
        for cmd, argv in runs:
            r = ctl(p, *argv)
            self.assertEqual(r.rc, 0, r)
            self.pair(p, cmd, "web", r, "ok")
        r = ctl(p, "stop", "nosuch")
        self.assertEqual(r.rc, 1, r)
        self.pair(p, "stop", "nosuch", r, "failed (unknown_service)")

    def test_reload_ok_and_failed_by_proxyctl(self):
        p = self.proxy("[proxy]\n")
        r = ctl(p, "reload")
        self.assertEqual(r.rc, 0, r)
        self.pair(p, "reload", None, r, "ok")
        p.write_config("[proxy]\nworkers = many\n")
        r = ctl(p, "reload")
        self.assertEqual(r.rc, 1, r)
        line = self.pair(p, "reload", None, r, "failed (reload_failed)")
        self.assertIn("workers", line)  # the reason, on the same line

    def test_cert_commands(self):
        p = self.proxy("[proxy]\nlisten_https = 127.0.0.1:0\nredirect_https = no\n\n" + tls_config())
        r = ctl(p, "cert", "reload")
        self.assertEqual(r.rc, 0, r)
        self.pair(p, "cert_reload", None, r, "ok")
        r = ctl(p, "cert", "renew")
        self.assertEqual(r.rc, 1, r)
        self.pair(p, "cert_renew", None, r, "failed (acme_not_configured)")

    def test_read_only_commands_write_nothing(self):
        a = self.backend(RecordingBackend)
        p = self.proxy("[proxy]\n\n[service web]\ntargets = %s\n" % a.addr)
        for argv in (["list"], ["list", "--json"], ["status"], ["status", "--json"], ["cert", "status"]):
            r = ctl(p, *argv)
            self.assertEqual(r.rc, 0, r)
        # a command that writes lines afterwards: when its lines are there, the read-only ones would be too
        r = ctl(p, "resume", "web")
        self.pair(p, "resume", "web", r, "ok")
        self.assertEqual([ln for ln in self.control_lines(p) if "control: resume" not in ln], [])

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"), "needs root and setpriv")
    def test_refused_peer_gets_one_line(self):
        p = self.proxy("[proxy]\ncontrol_socket_mode = 0666\n")
        sock = os.path.join(p.tmp, "control.sock")
        os.chmod(p.tmp, 0o711)  # nobody reaches the socket: SO_PEERCRED is what refuses it
        self.assertEqual(os.stat(sock).st_mode & 0o777, 0o666)
        os.chmod(os.path.dirname(PROXYCTL), os.stat(os.path.dirname(PROXYCTL)).st_mode | 0o011)
        r = ctl(p, "stop", "web", prefix=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        self.assertEqual(r.rc, 1, r)
        self.assertIn("forbidden", r.err)
        want = re.compile(r"\[notice\] control: refused a peer uid=65534 gid=65534 pid=%d$" % r.pid)
        self.assertTrue(wait_until(lambda: any(want.search(ln) for ln in self.control_lines(p)), 5 * SLOW),
                        "\n".join(self.control_lines(p)))
        self.assertEqual(len(self.control_lines(p)), 1, self.control_lines(p))  # nothing "received"

    def test_sighup_reload_ok_and_failed(self):
        p = self.proxy("[proxy]\n")
        text = p.reload("[proxy]\n")
        self.assertRegex(text, r"\[notice\] control: reload signal=SIGHUP received\n")
        self.assertRegex(text, r"\[notice\] control: reload signal=SIGHUP ok %s\n" % NUM)
        text = p.reload("[proxy]\nworkers = many\n")
        self.assertRegex(text, r"\[notice\] control: reload signal=SIGHUP received\n")
        self.assertRegex(text, r"\[notice\] control: reload signal=SIGHUP failed \(reload_failed\) %s: .*workers"
                         % NUM)
        self.assertTrue(p.alive())


if __name__ == "__main__":
    unittest.main()
