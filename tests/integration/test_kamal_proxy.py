"""kamal-proxy: proxyctl under kamal-proxy's name (build/kamal-proxy) takes
kamal-proxy 0.9's command line. Every translation is checked against a fake
control socket that records the request lines (fixtures/kamal_commands.txt:
the exact lines Kamal 2.x generates, and a table for every flag and syntax);
`run` against a fake proxyd beside a copy of the binary (the config it
writes) and against the real one (a live release: deploy, a second deploy,
stop, resume, remove, driven only by kamal-proxy commands; and the
fixture's deploy.yml A lines as written, with ACME from pebble, every option
they set checked live)."""

import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

import pebble

from harness import (SLOW, H2Client, ProxyTestCase, RecordingBackend, build_dir, copy_cert, curl, free_port,
                     http_response, shared_certs, wait_until)

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "kamal_commands.txt")


def kamal_bin():
    return os.path.join(build_dir(), "kamal-proxy")


class FakeDaemon:
    """A Unix-socket control server: records every request line (parsed) and
    answers ok, or what `answer(request)` returns (a reply dict without id)."""

    def __init__(self, path, answer=None):
        self.path = path
        self.answer = answer
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5 * SLOW)
                buf = b""
                try:
                    while True:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buf += data
                        while b"\n" in buf:
                            line, buf = buf.split(b"\n", 1)
                            req = json.loads(line)
                            self.requests.append(req)
                            rep = self.answer(req) if self.answer else None
                            if rep is None:
                                rep = {"ok": True, "result": {"service": req.get("args", {}).get("service", "")}}
                            rep = dict(rep, id=req.get("id"))
                            conn.sendall(json.dumps(rep).encode() + b"\n")
                except (OSError, ValueError):
                    pass

    def close(self):
        self._stop = True
        self.sock.close()
        self._thread.join(5)


def run_kamal(args, env_extra=None, binary=None, timeout=20):
    env = {k: v for k, v in os.environ.items() if k not in ("KAMAL_PROXY_SOCKET", "XDG_RUNTIME_DIR", "DEBUG",
                                                           "HTTP_PORT", "HTTPS_PORT")}
    env.update(env_extra or {})
    r = subprocess.run([binary or kamal_bin()] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, env=env, timeout=timeout * SLOW)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def fixture_cases():
    """[(argv after the program name, expected)] from the fixture file."""
    cases, cmd = [], None
    with open(FIXTURE) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            if line.startswith("=> "):
                cases.append((cmd, json.loads(line[3:])))
                cmd = None
                continue
            words = shlex.split(line)
            if words[:3] == ["docker", "exec", "kamal-proxy"]:
                words = words[3:]
            assert words[0] == "kamal-proxy", line
            cmd = words[1:]
    return cases


class FakeSocketCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kamal-test-")
        self.sock = os.path.join(self.tmp, "kamal-proxy.sock")
        self.daemon = None

    def tearDown(self):
        if self.daemon:
            self.daemon.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def fake(self, answer=None):
        self.daemon = FakeDaemon(self.sock, answer)
        return self.daemon

    def kamal(self, *args, env=None):
        e = {"KAMAL_PROXY_SOCKET": self.sock}
        e.update(env or {})
        return run_kamal(args, e)

    def sent(self, *args, env=None):
        """Run kamal-proxy ARGS; returns the one request it sent (rc 0 checked)."""
        n = len(self.daemon.requests)
        rc, out, err = self.kamal(*args, env=env)
        self.assertEqual(rc, 0, "%r: %s%s" % (args, out, err))
        self.assertEqual(len(self.daemon.requests), n + 1, (args, self.daemon.requests[n:]))
        return self.daemon.requests[-1]


class Fixture(FakeSocketCase):
    def test_every_kamal_line_translates(self):
        self.fake()
        cases = fixture_cases()
        self.assertGreaterEqual(len(cases), 9)
        checked = 0
        for argv, want in cases:
            if argv[0] == "run":
                continue  # RunConfig below
            with self.subTest(argv=" ".join(argv)):
                req = self.sent(*argv)
                self.assertEqual(req["cmd"], want["cmd"])
                self.assertEqual(req["args"], want["args"])
                checked += 1
        self.assertEqual(checked, sum(1 for a, _ in cases if a[0] != "run"))


# (argv, the args the request must carry) for each flag and syntax
BASE = ["deploy", "web", "--target=10.0.0.5:3000"]
BASE_ARGS = {"service": "web", "targets": ["10.0.0.5:3000"], "forward_headers": True, "target_timeout_ms": 30000,
             "buffer_requests": False, "tls_redirect": False}
