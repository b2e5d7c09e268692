"""A real HTTP file server on localhost for tests, with faults the tests inject.

Stdlib only, no pytest dependency. Usage::

    with FileServer({"/data.bin": payload}) as server:
        server.inject("/data.bin", cut_after=100_000)  # the first request gets 100 kB, then a closed socket,
        server.inject("/data.bin", ignore_range=True, times=None)  # every later one the whole file
        fetch(Remote(server.url("/data.bin")), dest)
        print(server.requests)  # [Request(path, method, range, status, body_bytes, if_range), ...]

Faults injected for one path apply in turn, each to its ``times`` requests. The server answers GET
and HEAD, names each file's version by a strong ``ETag`` (from its content, so changing
``server.files[path]`` changes it), honours ``Range: bytes=a-`` and ``bytes=a-b`` (206 with
Content-Range; 416 when the range starts past the end) unless an ``If-Range`` names another version
(then 200 with the whole file), and answers 404 for unknown paths. Files are served as
``application/octet-stream``.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    """What goes wrong with the next ``times`` requests of one path (None: every request)."""

    times: int | None = 1
    cut_after: int | None = None  # send all headers (Content-Length included), then this many body bytes, then close
    fail_status: int | None = None  # answer this status (500, 503, ...) with an empty body
    corrupt: bool = False  # serve the content with one byte in every 4096 flipped
    ignore_range: bool = False  # answer 200 with the whole content whatever the Range header says
    html: bool = False  # answer 200 with an HTML error page (Content-Type: text/html), as a login portal does
    no_validator: bool = False  # send no ETag
    chunk_delay_s: float = 0.0  # send the body in CHUNK_BYTES pieces, pausing this long (seconds) before each


@dataclass(frozen=True)
class Request:
    """One request as the server saw and answered it."""

    path: str
    method: str
    range: str | None  # the Range header, verbatim
    status: int
    body_bytes: int  # body bytes actually sent
    if_range: str | None = None  # the If-Range header, verbatim


class FileServer:
    """Serves ``files`` (URL path -> content) on 127.0.0.1 at a free port, in a daemon thread, while in a ``with``."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.faults: dict[str, list[Fault]] = {}  # per path, in the order they apply
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    def inject(self, path: str, **fault) -> None:
        """Make requests of ``path`` fail once the faults injected before are used up; keywords: :class:`Fault`."""
        with self._lock:
            self.faults.setdefault(path, []).append(Fault(**fault))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}{path}"

    def __enter__(self) -> FileServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.file_server = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)  # quick shutdown
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _take_fault(self, path: str) -> Fault:
        """The fault to apply to this request of ``path`` (counting it), or a harmless one."""
        with self._lock:
            queue = self.faults.get(path, [])
            while queue and queue[0].times == 0:
                queue.pop(0)
            if not queue:
                return Fault(times=0)
            if queue[0].times is not None:
                queue[0].times -= 1
            return queue[0]

    def _log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


CHUNK_BYTES = 16 * 1024  # piece of a body sent slowly (Fault.chunk_delay_s)
HTML_PAGE = b"<!DOCTYPE html>\n<html><body><h1>Service unavailable</h1><p>Please sign in.</p></body></html>\n"


def etag(content: bytes) -> str:
    """The strong ETag the server sends for ``content``."""
    return f'"{hashlib.sha256(content).hexdigest()[:16]}"'


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def _answer(self, send_body: bool) -> None:
        server: FileServer = self.server.file_server
        range_header, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        content = server.files.get(self.path)
        fault = server._take_fault(self.path)
        headers: dict[str, str] = {}
        if content is None:
            status, body = 404, b""
        elif fault.fail_status is not None:
            status, body = fault.fail_status, b""
        elif fault.html:
            status, body, headers = 200, HTML_PAGE, {"Content-Type": "text/html; charset=utf-8"}
        else:
            version = etag(content)
            headers = {"Content-Type": "application/octet-stream"} | ({} if fault.no_validator else {"ETag": version})
            if fault.corrupt:
                content = corrupted(content)
            honour_range = not fault.ignore_range and if_range in (None, version)
            status, body, range_headers = _ranged(content, range_header if honour_range else None)
            headers |= range_headers
        sent = len(body) if fault.cut_after is None else min(fault.cut_after, len(body))
        server._log(Request(self.path, self.command, range_header, status, sent if send_body else 0, if_range))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            piece = CHUNK_BYTES if fault.chunk_delay_s else max(sent, 1)
            for start in range(0, sent, piece):
                time.sleep(fault.chunk_delay_s)
                self.wfile.write(body[start : min(start + piece, sent)])
        self.close_connection = True  # after a cut, the client sees the connection close mid-body


def _ranged(content: bytes, range_header: str | None) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, extra headers) answering ``Range: bytes=a-`` or ``bytes=a-b``; 200 for any other header."""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
    if match is None:
        return 200, content, {}
    start = int(match[1])
    end = min(int(match[2]) if match[2] else len(content) - 1, len(content) - 1)
    if start > end:
        return 416, b"", {"Content-Range": f"bytes */{len(content)}"}
    return 206, content[start : end + 1], {"Content-Range": f"bytes {start}-{end}/{len(content)}"}


def corrupted(content: bytes) -> bytes:
    """``content`` with every 4096th byte inverted: the same size, a different checksum."""
    flipped = bytearray(content)
    flipped[::4096] = bytes(byte ^ 0xFF for byte in flipped[::4096])
    return bytes(flipped)
