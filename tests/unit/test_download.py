"""The downloader against a real HTTP server on localhost, with injected faults."""

from __future__ import annotations

import hashlib
import json
import random
import socket

import pytest
from httpserver import FileServer, Request, corrupted

from gammasweep.data.download import DownloadError, Remote, fetch

PAYLOAD = random.Random(0).randbytes(128 * 3072)  # the size of 128 CIFAR images (32 x 32 x 3 uint8): 393,216 bytes
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()
PATH = "/cifar5m/part0.bin"
FAST = dict(chunk_bytes=16 * 1024, backoff_s=0.01, timeout_s=5.0)  # many chunks per transfer, no long waits


@pytest.fixture
def server():
    with FileServer({PATH: PAYLOAD}) as server:
        yield server


@pytest.fixture
def dest(tmp_path):
    return tmp_path / "raw" / "part0.bin"


def pinned(server: FileServer, **fields) -> Remote:
    return Remote(server.url(PATH), **{"size": len(PAYLOAD), "sha256": SHA256, "md5": MD5, **fields})


def gets(server: FileServer) -> list[Request]:
    return [request for request in server.requests if request.method == "GET"]


def sibling(dest, suffix: str):
    return dest.with_name(dest.name + suffix)


def test_good_download_is_recorded_and_not_fetched_again(server, dest):
    lines = []
    assert fetch(pinned(server), dest, log=lines.append, **FAST) == dest
    assert dest.read_bytes() == PAYLOAD
    assert json.loads(sibling(dest, ".json").read_text()) == {
        "url": server.url(PATH),
        "size": len(PAYLOAD),
        "sha256": SHA256,
        "md5": MD5,
    }
    assert not sibling(dest, ".part").exists()
    assert "393,216 / 393,216 bytes" in lines[-1]  # the closing progress line; a pinned sha256 needs no advice
    assert [(r.range, r.status, r.body_bytes) for r in gets(server)] == [(None, 200, len(PAYLOAD))]

    assert fetch(pinned(server), dest, log=lines.append, **FAST) == dest
    assert len(server.requests) == 1


