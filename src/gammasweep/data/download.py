"""Download dataset files over HTTP: resumable, retried, and verified before use.

``fetch(Remote(url, size=..., sha256=...), "data/raw/file.bin")`` leaves a verified file at that
path or raises :class:`DownloadError`; it never leaves an unverified file there. Next to it live

* ``file.bin.part``: the transfer in progress, and ``file.bin.part.json``, the URL it comes from and
  the server's validator (a strong ETag, else Last-Modified). A later attempt (or run) resumes it
  with an HTTP ``Range`` request conditional on that validator (``If-Range``), and only from the same
  URL: a ``.part`` from another URL or without a validator is discarded, and a file that changed on
  the server is sent whole (HTTP 200) and fetched again from the start;
* ``file.bin.json``: the record of the verified file, ``{"url", "size", "sha256", "md5"}`` (size
  in bytes, hex digests). Files published without a checksum (CIFAR-5M's parts) are checked
  against it on every later call;
* ``file.bin.lock``: locked (``flock``) while a process fetches the file, so that a second fetch of
  the same file waits for the first and then finds the verified file.

Network failures (connection errors, timeouts, HTTP 5xx, 408, 429, a body cut short) are retried
with exponential back-off, resuming where the transfer stopped. Other HTTP errors fail at once, and
so does a file that is not the one wanted: an HTML page (``Content-Type: text/html``), a size the
server announces other than the pinned one (before any of the body is read), a file that does not
begin as its format must (:func:`gammasweep.data.formats.format_problem`, by the URL's ending), or a
complete download that does not match its pins. Only a file assembled from resumed transfers that
fails these checks is fetched once more, whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import BinaryIO

from gammasweep.data.formats import format_problem
from gammasweep.results.io import atomic_path

MAX_BACKOFF_S = 60.0  # longest wait between two attempts, seconds
PROGRESS_EVERY_S = 5.0  # at most one progress line per this many seconds
RETRYABLE_STATUS = {408, 429}  # and every 5xx
NETWORK_ERRORS = (OSError, http.client.HTTPException)  # URLError, refused connections and timeouts are OSErrors

Values = dict[str, int | str]  # "size" (bytes), "sha256" and "md5" (hex)


@dataclass(frozen=True)
class Remote:
    """A file to fetch and what is known of it in advance (pinned in the config; None = unknown)."""

    url: str
    size: int | None = None  # bytes
    sha256: str | None = None
    md5: str | None = None  # some datasets (MNIST, CIFAR-10) publish md5 only
    verify: bool = True  # False = explicit opt-out: pinned checksums are not enforced


class DownloadError(RuntimeError):
    """The file could not be fetched, or what arrived is not the file that was expected."""


class _Transient(Exception):
    """A failure that another attempt may cure: a lost connection, a timeout, a busy or failing server."""


class _Digests:
    """Byte count, SHA-256 and MD5 of a byte stream, computed as it goes."""

    def __init__(self) -> None:
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.sha256.update(chunk)
        self.md5.update(chunk)

    @classmethod
    def of_file(cls, path: Path, chunk_bytes: int) -> _Digests:
        digests = cls()
        with path.open("rb") as f:
            while chunk := f.read(chunk_bytes):
                digests.update(chunk)
        return digests

    def values(self) -> Values:
        return {"size": self.size, "sha256": self.sha256.hexdigest(), "md5": self.md5.hexdigest()}


def fetch(
    remote: Remote,
    dest: str | Path,
    *,
    retries: int = 5,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    chunk_bytes: int = 1 << 20,
    log: Callable[[str], None] = print,
) -> Path:
    """Download ``remote`` to ``dest``, verified, and return ``dest``; do nothing if a verified copy is there.

    ``retries`` is the number of attempts in all; the wait before attempt k + 2 is ``backoff_s * 2**k``
    seconds (at most a minute). ``timeout_s`` bounds each network operation (seconds), ``chunk_bytes``
    the size of each read and write (bytes). Concurrent calls for the same ``dest`` run one at a time.
    """
    dest = Path(dest)
    if not remote.verify and (remote.sha256 or remote.md5):
        log(f"warning: verify is false for {remote.url}: its pinned checksums are not enforced")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(_sibling(dest, ".lock"), log):
        if dest.exists() and _reuse_existing(remote, dest, chunk_bytes, log):
            return dest
        _sibling(dest, ".json").unlink(missing_ok=True)  # a record without its file describes nothing
        return _download(remote, dest, retries, backoff_s, timeout_s, chunk_bytes, log)


def file_digests(path: str | Path, chunk_bytes: int = 1 << 20) -> Values:
    """Size (bytes), sha256 and md5 (hex) of a file on disk, read in ``chunk_bytes`` pieces."""
    return _Digests.of_file(Path(path), chunk_bytes).values()


def _download(
    remote: Remote,
    dest: Path,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    chunk_bytes: int,
    log: Callable[[str], None],
) -> Path:
    """The attempts of :func:`fetch` (see there), which holds the lock on ``dest``."""
    part = _sibling(dest, ".part")
    log(f"downloading {remote.url} to {dest}")
    for attempt in range(1, retries + 1):
        try:
            found, resumed = _transfer(remote, part, timeout_s, chunk_bytes, log)
            wrong_format = format_problem(part, urllib.parse.urlsplit(remote.url).path)
            mismatches = _mismatches(found, [("pinned", _pinned(remote))])
            if wrong_format is None and not mismatches:
                os.replace(part, dest)
                _sibling(part, ".json").unlink(missing_ok=True)
                _record(remote, dest, found, log)
                return dest
            _discard(part)
            if not resumed:
                raise DownloadError(f"could not download {remote.url} to {dest}: {_refusal(wrong_format, mismatches)}")
            why = wrong_format or "; ".join(mismatches)
            last_error = f"the file assembled from resumed transfers is not the one wanted ({why})"
        except _Transient as err:
            last_error = str(err)
        if attempt < retries:
            delay_s = min(backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
            log(f"{remote.url}: attempt {attempt} of {retries} failed: {last_error}; retrying in {delay_s:.3g} s")
            time.sleep(delay_s)
    raise DownloadError(
        f"could not download {remote.url} to {dest}: all {retries} attempts failed; the last one: {last_error}"
    )


def _refusal(wrong_format: str | None, mismatches: list[str]) -> str:
    """Why a complete download is refused, and what to do about it (it is not retried)."""
    if wrong_format:
        return (
            f"the downloaded file {wrong_format}; the server sent something else (an error or login page?); "
            "check the URL; not retried"
        )
    return (
        f"the downloaded file does not match its pins: {'; '.join(mismatches)}; either the file on the server "
        "changed or the pin in the config is wrong (`verify: false` for this file accepts it anyway); not retried"
    )


@contextlib.contextmanager
def _exclusive(lock_path: Path, log: Callable[[str], None]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if need be), waiting while another holds it."""
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{lock_path} is locked: another fetch of this file is under way; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the handle releases the lock