FLAG_CASES = [
    # targets, hosts, prefixes: several, comma lists (pflag), both value forms, single dash
    (["deploy", "web", "--target", "a:1", "--target=b:2", "-target", "c:3,d:4"],
     {"targets": ["a:1", "b:2", "c:3", "d:4"]}),
    (BASE + ["--host", "a.test", "--host=b.test,*.c.test"], {"hosts": ["a.test", "b.test", "*.c.test"]}),
    (BASE + ["--path-prefix=/api"], {"path_prefix": "/api", "strip_path_prefix": True}),
    (BASE + ["--path-prefix=/api", "--path-prefix", "/v2"], {"path_prefix": ["/api", "/v2"],
                                                            "strip_path_prefix": True}),
    (BASE + ["--path-prefix=/api", "--strip-path-prefix=false"], {"path_prefix": "/api", "strip_path_prefix": False}),
    (BASE + ["--strip-path-prefix"], {"strip_path_prefix": True}),
    (BASE + ["--path-prefix=/"], {"path_prefix": "/"}),
    # TLS
    (BASE + ["--tls"], {"tls": True, "forward_headers": False}),
    (BASE + ["--tls", "--tls-staging"], {"tls": True, "forward_headers": False}),
    (BASE + ["--tls-certificate-path", "/c.pem", "--tls-private-key-path=/k.pem"],
     {"tls_certificate_path": "/c.pem", "tls_private_key_path": "/k.pem"}),
    (BASE + ["--tls-redirect=false"], {"tls_redirect": False}),
    (BASE + ["--tls-redirect"], {"tls_redirect": True}),
    (BASE + ["--canonical-host", "example.com"], {"canonical_host": "example.com"}),
    # Go durations
    (BASE + ["--deploy-timeout=1m30s", "--drain-timeout", "0.5s"], {"deploy_timeout_ms": 90000,
                                                                   "drain_timeout_ms": 500}),
    (BASE + ["--health-check-path=/healthz", "--health-check-interval=500ms", "--health-check-timeout=2s",
             "--health-check-port=9000"],
     {"health_check_path": "/healthz", "health_check_interval_ms": 500, "health_check_timeout_ms": 2000,
      "health_check_port": 9000}),
    (BASE + ["--target-timeout=1h"], {"target_timeout_ms": 3600000}),
    (BASE + ["--target-timeout=1500us"], {"target_timeout_ms": 2}),
    # buffering, sizes in bytes
    (BASE + ["--buffer-requests", "--buffer-responses", "--buffer-memory=1048576", "--max-request-body",
             "104857600", "--max-response-body=0"],
     {"buffer_requests": True, "buffer_responses": True, "buffer_memory": 1048576, "max_request_body": 104857600,
      "max_response_body": 0}),
    (BASE + ["--buffer-requests=false", "--buffer-responses=0"], {"buffer_requests": False,
                                                                 "buffer_responses": False}),
    (BASE + ["--forward-headers"], {"forward_headers": True}),
    (BASE + ["--tls", "--forward-headers=true"], {"tls": True, "forward_headers": True}),
    (BASE + ["--forward-headers=false"], {"forward_headers": False}),
    (BASE + ["--log-request-header", "User-Agent", "--log-request-header=X-A,X-B",
             "--log-response-header=X-Runtime"],
     {"log_request_headers": ["User-Agent", "X-A", "X-B"], "log_response_headers": ["X-Runtime"]}),
    (BASE + ["--error-pages", "/srv/pages"], {"error_pages": "/srv/pages"}),
]


