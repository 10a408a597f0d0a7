"""pebble (Let's Encrypt's RFC 8555 test server) and pebble-challtestsrv on
loopback, for the ACME tests. See ../shared/ACME-TESTING.md.

    with Pebble(http_port=proxy_http_port) as pb:
        pb.directory      # "https://127.0.0.1:PORT/dir"
        pb.ca_bundle      # PEM file that verifies pebble's own HTTPS certificate
        pb.issuer_roots() # PEM of the CA pebble issues under (new at every start)

Every name resolves to 127.0.0.1 (challtestsrv's mock DNS), so pebble's
HTTP-01 validation connects to 127.0.0.1:http_port, where the proxy's plain
listener is. Processes are started in their own sessions, die with the test
process (PR_SET_PDEATHSIG) and are killed by PID in stop(); the temp dir is
removed.
"""

import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
import weakref

from harness import SLOW, _pdeathsig, free_port

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"

_LIVE = weakref.WeakSet()


def available():
    """None when pebble can run here, else why not (a skip reason)."""
    for exe in (PEBBLE, CHALLTESTSRV):
        if not os.access(exe, os.X_OK):
            return "%s not installed (Debian package pebble; tests/install-deps.sh installs it)" % exe
    if not shutil.which("openssl"):
        return "openssl not installed"
    return None


def kill_all():
    for p in list(_LIVE):
        p.stop()


def _run(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)


def _wait_port(port, timeout):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Pebble:
    """One pebble + challtestsrv pair.

    http_port: where pebble connects for HTTP-01 (the proxy's listen_http).
    validity_s: certificateValidityPeriod (pebble's default is 5 years;
      600 gives short certificates for renewal tests).
    nonce_reject: PEBBLE_WFE_NONCEREJECT, percent of nonces rejected with
      badNonce (0 for deterministic tests; 5 is pebble's own default).
    authz_reuse: PEBBLE_AUTHZREUSE (0 = a new authorization every order).
    """

    def __init__(self, http_port, validity_s=None, nonce_reject=0, authz_reuse=0, start=True):
        self.http_port = http_port
        self.validity_s = validity_s
        self.nonce_reject = nonce_reject
        self.authz_reuse = authz_reuse
        self.tmp = tempfile.mkdtemp(prefix="proxyd-pebble-")
        self.port = None
        self.mgmt_port = None
        self.dns_port = None
        self.procs = []
        self.logs = []
        _LIVE.add(self)
        self._make_certs()
        if start:
            self.start()

    # ---- pebble's own HTTPS certificate: a throwaway CA and a localhost leaf
    def _make_certs(self):
        d = self.tmp
        _run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=proxyd test pebble CA", cwd=d)
        _run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost", cwd=d)
        with open(os.path.join(d, "ext.cnf"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _run("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "cert.pem", cwd=d)
        self.ca_bundle = os.path.join(d, "ca.pem")

    def start(self, timeout=15.0):
        self.port = free_port()
        self.mgmt_port = free_port()
        self.dns_port = free_port()
        dns_mgmt = free_port()
        conf = {
            "pebble": {
                "listenAddress": "127.0.0.1:%d" % self.port,
                "managementListenAddress": "127.0.0.1:%d" % self.mgmt_port,
                "certificate": os.path.join(self.tmp, "cert.pem"),
                "privateKey": os.path.join(self.tmp, "key.pem"),
                "httpPort": self.http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        if self.validity_s is not None:
            conf["pebble"]["certificateValidityPeriod"] = int(self.validity_s)
        path = os.path.join(self.tmp, "pebble.json")
        with open(path, "w") as f:
            json.dump(conf, f)
        env = dict(os.environ)
        env.update({"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": str(self.nonce_reject),
                    "PEBBLE_AUTHZREUSE": str(self.authz_reuse)})
        self._spawn([CHALLTESTSRV, "-dns01", "127.0.0.1:%d" % self.dns_port, "-http01", "", "-https01", "",
                     "-tlsalpn01", "", "-management", "127.0.0.1:%d" % dns_mgmt,
                     "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""], env, "challtestsrv.log")
        if not _wait_port(dns_mgmt, timeout):
            raise RuntimeError("pebble-challtestsrv did not start:\n" + self.log_text())
        self._spawn([PEBBLE, "-config", path, "-dnsserver", "127.0.0.1:%d" % self.dns_port], env, "pebble.log")
        if not _wait_port(self.port, timeout) or not _wait_port(self.mgmt_port, timeout):
            raise RuntimeError("pebble did not start:\n" + self.log_text())
        self.directory = "https://127.0.0.1:%d/dir" % self.port

    def _spawn(self, argv, env, logname):
        log = open(os.path.join(self.tmp, logname), "wb")
        self.logs.append(log)
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.tmp,
                             start_new_session=True, preexec_fn=_pdeathsig)
        self.procs.append(p)

    def _mgmt_get(self, path):
        ctx = ssl.create_default_context(cafile=self.ca_bundle)
        with urllib.request.urlopen("https://127.0.0.1:%d%s" % (self.mgmt_port, path), context=ctx,
                                    timeout=10) as r:
            return r.read().decode()

    def issuer_roots(self):
        """PEM of pebble's issuing root (changes at every pebble start)."""
        return self._mgmt_get("/roots/0")

    def issuer_intermediates(self):
        return self._mgmt_get("/intermediates/0")

    def write_roots(self, path):
        """Write root + intermediate PEM to path (for `openssl verify -CAfile`)."""
        with open(path, "w") as f:
            f.write(self.issuer_roots())
        return path

    def log_text(self):
        out = []
        for name in ("challtestsrv.log", "pebble.log"):
            try:
                with open(os.path.join(self.tmp, name), errors="replace") as f:
                    out.append("--- %s\n%s" % (name, f.read()[-4000:]))
            except OSError:
                pass
        return "\n".join(out)

    def stop_server(self):
        """Stop pebble only (challtestsrv stays): the CA goes away, as in an outage."""
        for p in self.procs[1:]:
            self._kill(p)
        del self.procs[1:]

    @staticmethod
    def _kill(p):
        if p.poll() is None:
            p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def stop(self):
        for p in self.procs:
            self._kill(p)
        self.procs = []
        for f in self.logs:
            f.close()
        self.logs = []
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
