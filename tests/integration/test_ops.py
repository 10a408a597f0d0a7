"""Operations: access log, the command line (-t, -V), signals (HUP, TERM,
INT, USR1)."""

import os
import re
import signal
import socket
import subprocess
import time
import unittest

from harness import (Client, Proxy, ProxyTestCase, SLOW, SilentBackend, StreamingBackend, free_port, get,
                     proxyd_path, request_bytes, shared_certs, tls_config, wait_until)


class AccessLog(ProxyTestCase):
    def setUp(self):
        self.b = self.backend()
        self.p = self.proxy(self.service_config(self.b))

    def test_fields(self):
        t0 = time.time()
        r = get(self.p.port, "/logged", host="log.test")
        self.assertEqual(r.status, 200)
        lines = self.p.wait_access_log(1)
        self.assertEqual(len(lines), 1, lines)
        e = lines[0]
        for key in ("time", "client", "method", "host", "path", "status", "bytes_out", "duration_ms",
                    "service", "upstream", "request_id", "proto", "tls"):
            self.assertIn(key, e, e)
        self.assertIsInstance(e["time"], str)
        self.assertTrue(e["time"], e)
        self.assertEqual(e["client"], "127.0.0.1")
        self.assertEqual(e["method"], "GET")
        self.assertEqual(e["host"], "log.test")
        self.assertEqual(e["path"], "/logged")
        self.assertEqual(e["status"], 200)
        self.assertIsInstance(e["bytes_out"], int)
        self.assertGreaterEqual(e["bytes_out"], len(r.body))
        self.assertIsInstance(e["duration_ms"], (int, float))
        self.assertTrue(0 <= e["duration_ms"] <= (time.time() - t0) * 1000 + 1000, e)
        self.assertEqual(e["service"], "web")
        self.assertEqual(e["upstream"], self.b.addr)
        self.assertEqual(e["proto"], "HTTP/1.1")
        self.assertIs(e["tls"], False)
        self.assertEqual(e["request_id"], self.b.wait_requests(1)[0].header("x-request-id"))

    def test_request_id_from_client(self):
        get(self.p.port, "/", headers=[("X-Request-ID", "client-id-42")])
        self.assertEqual(self.p.wait_access_log(1)[0]["request_id"], "client-id-42")

    def test_one_line_per_request(self):
        with Client(self.p.port) as c:
            for path in ("/one", "/two", "/three"):
                self.assertEqual(c.request("GET", path).status, 200)
        lines = self.p.wait_access_log(3)
        self.assertEqual([e["path"] for e in lines], ["/one", "/two", "/three"])
        ids = [e["request_id"] for e in lines]
        self.assertEqual(ids, [q.header("x-request-id") for q in self.b.requests])

    def test_errors_logged(self):
        p = self.proxy("[service s]\nhosts = known.test\ntargets = 127.0.0.1:%d\n" % free_port())
        self.assertEqual(get(p.port, "/nf", host="other.test").status, 404)
        self.assertEqual(get(p.port, "/bad", host="known.test").status, 502)
        lines = p.wait_access_log(2)
        # two connections, possibly two workers: the order of their lines is not defined
        self.assertEqual(sorted((e["path"], e["status"]) for e in lines), [("/bad", 502), ("/nf", 404)])

    def test_access_log_off(self):
        p = self.proxy(self.service_config(self.b, extra_proxy="access_log = off"))
        self.assertEqual(get(p.port, "/").status, 200)
        time.sleep(0.2)
        self.assertEqual(sorted(f for f in os.listdir(p.tmp) if "access" in f), [])
        with open(p.stdout_path, "rb") as f:
            self.assertEqual(f.read(), b"")

    def test_access_log_stdout(self):
        p = self.proxy(self.service_config(self.b, extra_proxy="access_log = -"))
        self.assertEqual(get(p.port, "/to-stdout").status, 200)
        lines = p.wait_access_log(1, path=p.stdout_path)
        self.assertEqual([e["path"] for e in lines], ["/to-stdout"])


