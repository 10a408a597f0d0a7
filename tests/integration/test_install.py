"""Installing and running: `make install DESTDIR=...` (file list, the
config never overwritten, uninstall), the man pages render without a
warning, the systemd units pass `systemd-analyze verify` and the service's
sandbox scores at most 2.0 in `systemd-analyze security`, and logrotate
with the shipped file against a live proxyd under load loses no line."""

import glob
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

from harness import SLOW, Client, ProxyTestCase, build_dir, wait_until

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

INSTALLED = sorted([
    "etc/logrotate.d/proxyd",
    "etc/proxyd/proxyd.ini",
    "usr/bin/kamal-proxy",
    "usr/bin/proxyctl",
    "usr/lib/systemd/system/proxyd.service",
    "usr/lib/systemd/system/proxyd.socket",
    "usr/sbin/proxyd",
    "usr/share/man/man5/proxyd.ini.5",
    "usr/share/man/man8/kamal-proxy.8",
    "usr/share/man/man8/proxyctl.8",
    "usr/share/man/man8/proxyd.8",
])


def make(*args, timeout=120):
    return subprocess.run(["make", "-s", "-C", REPO, "B=" + build_dir()] + list(args), capture_output=True,
                          text=True, timeout=timeout * SLOW)


def files_under(root):
    out = []
    for d, _, names in os.walk(root):
        for n in names:
            out.append(os.path.relpath(os.path.join(d, n), root))
    return sorted(out)


class Install(ProxyTestCase):
    def setUp(self):
        self.dest = tempfile.mkdtemp(prefix="proxyd-install-")
        self.addCleanup(shutil.rmtree, self.dest, True)
        r = make("install", "DESTDIR=" + self.dest, "PREFIX=/usr")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_file_list_and_modes(self):
        self.assertEqual(files_under(self.dest), INSTALLED)
        self.assertEqual(os.readlink(os.path.join(self.dest, "usr/bin/kamal-proxy")), "proxyctl")
        self.assertTrue(os.access(os.path.join(self.dest, "usr/sbin/proxyd"), os.X_OK))
        unit = open(os.path.join(self.dest, "usr/lib/systemd/system/proxyd.service")).read()
        self.assertNotRegex(unit, r"@[A-Z]+@")  # every placeholder filled in
        self.assertIn("ExecStart=/usr/sbin/proxyd -c /etc/proxyd/proxyd.ini", unit)
        self.assertIn("ExecReload=/usr/bin/proxyctl --socket /run/proxyd/control.sock reload", unit)
        # the installed proxyd checks the installed example config's syntax (its
        # certificate paths do not exist here: the error names the file and line)
        r = subprocess.run([os.path.join(self.dest, "usr/sbin/proxyd"), "-V"], capture_output=True, text=True)
        self.assertRegex(r.stdout, r"^proxyd \d+\.\d+\.\d+")

    def test_config_is_never_overwritten_and_uninstall_keeps_it(self):
        conf = os.path.join(self.dest, "etc/proxyd/proxyd.ini")
        with open(conf, "w") as f:
            f.write("[proxy]\nlisten_http = 127.0.0.1:8080\n; mine\n")
        r = make("install", "DESTDIR=" + self.dest, "PREFIX=/usr")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("keeping", r.stdout)
        self.assertIn("; mine", open(conf).read())
        r = make("uninstall", "DESTDIR=" + self.dest, "PREFIX=/usr")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(files_under(self.dest), ["etc/proxyd/proxyd.ini"])

    def test_prefix_local(self):
        d = tempfile.mkdtemp(prefix="proxyd-install-")
        self.addCleanup(shutil.rmtree, d, True)
        r = make("install", "DESTDIR=" + d)  # PREFIX=/usr/local: config under /usr/local/etc
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("usr/local/etc/proxyd/proxyd.ini", files_under(d))
        unit = open(os.path.join(d, "usr/local/lib/systemd/system/proxyd.service")).read()
        self.assertIn("ExecStart=/usr/local/sbin/proxyd -c /usr/local/etc/proxyd/proxyd.ini", unit)

    def test_man_pages_render_without_warnings(self):
        for page in glob.glob(os.path.join(self.dest, "usr/share/man/man*/*")):
            r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", page], capture_output=True, text=True)
            self.assertEqual((r.returncode, r.stderr), (0, ""), page)
            r = subprocess.run(["man", "--warnings", "-l", page], capture_output=True, text=True,
                               env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="0"))
            self.assertEqual((r.returncode, r.stderr), (0, ""), page)
            text = re.sub(".\x08", "", r.stdout)  # no overstrike (bold) in the comparison
            self.assertIn("NAME", text)
            self.assertIn("SEE ALSO", text)

    def _units_here(self):
        """The installed units with their binaries pointed into DESTDIR, so
        that verify finds them."""
        d = tempfile.mkdtemp(prefix="proxyd-units-")
        self.addCleanup(shutil.rmtree, d, True)
        src = os.path.join(self.dest, "usr/lib/systemd/system")
        for name in ("proxyd.service", "proxyd.socket"):
            text = open(os.path.join(src, name)).read()
            text = text.replace("/usr/sbin/", self.dest + "/usr/sbin/").replace("/usr/bin/", self.dest + "/usr/bin/")
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        return d

    def test_systemd_analyze_verify(self):
        d = self._units_here()
        r = subprocess.run(["systemd-analyze", "verify", "./proxyd.socket", "./proxyd.service"], cwd=d,
                           capture_output=True, text=True, timeout=60 * SLOW,
                           env=dict(os.environ, MANPATH=os.path.join(self.dest, "usr/share/man")))
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))

    def test_sandbox_exposure_at_most_2(self):
        d = self._units_here()
        r = subprocess.run(["systemd-analyze", "security", "--offline=true", "./proxyd.service"], cwd=d,
                           capture_output=True, text=True, timeout=60 * SLOW)
        m = re.search(r"Overall exposure level for proxyd.service: (\d+\.\d+)", r.stdout)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        self.assertLessEqual(float(m.group(1)), 2.0, r.stdout)


