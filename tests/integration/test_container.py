"""The container image and compose.yaml, for real with podman
(../shared/CONTAINERS.md): a base image made from Debian packages with
mmdebstrap (no registry is reachable), the Dockerfile built from it
(--format docker keeps the HEALTHCHECK), then: the image serves
health_path as a non-root user on port 80, `podman healthcheck run`
passes, compose's release step (`proxyctl deploy web --target
web-green:3000` through `exec`) switches blue -> green under load with zero
failed requests, `podman stop` lets a slow request finish and proxyd exit
0, and the `kamal` target boots as Kamal boots it (no command:
`kamal-proxy run`) with Kamal's volumes.

Everything lives in a podman storage of its own under a temp directory
(CONTAINERS_STORAGE_CONF): every image, layer, container and volume the
module makes goes with it; the networks, which podman keeps globally, are
removed by name. Published ports are 127.0.0.1 high ports."""

import atexit
import http.client
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from harness import SLOW, build_dir, free_port, wait_until

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NAME = "pxct%d" % os.getpid()
BASE = "localhost/%s-base:bookworm" % NAME
IMAGE = "localhost/%s-proxyd:test" % NAME
KAMAL_IMAGE = "localhost/%s-proxyd:kamal" % NAME
APP_IMAGE = "localhost/%s-app:test" % NAME
NET = NAME + "-net"
# the runtime libraries (so the runtime stage needs no network) and what the
# HEALTHCHECK and `kamal-proxy run` use
with open(os.path.join(REPO, "conf", "runtime-packages.txt")) as _f:  # the Dockerfile's list too
    BASE_PACKAGES = ",".join(line.strip() for line in _f if line.strip() and not line.startswith("#"))
TOOLS = ("podman", "podman-compose", "mmdebstrap", "curl")
APT = ("podman", "buildah", "runc", "conmon", "netavark", "aardvark-dns", "iptables", "slirp4netns",
       "fuse-overlayfs", "uidmap", "mmdebstrap", "podman-compose")
CONF_D = "/etc/containers/containers.conf.d"

_F = {"env": None, "tmp": None, "containers": [], "networks": [], "error": None}


def run(argv, timeout=60, check=False, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout * SLOW, env=_F["env"],
                       stdin=subprocess.DEVNULL, **kw)
    if check and r.returncode != 0:
        raise AssertionError("%s: exit %d\n%s%s" % (" ".join(argv), r.returncode, r.stdout[-3000:],
                                                     r.stderr[-3000:]))
    return r


def podman(*args, timeout=60, check=False):
    return run(["podman"] + list(args), timeout=timeout, check=check)


def setup_podman():
    """CONTAINERS.md's setup: as root, install and configure what is missing;
    otherwise name it."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    confs = {"50-runc.conf": '[engine]\nruntime = "runc"\n',
             "60-ulimits.conf": None}
    have_conf = {n: os.path.exists(os.path.join(CONF_D, n)) for n in confs}
    if not missing and all(have_conf.values()):
        return
    if os.getuid() != 0:
        raise AssertionError("podman is not set up (../shared/CONTAINERS.md): missing %s; as root: apt-get install "
                             "%s and %s/{50-runc,60-ulimits}.conf" % (missing + [n for n, h in have_conf.items()
                                                                               if not h], " ".join(APT), CONF_D))
    if missing:
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + list(APT),
                           capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if r.returncode != 0:
            raise AssertionError("apt-get install %s failed:\n%s" % (" ".join(APT), r.stderr[-2000:]))
    os.makedirs(CONF_D, exist_ok=True)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 1048576 if hard == resource.RLIM_INFINITY else hard
    confs["60-ulimits.conf"] = '[containers]\ndefault_ulimits = ["nofile=%d:%d", "nproc=4096:4096"]\n' % (hard, hard)
    for n, text in confs.items():
        if not have_conf[n]:
            with open(os.path.join(CONF_D, n), "w") as f:
                f.write(text)


def fixture():
    """The base image, the proxyd image (and its kamal target), the app
    image, the network and the two app containers: made once per module
    process (the runner runs each test on its own), removed at exit or on
    the runner's SIGTERM."""
    if _F["error"]:
        raise AssertionError(_F["error"])
    if _F.get("ready"):
        return
    try:
        _make_fixture()
    except BaseException as e:
        _F["error"] = "fixture: %s" % e
        raise
    _F["ready"] = True


def _on_term(signum, frame):
    cleanup()
    prev = _F.get("prev_term")
    if callable(prev):
        prev(signum, frame)
    os._exit(3)