class CommandLine(ProxyTestCase):
    def run_proxyd(self, *args, timeout=10):
        return subprocess.run([proxyd_path()] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, timeout=timeout * SLOW)

    def config_file(self, text):
        p = Proxy(text, start=False)
        self.addCleanup(p.close)
        return p

    def test_version(self):
        r = self.run_proxyd("-V")
        self.assertEqual(r.returncode, 0, r)
        self.assertRegex((r.stdout + r.stderr).decode(), r"\d+\.\d+\.\d+")

    def test_long_options(self):
        """--help and -h: usage on stdout, exit 0; --version, --test and
        --config as -V, -t and -c; an unknown option: usage on stderr, exit 2."""
        for flag in ("--help", "-h"):
            with self.subTest(flag=flag):
                r = self.run_proxyd(flag)
                self.assertEqual((r.returncode, r.stderr), (0, b""), r)
                self.assertIn("usage: proxyd", r.stdout.decode())
                self.assertIn("--config", r.stdout.decode())
        self.assertEqual(self.run_proxyd("--version").stdout, self.run_proxyd("-V").stdout)
        self.assertEqual(self.run_proxyd("--version").returncode, 0)
        p = self.config_file("[service web]\ntargets = 127.0.0.1:3000\n")
        for args in (("--test", "--config", p.config_path), ("--config=%s" % p.config_path, "--test")):
            with self.subTest(args=args):
                r = self.run_proxyd(*args)
                self.assertEqual(r.returncode, 0, r)
                self.assertEqual(r.stdout, b"configuration ok\n")
        r = self.run_proxyd("--bogus")
        self.assertEqual((r.returncode, r.stdout), (2, b""), r)
        self.assertIn("usage: proxyd", r.stderr.decode())

    def test_check_good_config(self):
        p = self.config_file("[service web]\nhosts = example.com\ntargets = 127.0.0.1:3000\n\n"
                             "[limit api]\nrate = 10r/s\nburst = 20\n\n[route /api/]\nlimit = api\n")
        r = self.run_proxyd("-t", "-c", p.config_path)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("configuration ok", (r.stdout + r.stderr).decode())

    BAD = [
        ("bad_number", "[proxy]\nmax_connections = lots\n", "max_connections"),
        ("bad_duration", "[proxy]\nclient_header_timeout = 10x\n", "client_header_timeout"),
        ("bad_size", "[proxy]\nmax_body_size = big\n", "max_body_size"),
        ("unknown_key", "[proxy]\nbogus_key = 1\n", "bogus_key"),
        ("bad_target", "[service web]\ntargets = 127.0.0.1\n", "targets"),
        ("bad_rate", "[limit api]\nrate = ten\nburst = 1\n", "rate"),
        ("bad_bool", "[proxy]\nredirect_https = maybe\n", "redirect_https"),
    ]

    def test_check_bad_values(self):
        for name, text, key in self.BAD:
            with self.subTest(name=name):
                p = self.config_file(text)
                line = next(i + 1 for i, l in enumerate(p.config_text.split("\n"))
                            if l.strip().startswith(key))
                r = self.run_proxyd("-t", "-c", p.config_path)
                out = (r.stdout + r.stderr).decode()
                self.assertEqual(r.returncode, 1, out)
                self.assertRegex(out, re.escape("%s:%d: %s: " % (p.config_path, line, key)) + r"\S")
                self.assertNotIn("configuration ok", out)

    def test_check_tls_errors_name_file_and_line(self):
        """[tls] errors found while loading the files or the cipher list say
        FILE:LINE: key: like every other config error (-t, and a reload)."""
        certs = shared_certs()
        cases = [
            ("ciphers", tls_config(certs, ciphers="BOGUS"), "no cipher of the list is known"),
            ("certificate", tls_config(certs, pairs=[("/nonexistent/a.crt", certs.ec[1])]),
             "/nonexistent/a.crt: No such file or directory"),
            ("certificate_key", tls_config(certs, pairs=[(certs.ec[0], certs.rsa[1])]),
             "does not match the certificate"),
            ("sni", tls_config(certs, sni=[("other.test", ("/nonexistent/o.crt", certs.other_ec[1]))]),
             "/nonexistent/o.crt: No such file or directory"),
        ]
        for key, tls, msg in cases:
            with self.subTest(key=key):
                p = self.config_file("[proxy]\nlisten_https = 127.0.0.1:0\n" + tls)
                line = next(i + 1 for i, l in enumerate(p.config_text.split("\n")) if l.startswith(key + " ="))
                r = self.run_proxyd("-t", "-c", p.config_path)
                out = (r.stdout + r.stderr).decode()
                self.assertEqual(r.returncode, 1, out)
                self.assertTrue(out.startswith("%s:%d: %s: " % (p.config_path, line, key)), out)
                self.assertIn(msg, out)

    def test_check_unknown_section(self):
        p = self.config_file("[bogus]\nx = 1\n")
        line = p.config_text.split("\n").index("[bogus]") + 1
        r = self.run_proxyd("-t", "-c", p.config_path)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("%s:%d:" % (p.config_path, line), (r.stdout + r.stderr).decode())

    def test_check_conflicting_services(self):
        p = self.config_file("[service a]\nhosts = example.com\ntargets = 127.0.0.1:3000\n\n"
                             "[service b]\nhosts = example.com\ntargets = 127.0.0.1:3001\n")
        r = self.run_proxyd("-t", "-c", p.config_path)
        self.assertEqual(r.returncode, 1, r)
        self.assertRegex((r.stdout + r.stderr).decode(), re.escape(p.config_path) + r":\d+: ")

    def test_check_no_listener(self):
        p = Proxy("[proxy]\nworkers = 1\n", defaults=False, start=False)
        self.addCleanup(p.close)
        r = self.run_proxyd("-t", "-c", p.config_path)
        self.assertEqual(r.returncode, 1, r)

    def test_check_missing_file(self):
        r = self.run_proxyd("-t", "-c", "/nonexistent/proxyd.ini")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("/nonexistent/proxyd.ini", (r.stdout + r.stderr).decode())

    def test_start_with_bad_config_exits_1(self):
        p = self.config_file("[proxy]\nmax_connections = lots\n")
        r = self.run_proxyd("-c", p.config_path)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("max_connections", (r.stdout + r.stderr).decode())


