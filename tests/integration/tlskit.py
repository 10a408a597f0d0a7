"""TLS: the throwaway test PKI, [tls] config snippets, curl/openssl
s_client/Python ssl clients against the test CA. Part of harness.py."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from clients import Client, curl
from common import SLOW
from httpwire import Reader


class Certs:
    """Paths of the test PKI made by make_certs(): a throwaway CA and leaves
    signed by it. Attributes name (crt, key) pairs:
      ec, rsa          CN=localhost, SAN DNS:localhost IP:127.0.0.1 (P-256 / RSA 2048)
      v2               CN=localhost-v2, same SAN, another key and serial (reload tests)
      other_ec, other_rsa  CN=other.test, SAN DNS:other.test
      wild             CN=*.wild.test, SAN DNS:*.wild.test
    plus `ca` (the CA certificate to verify with)."""

    LEAVES = (
        ("ec", "ec", "localhost", "DNS:localhost,IP:127.0.0.1"),
        ("rsa", "rsa", "localhost", "DNS:localhost,IP:127.0.0.1"),
        ("v2", "ec", "localhost-v2", "DNS:localhost,IP:127.0.0.1"),
        ("other_ec", "ec", "other.test", "DNS:other.test"),
        ("other_rsa", "rsa", "other.test", "DNS:other.test"),
        ("wild", "ec", "*.wild.test", "DNS:*.wild.test"),
    )

    def __init__(self, d):
        self.dir = d
        self.ca = os.path.join(d, "ca.crt")
        self.ca_key = os.path.join(d, "ca.key")
        for name, _, _, _ in self.LEAVES:
            setattr(self, name, (os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")))

    def pem(self, name):
        """The PEM text of leaf `name`'s certificate."""
        with open(getattr(self, name)[0]) as f:
            return f.read().strip()


def _openssl(*args):
    r = subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args[:3]), r.stderr.decode()[-2000:]))
    return r.stdout


def make_certs(d):
    """Make the test PKI (see Certs) in directory d with the openssl CLI; returns Certs."""
    os.makedirs(d, exist_ok=True)
    c = Certs(d)
    _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", c.ca_key, "-out", c.ca, "-sha256", "-days", "30", "-subj", "/CN=proxyd test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for i, (name, kind, cn, san) in enumerate(Certs.LEAVES):
        crt, key = getattr(c, name)
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec" \
            else ["-newkey", "rsa:2048"]
        _openssl("req", "-x509", "-new", *newkey, "-nodes", "-keyout", key, "-out", crt,
                 "-CA", c.ca, "-CAkey", c.ca_key, "-sha256", "-days", "30",
                 "-set_serial", "0x%x%04x" % (int(time.time()), 0x100 + i), "-subj", "/CN=" + cn,
                 "-addext", "subjectAltName=" + san, "-addext", "basicConstraints=CA:FALSE",
                 "-addext", "extendedKeyUsage=serverAuth")
    return c


_CERTS = None


def shared_certs():
    """The test PKI, made once per process (each test module runs in its own
    process) in a temp dir removed at exit. Tests that change files on disk
    copy them first (copy_cert)."""
    global _CERTS
    if _CERTS is None:
        import atexit
        d = tempfile.mkdtemp(prefix="proxyd-certs-")
        atexit.register(shutil.rmtree, d, True)
        _CERTS = make_certs(d)
    return _CERTS


def copy_cert(pair, dest_dir, name):
    """Copy a (crt, key) pair to dest_dir/name.{crt,key}; returns the new pair."""
    out = (os.path.join(dest_dir, name + ".crt"), os.path.join(dest_dir, name + ".key"))
    for src, dst in zip(pair, out):
        shutil.copyfile(src, dst)
    return out


def tls_config(certs=None, pairs=None, sni=(), **keys):
    """A [tls] section. pairs: the default certificate(s), a list of (crt, key)
    (default [certs.ec]); sni: (name, (crt, key)) items, one `sni =` line each;
    keys: more [tls] keys (session_timeout="0", alpn="http/1.1", ...)."""
    certs = certs or shared_certs()
    pairs = pairs or [certs.ec]
    lines = ["[tls]",
             "certificate = " + " ".join(p[0] for p in pairs),
             "certificate_key = " + " ".join(p[1] for p in pairs)]
    for name, (crt, key) in sni:
        lines.append("sni = %s:%s:%s" % (name, crt, key))
    for k, v in keys.items():
        lines.append("%s = %s" % (k, v))
    return "\n".join(lines) + "\n"