def _sibling(dest: Path, suffix: str) -> Path:
    return dest.with_name(dest.name + suffix)


def _discard(part: Path) -> None:
    """Delete a ``.part`` and the record of its source."""
    part.unlink(missing_ok=True)
    _sibling(part, ".json").unlink(missing_ok=True)


def _pinned(remote: Remote) -> Values:
    """The pins that are enforced: the size always, the checksums unless ``verify`` is off."""
    pins = {"size": remote.size}
    if remote.verify:
        pins |= {"sha256": remote.sha256 and remote.sha256.lower(), "md5": remote.md5 and remote.md5.lower()}
    return {key: value for key, value in pins.items() if value is not None}


def _mismatches(found: Values, expected: list[tuple[str, Values]]) -> list[str]:
    """One line per expected value that ``found`` contradicts; ``expected`` pairs a source ("pinned",
    "recorded") with its values. Keys absent from ``found`` are not checked."""
    lines = []
    for source, values in expected:
        for key, value in values.items():
            if key in found and found[key] != value:
                unit = " bytes" if key == "size" else ""
                lines.append(f"{key} ({source}): expected {value}{unit}, found {found[key]}{unit}")
    return lines


def _reuse_existing(remote: Remote, dest: Path, chunk_bytes: int, log: Callable[[str], None]) -> bool:
    """Whether the file at ``dest`` is the wanted one (format, pins and record agree); if not, say why and delete it."""
    record_path = _sibling(dest, ".json")
    record, problems = _read_record(record_path, remote.url)
    expected = [("pinned", _pinned(remote))] + ([("recorded", record)] if record is not None else [])
    if not problems:
        wrong_format = format_problem(dest, urllib.parse.urlsplit(remote.url).path)
        problems = [f"it {wrong_format}"] if wrong_format else []
    if not problems:
        problems = _mismatches({"size": dest.stat().st_size}, expected)  # the size first: it costs nothing
    if not problems:
        found = _Digests.of_file(dest, chunk_bytes).values()
        problems = _mismatches(found, expected)
    if not problems:
        if record is None:
            _record(remote, dest, found, log)
        return True
    log(f"{dest} is not the file wanted ({'; '.join(problems)}); deleting it and downloading it again")
    dest.unlink()
    record_path.unlink(missing_ok=True)
    return False


