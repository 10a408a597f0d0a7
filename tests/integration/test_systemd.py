"""systemd: what proxyd tells a Type=notify unit (READY, RELOADING,
STOPPING through a fake NOTIFY_SOCKET), socket activation with the
sockets passed as systemd passes them (systemd-socket-activate), and the
error that names the fixes when an unprivileged proxyd cannot bind port 80."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from harness import SLOW, ProxyTestCase, free_port, get, proxyd_path, tls_config, wait_until


class NotifySocket:
    """A datagram socket where proxyd's sd_notify() messages land."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="proxyd-notify-")
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []

    def wait_for(self, field, timeout=5.0):
        """The first message (after those already returned) with the line
        `field` (e.g. READY=1); fails after timeout."""
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.messages.append(data)
            if field in data.split("\n"):
                return dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
        raise AssertionError("no %s from proxyd within %.0fs; got %r" % (field, timeout, self.messages))

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Notify(ProxyTestCase):
    def setUp(self):
        self.n = NotifySocket()
        self.addCleanup(self.n.close)
        self.b = self.backend()
        env = dict(os.environ, NOTIFY_SOCKET=self.n.path)
        self.p = self.proxy(self.service_config(self.b), env=env)

    def test_ready_after_the_listeners(self):
        m = self.n.wait_for("READY=1")
        self.assertEqual(m.get("STATUS"), "serving")
        self.assertEqual(get(self.p.port, "/").status, 200)

    def test_reload_ok_and_failed(self):
        self.n.wait_for("READY=1")
        self.p.send_signal(signal.SIGHUP)
        self.n.wait_for("RELOADING=1")
        self.assertEqual(self.n.wait_for("READY=1").get("STATUS"), "serving")
        with open(self.p.config_path, "a") as f:
            f.write("\n[proxy\n")  # a broken section line: the reload fails
        self.p.send_signal(signal.SIGHUP)
        self.n.wait_for("RELOADING=1")
        self.assertEqual(self.n.wait_for("READY=1").get("STATUS"), "serving (the last reload failed)")
        self.assertEqual(get(self.p.port, "/").status, 200)

    def test_stopping(self):
        self.n.wait_for("READY=1")
        self.p.send_signal(signal.SIGTERM)
        self.n.wait_for("STOPPING=1")
        self.assertEqual(self.p.wait(10), 0)


class SocketActivation(ProxyTestCase):
    """systemd-socket-activate binds, then execs proxyd with LISTEN_FDS=N and
    the sockets from fd 3 on, as a proxyd.socket unit would."""

    def setUp(self):
        if shutil.which("systemd-socket-activate") is None:
            self.fail("systemd-socket-activate is missing (Debian package systemd)")

    def _activated(self, ports, config):
        """Start proxyd under systemd-socket-activate, which (as systemd for a
        socket unit) runs it on the first connection: that connection is made
        here, and its request's answer is returned with the proxy."""
        prefix = ["systemd-socket-activate"]
        for port in ports:
            prefix += ["-l", "127.0.0.1:%d" % port]
        p = self.proxy(config, argv_prefix=prefix, start=False)
        errors, first = [], []

        def trigger():  # in a thread: proxyd itself must start from this one (its parent-death signal)
            try:
                wait_until(lambda: "Listening on 127.0.0.1:%d" % ports[-1] in p.error_log_text(), 5)
                first.append(get(ports[0], "/", timeout=10 * SLOW))
            except Exception as e:  # OSError, or the harness's Closed
                first.append(e)
        t = threading.Thread(target=trigger)
        t.start()
        try:
            p.start()
        except AssertionError as e:
            errors.append(e)
        t.join(15 * SLOW)
        first = first[0] if first else None
        return p, first, errors

    def test_http_and_https_from_systemd(self):
        b = self.backend()
        http, https = free_port(), free_port()
        cfg = ("[proxy]\nlisten_http = 127.0.0.1:%d\nlisten_https = 127.0.0.1:%d\nredirect_https = no\n"
               "%s\n[service web]\ntargets = %s\n" % (http, https, tls_config(), b.addr))
        p, first, errors = self._activated([http, https], cfg)
        self.assertEqual(errors, [])
        self.assertEqual(first.status, 200)  # the connection that started it waited and was served
        self.assertEqual((p.port, p.https_port), (http, https))
        log = p.error_log_text()
        self.assertIn("listening http 127.0.0.1:%d (from systemd)" % http, log)
        self.assertIn("listening https 127.0.0.1:%d (from systemd)" % https, log)
        for _ in range(6):  # both workers accept on the one passed socket
            self.assertEqual(get(http, "/").status, 200)
        out = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}",
                              "https://localhost:%d/" % https, "--resolve", "localhost:%d:127.0.0.1" % https],
                             capture_output=True, text=True, timeout=10 * SLOW)
        self.assertEqual(out.stdout, "200", out.stderr)
        p.stop()
        self.assertEqual(p.returncode, 0)

    def test_socket_count_must_match_the_listeners(self):
        http, https = free_port(), free_port()
        cfg = ("[proxy]\nlisten_http = 127.0.0.1:%d\nlisten_https = 127.0.0.1:%d\n%s\n"
               % (http, https, tls_config()))
        p, first, errors = self._activated([http], cfg)
        self.assertEqual(len(errors), 1)
        self.assertIsInstance(first, Exception)  # closed unanswered as proxyd exits
        wait_until(lambda: not p.alive(), 5)
        self.assertEqual(p.proc.returncode, 1)
        self.assertIn("socket activation: systemd passed 1 socket, the config has 2 listeners",
                      p.error_log_text())