class Flags(FakeSocketCase):
    def test_every_flag(self):
        self.fake()
        for argv, extra in FLAG_CASES:
            with self.subTest(argv=" ".join(argv)):
                want = dict(BASE_ARGS)
                if argv[2] != BASE[2]:
                    del want["targets"]
                want.update(extra)
                if want.get("tls") and "tls-redirect" not in " ".join(argv):
                    del want["tls_redirect"]
                req = self.sent(*argv)
                self.assertEqual(req["cmd"], "deploy")
                got = dict(req["args"])
                if "targets" not in want:
                    want["targets"] = got.get("targets")
                self.assertEqual(got, want)

    def test_service_commands(self):
        self.fake()
        self.assertEqual(self.sent("remove", "web"), dict(self.daemon.requests[-1]))
        for argv, cmd, args in [
                (["remove", "web"], "remove", {"service": "web"}),
                (["pause", "web", "--drain-timeout=5s", "--max-pause=1m"], "pause",
                 {"service": "web", "max_pause_ms": 60000}),
                (["resume", "web"], "resume", {"service": "web"}),
                (["stop", "web", "--message", "Back soon", "--drain-timeout", "10s"], "stop",
                 {"service": "web", "message": "Back soon"}),
                (["stop", "web"], "stop", {"service": "web"}),
                (["list"], "list", {})]:
            with self.subTest(argv=argv):
                req = self.sent(*argv)
                self.assertEqual((req["cmd"], req.get("args", {})), (cmd, args))

    def test_usage_errors_send_nothing(self):
        self.fake()
        for argv, msg in [
                (["deploy", "web"], "--target HOST:PORT is required"),
                (["deploy", "--target=a:1"], "missing SERVICE"),
                (BASE + ["--bogus"], "unknown flag: --bogus"),
                (BASE + ["--deploy-timeout=30"], "missing or unknown unit"),
                (BASE + ["--deploy-timeout=-1s"], "must not be negative"),
                (BASE + ["--deploy-timeout=0s"], "must be more than 0"),
                (BASE + ["--tls=maybe"], "invalid boolean value"),
                (BASE + ["--buffer-memory=1m"], "must be a size in bytes"),
                (BASE + ["--health-check-port=70000"], "must be a port"),
                (BASE + ["--host"], "flag needs an argument: --host"),
                (["deploy", "bad/name", "--target=a:1"], "SERVICE"),
                (["frobnicate"], "unknown command"),
                (["remove", "a", "b"], "unexpected argument")]:
            with self.subTest(argv=argv):
                rc, out, err = self.kamal(*argv)
                self.assertEqual(rc, 2, err)
                self.assertIn(msg, err)
                self.assertTrue(err.startswith("kamal-proxy: "), err)
        self.assertEqual(self.daemon.requests, [])

    def test_not_supported(self):
        self.fake()
        for argv in (BASE + ["--read-target=10.0.0.9:3000"], BASE + ["--read-target-websockets"],
                     ["rollout", "deploy", "web", "--target=a:1"]):
            with self.subTest(argv=argv):
                rc, out, err = self.kamal(*argv)
                self.assertEqual(rc, 1, err)
                self.assertIn("not_supported", err)
        self.assertEqual(self.daemon.requests, [])

    def test_refusal_rc1_on_stderr(self):
        self.fake(lambda req: {"ok": False, "error": {"code": "health_check_failed",
                                                      "message": "10.0.0.5:3000 /up: 503 after 30s"}})
        rc, out, err = self.kamal(*BASE)
        self.assertEqual(rc, 1)
        self.assertEqual(err, "kamal-proxy: health_check_failed: 10.0.0.5:3000 /up: 503 after 30s\n")
        self.assertEqual(len(self.daemon.requests), 1)

    def test_implied_default_unknown_to_the_daemon_is_dropped(self):
        # a proxyd without target_timeout_ms / buffer_requests: kamal-proxy's own
        # defaults are dropped one by one; a flag the user gave never is
        known = {"service", "targets", "hosts", "forward_headers"}

        def answer(req):
            for k in req["args"]:
                if k not in known:
                    return {"ok": False, "error": {"code": "bad_request",
                                                   "message": "%s: unknown argument of deploy" % k}}
            return None
        self.fake(answer)
        rc, out, err = self.kamal(*BASE, "--host=a.test")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.daemon.requests[-1]["args"],
                         {"service": "web", "targets": ["10.0.0.5:3000"], "hosts": ["a.test"],
                          "forward_headers": True})
        self.assertIn("does not take target_timeout_ms yet", err)
        self.assertIn("does not take buffer_requests yet", err)
        n = len(self.daemon.requests)
        rc, out, err = self.kamal(*BASE, "--target-timeout=5s")
        self.assertEqual(rc, 1)
        self.assertIn("kamal-proxy: bad_request: target_timeout_ms: unknown argument of deploy", err)
        self.assertEqual(len(self.daemon.requests), n + 1)

    def test_socket_places(self):
        # $XDG_RUNTIME_DIR/kamal-proxy.sock when KAMAL_PROXY_SOCKET is unset
        self.fake()
        rc, out, err = run_kamal(["list"], {"XDG_RUNTIME_DIR": self.tmp})
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.daemon.requests[-1]["cmd"], "list")
        rc, out, err = run_kamal(["list"], {"KAMAL_PROXY_SOCKET": os.path.join(self.tmp, "none.sock")})
        self.assertEqual(rc, 3)
        self.assertIn("kamal-proxy: cannot connect to %s" % os.path.join(self.tmp, "none.sock"), err)


