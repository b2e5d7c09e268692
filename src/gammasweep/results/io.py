"""Atomic file output: a result is either complete under its final name or absent."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    The temporary file lives in the same directory (same filesystem), so the final ``os.replace``
    is atomic: readers never see a partially written result.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as err:  # a full disk, a quota, a vanished directory: say which result was lost
        raise OSError(err.errno, f"could not write {final} ({err}); nothing was written under that name") from err
    finally:
        tmp.unlink(missing_ok=True)