class Signals(ProxyTestCase):
    def config(self, target, extra_proxy=""):
        return "[proxy]\n%s\n[service web]\ntargets = %s\n" % (extra_proxy, target)

    def test_sighup_changes_target(self):
        a = self.backend(name="A")
        b = self.backend(name="B")
        p = self.proxy(self.config(a.addr))
        with Client(p.port) as c:
            self.assertEqual(c.request("GET", "/").body, b"A")
            p.reload(self.config(b.addr))
            self.assertTrue(wait_until(lambda: get(p.port, "/").body == b"B", 5),
                            "new target not used after SIGHUP; log:\n" + p.error_log_text()[-2000:])
            for _ in range(5):
                self.assertEqual(get(p.port, "/").body, b"B")
            r = c.request("GET", "/")  # the keep-alive connection opened before the reload
            self.assertEqual((r.status, r.body), (200, b"B"))
        self.assertTrue(p.alive())

    def test_sighup_removes_service(self):
        a = self.backend(name="A")
        p = self.proxy("[service a]\nhosts = a.test\ntargets = %s\n\n"
                       "[service b]\nhosts = b.test\ntargets = %s\n" % (a.addr, a.addr))
        self.assertEqual(get(p.port, "/", host="b.test").status, 200)
        p.reload("[service a]\nhosts = a.test\ntargets = %s\n" % a.addr)
        self.assertTrue(wait_until(lambda: get(p.port, "/", host="b.test").status == 404, 5),
                        "removed service still served after SIGHUP")
        self.assertEqual(get(p.port, "/", host="a.test").body, b"A")

    def test_sighup_broken_config_keeps_serving(self):
        a = self.backend(name="A")
        p = self.proxy(self.config(a.addr))
        with Client(p.port) as c:
            self.assertEqual(c.request("GET", "/").body, b"A")
            before = len(p.error_log_text())
            p.reload("[proxy]\nmax_connections = lots\n[service web]\ntargets = %s\n" % a.addr)
            pattern = re.compile(r"proxyd\.ini:\d+: max_connections")
            wait_until(lambda: pattern.search(p.error_log_text()[before:]), 3)
            new_log = p.error_log_text()[before:]
            self.assertTrue(p.alive(), "proxyd died on a bad reload")
            self.assertEqual(c.request("GET", "/").body, b"A")
        self.assertEqual(get(p.port, "/").body, b"A")
        self.assertRegex(new_log, r"proxyd\.ini:\d+: max_connections")

    def test_failed_reload_leaves_no_new_log_file(self):
        """A reload naming new log files that fails later (here: a certificate
        that is not there) removes the files it created; the old ones serve."""
        a = self.backend(name="A")
        p = self.proxy(self.config(a.addr, "error_log = {tmp}/error.log\n"))
        new_access, new_error = os.path.join(p.tmp, "new-access.log"), os.path.join(p.tmp, "new-error.log")
        old_error = p.error_log_path
        p.write_config(self.config(a.addr, "access_log = %s\nerror_log = %s\nlisten_https = 127.0.0.1:0\n"
                                           "[tls]\ncertificate = {tmp}/none.crt\ncertificate_key = {tmp}/none.key\n"
                                           % (new_access, new_error)))
        p.send_signal(signal.SIGHUP)

        def failed():
            with open(old_error) as f:
                return "reload failed" in f.read()
        self.assertTrue(wait_until(failed, 3), "no 'reload failed' line")
        self.assertFalse(os.path.exists(new_access), "a failed reload left the new access log behind")
        self.assertFalse(os.path.exists(new_error), "a failed reload left the new error log behind")
        self.assertEqual(get(p.port, "/").body, b"A")
        old_access = os.path.join(p.tmp, "access.log")
        self.assertEqual(len(p.wait_access_log(1, path=old_access)), 1)  # the old access log still written

    def test_sigterm_finishes_streaming_response(self):
        sb = self.backend(StreamingBackend, total=20000, pieces=10, delay=0.2)  # ~2 s
        p = self.proxy(self.config(sb.addr, "shutdown_timeout = 6s"))
        with Client(p.port, timeout=10) as c:
            c.send(request_bytes("GET", "/stream"))
            head = c.reader.until(b"\r\n\r\n", time.monotonic() + 5)
            self.assertRegex(head, rb"^HTTP/1\.1 200 ")
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            self.assertFalse(self._served_new_connection(p.port), "new connection served after SIGTERM")
            body = c.reader.exact(len(sb.body), time.monotonic() + 8)
            self.assertEqual(body, sb.body)
        rc = p.wait(8)
        self.assertEqual(rc, 0, "exit code after SIGTERM")
        self.assertLess(time.monotonic() - t0, 7)

    @staticmethod
    def _served_new_connection(port):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
        except OSError:
            return False
        try:
            s.sendall(request_bytes("GET", "/health"))
            s.settimeout(1.5)
            return s.recv(100).startswith(b"HTTP/1.1 200")
        except OSError:
            return False
        finally:
            s.close()

    def test_sigterm_closes_idle_keepalive_promptly(self):
        p = self.proxy("[proxy]\nshutdown_timeout = 20s\n")
        with Client(p.port) as c:
            self.assertEqual(c.request("GET", "/health").status, 200)
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(5), 0)
            self.assertLess(time.monotonic() - t0, 5)
            self.assertTrue(c.closed_within(1))

    def test_sigterm_cuts_at_shutdown_timeout(self):
        b = self.backend(SilentBackend)
        p = self.proxy(self.config(b.addr, "shutdown_timeout = 1s\nupstream_read_timeout = 30s"))
        with Client(p.port) as c:
            c.send(request_bytes("GET", "/hang"))
            b.wait_requests(1)
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            rc = p.wait(6)
            elapsed = time.monotonic() - t0
        self.assertEqual(rc, 0)
        self.assertTrue(0.8 <= elapsed <= 4, "exited %.2fs after SIGTERM with shutdown_timeout 1s" % elapsed)

    def test_sigint_stops(self):
        p = self.proxy("[proxy]\n")
        self.assertEqual(get(p.port, "/health").status, 200)
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait(5), 0)

    def test_sigusr1_reopens_access_log(self):
        b = self.backend()
        p = self.proxy(self.config(b.addr))
        log = p.access_log_path
        self.assertEqual(get(p.port, "/before").status, 200)
        self.assertEqual(len(p.wait_access_log(1)), 1)
        os.rename(log, log + ".1")
        self.assertEqual(get(p.port, "/renamed").status, 200)
        # the old descriptor still writes to the renamed file until the reopen
        self.assertEqual(len(p.wait_access_log(2, path=log + ".1")), 2)
        p.send_signal(signal.SIGUSR1)
        self.assertTrue(wait_until(lambda: os.path.exists(log), 3), "access log not recreated after SIGUSR1")
        self.assertEqual(get(p.port, "/after").status, 200)
        lines = p.wait_access_log(1)
        self.assertEqual([e["path"] for e in lines], ["/after"])
        old = [e["path"] for e in p.access_log_lines(log + ".1")]
        self.assertEqual(old, ["/before", "/renamed"])
        self.assertTrue(p.alive())

    def test_sigusr1_reopens_error_log(self):
        p = self.proxy("[proxy]\nerror_log = {tmp}/error.log\n")
        path = p.error_log_path
        self.assertTrue(path.endswith("error.log"))
        os.rename(path, path + ".1")
        p.send_signal(signal.SIGUSR1)
        self.assertTrue(wait_until(lambda: os.path.exists(path), 3), "error log not recreated after SIGUSR1")
        self.assertTrue(p.alive())