class Logrotate(ProxyTestCase):
    """The shipped /etc/logrotate.d/proxyd, its paths pointed at a temp dir,
    run with `logrotate -f` while requests keep coming: every request's line
    is in access.log.1 or access.log, and after proxyd logged the reopen no
    line goes to the rotated file."""

    def test_rotate_under_load_loses_nothing(self):
        if shutil.which("logrotate") is None:
            self.fail("logrotate is missing (Debian package logrotate; tests/deps-test.txt)")
        b = self.backend()
        logdir = tempfile.mkdtemp(prefix="proxyd-logs-")
        self.addCleanup(shutil.rmtree, logdir, True)
        p = self.proxy("[proxy]\naccess_log = %s/access.log\nerror_log = %s/error.log\n"
                       "pid_file = {tmp}/proxyd.pid\n[service web]\ntargets = %s\n" % (logdir, logdir, b.addr))
        conf = open(os.path.join(REPO, "conf/logrotate/proxyd")).read()
        conf = conf.replace("/var/log/proxyd", logdir).replace("/run/proxyd/proxyd.pid",
                                                                os.path.join(p.tmp, "proxyd.pid"))
        conf = re.sub(r"\n\s*su proxyd adm", "", conf)  # the test runs as root, the files are root's
        conf = conf.replace("create 0640 proxyd adm", "create 0640 root root")
        lr = os.path.join(p.tmp, "logrotate.conf")
        with open(lr, "w") as f:
            f.write(conf)

        sent = [0]
        stop = threading.Event()
        errors = []

        def load():
            try:
                with Client(p.port) as c:
                    while not stop.is_set() and sent[0] < 20000:
                        r = c.request("GET", "/n%d" % sent[0])
                        if r.status != 200:
                            errors.append(r.status)
                        sent[0] += 1
            except Exception as e:  # pragma: no cover - reported below
                errors.append(repr(e))
        t = threading.Thread(target=load)
        t.start()
        try:
            wait_until(lambda: sent[0] >= 200, 10)
            r = subprocess.run(["logrotate", "-f", "-s", os.path.join(p.tmp, "lr.state"), lr],
                               capture_output=True, text=True, timeout=30 * SLOW)
            self.assertEqual(r.returncode, 0, r.stderr)
            rotated = os.path.join(logdir, "access.log.1")
            wait_until(lambda: "log files reopened" in open(os.path.join(logdir, "error.log")).read(), 5)
            size_at_reopen = os.path.getsize(rotated)
            before = sent[0]
            wait_until(lambda: sent[0] >= before + 200, 10)
        finally:
            stop.set()
            t.join(10 * SLOW)
        self.assertEqual(errors, [])
        # the last requests' lines are written once the answers went out
        total = sent[0]
        wait_until(lambda: len(p.access_log_lines(os.path.join(logdir, "access.log"))) +
                   len(p.access_log_lines(rotated)) >= total, 5)
        self.assertEqual(os.path.getsize(rotated), size_at_reopen)  # nothing after the reopen
        paths = [e["path"] for e in p.access_log_lines(rotated)] + \
                [e["path"] for e in p.access_log_lines(os.path.join(logdir, "access.log"))]
        self.assertEqual(sorted(paths), sorted("/n%d" % i for i in range(total)))
        self.assertGreater(len(p.access_log_lines(os.path.join(logdir, "access.log"))), 0)


class RuntimePackages(ProxyTestCase):
    def test_every_linked_library_is_in_the_runtime_list(self):
        """conf/runtime-packages.txt (the container image's runtime stage and the
        container test's base) names the package of every library proxyd
        links (its NEEDED entries; theirs come with their packages): a new
        dependency that misses it fails here, not in an image."""
        want = set(open(os.path.join(REPO, "conf/runtime-packages.txt")).read().split())
        exe = os.path.join(build_dir(), "proxyd")
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                            subprocess.run(["readelf", "-d", exe], capture_output=True, text=True).stdout)
        where = {}
        for line in subprocess.run(["ldd", exe], capture_output=True, text=True).stdout.splitlines():
            parts = line.split("=>")
            if len(parts) == 2 and parts[1].strip().startswith("/"):
                where[parts[0].strip()] = parts[1].split()[0]
        self.assertGreater(len(needed), 5)
        missing = {}
        for name in needed:
            lib = where.get(name)
            if lib is None or any(san in name for san in ("libasan", "libubsan", "liblsan", "libtsan")):
                continue
            r = subprocess.run(["dpkg", "-S", lib], capture_output=True, text=True)
            if r.returncode != 0:
                r = subprocess.run(["dpkg", "-S", os.path.realpath(lib)], capture_output=True, text=True)
            pkg = r.stdout.split(":")[0].strip() if r.returncode == 0 else None
            if pkg is None or pkg in ("libc6", "libgcc-s1") or pkg in want:
                continue  # not from a package, the C library, or listed
            missing[name] = pkg
        self.assertEqual(missing, {})
