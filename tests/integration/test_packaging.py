"""The Debian package: `make deb` builds proxyd_VERSION_ARCH.deb that
lintian finds no error in, and that `apt-get install ./proxyd_*.deb`
installs into a fresh Debian root made by mmdebstrap (from the machine's
own package mirror): the proxyd system user exists, `proxyd -t` works, proxyd
runs there (started as root, dropped to proxyd) and serves, and a changed
conffile survives a reinstall."""

import atexit
import os
import unittest
import shutil
import subprocess
import tempfile
import time

from harness import SLOW, ProxyTestCase, build_dir, get, wait_until, free_port

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def run(argv, timeout=120, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout * SLOW, **kw)


_FIXTURE = {}


def fixture():
    """make deb, then a Debian root with the package installed: made once per
    module process (the runner runs a module in one child), removed at exit."""
    if "error" in _FIXTURE:
        raise AssertionError(_FIXTURE["error"])
    if "root" in _FIXTURE:
        return _FIXTURE["deb"], _FIXTURE["root"]
    for tool in ("dpkg-deb", "lintian", "mmdebstrap"):
        if shutil.which(tool) is None:
            _FIXTURE["error"] = "%s is missing (tests/deps-test.txt: make test installs it)" % tool
            raise AssertionError(_FIXTURE["error"])
    r = run(["make", "-s", "-C", REPO, "B=" + build_dir(), "deb"], timeout=300)
    if r.returncode != 0:
        _FIXTURE["error"] = "make deb failed:\n" + r.stdout + r.stderr
        raise AssertionError(_FIXTURE["error"])
    deb = r.stdout.strip().splitlines()[-1]
    if not os.path.isabs(deb):
        deb = os.path.join(REPO, deb)
    tmp = tempfile.mkdtemp(prefix="proxyd-deb-")
    atexit.register(shutil.rmtree, tmp, True)
    root = os.path.join(tmp, "root")
    r = run(["mmdebstrap", "--quiet", "--variant=minbase",
             "--dpkgopt=path-exclude=/usr/share/{man,doc,locale,info}/*",
             "--customize-hook=copy-in %s /tmp" % deb,
             "--customize-hook=chroot \"$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/%s"
             % os.path.basename(deb), "bookworm", root], timeout=600)
    if r.returncode != 0:
        _FIXTURE["error"] = "mmdebstrap with the package failed:\n" + r.stdout[-3000:] + r.stderr[-3000:]
        raise AssertionError(_FIXTURE["error"])
    _FIXTURE.update(deb=deb, root=root)
    return deb, root


# make deb builds its own binaries with Debian's hardening flags, whatever
# the build under test: under `make asan` (build-asan) it would only build and
# test the same package a second time.
OTHER_BUILD = os.path.basename(build_dir().rstrip("/")) not in ("build", "") and \
    any(k in os.path.basename(build_dir()) for k in ("asan", "fuzz"))


