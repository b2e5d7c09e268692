"""Atomic output (gammasweep.results.io.atomic_path): results readable as the umask says, synced to the disk,
and no temporary file left by a writer stopped by SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import pytest

from gammasweep.results.io import atomic_path


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"])
def test_a_result_has_the_mode_the_umask_gives(tmp_path, umask, mode):
    """On a shared directory a colleague reads the results (umask 022), unless the umask says otherwise."""
    before = os.umask(umask)
    try:
        with atomic_path(tmp_path / "result.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == mode


def test_the_file_is_synced_before_the_rename_and_its_directory_after(tmp_path, monkeypatch):
    final = tmp_path / "result.json"
    synced: list[tuple[str, bool]] = []
    fsync = os.fsync

    def spy(fd: int) -> None:
        kind = "directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        synced.append((kind, final.exists()))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    with atomic_path(final) as tmp:
        tmp.write_text("{}")
    assert synced == [("file", False), ("directory", True)]


# A pool writer that has written a block and waits, as in the middle of a long pool. Both signals kill it
# outright unless the writer says otherwise (SIGINT too: Python's KeyboardInterrupt would clean up anyway).
WRITER = """
import signal, sys, time
import numpy as np
from gammasweep.data.pools import image_writer

signal.signal(signal.SIGINT, signal.SIG_DFL)
with image_writer(sys.argv[1], 1000, (8, 8, 1)) as pool:
    pool.write(np.zeros((10, 8, 8, 1), np.uint8), np.zeros(10, np.int64))
    print("writing", flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_writer_stopped_by_a_signal_leaves_no_temporary_file_and_no_output(tmp_path, number):
    """SIGTERM (scancel, a time limit, Snakemake stopping its jobs) or SIGINT in the middle of a pool:
    neither the pool nor its temporary file is left."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path / "pools" / "pool.h5")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline() == "writing\n", writer.stderr.read()
        assert [p.name.endswith(".tmp") for p in (tmp_path / "pools").iterdir()] == [True]
        writer.send_signal(number)
        writer.wait(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode != 0
    assert list((tmp_path / "pools").iterdir()) == []