def _read_record(path: Path, url: str) -> tuple[Values | None, list[str]]:
    """The values recorded for a file (None if it has no record), and what disqualifies the record."""
    if not path.exists():
        return None, []
    try:
        record = json.loads(path.read_text())
    except ValueError:
        return None, [f"its record {path} is unreadable"]
    if record.get("url") != url:
        return None, [f"it was downloaded from {record.get('url')}, not from {url}"]
    return {key: record[key] for key in ("size", "sha256", "md5") if key in record}, []


def _record(remote: Remote, dest: Path, found: Values, log: Callable[[str], None]) -> None:
    """Write the record of the verified file at ``dest``; if no sha256 is pinned, show the values to pin."""
    with atomic_path(_sibling(dest, ".json")) as tmp:
        tmp.write_text(json.dumps({"url": remote.url, **found}, indent=2) + "\n")
    if remote.sha256 is None:
        log(
            f"{dest}: no sha256 pinned for {remote.url}; to pin it, put in the config: "
            f"sha256: {found['sha256']}, size: {found['size']}"
        )


def _resume_point(url: str, part: Path, log: Callable[[str], None]) -> tuple[int, str | None]:
    """Where to resume ``part`` (bytes) and the validator to send as ``If-Range``. Only a ``.part`` begun from
    ``url`` by a server that named a validator is resumed; any other is discarded, and this returns (0, None)."""
    size = part.stat().st_size if part.exists() else 0
    state_path = _sibling(part, ".json")
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        state = {}
    if size and state.get("url") == url and state.get("validator"):
        return size, state["validator"]
    if size:
        if "url" not in state:
            why = f"{state_path} does not say where it comes from"
        elif state["url"] != url:
            why = f"it comes from {state['url']}"
        else:
            why = "its server named no validator (ETag, Last-Modified) to resume it by"
        log(f"{url}: not resuming {part} ({why}); starting over")
    _discard(part)
    return 0, None


def _validator(headers: Message) -> str | None:
    """What names this version of the file for ``If-Range``: a strong ETag, else Last-Modified (None if neither)."""
    etag = headers.get("ETag")
    return etag if etag and not etag.startswith("W/") else headers.get("Last-Modified")