class PidFile(ProxyTestCase):
    """DESIGN's pid_file: logrotate's postrotate signals the process it names
    (`kill -USR1 $(cat PIDFILE)`)."""

    def test_pid_file_names_the_process_and_goes_at_exit(self):
        b = self.backend()
        p = self.proxy("[proxy]\npid_file = {tmp}/run/proxyd.pid\n[service web]\ntargets = %s\n" % b.addr)
        path = os.path.join(p.tmp, "run", "proxyd.pid")  # its directory made for it
        with open(path) as f:
            self.assertEqual(f.read(), "%d\n" % p.pid)
        # logrotate's flow: rename, then USR1 to the pid the file names
        log = p.access_log_path
        self.assertEqual(get(p.port, "/before").status, 200)
        self.assertEqual(len(p.wait_access_log(1)), 1)
        os.rename(log, log + ".1")
        with open(path) as f:
            os.kill(int(f.read()), signal.SIGUSR1)
        self.assertTrue(wait_until(lambda: os.path.exists(log), 3), "access log not recreated")
        self.assertEqual(get(p.port, "/after").status, 200)
        self.assertEqual([e["path"] for e in p.wait_access_log(1)], ["/after"])
        # a reload that names another pid_file keeps this one (restart only)
        with open(p.config_path) as f:
            text = f.read()
        with open(p.config_path, "w") as f:
            f.write(text.replace("run/proxyd.pid", "other.pid"))
        before = len(p.error_log_text())
        p.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: "pid_file changes only on restart" in p.error_log_text()[before:], 3),
                        p.error_log_text()[before:])
        self.assertFalse(os.path.exists(os.path.join(p.tmp, "other.pid")))
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(10), 0)
        self.assertFalse(os.path.exists(path), "pid file left behind")

    def test_pid_file_of_another_process_is_left_at_exit(self):
        """Removed at exit only while it still names this process."""
        p = self.proxy("[proxy]\npid_file = {tmp}/proxyd.pid\n")
        path = os.path.join(p.tmp, "proxyd.pid")
        with open(path, "w") as f:
            f.write("1\n")  # as a new instance would have written it
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(10), 0)
        with open(path) as f:
            self.assertEqual(f.read(), "1\n")

    def test_unwritable_pid_file_fails_start(self):
        p = self.proxy("[proxy]\npid_file = /proc/proxyd-no-such/proxyd.pid\n", start=False)
        with self.assertRaises(Exception):
            p.start()
        self.assertIn("pid_file /proc/proxyd-no-such/proxyd.pid", p.error_log_text())

    @unittest.skipUnless(os.geteuid() == 0, "needs root (to drop to nobody)")
    def test_pid_file_with_user_is_removed_at_exit(self):
        import pwd
        nobody = pwd.getpwnam("nobody")
        p = self.proxy("[proxy]\nuser = nobody\npid_file = {tmp}/run/proxyd.pid\n", start=False)
        os.chmod(p.tmp, 0o711)
        os.chmod(p.config_path, 0o644)
        p.start()
        path = os.path.join(p.tmp, "run", "proxyd.pid")
        st = os.stat(path)
        self.assertEqual((st.st_uid, st.st_gid), (nobody.pw_uid, nobody.pw_gid))
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(10), 0)
        self.assertFalse(os.path.exists(path), "pid file left behind")


