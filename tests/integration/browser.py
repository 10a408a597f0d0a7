"""Headless Chromium (Debian's `chromium` package) for the status-page tests:
load a URL, let its scripts run for a bounded virtual time, and return the
DOM as the page built it, optionally with a screenshot. Each run gets its own
profile directory, removed afterwards; every run is bounded by a timeout.
Part of the harness (see harness.py); stdlib only.

    dom = render(url)                       # serialized DOM after the scripts ran
    dom = render(url, screenshot=path)      # and a 1280x1000 PNG at path
    Page(dom).find(data_service="web")      # elements by attribute, with their text
"""

import html.parser
import os
import shutil
import signal
import subprocess
import tempfile

from common import SLOW, _pdeathsig, build_dir

CHROMIUM = os.environ.get("PROXYD_CHROMIUM", "/usr/bin/chromium")


def available():
    return os.access(CHROMIUM, os.X_OK)


def artifacts_dir():
    """build/test-artifacts (the build dir the runner uses): kept, never committed."""
    d = os.path.join(build_dir(), "test-artifacts")
    os.makedirs(d, exist_ok=True)
    return d


def _flags(profile, virtual_ms):
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio",
            "--user-data-dir=" + profile, "--virtual-time-budget=%d" % virtual_ms]


def render(url, virtual_ms=5000, screenshot=None, timeout=30.0):
    """The DOM of url after virtual_ms of (virtual) time, as Chromium
    serializes it (--dump-dom). With screenshot=PATH also writes a PNG there
    (a second run: Chromium takes one of the two per run)."""
    profile = tempfile.mkdtemp(prefix="pxchrome-")
    try:
        def run(extra):
            # Its own process group, so that a timeout ends the renderer and
            # helper processes too; and it dies with the test process.
            p = subprocess.Popen(_flags(profile, virtual_ms) + extra + [url], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
                                 preexec_fn=_pdeathsig)
            try:
                out, err = p.communicate(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
                raise AssertionError("chromium did not finish in %.0fs (a dialog or a script that never "
                                     "ends?): %s" % (timeout * SLOW, url))
            if p.returncode != 0:
                raise AssertionError("chromium exited %d: %s" % (
                    p.returncode, err.decode("utf-8", "replace")[-2000:]))
            return out.decode("utf-8", "replace")
        dom = run(["--dump-dom"])
        if screenshot:
            if os.path.exists(screenshot):
                os.unlink(screenshot)
            run(["--screenshot=" + screenshot, "--window-size=1280,1000", "--hide-scrollbars"])
            if not os.path.isfile(screenshot) or os.path.getsize(screenshot) == 0:
                raise AssertionError("chromium wrote no screenshot at %s" % screenshot)
        return dom
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class Element:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children, self.parts = [], []

    @property
    def text(self):
        out = []

        def walk(e):
            for p in e.parts:
                if isinstance(p, Element):
                    walk(p)
                else:
                    out.append(p)
        walk(self)
        return "".join(out)

    def get(self, name, default=None):
        return self.attrs.get(name, default)

    def iter(self):
        yield self
        for c in self.children:
            yield from c.iter()

    def find_all(self, tag=None, **attrs):
        """Descendants (self included) with tag and every attribute given
        (data_service="x" means data-service="x"; value None: present)."""
        want = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [e for e in self.iter()
                if (tag is None or e.tag == tag)
                and all(k in e.attrs and (v is None or e.attrs[k] == v) for k, v in want.items())]

    def find(self, tag=None, **attrs):
        found = self.find_all(tag, **attrs)
        if len(found) != 1:
            raise AssertionError("expected one <%s %s>, found %d" % (tag or "*", attrs, len(found)))
        return found[0]

    def field(self, name):
        """The element with data-field=name inside this one (exactly one)."""
        return self.find(data_field=name)


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(html.parser.HTMLParser):
    """The serialized DOM parsed back into a tree: root.find(...)."""

    def __init__(self, dom):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self.cur = self.root
        self.feed(dom)
        self.close()

    def handle_starttag(self, tag, attrs):
        e = Element(tag, [(k, v if v is not None else "") for k, v in attrs], self.cur)
        self.cur.children.append(e)
        self.cur.parts.append(e)
        if tag not in _VOID:
            self.cur = e

    def handle_startendtag(self, tag, attrs):
        e = Element(tag, [(k, v if v is not None else "") for k, v in attrs], self.cur)
        self.cur.children.append(e)
        self.cur.parts.append(e)

    def handle_endtag(self, tag):
        e = self.cur
        while e is not None and e.tag != tag:
            e = e.parent
        if e is not None and e.parent is not None:
            self.cur = e.parent

    def handle_data(self, data):
        self.cur.parts.append(data)

    def find(self, tag=None, **attrs):
        return self.root.find(tag, **attrs)

    def find_all(self, tag=None, **attrs):
        return self.root.find_all(tag, **attrs)

    def by_id(self, id_):
        return self.root.find(id=id_)
