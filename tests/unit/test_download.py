"""The downloader against a real HTTP server on localhost, with injected faults."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading

import pytest
from httpserver import HTML_PAGE, FileServer, Request, corrupted, etag

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


def leave_part(server: FileServer, dest, cut: int = 150_000, path: str = PATH) -> None:
    """A fetch of ``path`` cut short after ``cut`` bytes with no attempt left: it leaves a .part and its record."""
    server.inject(path, cut_after=cut)
    with pytest.raises(DownloadError, match="all 1 attempts failed"):
        fetch(Remote(server.url(path)), dest, retries=1, log=lambda line: None, **FAST)
    assert sibling(dest, ".part").stat().st_size == cut


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
    assert [r.if_range for r in requests] == [None] + 3 * [etag(PAYLOAD)]  # each resume names the version it continues
    assert [r.status for r in requests] == [200, 206, 206, 206]
    assert not sibling(dest, ".part.json").exists()
    assert sum(r.body_bytes for r in requests) < 2 * len(PAYLOAD)


def test_server_ignoring_range_requests_still_gives_the_file(server, dest):
    server.inject(PATH, cut_after=100_000)
    server.inject(PATH, ignore_range=True, times=None)
    lines = []
    fetch(pinned(server), dest, log=lines.append, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [(r.range, r.status) for r in gets(server)] == [(None, 200), ("bytes=100000-", 200)]
    assert any("the server sent the whole file, not bytes from 100,000" in line for line in lines)


def test_download_that_does_not_match_its_pins_fails_at_once_naming_both_checksums(server, dest):
    server.inject(PATH, corrupt=True, times=None)
    with pytest.raises(DownloadError) as error:
        fetch(pinned(server), dest, retries=5, log=lambda line: None, **FAST)
    message = str(error.value)
    assert f"expected {SHA256}, found {hashlib.sha256(corrupted(PAYLOAD)).hexdigest()}" in message
    assert "pin in the config is wrong" in message and "verify: false" in message and "not retried" in message
    assert not dest.exists() and not sibling(dest, ".part").exists()
    assert len(gets(server)) == 1  # a wrong pin is no transient fault: one complete download, not five


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


@pytest.mark.parametrize("verify", [True, False])
def test_announced_size_other_than_the_pinned_one_fails_before_any_body_is_read(server, dest, verify):
    with pytest.raises(
        DownloadError, match="size \\(pinned\\): expected 1000 bytes, the server announces 393216"
    ) as error:
        fetch(pinned(server, size=1000, verify=verify), dest, retries=5, log=lambda line: None, **FAST)
    assert "nothing was downloaded" in str(error.value)
    assert len(gets(server)) == 1  # not retried
    assert not dest.exists() and not sibling(dest, ".part").exists()  # no byte of the body was stored


def test_leftover_part_is_resumed(server, dest):
    leave_part(server, dest)
    fetch(pinned(server), dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [(r.range, r.if_range, r.status, r.body_bytes) for r in gets(server)][1:] == [
        ("bytes=150000-", etag(PAYLOAD), 206, len(PAYLOAD) - 150_000)
    ]


def test_leftover_part_with_wrong_bytes_is_caught_by_the_pin_and_fetched_whole(server, dest):
    leave_part(server, dest)
    sibling(dest, ".part").write_bytes(corrupted(PAYLOAD[:150_000]))
    lines = []
    fetch(pinned(server), dest, log=lines.append, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r.range for r in gets(server)][1:] == ["bytes=150000-", None]
    assert any("assembled from resumed transfers is not the one wanted" in line for line in lines)


def test_leftover_part_longer_than_the_file_starts_over(server, dest):
    leave_part(server, dest)
    sibling(dest, ".part").write_bytes(PAYLOAD + b"trailing garbage")
    fetch(pinned(server), dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [(r.range, r.status) for r in gets(server)][1:] == [(f"bytes={len(PAYLOAD) + 16}-", 416), (None, 200)]


def test_leftover_part_without_its_record_is_not_resumed(server, dest):
    dest.parent.mkdir()
    sibling(dest, ".part").write_bytes(PAYLOAD[:150_000])  # from where? with what validator? unknown
    lines = []
    fetch(Remote(server.url(PATH)), dest, log=lines.append, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r.range for r in gets(server)] == [None]
    assert any("does not say where it comes from" in line for line in lines)


def test_leftover_part_from_another_url_is_not_resumed(server, dest):
    server.files["/old/part0.bin"] = random.Random(1).randbytes(len(PAYLOAD))  # the config's URL changed since
    leave_part(server, dest, path="/old/part0.bin")
    lines = []
    fetch(Remote(server.url(PATH)), dest, log=lines.append, **FAST)  # unpinned: nothing else would catch a splice
    assert dest.read_bytes() == PAYLOAD
    assert [(r.path, r.range) for r in gets(server)] == [("/old/part0.bin", None), (PATH, None)]
    assert any(f"it comes from {server.url('/old/part0.bin')}" in line for line in lines)


def test_file_changed_on_the_server_between_attempts_is_fetched_whole_not_spliced(server, dest):
    leave_part(server, dest)
    new = random.Random(2).randbytes(len(PAYLOAD) + 1000)
    server.files[PATH] = new
    fetch(Remote(server.url(PATH)), dest, **FAST)  # unpinned
    assert dest.read_bytes() == new
    assert [(r.range, r.if_range, r.status) for r in gets(server)][1:] == [("bytes=150000-", etag(PAYLOAD), 200)]
    assert json.loads(sibling(dest, ".json").read_text())["sha256"] == hashlib.sha256(new).hexdigest()


def test_server_without_validators_is_not_resumed(server, dest):
    server.inject(PATH, cut_after=100_000, no_validator=True)
    server.inject(PATH, no_validator=True, times=None)
    lines = []
    fetch(Remote(server.url(PATH)), dest, log=lines.append, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [(r.range, r.status) for r in gets(server)] == [(None, 200), (None, 200)]
    assert any("named no validator" in line for line in lines)


def test_html_error_page_is_refused_at_once(server, dest):
    server.inject(PATH, html=True, times=None)  # 200, Content-Type: text/html
    with pytest.raises(DownloadError, match="answered with an HTML page") as error:
        fetch(Remote(server.url(PATH)), dest, retries=5, log=lambda line: None, **FAST)
    assert server.url(PATH) in str(error.value)
    assert len(gets(server)) == 1
    assert not dest.exists() and not sibling(dest, ".part").exists() and not sibling(dest, ".json").exists()


def test_file_that_is_not_the_format_its_url_names_is_refused_at_once(server, dest):
    server.files["/cifar-10-python.tar.gz"] = HTML_PAGE  # a page served as application/octet-stream
    with pytest.raises(DownloadError, match="is not a gzip file.*an HTML page, not data.*check the URL"):
        fetch(Remote(server.url("/cifar-10-python.tar.gz")), dest, retries=5, log=lambda line: None, **FAST)
    assert len(gets(server)) == 1
    assert not dest.exists() and not sibling(dest, ".part").exists() and not sibling(dest, ".json").exists()


def test_recorded_file_that_is_not_its_format_is_fetched_again(server, dest):
    gz = "/mnist/t10k-labels-idx1-ubyte.gz"
    server.files[gz] = b"\x1f\x8b" + PAYLOAD
    dest.parent.mkdir()
    dest.write_bytes(HTML_PAGE)  # accepted and recorded, unpinned, before formats were checked
    sibling(dest, ".json").write_text(json.dumps({"url": server.url(gz), "size": len(HTML_PAGE)}))
    lines = []
    fetch(Remote(server.url(gz)), dest, log=lines.append, **FAST)
    assert dest.read_bytes() == server.files[gz]
    assert any("is not a gzip file" in line and "deleting it" in line for line in lines)


def test_concurrent_fetches_of_one_file_download_it_once(server, dest):
    server.inject(PATH, chunk_delay_s=0.02, times=None)  # about half a second per download: the fetches overlap
    results, lines = [], []

    def fetch_it() -> None:
        results.append(fetch(Remote(server.url(PATH)), dest, log=lines.append, **FAST))

    threads = [threading.Thread(target=fetch_it) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [dest, dest]
    assert dest.read_bytes() == PAYLOAD
    assert [(r.range, r.status) for r in gets(server)] == [(None, 200)]  # the second found the first's file
    assert any("another fetch of this file is under way; waiting" in line for line in lines)