def test_interrupted_transfers_resume_with_range_requests(server, dest):
    server.inject(PATH, cut_after=100_000, times=3)
    fetch(Remote(server.url(PATH)), dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    requests = gets(server)
    assert [r.range for r in requests] == [None, "bytes=100000-", "bytes=200000-", "bytes=300000-"]
    assert [r.status for r in requests] == [200, 206, 206, 206]
    assert sum(r.body_bytes for r in requests) < 2 * len(PAYLOAD)


def test_server_ignoring_range_requests_still_gives_the_file(server, dest):
    server.inject(PATH, cut_after=100_000)
    server.inject(PATH, ignore_range=True, times=None)
    lines = []
    fetch(pinned(server), dest, log=lines.append, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [(r.range, r.status) for r in gets(server)] == [(None, 200), ("bytes=100000-", 200)]
    assert any("ignored the request to resume at byte 100,000" in line for line in lines)


def test_corrupt_transfer_is_rejected_and_fetched_again(server, dest):
    server.inject(PATH, corrupt=True)
    lines = []
    fetch(pinned(server), dest, log=lines.append, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r.range for r in gets(server)] == [None, None]  # the bad .part was deleted, not resumed
    assert any(f"sha256 (pinned): expected {SHA256}" in line for line in lines)


def test_server_that_never_serves_the_pinned_bytes_fails_naming_both_checksums(server, dest):
    server.inject(PATH, corrupt=True, times=None)
    with pytest.raises(DownloadError) as error:
        fetch(pinned(server), dest, retries=3, log=lambda line: None, **FAST)
    message = str(error.value)
    assert f"expected {SHA256}, found {hashlib.sha256(corrupted(PAYLOAD)).hexdigest()}" in message
    assert "pin in the config is wrong" in message and "verify: false" in message
    assert not dest.exists() and not sibling(dest, ".part").exists()
    assert len(gets(server)) == 3


@pytest.mark.parametrize(
    "damage, reported",
    [
        (lambda data: data[:200_000], "size (recorded): expected 393216 bytes, found 200000 bytes"),
        (corrupted, f"sha256 (recorded): expected {SHA256}, found {hashlib.sha256(corrupted(PAYLOAD)).hexdigest()}"),
    ],
)
def test_file_damaged_on_disk_is_caught_by_its_record(server, dest, damage, reported):
    lines = []
    fetch(Remote(server.url(PATH)), dest, log=lines.append, **FAST)  # nothing pinned: only the record knows the file
    assert f"sha256: {SHA256}, size: {len(PAYLOAD)}" in lines[-1]  # the values to paste into the config
    dest.write_bytes(damage(PAYLOAD))
    lines.clear()
    fetch(Remote(server.url(PATH)), dest, log=lines.append, **FAST)
    assert any(str(dest) in line and reported in line for line in lines), lines
    assert dest.read_bytes() == PAYLOAD
    assert len(gets(server)) == 2


def test_existing_file_without_record_is_checked_against_the_pins_and_recorded(server, dest):
    dest.parent.mkdir()
    dest.write_bytes(PAYLOAD)
    fetch(pinned(server), dest, **FAST)
    assert json.loads(sibling(dest, ".json").read_text())["sha256"] == SHA256
    assert server.requests == []


def test_file_recorded_from_another_url_is_fetched_again(server, dest):
    server.files["/mirror/part0.bin"] = PAYLOAD
    fetch(Remote(server.url("/mirror/part0.bin")), dest, **FAST)
    lines = []
    fetch(Remote(server.url(PATH)), dest, log=lines.append, **FAST)
    assert any("it was downloaded from" in line for line in lines)
    assert json.loads(sibling(dest, ".json").read_text())["url"] == server.url(PATH)


def test_http_500_twice_then_success(server, dest):
    server.inject(PATH, fail_status=500, times=2)
    fetch(pinned(server), dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r.status for r in gets(server)] == [500, 500, 200]


def test_persistent_http_503_fails_after_all_attempts(server, dest):
    server.inject(PATH, fail_status=503, times=None)
    with pytest.raises(DownloadError, match="all 3 attempts failed") as error:
        fetch(pinned(server), dest, retries=3, log=lambda line: None, **FAST)
    assert server.url(PATH) in str(error.value) and "HTTP 503" in str(error.value)
    assert len(gets(server)) == 3 and not dest.exists()


def test_refused_connections_are_retried_then_reported(dest):
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/part0.bin"
    lines = []
    with pytest.raises(DownloadError, match="all 2 attempts failed") as error:
        fetch(Remote(url), dest, retries=2, log=lines.append, **FAST)
    assert url in str(error.value) and "refused" in str(error.value)
    assert any("attempt 1 of 2 failed" in line for line in lines)


def test_http_404_fails_at_once(server, dest):
    url = server.url("/no/such/file.bin")
    with pytest.raises(DownloadError, match="HTTP 404") as error:
        fetch(Remote(url), dest, **FAST)
    assert url in str(error.value)
    assert len(server.requests) == 1


def test_verify_false_accepts_a_wrong_checksum_pin_with_a_warning(server, dest):
    lines = []
    remote = pinned(server, sha256="0" * 64, verify=False)
    fetch(remote, dest, log=lines.append, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert sum("warning" in line for line in lines) == 1
    assert json.loads(sibling(dest, ".json").read_text())["sha256"] == SHA256
    fetch(remote, dest, log=lines.append, **FAST)  # the record, not the ignored pin, decides: no new download
    assert len(server.requests) == 1


def test_verify_false_still_enforces_the_pinned_size(server, dest):
    with pytest.raises(DownloadError, match="expected 1000 bytes"):
        fetch(pinned(server, size=1000, verify=False), dest, retries=2, log=lambda line: None, **FAST)
    assert not dest.exists()


def test_leftover_part_is_resumed(server, dest):
    dest.parent.mkdir()
    sibling(dest, ".part").write_bytes(PAYLOAD[:150_000])
    fetch(pinned(server), dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [(r.range, r.status, r.body_bytes) for r in gets(server)] == [("bytes=150000-", 206, len(PAYLOAD) - 150_000)]


def test_leftover_part_with_wrong_bytes_is_caught_by_the_pin(server, dest):
    dest.parent.mkdir()
    sibling(dest, ".part").write_bytes(corrupted(PAYLOAD[:150_000]))
    fetch(pinned(server), dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r.range for r in gets(server)] == ["bytes=150000-", None]


def test_leftover_part_longer_than_the_file_starts_over(server, dest):
    dest.parent.mkdir()
    sibling(dest, ".part").write_bytes(PAYLOAD + b"trailing garbage")
    fetch(pinned(server), dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [(r.range, r.status) for r in gets(server)] == [(f"bytes={len(PAYLOAD) + 16}-", 416), (None, 200)]