class RunConfig(unittest.TestCase):
    """`run` with a fake proxyd beside a copy of the binary: the config it writes."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kamal-run-")
        self.bin = os.path.join(self.tmp, "bin")
        os.mkdir(self.bin)
        shutil.copy(os.path.join(build_dir(), "proxyctl"), os.path.join(self.bin, "kamal-proxy"))
        with open(os.path.join(self.bin, "proxyd"), "w") as f:
            f.write('#!/bin/sh\necho "$@" > "$FAKE_OUT.args"\ncat "$2" > "$FAKE_OUT"\n')
        os.chmod(os.path.join(self.bin, "proxyd"), 0o755)
        self.home = os.path.join(self.tmp, "home")
        os.mkdir(self.home)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_line(self, argv, env=None):
        out = os.path.join(self.tmp, "conf")
        e = {"HOME": self.home, "FAKE_OUT": out, "KAMAL_PROXY_SOCKET": os.path.join(self.tmp, "k.sock")}
        e.update(env or {})
        rc, so, se = run_kamal(argv, e, binary=os.path.join(self.bin, "kamal-proxy"))
        self.assertEqual(rc, 0, so + se)
        with open(out) as f:
            conf = f.read()
        with open(out + ".args") as f:
            args = f.read().split()
        d = os.path.join(self.home, ".config", "kamal-proxy")
        self.assertEqual(args, ["-c", os.path.join(d, "proxyd.ini")])
        keys = {}
        for line in conf.splitlines():
            if "=" in line and not line.startswith(";"):
                k, v = line.split("=", 1)
                keys.setdefault(k.strip(), v.strip())
        return conf, keys, se, d

    def test_fixture_run_lines(self):
        for argv, want in fixture_cases():
            if argv[0] != "run":
                continue
            with self.subTest(argv=argv):
                conf, keys, err, d = self.run_line(argv)
                for k, v in want["run"].items():
                    self.assertEqual(keys.get(k), v, conf)
                if "metrics_listen" not in want["run"]:
                    self.assertNotIn("metrics_listen", keys)
                self.assertEqual(keys["state_file"], os.path.join(d, "state.json"))
                self.assertEqual(keys["temp_dir"], os.path.join(d, "tmp"))  # writable by the container user
                self.assertEqual(keys["control_socket"], os.path.join(self.tmp, "k.sock"))
                self.assertEqual(keys["config_dir"], os.path.join(d, "letsencrypt"))
                self.assertEqual(keys["enabled"], "yes")
                self.assertEqual(keys["certificate"], os.path.join(d, "default.crt"))
                self.assertTrue(os.path.exists(os.path.join(d, "default.key")))
                if "--http3" in argv:
                    self.assertIn("HTTP/3 is not offered yet", err)

    def test_env_and_own_flags(self):
        conf, keys, err, d = self.run_line(
            ["run", "--bind=::1", "--acme-directory", "https://acme.test/dir", "--acme-ca-bundle=/ca.pem"],
            env={"HTTP_PORT": "8080", "HTTPS_PORT": "8443", "DEBUG": "true"})
        self.assertEqual(keys["listen_http"], "[::1]:8080")
        self.assertEqual(keys["listen_https"], "[::1]:8443")
        self.assertEqual(keys["directory"], "https://acme.test/dir")
        self.assertEqual(keys["ca_bundle"], "/ca.pem")
        self.assertIn("--debug", err)
        # flags win over the environment
        conf, keys, err, d = self.run_line(["run", "--http-port", "81", "-https-port=444"],
                                           env={"HTTP_PORT": "8080", "HTTPS_PORT": "8443"})
        self.assertEqual((keys["listen_http"], keys["listen_https"]), ("*:81", "*:444"))
        rc, so, se = run_kamal(["run", "--http-port=0"], {"HOME": self.home},
                               binary=os.path.join(self.bin, "kamal-proxy"))
        self.assertEqual(rc, 2, se)


def backend_named(name):
    return lambda req: http_response(200, name.encode())


class Load:
    """HTTP/1.1 keep-alive (TLS) and HTTP/2 clients asking for app.test in a
    loop until stopped; every answer that is not 200 blue/green, and every
    error, is a failure."""

    def __init__(self, port, host="app.test", cafile=None):
        self.port = port
        self.host = host
        self.cafile = cafile  # verify the certificate for host against it (else the test CA's, any name)
        self.ok = 0
        self.by_proto = {"h1": 0, "h2": 0}
        self.failures = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self.h1, self.h2)]
        for t in self.threads:
            t.start()

    def h1(self):
        import http.client
        import ssl
        ctx = ssl.create_default_context(cafile=self.cafile or shared_certs().ca)
        ctx.check_hostname = bool(self.cafile)  # the test CA's certificate is "localhost"
        port, host = self.port, self.host

        class Conn(http.client.HTTPSConnection):
            def connect(self):  # to 127.0.0.1, SNI host
                self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), self.timeout),
                                            server_hostname=host)

        conn = Conn(host, self.port, context=ctx, timeout=10 * SLOW)
        while not self.stop.is_set():
            try:
                conn.request("GET", "/h1", headers={"Host": self.host})
                r = conn.getresponse()
                body = r.read()
                if r.status == 200 and body in (b"blue", b"green"):
                    self.ok += 1
                    self.by_proto["h1"] += 1
                else:
                    self.failures.append(("h1", r.status, body[:80]))
            except Exception as e:  # noqa: any error is a failed request
                self.failures.append(("h1", repr(e)))
                conn.close()

    def h2(self):
        try:
            with H2Client(self.port, host=self.host if self.cafile else "localhost", cafile=self.cafile) as c:
                while not self.stop.is_set():
                    s = c.wait_stream(c.request("GET", "/h2", authority=self.host), 10)
                    if s.status == 200 and bytes(s.data) in (b"blue", b"green"):
                        self.ok += 1
                        self.by_proto["h2"] += 1
                    else:
                        self.failures.append(("h2", s.status, bytes(s.data)[:80]))
        except Exception as e:  # noqa
            self.failures.append(("h2", repr(e)))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(20 * SLOW)
        return self.ok, self.failures


class Live(ProxyTestCase):
    """kamal-proxy run starts the real proxyd; a release driven only by kamal-proxy lines."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kamal-live-")
        self.proc = None

    def tearDown(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for f in getattr(self, "logs", []):
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_release_stop_resume_remove(self):
        blue = self.backend(RecordingBackend, response=backend_named("blue"))
        green = self.backend(RecordingBackend, response=backend_named("green"))
        http, https = free_port(), free_port()
        env = dict(os.environ, HOME=self.tmp, HTTP_PORT=str(http), HTTPS_PORT=str(https),
                   KAMAL_PROXY_SOCKET=os.path.join(self.tmp, "kamal-proxy.sock"))
        self.env = {"HOME": self.tmp, "KAMAL_PROXY_SOCKET": env["KAMAL_PROXY_SOCKET"]}
        self.logs = [open(os.path.join(self.tmp, n), "w") for n in ("out.log", "err.log")]
        # a default certificate the test clients trust (run makes a self-signed one only when none is there)
        conf_dir = os.path.join(self.tmp, ".config", "kamal-proxy")
        os.makedirs(conf_dir)
        copy_cert(shared_certs().ec, conf_dir, "default")
        self.proc = subprocess.Popen([kamal_bin(), "run", "--bind", "127.0.0.1", "--http3"], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.logs[0], stderr=self.logs[1])
        self.assertTrue(wait_until(lambda: os.path.exists(env["KAMAL_PROXY_SOCKET"]) or self.proc.poll() is not None,
                                   10), "no socket")
        self.assertIsNone(self.proc.poll(), open(os.path.join(self.tmp, "err.log")).read())

        def get(host="app.test", path="/"):
            # over HTTPS (the default certificate run made): a proxyd without
            # per-service tls_redirect redirects every plain HTTP request
            r = curl("-sk", "-o", "-", "-w", "\n%{http_code}", "--resolve", "%s:%d:127.0.0.1" % (host, https),
                     "https://%s:%d%s" % (host, https, path))
            body, code = r.stdout.decode().rsplit("\n", 1)
            return code, body

        common = ["--host=app.test", "--health-check-path=/up", "--health-check-interval=100ms",
                  "--health-check-timeout=1s", "--deploy-timeout=10s", "--drain-timeout=1s"]
        rc, out, err = run_kamal(["deploy", "myapp-web", "--target=" + blue.addr] + common, self.env)
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(get(), ("200", "blue"))
        # a release and a rollback under HTTP/1.1 and HTTP/2 load: no failed request
        load = Load(https)
        self.assertTrue(wait_until(lambda: load.ok >= 20 or load.failures, 10))
        for target, name in ((green, "green"), (blue, "blue")):
            rc, out, err = run_kamal(["deploy", "myapp-web", "--target=" + target.addr] + common, self.env)
            self.assertEqual(rc, 0, out + err)
            self.assertEqual(get(), ("200", name))
            n = load.ok
            self.assertTrue(wait_until(lambda: load.ok >= n + 20 or load.failures, 10))
        ok, failures = load.finish()
        self.assertEqual(failures, [])
        self.assertGreater(ok, 60)
        self.assertTrue(load.by_proto["h1"] > 0 and load.by_proto["h2"] > 0, load.by_proto)
        self.assertGreater(len(green.requests), 0)
        rc, out, err = run_kamal(["stop", "myapp-web", "--drain-timeout=1s", "--message=Scheduled maintenance"],
                                 self.env)
        self.assertEqual(rc, 0, err)
        code, body = get()
        self.assertEqual(code, "503")
        self.assertIn("Scheduled maintenance", body)
        self.assertEqual(run_kamal(["resume", "myapp-web"], self.env)[0], 0)
        self.assertEqual(get(), ("200", "blue"))
        rc, out, err = run_kamal(["list"], self.env)
        self.assertEqual(rc, 0, err)
        self.assertIn("myapp-web", out)
        self.assertEqual(run_kamal(["remove", "myapp-web"], self.env)[0], 0)
        self.assertEqual(get()[0], "404")
        # a deploy whose target never gets healthy: rc 1, the message on stderr
        dead = "127.0.0.1:%d" % free_port()
        rc, out, err = run_kamal(["deploy", "other", "--target=" + dead, "--deploy-timeout=500ms",
                                  "--health-check-interval=100ms"], self.env)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("kamal-proxy: health_check_failed", err)
        # state under ~/.config/kamal-proxy
        self.assertTrue(os.path.exists(os.path.join(self.tmp, ".config", "kamal-proxy", "state.json")))
        with open(os.path.join(self.tmp, "err.log")) as f:
            self.assertIn("HTTP/3 is not offered yet", f.read())


def fixture_section(title):
    """The command lines of one deploy.yml section of the fixture, as written
    (the shell line, with `docker exec kamal-proxy`)."""
    lines, inside = [], False
    with open(FIXTURE) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# --- "):
                inside = line.startswith("# --- " + title)
            elif inside and line and not line.startswith(("#", "=> ")):
                lines.append(line)
    return lines


def app_named(name):
    """blue/green: GET answers the name (with X-Runtime, a logged response
    header); /echo answers what the app saw of the request; /slow answers
    after 25 s (past the fixture's 20 s target timeout)."""
    def respond(req):
        if req.path == "/echo":
            seen = {"name": name, "content_length": req.header("Content-Length"),
                    "transfer_encoding": req.header("Transfer-Encoding"), "body": len(req.body),
                    "xff": req.header("X-Forwarded-For"), "xfp": req.header("X-Forwarded-Proto")}
            return http_response(200, json.dumps(seen).encode(), headers=[("X-Runtime", "0.042")])
        if req.path == "/big":
            return http_response(200, b"b" * (16 << 20))
        if req.path == "/slow":
            return [25.0, http_response(200, b"too late")]
        return http_response(200, name.encode(), headers=[("X-Runtime", "0.001")])
    return respond


@unittest.skipIf(pebble.available(), pebble.available())
class FixtureLive(ProxyTestCase):
    """The fixture's deploy.yml A lines exactly as Kamal writes them (only the
    container targets, and the error-pages directory, replaced by local
    ones), run by kamal-proxy against the proxyd `kamal-proxy run` started:
    the certificate for example.com and www.example.com over ACME (pebble),
    a release and a rollback under HTTP/1.1 and HTTP/2 load, maintenance and
    live, and every option of the lines checked from the client's side."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kamal-fixture-")
        self.proc = None
        self.logs = []
        self.pb = pebble.Pebble(http_port=free_port())
        self.addCleanup(self.pb.stop)

    tearDown = Live.tearDown

    def kamal_line(self, line):
        """Run one fixture line the way the shell and docker exec would."""
        for old, new in self.subst:
            line = line.replace(old, new)
        argv = shlex.split(line)
        self.assertEqual(argv[:4], ["docker", "exec", "kamal-proxy", "kamal-proxy"])
        rc, out, err = run_kamal(argv[4:], self.env, timeout=60)
        self.assertEqual(rc, 0, "%s\n%s%s" % (line, out, err))
        return out, err

    def https(self, host, path="/", *args):
        """curl https://HOST:PORT/PATH verified against pebble's root: (code, body, headers)."""
        r = curl("-s", "--cacert", self.roots, "-D", "-", "--resolve", "%s:%d:127.0.0.1" % (host, self.https_port),
                 *args, "https://%s:%d%s" % (host, self.https_port, path), timeout=40)
        if r.returncode != 0:
            return None, r.stderr.decode(), ""
        head, _, body = r.stdout.decode("utf-8", "replace").partition("\r\n\r\n")
        while head.startswith("HTTP/1.1 100"):
            head, _, body = body.partition("\r\n\r\n")
        return int(head.split()[1]), body, head.lower()

    def access_log(self):
        with open(os.path.join(self.tmp, "out.log")) as f:
            return [json.loads(line) for line in f if line.startswith("{")]

    def test_deploy_yml_a_lines_live(self):
        lines = fixture_section("deploy.yml A")
        deploy = [l for l in lines if " deploy " in l]
        release, rollback = deploy[0], deploy[1]
        self.assertIn("myapp-web-abc123:3000", release)
        self.assertIn("myapp-web-def456:3000", rollback)
        stop, resume, remove = ([l for l in lines if " kamal-proxy %s " % c in l][0]
                                for c in ("stop", "resume", "remove"))

        blue = self.backend(RecordingBackend, response=app_named("blue"))
        green = self.backend(RecordingBackend, response=app_named("green"))
        apps = os.path.join(self.tmp, "apps-config")
        for version in ("abc123", "def456"):
            d = os.path.join(apps, "myapp", "error_pages", version)
            os.makedirs(d)
            for status in (502, 503):
                with open(os.path.join(d, "%d.html" % status), "w") as f:
                    f.write("<h1>myapp %s: {{ .Status }}</h1><p>{{ .Message }}</p>\n" % version)
        self.subst = [("myapp-web-abc123:3000", blue.addr), ("myapp-web-def456:3000", green.addr),
                      ("/home/kamal-proxy/.apps-config", apps)]
        self.roots = os.path.join(self.tmp, "pebble-roots.pem")
        with open(self.roots, "w") as f:
            f.write(self.pb.issuer_roots())

        # kamal-proxy run: plain HTTP on pebble's validation port, ACME from pebble
        self.https_port = free_port()
        sock = os.path.join(self.tmp, "kamal-proxy.sock")
        env = dict(os.environ, HOME=self.tmp, HTTP_PORT=str(self.pb.http_port), HTTPS_PORT=str(self.https_port),
                   KAMAL_PROXY_SOCKET=sock)
        self.env = {"HOME": self.tmp, "KAMAL_PROXY_SOCKET": sock}
        self.logs = [open(os.path.join(self.tmp, n), "w") for n in ("out.log", "err.log")]
        self.proc = subprocess.Popen([kamal_bin(), "run", "--bind", "127.0.0.1", "--acme-directory",
                                      self.pb.directory, "--acme-ca-bundle", self.pb.ca_bundle],
                                     env=env, stdin=subprocess.DEVNULL, stdout=self.logs[0], stderr=self.logs[1])
        self.assertTrue(wait_until(lambda: os.path.exists(sock) or self.proc.poll() is not None, 10), "no socket")
        self.assertIsNone(self.proc.poll(), open(os.path.join(self.tmp, "err.log")).read())

        def err_log():
            with open(os.path.join(self.tmp, "err.log")) as f:
                return f.read()[-4000:]

        # the version in production before the release: the rollback line's
        self.kamal_line(rollback)
        # --tls: the certificate for both hosts comes over ACME, then HTTPS verifies against pebble's root
        for host in ("example.com", "www.example.com"):
            self.assertTrue(wait_until(lambda: self.https(host)[:2] == (200, "green"), 30, interval=0.2),
                            "%s: %r\n%s" % (host, self.https(host), err_log()))
        # plain HTTP redirects to HTTPS (a --tls service)
        r = curl("-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "--resolve",
                 "example.com:%d:127.0.0.1" % self.pb.http_port, "http://example.com:%d/x?y=1" % self.pb.http_port)
        code, loc = r.stdout.decode().split(" ", 1)
        self.assertEqual(code, "301")
        self.assertTrue(loc.startswith("https://example.com") and loc.endswith("/x?y=1"), loc)

        # --buffer-requests: a chunked upload reaches the app whole, with a Content-Length
        body = b"x" * 300000
        code, text, _ = self.https("example.com", "/echo", "-H", "Transfer-Encoding: chunked",
                                   "--data-binary", "@" + self._file(body))
        self.assertEqual(code, 200, text)
        seen = json.loads(text)
        self.assertEqual((seen["name"], seen["content_length"], seen["transfer_encoding"], seen["body"]),
                         ("green", str(len(body)), None, len(body)))
        # --max-request-body 40000000: one byte more is refused with 413, the app sees nothing
        big = os.path.join(self.tmp, "big.bin")
        with open(big, "wb") as f:
            f.truncate(40000001)
        n = len(green.requests)
        self.assertEqual(self.https("example.com", "/echo", "-X", "POST", "-T", big)[0], 413)
        os.unlink(big)
        self.assertEqual(len(green.requests), n)
        # --buffer-responses --buffer-memory 2000000: a 16 MiB answer to a client that does not read
        # is taken from the app at once, past 2 MB into an unlinked file under run's temp_dir
        spool = os.path.join(self.tmp, ".config", "kamal-proxy", "tmp")

        def spooled():
            out = []
            for fd in os.listdir("/proc/%d/fd" % self.proc.pid):
                try:
                    t = os.readlink("/proc/%d/fd/%s" % (self.proc.pid, fd))
                except OSError:
                    continue
                if t.startswith(spool + "/"):
                    out.append(t)
            return out

        ctx = ssl.create_default_context(cafile=self.roots)
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(10 * SLOW)
        raw.connect(("127.0.0.1", self.https_port))
        with ctx.wrap_socket(raw, server_hostname="example.com") as slow_reader:
            slow_reader.sendall(b"GET /big HTTP/1.1\r\nHost: example.com\r\n\r\n")
            self.assertTrue(slow_reader.recv(100).startswith(b"HTTP/1.1 200"))
            self.assertTrue(wait_until(spooled, 10), "the response did not spill to %s" % spool)
        self.assertTrue(wait_until(lambda: not spooled(), 10), spooled())
        # --health-check-path /up: the app's health endpoint is what the checks ask
        self.assertTrue(green.health_requests)
        self.assertEqual({r.path for r in green.health_requests}, {"/up"})
        # --forward-headers: the client's X-Forwarded-For is kept (and appended to)
        code, text, _ = self.https("example.com", "/echo", "-H", "X-Forwarded-For: 203.0.113.7",
                                   "-H", "X-Forwarded-Proto: https", "-H", "Cache-Control: no-cache",
                                   "-H", "X-Request-Start: t=1700000000000")
        seen = json.loads(text)
        self.assertEqual((seen["xff"], seen["xfp"]), ("203.0.113.7, 127.0.0.1", "https"))
        # --log-request-header / --log-response-header: in the access log's JSON
        logged = wait_until(lambda: [e for e in self.access_log() if e.get("req_cache_control")], 5)
        self.assertTrue(logged, self.access_log()[-3:])
        self.assertEqual((logged[-1].get("req_cache_control"), logged[-1].get("req_x_request_start"),
                          logged[-1].get("resp_x_runtime")), ("no-cache", "t=1700000000000", "0.042"))

        # the release (kamal deploy) and the rollback (kamal rollback) under HTTP/1.1 and HTTP/2 load
        load = Load(self.https_port, host="example.com", cafile=self.roots)
        self.assertTrue(wait_until(lambda: load.ok >= 20 or load.failures, 10))
        for line, name in ((release, "blue"), (rollback, "green")):
            self.kamal_line(line)
            self.assertEqual(self.https("www.example.com")[:2], (200, name))
            n = load.ok
            self.assertTrue(wait_until(lambda: load.ok >= n + 20 or load.failures, 10))
        ok, failures = load.finish()
        self.assertEqual(failures, [])
        self.assertGreater(ok, 60)
        self.assertTrue(load.by_proto["h1"] > 0 and load.by_proto["h2"] > 0, load.by_proto)
        self.assertTrue([r for r in blue.requests if r.path in ("/h1", "/h2")])

        # kamal app maintenance: 503 from the error-pages directory with the message; kamal app live
        self.kamal_line(stop)
        code, text, head = self.https("example.com")
        self.assertEqual(code, 503)
        self.assertIn("text/html", head)
        self.assertIn("<h1>myapp def456: 503</h1><p>Scheduled maintenance</p>", text)
        self.kamal_line(resume)
        self.assertEqual(self.https("example.com")[:2], (200, "green"))

        # --target-timeout 20s: a response that takes longer is cut with 504
        t0 = time.monotonic()
        code, text, _ = self.https("example.com", "/slow")
        self.assertEqual(code, 504, text)
        self.assertGreaterEqual(time.monotonic() - t0, 19.5)

        # the target down: 502 from the error-pages directory
        green.close()
        code, text, head = self.https("example.com")
        self.assertEqual(code, 502, text)
        self.assertIn("<h1>myapp def456: 502</h1>", text)

        # kamal app remove: the hosts are no longer served (nor their certificate: the default one answers)
        self.kamal_line(remove)
        self.assertIsNone(self.https("example.com")[0])
        self.assertEqual(self.https("example.com", "/", "-k")[0], 404)

    def _file(self, data):
        path = os.path.join(self.tmp, "upload.bin")
        with open(path, "wb") as f:
            f.write(data)
        return path
