"""Atomic file output: a result is either complete under its final name or absent; and the error of a
result that cannot be read back."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

FATAL_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # a writer removes its temporary file on these


class BadResultFile(ValueError):
    """A result file that cannot be used; the message names it and how to rebuild it."""

    what = "result file"

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{self.what} {path} {problem}; rebuild it with: rm '{path}' && snakemake '{path}'")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    The temporary file lives in the same directory (same filesystem), so the final ``os.replace``
    is atomic: readers never see a partially written result. The file is synced before the rename
    and the directory after it, so a crash of the machine leaves the old result or the whole new one.
    The result gets the mode the umask gives a new file (0644 under umask 022), not mkstemp's 0600.
    SIGTERM or SIGINT meanwhile, where they would kill the process outright, exit it through the
    removal of the temporary file instead (``_exit_on_signals``).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _exit_on_signals():
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            _fsync(tmp)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, final)
        except OSError as err:  # a full disk, a quota, a vanished directory: say which result was lost
            raise OSError(err.errno, f"could not write {final} ({err}); nothing was written under that name") from err
        finally:
            tmp.unlink(missing_ok=True)
        _fsync(final.parent)  # the rename, on the disk


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's contents (a directory's: its entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask (read by setting it, to the strictest value meanwhile, and restoring it)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _exit(number: int, frame: object) -> None:
    raise SystemExit(128 + number)  # the shell's exit status of a process killed by the signal


@contextlib.contextmanager
def _exit_on_signals() -> Iterator[None]:
    """While the block runs, make the ``FATAL_SIGNALS`` that would kill the process outright (default
    action) raise SystemExit instead, so that ``finally`` clauses run; a handler the program set itself
    (a trainer's checkpoint-and-stop, Python's KeyboardInterrupt) is left alone."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    replaced = [sig for sig in FATAL_SIGNALS if signal.getsignal(sig) == signal.SIG_DFL]
    for sig in replaced:
        signal.signal(sig, _exit)
    try:
        yield
    finally:
        for sig in replaced:
            signal.signal(sig, signal.SIG_DFL)
