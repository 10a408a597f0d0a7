"""proxyctl against a fake daemon: a Unix socket in a temp dir that records
the request line and answers with scripted lines (progress, ok, error, a
silent close). Exit codes 0/1/2/3, stderr messages, progress on stderr,
the table and --json, $PROXYCTL_SOCKET, generated help."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import SLOW, build_dir

PROXYCTL = os.path.join(build_dir(), "proxyctl")

COMMANDS = ["deploy", "rollback", "list", "stop", "pause", "resume", "remove", "status", "reload",
            "cert status", "cert renew", "cert reload"]


class FakeDaemon:
    """Accepts connections; for each, reads one line and plays `script`:
    a list of (delay_s, bytes) to send, then closes. script may be a
    function of the parsed request returning such a list."""

    def __init__(self, script):
        self.dir = tempfile.mkdtemp(prefix="proxyctl-")
        self.path = os.path.join(self.dir, "control.sock")
        self.script = script
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with c:
                buf = b""
                c.settimeout(10)
                try:
                    while b"\n" not in buf:
                        d = c.recv(65536)
                        if not d:
                            break
                        buf += d
                except OSError:
                    pass
                line = buf.split(b"\n", 1)[0]
                try:
                    req = json.loads(line)
                except ValueError:
                    req = None
                self.requests.append(req)
                steps = self.script(req) if callable(self.script) else self.script
                try:
                    for delay, data in steps:
                        time.sleep(delay)
                        c.sendall(data)
                except OSError:
                    pass

    def close(self):
        self.stop = True
        self.sock.close()
        self.t.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def line(obj):
    return (json.dumps(obj) + "\n").encode()


def ok(result, id_=1):
    return line({"id": id_, "ok": True, "result": result})


def err(code, message, id_=1):
    return line({"id": id_, "ok": False, "error": {"code": code, "message": message}})


SERVICES = {"services": [
    {"name": "web", "state": "running", "hosts": ["example.com", "www.example.com"], "path_prefix": "/",
     "active": ["10.0.0.5:3000"], "previous": ["10.0.0.4:3000"], "in_flight": 12},
    {"name": "api-backend", "state": "stopped", "hosts": [], "path_prefix": "/api",
     "active": ["10.0.0.6:4000", "10.0.0.7:4000"], "previous": [], "in_flight": 0,
     "stop_message": "back soon"},
]}


class ProxyctlTest(unittest.TestCase):
    def daemon(self, script):
        d = FakeDaemon(script)
        self.addCleanup(d.close)
        return d

    def run_ctl(self, *args, env=None, sock=None, timeout=20):
        e = dict(os.environ)
        e.pop("PROXYCTL_SOCKET", None)
        if env:
            e.update(env)
        argv = [PROXYCTL] + (["--socket", sock] if sock else []) + list(args)
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                           stdin=subprocess.DEVNULL, timeout=timeout * SLOW)
        return p.returncode, p.stdout.decode(), p.stderr.decode()


class Requests(ProxyctlTest):
    def test_deploy_request_progress_and_result(self):
        d = self.daemon([(0, line({"id": 1, "progress": "waiting for 10.0.0.5:3000 to be healthy"})),
                         (0.1, line({"id": 1, "progress": "switched"})),
                         (0.1, line({"id": 1, "progress": "draining 3 requests"})),
                         (0, line({"id": 1, "progress": "done in 2.1s"})),
                         (0, ok({"service": "web", "active": ["10.0.0.5:3000"], "previous": ["10.0.0.4:3000"],
                                 "drained": 3, "duration_ms": 2100}))])
        rc, out, errt = self.run_ctl("deploy", "web", "--target", "10.0.0.5:3000", "--target=10.0.0.6:3000",
                                     "--host", "example.com", "--path-prefix", "/", "--health-check-path", "/up",
                                     "--health-check-interval", "500ms", "--health-check-timeout", "5s",
                                     "--deploy-timeout", "2m", "--drain-timeout", "30", "--force", "--tls",
                                     sock=d.path)
        self.assertEqual(rc, 0, errt)
        self.assertEqual(d.requests[0], {
            "id": 1, "cmd": "deploy", "args": {
                "service": "web", "targets": ["10.0.0.5:3000", "10.0.0.6:3000"], "hosts": ["example.com"],
                "path_prefix": "/", "health_check_path": "/up", "health_check_interval_ms": 500,
                "health_check_timeout_ms": 5000, "deploy_timeout_ms": 120000, "drain_timeout_ms": 30000,
                "force": True, "tls": True},
            "progress": True})  # proxyctl asks for progress lines (a script that does not never sees one)
        self.assertEqual(errt.splitlines(), ["waiting for 10.0.0.5:3000 to be healthy", "switched",
                                            "draining 3 requests", "done in 2.1s"])
        self.assertIn("10.0.0.5:3000", out)
        self.assertNotIn("switched", out)

    def test_every_command_request(self):
        cases = [
            (["rollback", "web"], "rollback", {"service": "web"}),
            (["list"], "list", {}),
            (["stop", "web", "--message", "back at 5"], "stop", {"service": "web", "message": "back at 5"}),
            (["stop", "web"], "stop", {"service": "web"}),
            (["pause", "web", "--max-pause", "30s"], "pause", {"service": "web", "max_pause_ms": 30000}),
            (["resume", "web"], "resume", {"service": "web"}),
            (["remove", "web"], "remove", {"service": "web"}),
            (["status"], "status", {}),
            (["reload"], "reload", {}),
            (["cert", "status"], "cert_status", {}),
            (["cert", "renew", "--force"], "cert_renew", {"force": True}),
            (["cert", "reload"], "cert_reload", {}),
        ]
        d = self.daemon([(0, ok({}))])
        for argv, cmd, args in cases:
            rc, out, errt = self.run_ctl(*argv, sock=d.path)
            self.assertEqual(rc, 0, (argv, errt))
            self.assertEqual(d.requests[-1], {"id": 1, "cmd": cmd, "args": args, "progress": True}, argv)

    def test_socket_from_env_and_flag_wins(self):
        d = self.daemon([(0, ok({}))])
        rc, _, errt = self.run_ctl("reload", env={"PROXYCTL_SOCKET": d.path})
        self.assertEqual(rc, 0, errt)
        self.assertEqual(len(d.requests), 1)
        rc, _, errt = self.run_ctl("reload", "--socket", d.path, env={"PROXYCTL_SOCKET": "/nonexistent/x.sock"})
        self.assertEqual(rc, 0, errt)
        rc, _, errt = self.run_ctl("reload", env={"PROXYCTL_SOCKET": os.path.join(d.dir, "other.sock")})
        self.assertEqual(rc, 3)
        self.assertIn("other.sock", errt)


class Output(ProxyctlTest):
    def test_list_table(self):
        d = self.daemon([(0, ok(SERVICES))])
        rc, out, errt = self.run_ctl("list", sock=d.path)
        self.assertEqual(rc, 0, errt)
        rows = out.splitlines()
        self.assertEqual(len(rows), 3, out)
        self.assertEqual(rows[0].split(), ["SERVICE", "STATE", "HOSTS", "PREFIX", "ACTIVE", "PREVIOUS", "IN-FLIGHT"])
        self.assertEqual(rows[1].split(), ["web", "running", "example.com,www.example.com", "/", "10.0.0.5:3000",
                                           "10.0.0.4:3000", "12"])
        self.assertEqual(rows[2].split(), ["api-backend", "stopped", "*", "/api", "10.0.0.6:4000,10.0.0.7:4000",
                                           "-", "0"])
        # aligned: every column starts at the same offset on every row
        for title in ("STATE", "HOSTS", "PREFIX", "ACTIVE", "PREVIOUS", "IN-FLIGHT"):
            col = rows[0].index(title)
            for r in rows[1:]:
                self.assertNotEqual(r[col], " ", (title, r))
                self.assertEqual(r[col - 1], " ", (title, r))

    def test_list_json(self):
        d = self.daemon([(0, ok(SERVICES))])
        rc, out, errt = self.run_ctl("list", "--json", sock=d.path)
        self.assertEqual(rc, 0, errt)
        self.assertEqual(json.loads(out), SERVICES)

    def test_list_empty(self):
        d = self.daemon([(0, ok({"services": []}))])
        rc, out, _ = self.run_ctl("list", sock=d.path)
        self.assertEqual((rc, out), (0, "no services\n"))

    def test_status_table_and_json(self):
        st = {"version": "0.1.0", "pid": 4242, "uptime_s": 3600, "workers": 4, "connections": 17, "services": 2}
        d = self.daemon([(0, ok(st))])
        rc, out, errt = self.run_ctl("status", sock=d.path)
        self.assertEqual(rc, 0, errt)
        rows = [r.split() for r in out.splitlines()]
        self.assertEqual(rows, [["version", "0.1.0"], ["pid", "4242"], ["uptime_s", "3600"], ["workers", "4"],
                                ["connections", "17"], ["services", "2"]])
        self.assertEqual(len({r.index(r.split()[1]) for r in out.splitlines()}), 1, out)  # values aligned
        rc, out, _ = self.run_ctl("--json", "status", sock=d.path)
        self.assertEqual((rc, json.loads(out)), (0, st))


class ExitCodes(ProxyctlTest):
    def test_error_reply_exit_1(self):
        d = self.daemon([(0, line({"id": 1, "progress": "waiting for 10.0.0.5:3000 to be healthy"})),
                         (0, err("health_check_failed", "10.0.0.5:3000 /up: 503 after 30s"))])
        rc, out, errt = self.run_ctl("deploy", "web", "--target", "10.0.0.5:3000", sock=d.path)
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")
        self.assertEqual(errt.splitlines(), ["waiting for 10.0.0.5:3000 to be healthy",
                                            "proxyctl: health_check_failed: 10.0.0.5:3000 /up: 503 after 30s"])

    def test_connection_level_error_with_null_id(self):
        d = self.daemon([(0, err("forbidden", "uid 1001 may not use this socket", id_=None))])
        rc, _, errt = self.run_ctl("list", sock=d.path)
        self.assertEqual(rc, 1)
        self.assertIn("proxyctl: forbidden: uid 1001 may not use this socket", errt)

    def test_silent_close_exit_3(self):
        d = self.daemon([(0, line({"id": 1, "progress": "switched"}))])
        rc, _, errt = self.run_ctl("rollback", "web", sock=d.path)
        self.assertEqual(rc, 3)
        self.assertIn("switched", errt)
        self.assertIn("closed the connection without answering", errt)
        d2 = self.daemon([(0, b'{"id":1,"ok":tr')])  # a partial line, then close
        rc, _, errt = self.run_ctl("list", sock=d2.path)
        self.assertEqual(rc, 3, errt)

    def test_bad_reply_exit_3(self):
        d = self.daemon([(0, b"HTTP/1.1 400 Bad Request\r\n\r\n")])
        rc, _, errt = self.run_ctl("list", sock=d.path)
        self.assertEqual(rc, 3)
        self.assertIn("bad reply from the daemon", errt)

    def test_no_daemon_exit_3(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, True)
        rc, out, errt = self.run_ctl("list", sock=os.path.join(tmp, "none.sock"))
        self.assertEqual((rc, out), (3, ""))
        self.assertIn("cannot connect to %s" % os.path.join(tmp, "none.sock"), errt)
        # a socket file nobody listens on
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(os.path.join(tmp, "dead.sock"))
        s.close()
        rc, _, errt = self.run_ctl("status", sock=os.path.join(tmp, "dead.sock"))
        self.assertEqual(rc, 3, errt)

    def test_slow_reply_within_limit(self):
        # proxyctl waits deploy_timeout + drain_timeout + 30s; a daemon silent that long (exit 3)
        # is too slow to test here, so check a reply a second late is still taken.
        d = self.daemon([(1.0 * SLOW, ok({"service": "web"}))])
        rc, _, errt = self.run_ctl("deploy", "web", "--target", "a:1", "--deploy-timeout", "1ms",
                                   "--drain-timeout", "1ms", sock=d.path)
        self.assertEqual(rc, 0, errt)

    def test_usage_errors_exit_2(self):
        cases = [
            ([], "usage: proxyctl"),
            (["frobnicate"], "unknown command 'frobnicate'"),
            (["deploy"], "deploy: missing SERVICE"),
            (["deploy", "web"], "deploy: --target HOST:PORT is required"),
            (["deploy", "web", "--target"], "--target needs a value"),
            (["deploy", "web", "--target", "10.0.0.5"], "targets: \"10.0.0.5\": missing port"),
            (["deploy", "web", "--target", "a:1", "--deploy-timeout", "soon"], "--deploy-timeout: bad duration"),
            (["deploy", "web", "--target", "a:1", "--deploy-timeout", "0"], "--deploy-timeout: must be 1ms..24h"),
            (["deploy", "web", "--target", "a:1", "--force=yes"], "--force: must be true or false"),
            (["deploy", "web", "--target", "a:1", "--bogus"], "unknown option --bogus"),
            (["deploy", "web", "extra", "--target", "a:1"], "unexpected argument 'extra'"),
            (["deploy", "w b", "--target", "a:1"], "service: \"w b\": name may contain only"),
            (["rollback"], "rollback: missing SERVICE"),
            (["pause", "web", "--max-pause", "1x"], "--max-pause: bad duration"),
            (["stop", "web", "--message"], "--message needs a value"),
            (["cert"], "unknown command 'cert'"),
            (["cert", "burn"], "unknown command 'cert'"),
            (["list", "--socket"], "--socket needs a PATH"),
            (["help", "nope"], "unknown command 'nope'"),
        ]
        for argv, msg in cases:
            rc, out, errt = self.run_ctl(*argv, env={"PROXYCTL_SOCKET": "/nonexistent/never.sock"})
            self.assertEqual(rc, 2, (argv, errt))
            self.assertIn(msg, errt, argv)
            self.assertEqual(out, "", argv)


class Help(ProxyctlTest):
    def test_help_lists_every_command(self):
        for flag in ("--help", "-h", "help"):
            rc, out, _ = self.run_ctl(flag)
            self.assertEqual(rc, 0)
            for c in COMMANDS:
                self.assertIn("\n  " + c, out, (flag, c))
            for f in ("--target HOST:PORT", "--host NAME", "--path-prefix", "--health-check-path",
                      "--health-check-interval", "--health-check-timeout", "--deploy-timeout", "--drain-timeout",
                      "--force", "--tls", "--message TEXT", "--max-pause", "--json", "--socket PATH",
                      "PROXYCTL_SOCKET", "/run/proxyd/control.sock"):
                self.assertIn(f, out, (flag, f))

    def test_command_help(self):
        for argv in (["help", "deploy"], ["deploy", "--help"], ["--help", "deploy"], ["deploy", "web", "-h"]):
            rc, out, _ = self.run_ctl(*argv)
            self.assertEqual(rc, 0, argv)
            self.assertTrue(out.startswith("usage: proxyctl [--socket PATH] deploy SERVICE --target HOST:PORT"),
                            out)
            self.assertIn("--drain-timeout DURATION", out)
            self.assertIn("drain", out)
        rc, out, _ = self.run_ctl("help", "cert", "renew")
        self.assertEqual(rc, 0)
        self.assertIn("cert renew [--force]", out)
        rc, out, _ = self.run_ctl("pause", "--help")
        self.assertIn("--max-pause DURATION", out)

    def test_version(self):
        rc, out, _ = self.run_ctl("--version")
        self.assertEqual(rc, 0)
        self.assertTrue(out.startswith("proxyctl "), out)


if __name__ == "__main__":
    unittest.main()