def tls_service_config(*backends, tls=None, extra_proxy="", extra=""):
    """[proxy] with listen_https = 127.0.0.1:0 (next to the harness's plain
    listener), `tls` (default tls_config()) and a catch-all service."""
    tls = tls if tls is not None else tls_config()
    return "[proxy]\nlisten_https = 127.0.0.1:0\n%s\n\n%s\n%s\n[service web]\ntargets = %s\n" % (
        extra_proxy, tls, extra, " ".join(b if isinstance(b, str) else b.addr for b in backends))


def curl_https(proxy, path="/", *args, host="localhost", ca=None, timeout=15.0, input=None):
    """curl https://host:PORT/path with --resolve host:PORT:127.0.0.1 (real SNI and
    name verification) and --cacert the test CA."""
    ca = ca or shared_certs().ca
    port = proxy if isinstance(proxy, int) else proxy.https_port
    return curl("--resolve", "%s:%d:127.0.0.1" % (host, port), "--cacert", ca,
                "https://%s:%d%s" % (host, port, path), *args, timeout=timeout, input=input)


class SClient:
    """Result of openssl s_client: .ok (exit 0), .out (stdout+stderr text)."""

    def __init__(self, proc):
        self.returncode = proc.returncode
        self.out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
        self.ok = proc.returncode == 0

    def field(self, regex):
        m = re.search(regex, self.out, re.M)
        return m.group(1).strip() if m else None

    @property
    def subject_cn(self):
        """CN of the peer (leaf) certificate."""
        return self.field(r"^subject=.*?CN ?= ?([^,\n]+)")

    @property
    def protocol(self):
        return self.field(r"^\s*Protocol\s*:\s*(\S+)")

    @property
    def alpn(self):
        v = self.field(r"^ALPN protocol: (\S+)")
        return v

    @property
    def key_bits(self):
        v = self.field(r"^Server public key is (\d+) bit")
        return int(v) if v else None

    @property
    def verified(self):
        return re.search(r"Verify return code: 0 \(ok\)", self.out) is not None

    def leaf_pem(self):
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", self.out, re.S)
        return m.group(0).strip() if m else None

    def sessions(self):
        """'New' / 'Reused' per handshake, in order (-reconnect makes several)."""
        return re.findall(r"^(New|Reused), ", self.out, re.M)

    def __repr__(self):
        return "<s_client rc=%s\n%s>" % (self.returncode, self.out[-3000:])


def s_client(port, *args, servername="localhost", ca=None, input=b"", timeout=10.0):
    """openssl s_client -connect 127.0.0.1:PORT -CAfile CA -verify_return_error
    [-servername NAME] ARGS; stdin = input (EOF ends the session)."""
    ca = ca or shared_certs().ca
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", ca, "-verify_return_error"]
    cmd += ["-servername", servername] if servername else ["-noservername"]
    cmd += list(args)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, input=input,
                       timeout=timeout * SLOW)
    return SClient(p)


class TlsClient(Client):
    """Client over TLS (OpenSSL through Python's ssl, verified against the test
    CA, SNI = host, ALPN http/1.1 unless alpn says otherwise)."""

    _contexts = {}  # one SSLContext per ALPN list, so a session can be offered again

    def __init__(self, port, host="localhost", timeout=5.0, alpn=("http/1.1",), session=None):
        import ssl
        ctx = self._contexts.get(tuple(alpn or ()))
        if ctx is None:
            ctx = ssl.create_default_context(cafile=shared_certs().ca)
            if alpn:
                ctx.set_alpn_protocols(list(alpn))
            self._contexts[tuple(alpn or ())] = ctx
        self.timeout = timeout * SLOW
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=host, session=session)
        except BaseException:
            raw.close()
            raise
        self.reader = Reader(self.sock)
