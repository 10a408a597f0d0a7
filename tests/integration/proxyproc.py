"""Proxy: the real build/proxyd on a generated config in a temp dir (start,
ports from the error log, logs, signals, reload, bounded stop), and
kill_all/close_all for the runner. Part of harness.py."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import weakref

from common import SLOW, _pdeathsig, proxyd_path, wait_until


_LISTEN_RE = re.compile(r"\[info\] listening (http|https) (\S+)")
_STARTED_RE = re.compile(r"\[info\] proxyd \S+ started: ")


def _split_hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


class ProxyError(AssertionError):
    pass


_LIVE = weakref.WeakSet()  # every Proxy not yet closed


def kill_all():
    """SIGKILL every proxy still running (by PID) and remove its temp dir."""
    for p in list(_LIVE):
        try:
            if p.proc is not None and p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(5)
        except Exception:
            pass
        shutil.rmtree(p.tmp, ignore_errors=True)


def close_all():
    """Stop every proxy still running (the runner calls this at exit)."""
    for p in list(_LIVE):
        try:
            p.close()
        except Exception:
            pass


class Proxy:
    """A running proxyd. `config` is the INI text minus the harness's keys:
    `{tmp}` and any `{name}` passed in `subst` are replaced. The harness adds
    to [proxy] (unless the config sets them): listen_http = 127.0.0.1:0,
    workers = 2, access_log, control_socket, state_file and temp_dir in the temp dir.
    """

    DEFAULTS = (
        ("listen_http", "127.0.0.1:0"),
        ("workers", "2"),
        ("access_log", "{tmp}/access.log"),
        ("control_socket", "{tmp}/control.sock"),
        ("state_file", "{tmp}/state.json"),
        ("temp_dir", "{tmp}"),
    )

    def __init__(self, config="", subst=None, defaults=True, start=True, start_timeout=10.0, env=None,
                 argv_prefix=()):
        self.env = env  # None: the runner's environment
        self.argv_prefix = list(argv_prefix)  # e.g. systemd-socket-activate and its options
        self.tmp = tempfile.mkdtemp(prefix="proxyd-test-")
        self.subst = dict(subst or {})
        self.defaults = defaults
        self.config_path = os.path.join(self.tmp, "proxyd.ini")
        self.stderr_path = os.path.join(self.tmp, "stderr.log")
        self.stdout_path = os.path.join(self.tmp, "stdout.log")
        self.proc = None
        self.port = None
        self.https_port = None
        self.returncode = None
        self._final_log = ""
        _LIVE.add(self)
        self.write_config(config)
        if start:
            try:
                self.start(start_timeout)
            except BaseException:
                self.close()
                raise

    # -- config ------------------------------------------------------------
    def render(self, config):
        text = config
        if self.defaults:
            text = _merge_proxy_section(text, self.DEFAULTS)
        for k, v in dict(self.subst, tmp=self.tmp).items():
            text = text.replace("{%s}" % k, str(v))
        return text

    def write_config(self, config):
        self.config_text = self.render(config)
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(self.config_text)
        os.rename(tmp, self.config_path)

    def _proxy_key(self, key):
        sect = None
        for line in self.config_text.splitlines():
            s = line.strip()
            if s.startswith("["):
                sect = s.strip("[]").strip()
            elif sect == "proxy" and "=" in s and not s.startswith((";", "#")):
                k, v = s.split("=", 1)
                if k.strip() == key:
                    return v.split(" ;")[0].strip()
        return None

    @property
    def error_log_path(self):
        p = self._proxy_key("error_log")
        return p if p and p != "-" else self.stderr_path

    @property
    def access_log_path(self):
        return self._proxy_key("access_log")

    # -- process -----------------------------------------------------------
    def start(self, timeout=10.0):
        exe = proxyd_path()
        if not os.access(exe, os.X_OK):
            raise ProxyError("proxyd binary not found: %s (run make)" % exe)
        out = open(self.stdout_path, "wb")
        err = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(
                self.argv_prefix + [exe, "-c", self.config_path], stdin=subprocess.DEVNULL, stdout=out,
                stderr=err, cwd=self.tmp, preexec_fn=_pdeathsig, env=self.env)
        finally:
            out.close()
            err.close()
        want_https = self._proxy_key("listen_https") is not None
        want_http = self._proxy_key("listen_http") is not None

        def ready():
            if self.proc.poll() is not None:
                return True
            text = self.error_log_text()
            for kind, addr in _LISTEN_RE.findall(text):
                if kind == "http" and self.port is None:
                    self.port = _split_hostport(addr)[1]
                if kind == "https" and self.https_port is None:
                    self.https_port = _split_hostport(addr)[1]
            # "started" comes after everything that can still fail (the
            # control socket, the state file), not just the listeners
            return _STARTED_RE.search(text) is not None and \
                (self.port is not None or not want_http) and \
                (self.https_port is not None or not want_https)

        wait_until(ready, timeout)
        if self.proc.poll() is not None:
            raise ProxyError("proxyd exited with %s during start-up; log:\n%s"
                             % (self.proc.returncode, self.error_log_text()[-4000:]))
        if (want_http and self.port is None) or (want_https and self.https_port is None) or \
                _STARTED_RE.search(self.error_log_text()) is None:
            raise ProxyError("proxyd did not log 'listening http[s] ADDR' and 'started' within %.0fs; log:\n%s"
                             % (timeout * SLOW, self.error_log_text()[-4000:]))

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def https_url(self, path="/", host="localhost"):
        """The TLS listener's URL for `host` (pair it with curl --resolve, see curl_https())."""
        return "https://%s:%d%s" % (host, self.https_port, path)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def rss_kb(self):
        """Resident set size of the proxyd process (kB), from /proc."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout):
        """Wait for exit; returns the exit code or None on timeout."""
        try:
            self.returncode = self.proc.wait(timeout * SLOW)
            return self.returncode
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=10.0):
        """SIGTERM, wait up to timeout, then SIGKILL (by PID). Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.returncode = self.proc.returncode
        return self.returncode

    def close(self):
        try:
            self.stop()
        finally:
            if os.path.isdir(self.tmp):
                self._final_log = self.error_log_text()
                try:  # sanitizer reports go to stderr even when error_log is a file
                    with open(self.stderr_path, "rb") as f:
                        self._final_stderr = f.read().decode("utf-8", "replace")
                except OSError:
                    self._final_stderr = ""
                shutil.rmtree(self.tmp, ignore_errors=True)
            _LIVE.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- logs --------------------------------------------------------------
    def error_log_text(self):
        try:
            with open(self.error_log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return self._final_log

    def access_log_lines(self, path=None):
        path = path or self.access_log_path
        try:
            with open(path, "rb") as f:
                data = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        lines = data.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        else:
            lines = lines[:-1]  # a partial line is still being written
        return [json.loads(line) for line in lines if line.strip()]

    def wait_access_log(self, n, timeout=3.0, path=None):
        """Wait until the access log has at least n lines; return them."""
        wait_until(lambda: len(self.access_log_lines(path)) >= n, timeout)
        return self.access_log_lines(path)

    def reload(self, new_config, timeout=3.0):
        """Rewrite the config and send SIGHUP. Waits (bounded) for the
        reload's end (its audit line, "control: reload signal=SIGHUP ok" or
        "... failed"); returns the log text added since."""
        before = len(self.error_log_text())
        self.write_config(new_config)
        self.send_signal(signal.SIGHUP)
        wait_until(lambda: re.search(r"control: reload signal=SIGHUP (ok|failed)", self.error_log_text()[before:]),
                   timeout)
        time.sleep(0.1)
        return self.error_log_text()[before:]


def _merge_proxy_section(text, defaults):
    """Insert (key, value) defaults into [proxy] unless the text sets the key there."""
    lines = text.split("\n")
    sect, proxy_idx, present = None, None, set()
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("[") and "]" in s:
            sect = s[1:s.index("]")].strip()
            if sect == "proxy" and proxy_idx is None:
                proxy_idx = i
        elif sect == "proxy" and "=" in s and not s.startswith((";", "#")):
            present.add(s.split("=", 1)[0].strip())
    add = ["%s = %s" % (k, v) for k, v in defaults if k not in present]
    if proxy_idx is None:
        return "\n".join(["[proxy]"] + add + [""] + lines)
    return "\n".join(lines[:proxy_idx + 1] + add + lines[proxy_idx + 1:])
