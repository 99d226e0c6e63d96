"""A fault-injecting HTTP proxy in front of the moto S3 server, all on 127.0.0.1.

Requests pass through unchanged except GETs whose path contains a watched key:
those are answered with S3's real throttling reply (503 SlowDown) while the key has failures
left to serve (``fail(key, n)``, or ``n=None`` for ever). Counting what was failed and what
was forwarded lets a test check how many times the client really asked.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


class FaultProxy:
    """``with FaultProxy(moto_url) as proxy: ... proxy.url ...``"""

    def __init__(self, upstream: str):
        target = urlsplit(upstream)
        self._upstream = (target.hostname, target.port)
        self._left: dict[str, int | None] = {}
        self._lock = threading.Lock()
        self.failed: Counter[str] = Counter()
        self.forwarded: Counter[str] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def fail(self, key: str, times: int | None) -> None:
        """Answer the next ``times`` reads of ``key`` (None: every read) with 503 SlowDown."""
        with self._lock:
            self._left[key] = times

    def _should_fail(self, method: str, path: str) -> str | None:
        if method != "GET":
            return None
        with self._lock:
            for key, left in self._left.items():
                if key in path and (left is None or left > 0):
                    if left is not None:
                        self._left[key] = left - 1
                    self.failed[key] += 1
                    return key
                if key in path:
                    self.forwarded[key] += 1
        return None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy._should_fail(self.command, self.path):
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                upstream = http.client.HTTPConnection(*proxy._upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body, headers=headers)
                reply = upstream.getresponse()
                payload = reply.read()
                self.send_response(reply.status, reply.reason)
                skip = HOP_BY_HOP if self.command == "HEAD" else HOP_BY_HOP | {"content-length"}
                for name, value in reply.getheaders():
                    if name.lower() not in skip:
                        self.send_header(name, value)
                if self.command != "HEAD":  # a HEAD keeps the object's own length
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                upstream.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _relay

        return Handler

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