def _make_fixture():
    setup_podman()
    tmp = tempfile.mkdtemp(prefix="proxyd-ct-")
    _F["tmp"] = tmp
    atexit.register(cleanup)
    _F["prev_term"] = signal.signal(signal.SIGTERM, _on_term)
    conf = os.path.join(tmp, "storage.conf")
    with open(conf, "w") as f:
        f.write('[storage]\ndriver = "overlay"\ngraphroot = "%s/storage"\nrunroot = "%s/run"\n' % (tmp, tmp))
    _F["env"] = dict(os.environ, CONTAINERS_STORAGE_CONF=conf, BUILDAH_FORMAT="docker")
    t0 = time.monotonic()
    # the base image: Debian's minbase from the machine's own package mirror
    deb = subprocess.Popen(["mmdebstrap", "--quiet", "--variant=minbase",
                            "--dpkgopt=path-exclude=/usr/share/{man,doc,locale,info}/*",
                            "--include=" + BASE_PACKAGES, "bookworm", "-"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_F["env"])
    imp = subprocess.run(["podman", "import", "-", BASE], stdin=deb.stdout, capture_output=True, text=True,
                         timeout=300 * SLOW, env=_F["env"])
    deb.stdout.close()
    err = deb.stderr.read().decode(errors="replace")
    if deb.wait(timeout=60) != 0 or imp.returncode != 0:
        raise AssertionError("base image: mmdebstrap | podman import failed:\n%s%s" % (err[-2000:], imp.stderr))
    _F["t_base"] = time.monotonic() - t0
    # the app builds (apt-get python3) while proxyd compiles
    t0 = time.monotonic()
    app = subprocess.Popen(["podman", "build", "--format", "docker", "--build-arg", "BASE=" + BASE, "-t", APP_IMAGE,
                            os.path.join(REPO, "compose", "app")], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=_F["env"])
    try:
        run(["podman", "build", "--format", "docker", "--build-arg", "BASE=" + BASE, "-t", IMAGE, REPO],
            timeout=600, check=True)
        _F["t_build"] = time.monotonic() - t0
        # the kamal target: every layer but its CMD/HEALTHCHECK from the cache
        t1 = time.monotonic()
        r = run(["podman", "build", "--format", "docker", "--build-arg", "BASE=" + BASE,
                 "--target", "kamal", "-t", KAMAL_IMAGE, REPO], timeout=300, check=True)
        _F["kamal_build"] = r.stdout + r.stderr
        _F["t_kamal"] = time.monotonic() - t1
    finally:
        out = app.communicate(timeout=600 * SLOW)[0].decode(errors="replace")
    if app.returncode != 0:
        raise AssertionError("app image build failed:\n" + out[-3000:])
    podman("network", "create", NET, check=True)
    _F["networks"].append(NET)
    for color in ("blue", "green"):
        start("web-" + color, "-e", "COLOR=" + color, APP_IMAGE)


def start(name, *args):
    """podman run -d --name NAME-name on the module's network with alias name."""
    cname = "%s-%s" % (NAME, name)
    _F["containers"].append(cname)
    podman("run", "-d", "--name", cname, "--network", NET, "--network-alias", name, *args, check=True)
    return cname


def cleanup():
    if _F["tmp"] is None:
        return
    for c in reversed(_F["containers"]):
        podman("rm", "-f", "-v", "-t", "1", c)
    _F["containers"].clear()
    podman("rm", "-a", "-f", "-v", "-t", "1")  # this module's storage only
    for n in _F["networks"]:
        podman("network", "rm", "-f", n)
    _F["networks"].clear()
    podman("volume", "rm", "-a", "-f")
    podman("rmi", "-a", "-f", timeout=120)
    tmp, _F["tmp"] = _F["tmp"], None
    subprocess.run(["sh", "-c", "grep -o ' %s[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l" % tmp],
                   capture_output=True)
    shutil.rmtree(tmp, ignore_errors=True)


def curl(url, *args, timeout=10):
    r = subprocess.run(["curl", "-sS", "-k", "--max-time", str(timeout), "-o", "-", "-w", "\n%{http_code}", url]
                       + list(args), capture_output=True, text=True, timeout=timeout + 5)
    body, _, code = r.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), body.strip()


def wait_health(port, timeout=20):
    return wait_until(lambda: curl("http://127.0.0.1:%d/health" % port, timeout=2)[0] == 200, timeout, 0.2)