@unittest.skipIf(OTHER_BUILD, "the package builds its own binaries (tested with the plain build)")
class DebPackage(ProxyTestCase):
    def setUp(self):
        self.deb, self.root = fixture()

    def chroot(self, *argv, timeout=60):
        return run(["chroot", self.root] + list(argv), timeout=timeout)

    def test_name_and_lintian(self):
        version = run([os.path.join(build_dir(), "proxyd"), "-V"]).stdout.split()[1]
        arch = run(["dpkg", "--print-architecture"]).stdout.strip()
        self.assertEqual(os.path.basename(self.deb), "proxyd_%s_%s.deb" % (version, arch))
        info = run(["dpkg-deb", "-f", self.deb, "Package", "Depends", "Recommends"]).stdout
        self.assertIn("Package: proxyd", info)
        depends = [l for l in info.splitlines() if l.startswith("Depends:")][0]
        recommends = [l for l in info.splitlines() if l.startswith("Recommends:")][0]
        for lib in ("libssl3", "libnghttp2-14", "libjansson4", "libinih1", "libhiredis0.14", "adduser"):
            self.assertIn(lib, depends)
        for lib in ("libsystemd0", "libcurl4"):  # dlopen()ed: under systemd, for ACME
            self.assertIn(lib, recommends)
        conffiles = run(["dpkg-deb", "--ctrl-tarfile", self.deb]).returncode
        self.assertEqual(conffiles, 0)
        r = run(["lintian", "--no-tag-display-limit", self.deb], timeout=300)
        errors = [l for l in r.stdout.splitlines() if l.startswith("E:")]
        self.assertEqual(errors, [], r.stdout)
        warnings = [l for l in r.stdout.splitlines() if l.startswith("W:")]
        self.assertEqual(warnings, [], r.stdout)  # none today; the README explains any that come

    def test_installed_files_and_user(self):
        for path in ("usr/sbin/proxyd", "usr/bin/proxyctl", "usr/bin/kamal-proxy", "etc/proxyd/proxyd.ini",
                     "etc/logrotate.d/proxyd", "lib/systemd/system/proxyd.service",
                     "lib/systemd/system/proxyd.socket"):
            self.assertTrue(os.path.lexists(os.path.join(self.root, path)), path)
        r = self.chroot("getent", "passwd", "proxyd")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("/var/lib/proxyd", r.stdout)
        r = self.chroot("stat", "-c", "%U %a", "/var/lib/proxyd", "/var/log/proxyd")
        self.assertEqual(r.stdout.split("\n")[:2], ["proxyd 750", "proxyd 750"])
        r = self.chroot("dpkg-query", "-W", "-f", "${Conffiles}", "proxyd")
        self.assertIn("/etc/proxyd/proxyd.ini", r.stdout)
        self.assertIn("/etc/logrotate.d/proxyd", r.stdout)
        # the shipped example names Let's Encrypt files that are not there yet: -t says which
        r = self.chroot("proxyd", "-t", "-c", "/etc/proxyd/proxyd.ini")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"/etc/proxyd/proxyd.ini:\d+: certificate: /etc/letsencrypt/live/")

    def test_runs_there_as_the_proxyd_user(self):
        b = self.backend()
        port = free_port()
        with open(os.path.join(self.root, "etc/proxyd/test.ini"), "w") as f:
            f.write("[proxy]\nlisten_http = 127.0.0.1:%d\nuser = proxyd\nworkers = 1\n"
                    "access_log = /var/log/proxyd/access.log\nerror_log = /var/log/proxyd/error.log\n"
                    "[service web]\ntargets = %s\n" % (port, b.addr))
        r = self.chroot("proxyd", "-t", "-c", "/etc/proxyd/test.ini")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "configuration ok"), r.stderr)
        p = subprocess.Popen(["chroot", self.root, "proxyd", "-c", "/etc/proxyd/test.ini"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            log = os.path.join(self.root, "var/log/proxyd/error.log")
            wait_until(lambda: os.path.exists(log) and " started: " in open(log).read(), 10)
            self.assertEqual(get(port, "/pkg").status, 200)
            uid = [l.split()[1] for l in open("/proc/%d/status" % p.pid) if l.startswith("Uid:")]
            # chroot execs proxyd in place: the pid is proxyd's
            want = self.chroot("id", "-u", "proxyd").stdout.strip()
            self.assertEqual(uid, [want])
            r = self.chroot("proxyctl", "--socket", "/run/proxyd/control.sock", "status")
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            p.terminate()
            self.assertEqual(p.wait(10 * SLOW), 0)

    def test_conffile_kept_on_reinstall(self):
        conf = os.path.join(self.root, "etc/proxyd/proxyd.ini")
        with open(conf, "a") as f:
            f.write("\n; the operator's change\n")
        shutil.copy(self.deb, os.path.join(self.root, "tmp"))
        r = self.chroot("dpkg", "-i", "/tmp/" + os.path.basename(self.deb), timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("; the operator's change", open(conf).read())
        self.assertTrue(os.path.exists(os.path.join(self.root, "usr/sbin/proxyd")), r.stdout + r.stderr)