class PrivilegedPort(ProxyTestCase):
    def test_unprivileged_port_80_names_the_fixes(self):
        if os.geteuid() != 0:
            self.fail("this test runs proxyd as nobody: run the suite as root (as CI does)")
        d = tempfile.mkdtemp(prefix="proxyd-unpriv-")
        self.addCleanup(shutil.rmtree, d, True)
        os.chmod(d, 0o777)
        cfg = os.path.join(d, "proxyd.ini")
        with open(cfg, "w") as f:
            f.write("[proxy]\nlisten_http = 127.0.0.1:80\nworkers = 1\ncontrol_socket = %s/c.sock\n"
                    "state_file = %s/state.json\naccess_log = off\n" % (d, d))
        os.chmod(cfg, 0o644)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                            proxyd_path(), "-c", cfg], capture_output=True, text=True, timeout=10 * SLOW)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("listen 127.0.0.1:80: Permission denied", r.stderr)
        for fix in ("CAP_NET_BIND_SERVICE", "setcap cap_net_bind_service=+ep", "proxyd.socket"):
            self.assertIn(fix, r.stderr)


class DropToUser(ProxyTestCase):
    """Started as root with `user = nobody`: it binds, then drops; a reload
    reads as nobody, and a file only root can read fails the reload with its
    path, mode and owner named while the running config keeps serving."""

    def test_root_only_files_fail_the_reload_with_mode_named(self):
        if os.geteuid() != 0:
            self.fail("this test starts proxyd as root: run the suite as root (as CI does)")
        import pwd
        from harness import shared_certs
        b = self.backend()
        d = tempfile.mkdtemp(prefix="proxyd-user-")
        self.addCleanup(shutil.rmtree, d, True)
        os.chmod(d, 0o755)
        certs = shared_certs()
        crt, key = os.path.join(d, "a.crt"), os.path.join(d, "a.key")
        shutil.copy(certs.ec[0], crt)
        shutil.copy(certs.ec[1], key)
        os.chmod(crt, 0o644)
        os.chmod(key, 0o644)
        cfg = ("[proxy]\nuser = nobody\nlisten_https = 127.0.0.1:0\nredirect_https = no\n"
               "[tls]\ncertificate = %s\ncertificate_key = %s\n[service web]\ntargets = %s\n" % (crt, key, b.addr))
        p = self.proxy(cfg)
        os.chmod(p.tmp, 0o755)  # the config's directory, for the reload as nobody
        os.chmod(p.config_path, 0o644)
        status = "/proc/%d/status" % p.pid
        uid = [line.split()[1] for line in open(status) if line.startswith("Uid:")][0]
        self.assertEqual(int(uid), pwd.getpwnam("nobody").pw_uid)  # dropped after binding
        self.assertEqual(get(p.port, "/").status, 200)

        os.chmod(key, 0o600)  # root's now: the reload must fail and say why
        p.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload failed" in p.error_log_text(), 5)
        line = [l for l in p.error_log_text().splitlines() if "reload failed" in l][-1]
        self.assertIn(key, line)
        self.assertIn("Permission denied (mode 0600, owner root:root; proxyd runs as nobody)", line)
        self.assertEqual(get(p.port, "/").status, 200)  # the running config keeps serving

        os.chmod(p.config_path, 0o600)  # the config itself
        p.send_signal(signal.SIGHUP)
        wait_until(lambda: p.error_log_text().count("reload failed") >= 2, 5)
        line = [l for l in p.error_log_text().splitlines() if "reload failed" in l][-1]
        self.assertIn("%s: cannot open: Permission denied (mode 0600, owner root:root; proxyd runs as nobody)"
                      % p.config_path, line)
        self.assertEqual(get(p.port, "/").status, 200)