def in_flight(cname, service="web"):
    r = podman("exec", cname, "proxyctl", "--json", "list")
    try:
        svcs = json.loads(r.stdout)
    except ValueError:
        return 0
    svcs = svcs.get("services", svcs) if isinstance(svcs, dict) else svcs
    for s in svcs if isinstance(svcs, list) else []:
        if s.get("name") == service:
            return int(s.get("in_flight") or 0)
    return 0


def compiled_again(build_out):
    """Whether a cached rebuild ran the make step instead of taking its layer."""
    lines = build_out.splitlines()
    for i, l in enumerate(lines):
        if "STEP" in l and "make -s" in l:
            return not (i + 1 < len(lines) and "Using cache" in lines[i + 1])
    return True


class Load:
    """HTTP/1.1 keep-alive clients in threads, as fast as the proxy answers,
    until stop() (at most 120 s): every status and body counted."""

    def __init__(self, port, threads=4):
        self.port, self.stop_ev, self.lock = port, threading.Event(), threading.Lock()
        self.ok, self.failures, self.bodies = 0, [], {}
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def loop(self):
        deadline = time.monotonic() + 120
        conn = None
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/")
                r = conn.getresponse()
                body = r.read().decode().strip()
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                        self.bodies[body] = self.bodies.get(body, 0) + 1
                    else:
                        self.failures.append("%d %s" % (r.status, body[:80]))
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # a reset or a refused connection is a failed request
                with self.lock:
                    self.failures.append(repr(e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def count(self):
        with self.lock:
            return self.ok

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(15)


def running(key, *args):
    """A container shared by the tests of one concern, started on first use:
    (name, published http port, published https port)."""
    if key not in _F:
        port, sport = free_port(), free_port()
        c = start(key, "-p", "127.0.0.1:%d:80" % port, "-p", "127.0.0.1:%d:443" % sport, *args)
        if not wait_health(port):
            raise AssertionError("%s: no 200 on /health:\n%s" % (key, podman("logs", c).stderr[-2000:]))
        _F[key] = (c, port, sport)
    return _F[key]


def image_config(image):
    """The image's config, with the HEALTHCHECK (podman shows it beside Config)."""
    top = json.loads(podman("image", "inspect", image, check=True).stdout)[0]
    cfg = dict(top["Config"])
    cfg["Healthcheck"] = cfg.get("Healthcheck") or top.get("HealthCheck") or top.get("Healthcheck") or {}
    return cfg


# The image compiles the source itself: a sanitizer or fuzz build dir changes
# nothing in it, so `make asan` does not build it a second time.
OTHER_BUILD = os.path.basename(build_dir().rstrip("/")) not in ("build", "") and \
    any(k in os.path.basename(build_dir()) for k in ("asan", "fuzz"))


@unittest.skipIf(OTHER_BUILD, "the image builds the source itself (tested with the plain build)")
class ContainerImage(unittest.TestCase):
    def setUp(self):
        fixture()

    def test_image_config(self):
        cfg = image_config(IMAGE)
        self.assertEqual(cfg["User"], "proxyd:proxyd")
        self.assertEqual(sorted(cfg["ExposedPorts"]), ["443/tcp", "80/tcp"])
        self.assertEqual(sorted(cfg["Volumes"]), ["/run/proxyd", "/var/lib/proxyd"])
        self.assertEqual(cfg["Cmd"], ["proxyd", "-c", "/etc/proxyd/proxyd.ini"])
        self.assertIn("curl -fsS", " ".join(cfg["Healthcheck"]["Test"]))
        self.assertIn("/health", " ".join(cfg["Healthcheck"]["Test"]))
        size = int(json.loads(podman("image", "inspect", IMAGE).stdout)[0]["Size"])
        base = int(json.loads(podman("image", "inspect", BASE).stdout)[0]["Size"])
        print("\n[container] base %.0fs, build %.0fs, kamal target %.1fs; image %.1f MB (base %.1f MB + %.1f MB)" % (
            _F["t_base"], _F["t_build"], _F["t_kamal"], size / 1e6, base / 1e6, (size - base) / 1e6))

    def test_image_kamal_target(self):
        cfg = image_config(KAMAL_IMAGE)
        self.assertEqual(cfg["Cmd"], ["kamal-proxy", "run"])
        self.assertEqual(cfg["User"], "proxyd:proxyd")
        self.assertIn("HOME=/home/kamal-proxy", cfg["Env"])
        self.assertIn("/health", " ".join(cfg["Healthcheck"]["Test"]))
        # the kamal target took the compiled layers from the cache: nothing built twice
        self.assertFalse(compiled_again(_F["kamal_build"]), _F["kamal_build"][-3000:])

    def test_image_runtime_contents(self):
        # the install tree, the container config (it checks), no compiler, the capability
        r = podman("run", "--rm", "--network", "none", IMAGE, "sh", "-c",
                   "proxyd -t -c /etc/proxyd/proxyd.ini && ls -l /usr/bin/kamal-proxy && "
                   "! command -v cc && ! command -v make && echo no-compiler", check=True)
        self.assertIn("configuration ok", r.stdout + r.stderr)
        self.assertIn("kamal-proxy -> proxyctl", r.stdout)
        self.assertIn("no-compiler", r.stdout)
        # `kamal-proxy run` as the command of the default image too
        r = podman("run", "--rm", "--network", "none", IMAGE, "sh", "-c",
                   "kamal-proxy run & for i in $(seq 100); do curl -fsS http://127.0.0.1/health && break; "
                   "sleep 0.1; done; kill $!; wait $!; echo exit=$?", timeout=60)
        self.assertIn("healthy", r.stdout, r.stderr[-2000:])
        self.assertIn("exit=0", r.stdout, r.stderr[-2000:])  # SIGTERM: a graceful stop

    def test_runs_as_non_root_on_port_80(self):
        c, port, _ = running("px", IMAGE)
        self.assertEqual(podman("exec", c, "id", "-u").stdout.strip(), "1000")
        status = podman("exec", c, "cat", "/proc/1/status").stdout
        uid = [l.split()[1:] for l in status.splitlines() if l.startswith("Uid:")][0]
        self.assertEqual(uid, ["1000"] * 4)  # proxyd is pid 1 and listens on :80 as uid 1000
        self.assertIn("proxyd", podman("exec", c, "cat", "/proc/1/cmdline").stdout)
        self.assertEqual(curl("http://127.0.0.1:%d/health" % port), (200, "healthy"))
        # the control socket in /run/proxyd answers
        self.assertEqual(podman("exec", c, "proxyctl", "status").returncode, 0)

    def test_healthcheck_run(self):
        c, port, _ = running("px", IMAGE)
        r = podman("healthcheck", "run", c)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        state = json.loads(podman("inspect", c).stdout)[0]["State"]
        health = state.get("Health") or state.get("Healthcheck") or {}
        self.assertEqual(health.get("Status"), "healthy", health)

    def test_deploy_with_podman_exec(self):
        c, port, _ = running("px", IMAGE)
        r = podman("exec", c, "proxyctl", "deploy", "web", "--target", "web-blue:3000")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(curl("http://127.0.0.1:%d/" % port), (200, "blue"))
        r = podman("exec", c, "proxyctl", "deploy", "web", "--target", "web-green:3000")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(curl("http://127.0.0.1:%d/" % port), (200, "green"))
        self.assertIn("web-green:3000", podman("exec", c, "cat", "/var/lib/proxyd/state.json").stdout)

    def test_compose_blue_green_under_load(self):
        """compose.yaml as it is (images pre-built, so up builds nothing): the
        documented release step under load, zero failed requests."""
        port, sport = free_port(), free_port()
        proj = NAME + "c"
        env = dict(_F["env"], PROXYD_IMAGE=IMAGE, APP_IMAGE=APP_IMAGE, BASE=BASE, PROXYD_BIND="127.0.0.1",
                   PROXYD_HTTP_PORT=str(port), PROXYD_HTTPS_PORT=str(sport))

        def compose(*args, timeout=120):
            return subprocess.run(["podman-compose", "-p", proj, "-f", os.path.join(REPO, "compose.yaml")]
                                  + list(args), capture_output=True, text=True, env=env, cwd=REPO,
                                  timeout=timeout * SLOW, stdin=subprocess.DEVNULL)

        _F["networks"].append(proj + "_default")
        try:
            r = compose("up", "-d")
            self.assertEqual(r.returncode, 0, r.stdout[-2000:] + r.stderr[-2000:])
            self.assertNotIn("STEP", r.stdout)  # nothing was built
            px = proj + "_proxyd_1"
            self.assertTrue(wait_health(port), podman("logs", px).stderr[-2000:])
            r = compose("exec", "-T", "proxyd", "proxyctl", "deploy", "web", "--target", "web-blue:3000")
            self.assertIn("exit code: 0", r.stdout, r.stdout + r.stderr)
            self.assertEqual(curl("http://127.0.0.1:%d/" % port), (200, "blue"))
            load = Load(port)
            try:
                self.assertTrue(wait_until(lambda: load.count() > 50, 10))
                # the release step, as the README documents it
                r = compose("exec", "-T", "proxyd", "proxyctl", "deploy", "web", "--target", "web-green:3000")
                self.assertIn("exit code: 0", r.stdout, r.stdout + r.stderr)
                n = load.count()
                self.assertTrue(wait_until(lambda: load.count() > n + 50, 10))
                r = compose("exec", "-T", "proxyd", "proxyctl", "rollback", "web")
                self.assertIn("exit code: 0", r.stdout, r.stdout + r.stderr)
                n = load.count()
                self.assertTrue(wait_until(lambda: load.count() > n + 50, 10))
            finally:
                load.stop()
            print("\n[container] compose release under load: %d requests %s, %d failed"
                  % (load.ok, load.bodies, len(load.failures)))
            self.assertEqual(load.failures[:5], [])
            self.assertGreater(load.bodies.get("blue", 0), 0)
            self.assertGreater(load.bodies.get("green", 0), 0)
            self.assertEqual(sorted(load.bodies), ["blue", "green"])
            self.assertEqual(curl("http://127.0.0.1:%d/" % port), (200, "blue"))
            r = podman("exec", px, "cat", "/var/lib/proxyd/state.json")  # the state volume holds the deploy
            self.assertIn("web-blue:3000", r.stdout)
        finally:
            compose("down", "-v", "-t", "5")
            podman("rm", "-f", "-v", "-t", "1", proj + "_proxyd_1", proj + "_web-blue_1", proj + "_web-green_1")
            podman("volume", "rm", "-f", proj + "_proxyd-state")
            podman("network", "rm", "-f", proj + "_default")

    def test_stop_drains_a_request_in_flight(self):
        c, port, _ = running("px-stop", IMAGE)
        r = podman("exec", c, "proxyctl", "deploy", "web", "--target", "web-blue:3000")
        self.assertEqual(r.returncode, 0, r.stderr)
        got = {}
        t = threading.Thread(target=lambda: got.update(r=curl("http://127.0.0.1:%d/slow?ms=3000" % port,
                                                               timeout=30)))
        t.start()
        try:
            self.assertTrue(wait_until(lambda: in_flight(c) > 0, 10, 0.1), podman("exec", c, "proxyctl", "list").stdout)
            r = podman("stop", "-t", "25", c, timeout=40)
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            t.join(35)
        self.assertEqual(got.get("r"), (200, "blue"))  # answered, not cut
        state = json.loads(podman("inspect", c).stdout)[0]["State"]
        self.assertEqual(state["ExitCode"], 0, state)
        logs = podman("logs", c)
        text = logs.stdout + logs.stderr
        self.assertIn("stopping: finishing in-flight requests", text)
        self.assertIn("stopped", text.split("stopping:")[-1])

    def kamal(self):
        return running("kamal-proxy", "--volume", NAME + "-kamal-config:/home/kamal-proxy/.config/kamal-proxy",
                       "--volume", NAME + "-apps-config:/home/kamal-proxy/.apps-config", KAMAL_IMAGE)

    def test_kamal_proxy_run_as_kamal_boots_it(self):
        """Kamal runs the image with no command and its two volumes."""
        c, port, sport = self.kamal()
        self.assertEqual(json.loads(podman("inspect", c).stdout)[0]["Config"]["Cmd"], ["kamal-proxy", "run"])
        self.assertEqual(curl("http://127.0.0.1:%d/health" % port), (200, "healthy"))
        self.assertEqual(curl("https://127.0.0.1:%d/health" % sport), (200, "healthy"))  # the self-signed default
        self.assertEqual(podman("exec", c, "id", "-u").stdout.strip(), "1000")
        r = podman("healthcheck", "run", c)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        files = podman("exec", c, "ls", "-a", "/home/kamal-proxy/.config/kamal-proxy").stdout.split()
        for f in ("proxyd.ini", "default.crt", "default.key"):
            self.assertIn(f, files)

    def test_kamal_proxy_deploy_by_docker_exec(self):
        """`docker exec kamal-proxy kamal-proxy deploy ...` as Kamal sends it."""
        c, port, sport = self.kamal()
        r = podman("exec", c, "kamal-proxy", "deploy", "web", "--target=web-green:3000",
                   "--health-check-interval=0.5s", "--deploy-timeout=20s")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(curl("https://127.0.0.1:%d/" % sport), (200, "green"))
        r = podman("exec", c, "kamal-proxy", "list")
        self.assertIn("web-green:3000", r.stdout, r.stderr)
        r = podman("exec", c, "cat", "/home/kamal-proxy/.config/kamal-proxy/state.json")
        self.assertIn("web-green:3000", r.stdout)  # in Kamal's volume


if __name__ == "__main__":
    unittest.main()