class Privileges(ProxyTestCase):
    def uid_of(self, pid):
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Uid:"):
                    return [int(x) for x in line.split()[1:]]
        return None

    def test_user_drops_after_binding(self):
        """Listeners are bound (and logs opened) as root, then every uid is
        the configured user's; serving goes on. As non-root, `user` is ignored."""
        import pwd
        nobody = pwd.getpwnam("nobody").pw_uid
        b = self.backend()
        p = self.proxy("[proxy]\nuser = nobody\n[service web]\ntargets = %s\n" % b.addr)
        self.assertEqual(get(p.port, "/x").status, 200)
        uids = self.uid_of(p.pid)
        if os.geteuid() == 0:
            self.assertEqual(uids, [nobody] * 4, "real, effective, saved, fs uid")
        else:
            self.assertEqual(uids[1], os.geteuid())
        self.assertEqual(len(p.wait_access_log(1)), 1)  # the log opened before the drop still works

    def user_proxy(self, extra_proxy, before_start=None):
        """A proxy that drops to nobody, whose config and temp dir nobody can
        read (a reload reads the config as the user)."""
        b = self.backend(name="A")
        p = self.proxy("[proxy]\nuser = nobody\n%s[service web]\ntargets = %s\n" % (extra_proxy, b.addr),
                       start=False)
        os.chmod(p.tmp, 0o711)
        os.chmod(p.config_path, 0o644)
        if before_start:
            before_start(p)
        p.start()
        return p

    def sighup_result(self, p):
        before = len(p.error_log_text())
        p.send_signal(signal.SIGHUP)
        # the outcome, not the audit trail's "reload ... received" that comes first
        self.assertTrue(wait_until(lambda: re.search(r"configuration reloaded|reload failed",
                                                     p.error_log_text()[before:]), 3 * SLOW), p.error_log_text())
        return p.error_log_text()[before:]

    @unittest.skipUnless(os.geteuid() == 0, "needs root (to drop to nobody)")
    def test_user_log_files_belong_to_user_and_reload_works(self):
        """conf/proxyd.ini's setup: the log directory is the user's; the files
        proxyd creates as root before the drop are the user's too, so a
        reload and a reopen after rotation work."""
        import pwd
        nobody = pwd.getpwnam("nobody")

        def logs_dir(p):
            os.mkdir(os.path.join(p.tmp, "logs"))
            os.chown(os.path.join(p.tmp, "logs"), nobody.pw_uid, nobody.pw_gid)
        p = self.user_proxy("error_log = {tmp}/logs/error.log\naccess_log = {tmp}/logs/access.log\n", logs_dir)
        for name in ("error.log", "access.log"):
            st = os.stat(os.path.join(p.tmp, "logs", name))
            self.assertEqual((st.st_uid, st.st_gid), (nobody.pw_uid, nobody.pw_gid), name)
        self.assertIn("configuration reloaded", self.sighup_result(p))
        self.assertIn("configuration reloaded", self.sighup_result(p))  # and again
        self.assertEqual(get(p.port, "/").status, 200)
        self.assertEqual(len(p.wait_access_log(1)), 1)

    @unittest.skipUnless(os.geteuid() == 0, "needs root (to drop to nobody)")
    def test_user_reload_keeps_root_owned_log_open(self):
        """An existing log file the user cannot open (root's, 0600) is kept open
        across a reload, as nginx keeps its fds; the reload does not fail."""
        def root_logs(p):
            for name in ("error.log", "access.log"):
                fd = os.open(os.path.join(p.tmp, name), os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
        p = self.user_proxy("error_log = {tmp}/error.log\n", root_logs)
        self.assertEqual(os.stat(p.error_log_path).st_uid, 0)  # left as the operator made it
        self.assertIn("configuration reloaded", self.sighup_result(p))
        self.assertEqual(get(p.port, "/").status, 200)
        self.assertEqual(len(p.wait_access_log(1)), 1)

    @unittest.skipUnless(os.geteuid() == 0, "needs root (to drop to nobody)")
    def test_user_root_only_secret_file_read_once(self):
        """[cluster] secret_file as a key belongs: root's, 0600. It is read at
        start, before the drop, and a reload does not read it again (it
        failed every reload with "Permission denied")."""
        def secret(p):
            fd = os.open(os.path.join(p.tmp, "secret"), os.O_CREAT | os.O_WRONLY, 0o600)
            os.write(fd, os.urandom(32))
            os.close(fd)
        p = self.user_proxy("[cluster]\nredis = redis://127.0.0.1:9/0\nsecret_file = {tmp}/secret\n", secret)
        self.assertIn("configuration reloaded", self.sighup_result(p))
        self.assertEqual(get(p.port, "/").status, 200)

    def test_unknown_user_fails_start(self):
        if os.geteuid() != 0:
            # without root there is nothing to drop: the key is accepted and ignored
            p = self.proxy("[proxy]\nuser = no-such-user-px\n")
            self.assertTrue(p.alive())
            return
        p = Proxy("[proxy]\nuser = no-such-user-px\n", start=False)
        self.addCleanup(p.close)
        with self.assertRaises(Exception):
            p.start(timeout=3)
        self.assertIn("user no-such-user-px: no such user", p.error_log_text())
        self.assertEqual(p.wait(5), 1)


class Listeners(ProxyTestCase):
    """SO_REUSEPORT spreads connections over the workers' sockets; it must not
    let a second proxyd on the same address take half of them."""

    def test_second_instance_on_same_port_refused(self):
        a = self.backend(name="A")
        b = self.backend(name="B")
        first = self.proxy(self.service_config(a))
        second = self.proxy("[proxy]\nlisten_http = 127.0.0.1:%d\n[service web]\ntargets = %s\n"
                            % (first.port, b.addr), start=False)
        with self.assertRaises(Exception):
            second.start(timeout=3)
        self.assertEqual(second.wait(5), 1)
        self.assertIn("listen 127.0.0.1:%d: Address already in use" % first.port, second.error_log_text())
        for _ in range(20):  # a fresh connection each: all of them reach the first instance
            self.assertEqual(get(first.port, "/").body, b"A")
        self.assertEqual(len(b.requests), 0)

    def test_restart_on_same_port_after_stop(self):
        """The exclusive bind does not trip over the TIME_WAIT connections a
        stop leaves (proxyd closes its idle keep-alive connections first)."""
        a = self.backend(name="A")
        first = self.proxy(self.service_config(a))
        port = first.port
        clients = [Client(port) for _ in range(3)]
        for c in clients:
            self.assertEqual(c.request("GET", "/").status, 200)
        self.assertEqual(first.stop(), 0)
        for c in clients:
            c.close()
        again = self.proxy("[proxy]\nlisten_http = 127.0.0.1:%d\n[service web]\ntargets = %s\n" % (port, a.addr))
        self.assertEqual(get(again.port, "/").body, b"A")

    def test_reload_to_port_held_elsewhere_warns(self):
        """Listen addresses change on restart only; a reload naming one another
        process holds says that a restart would fail, and serving goes on."""
        a = self.backend(name="A")
        p = self.proxy(self.service_config(a))
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even one that shares
            other.bind(("127.0.0.1", 0))
            other.listen(1)
            held = other.getsockname()[1]
            log = p.reload("[proxy]\nlisten_http = 127.0.0.1:%d\n[service web]\ntargets = %s\n" % (held, a.addr))
        self.assertIn("configuration reloaded", log)
        self.assertIn("a restart with this configuration would fail: listen 127.0.0.1:%d: Address already in use"
                      % held, log)
        self.assertEqual(get(p.port, "/").body, b"A")


class MakeRun(ProxyTestCase):
    """tests/run-dev.sh (make run) stopped the ways people stop it: a
    process-group TERM (`timeout`, systemd, a terminal closing) or Ctrl-C.
    In-flight requests finish; then everything it started is gone."""

    def start_run_dev(self, tmp):
        port, backend_port = free_port(), free_port()
        conf = os.path.join(tmp, "dev.ini")
        with open(conf, "w") as f:
            f.write("[proxy]\nlisten_http = 127.0.0.1:%d\nworkers = 1\nshutdown_timeout = 10s\n"
                    "control_socket = %s/control.sock\nstate_file = %s/state.json\n"
                    "access_log = off\nerror_log = %s/error.log\n"
                    "[service demo]\ntargets = 127.0.0.1:%d\n" % (port, tmp, tmp, tmp, backend_port))
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PROXYD=proxyd_path(), CONF=conf, BACKEND_PORT=str(backend_port))
        # As a terminal starts it: SIGINT at its default. A test runner
        # started in the background by a non-interactive shell (CI's
        # `make asan &`, a harness) inherits SIGINT ignored, and a shell
        # cannot trap a signal ignored on entry (POSIX), so Ctrl-C would
        # never reach the script's trap.
        def as_from_a_terminal():
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        proc = subprocess.Popen(["sh", os.path.join(repo, "tests", "run-dev.sh")], cwd=repo, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=as_from_a_terminal)
        self.addCleanup(self._reap, proc, tmp, backend_port)

        def up():
            try:
                return get(port, "/health", timeout=1).status == 200
            except Exception:
                return False
        self.assertTrue(wait_until(up, 10), "make run did not come up")
        return proc, port, backend_port

    def _reap(self, proc, tmp, backend_port):
        """After a failed test: the script is asked to stop (TERM, which it
        traps to stop proxyd and the backend in order), then killed; then
        anything still running from this test's config (proxyd and the
        backend run in sessions of their own, so killing the script's group
        does not reach them) is killed by PID."""
        if proc.poll() is None:
            for sig, grace in ((signal.SIGTERM, 20 * SLOW), (signal.SIGKILL, 5)):
                try:
                    os.killpg(proc.pid, sig)
                except OSError:
                    pass
                try:
                    proc.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    pass
        conf = os.path.join(tmp, "dev.ini").encode()
        backend = b"demo_backend.py\0--host\0127.0.0.1\0--port\0%d\0" % backend_port
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read()
                if conf in cmd or backend in cmd:
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass

    def check_stop(self, sig):
        import tempfile
        import threading
        tmp = tempfile.mkdtemp(prefix="proxyd-run-dev-")
        self.addCleanup(__import__("shutil").rmtree, tmp, True)  # after _reap (cleanups run in reverse)
        proc, port, backend_port = self.start_run_dev(tmp)
        result = {}

        def slow():
            try:
                result["r"] = get(port, "/slow?delay=1.5", timeout=10 * SLOW)
            except Exception as e:
                result["e"] = e
        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.5)
        os.killpg(proc.pid, sig)  # the whole group, as `timeout` and a terminal do
        t.join(15 * SLOW)
        self.assertIn("r", result, "the in-flight request was cut: %r" % result.get("e"))
        self.assertEqual(result["r"].status, 200)
        # a clean stop is a success: make run says nothing (it said "Error 143")
        try:
            rc = proc.wait(15 * SLOW)
        except subprocess.TimeoutExpired:
            with open(os.path.join(tmp, "error.log")) as f:  # what proxyd was doing
                self.fail("make run still runs %.0fs after the stop; proxyd's log:\n%s" % (15 * SLOW, f.read()[-3000:]))
        self.assertEqual(rc, 0)
        for p in (port, backend_port):
            with socket.socket() as s:
                self.assertNotEqual(s.connect_ex(("127.0.0.1", p)), 0, "port %d still served after stop" % p)

    def test_process_group_term_finishes_in_flight(self):
        self.check_stop(signal.SIGTERM)

    def test_ctrl_c_finishes_in_flight(self):
        self.check_stop(signal.SIGINT)