def _transfer(
    remote: Remote, part: Path, timeout_s: float, chunk_bytes: int, log: Callable[[str], None]
) -> tuple[Values, bool]:
    """Stream ``remote`` into ``part``, resuming what is there if it may (see :func:`_resume_point`); return the
    size and checksums of the whole ``part``, and whether it continued an earlier transfer."""
    url = remote.url
    offset, validator = _resume_point(url, part, log)
    request = urllib.request.Request(
        url, headers={"Range": f"bytes={offset}-", "If-Range": validator} if offset else {}
    )
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:  # the .part is no prefix the server can continue
            log(f"{url}: the server cannot resume at byte {offset:,} (HTTP 416); starting over")
            _discard(part)
            return _transfer(remote, part, timeout_s, chunk_bytes, log)
        if err.code in RETRYABLE_STATUS or err.code >= 500:
            raise _Transient(f"HTTP {err.code} {err.reason}") from err
        raise DownloadError(f"could not download {url}: HTTP {err.code} {err.reason} (not retried)") from err
    except NETWORK_ERRORS as err:
        raise _Transient(f"{type(err).__name__}: {err}") from err
    with response:
        start, total = _extent(response)
        _refuse_announced(remote, response, total)
        resumed = response.status == 206
        if resumed:
            if start != offset:
                _discard(part)
                raise _Transient(f"asked for bytes from {offset:,}, got bytes from {start:,}; starting over")
            if _validator(response.headers) != validator:
                _discard(part)
                raise _Transient(f"the file changed on the server since byte {offset:,} was fetched; starting over")
            log(f"{url}: resuming at byte {offset:,}")
            digests = _Digests.of_file(part, chunk_bytes)
        else:
            if offset:
                log(f"{url}: the server sent the whole file, not bytes from {offset:,} (changed since?); starting over")
            with atomic_path(_sibling(part, ".json")) as tmp:
                tmp.write_text(json.dumps({"url": url, "validator": _validator(response.headers)}) + "\n")
            digests = _Digests()
        with part.open("ab" if resumed else "wb") as out:
            _stream(url, response, out, digests, total, chunk_bytes, log)
    if total is not None and digests.size != total:  # a transfer cut short (or a confused server)
        raise _Transient(f"the transfer ended at byte {digests.size:,} of the {total:,} announced")
    return digests.values(), resumed


def _refuse_announced(remote: Remote, response: http.client.HTTPResponse, total: int | None) -> None:
    """Raise :class:`DownloadError`, before any of the body is read, if the headers say it is not the file:
    an HTML page, or a size other than the pinned one."""
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type == "text/html":
        raise DownloadError(
            f"could not download {remote.url}: the server answered with an HTML page (Content-Type: text/html), "
            "not the file (an error or login page?); check the URL; not retried"
        )
    if remote.size is not None and total is not None and total != remote.size:
        raise DownloadError(
            f"could not download {remote.url}: size (pinned): expected {remote.size} bytes, the server announces "
            f"{total} bytes; either the file on the server changed or the pin in the config is wrong; nothing "
            "was downloaded, not retried"
        )


def _extent(response: http.client.HTTPResponse) -> tuple[int, int | None]:
    """(first byte of the body, size of the whole file or None if not announced), in bytes."""
    length = response.headers.get("Content-Length")
    if response.status != 206:
        return 0, int(length) if length is not None else None
    content_range = response.headers.get("Content-Range", "")
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range.strip())
    if match is None:
        raise _Transient(f"unreadable Content-Range {content_range!r} in a 206 response")
    return int(match[1]), int(match[3]) if match[3] != "*" else None


def _stream(
    url: str,
    response: http.client.HTTPResponse,
    out: BinaryIO,
    digests: _Digests,
    total: int | None,
    chunk_bytes: int,
    log: Callable[[str], None],
) -> None:
    """Copy the body to ``out`` and ``digests`` in ``chunk_bytes`` pieces, logging progress now and then."""
    started = last_report = time.monotonic()
    first = digests.size

    def report(now: float) -> None:
        rate = (digests.size - first) / 1e6 / max(now - started, 1e-9)
        log(f"{url}: {digests.size:,} / {f'{total:,}' if total is not None else '?'} bytes, {rate:.1f} MB/s")

    while True:
        try:
            chunk = response.read(chunk_bytes)
        except NETWORK_ERRORS as err:
            raise _Transient(f"the connection failed after {digests.size:,} bytes: {err}") from err
        if not chunk:
            break
        out.write(chunk)
        digests.update(chunk)
        now = time.monotonic()
        if now - last_report >= PROGRESS_EVERY_S:
            report(now)
            last_report = now
    report(time.monotonic())
