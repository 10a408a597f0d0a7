"""Integration-test harness for proxyd (stdlib only, plus python3-h2 for
H2Client). Tests import everything from here; the code lives in modules
split by concern, and this file re-exports their public names (and the few
private ones other helpers use), so `from harness import X` keeps working:

- common.py     REPO, SLOW (timing scale), build_dir, wait_until, free_port.
- proxyproc.py  Proxy: runs the real build/proxyd on a generated config in
                a temp dir, learns its ephemeral ports from the error log,
                offers the logs, signals, reload and a bounded stop;
                kill_all/close_all for the runner.
- httpwire.py   Byte-level HTTP/1.1 shared by backends and clients: Reader,
                parse_head, Headers, read_chunked, http_response, CLOSE.
- backends.py   Threads in the test process on 127.0.0.1:0 that record the
                exact bytes each request carried and answer with a scripted
                response (RecordingBackend and its variants: Streaming,
                Closing, Silent, WebSocket). They read strictly and record
                every malformed request in parse_errors (ParseError).
- clients.py    raw_request() and Client, a small HTTP/1.1 response reader
                for keep-alive and pipelining on one socket; get(), curl().
- tlskit.py     The throwaway test PKI (shared_certs), [tls] snippets,
                curl_https, openssl s_client, TlsClient.
- h2client.py   H2Client (HTTP/2 over TLS).
- proxycase.py  ProxyTestCase: backends and proxies cleaned up with the
                test, and the cleanup checks: a sanitizer report in
                proxyd's log, a malformed request a backend received.

Every wait is bounded; every process and socket is cleaned up by the
object that made it. A new helper goes into the module of its concern and
its name into the imports below.
"""

from common import (  # noqa: F401
    REPO, SLOW, build_dir, proxyd_path, wait_until, free_port,
    sha256, _pdeathsig)
from proxyproc import (  # noqa: F401
    _LISTEN_RE, _STARTED_RE, _split_hostport, ProxyError, _LIVE, kill_all,
    close_all, Proxy, _merge_proxy_section)
from httpwire import (  # noqa: F401
    Closed, Reader, parse_head, Headers, header_tokens, read_chunked,
    http_response, chunked_response, _REASONS, CLOSE)
from backends import (  # noqa: F401
    ParseError, check_request_head, BackendRequest, default_response, RecordingBackend,
    StreamingBackend, ClosingBackend, SilentBackend, WS_GUID, ws_accept, WebSocketBackend)
from clients import (  # noqa: F401
    request_bytes, RawResult, raw_request, Response, Client, curl,
    get)
from proxycase import (  # noqa: F401
    ProxyTestCase)
from tlskit import (  # noqa: F401
    Certs, _openssl, make_certs, shared_certs, copy_cert,
    tls_config, tls_service_config, curl_https, SClient, s_client, TlsClient)
from h2client import (  # noqa: F401
    import_h2, H2Stream, GoAway, H2Client)
