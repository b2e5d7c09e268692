"""The little that every workflow script shares: logging to the rule's ``log:`` file."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from typing import Any


@contextlib.contextmanager
def job_log(snakemake: Any) -> Iterator[None]:
    """Send the job's stdout and stderr (and any traceback) to its log. A job that computes with torch
    (imported by then) uses its thread count; the others never import it (2.4 s a figure job)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(max(int(snakemake.threads), 1))
    with open(snakemake.log[0], "w", buffering=1) as log, redirect_stdout(log), redirect_stderr(log):
        try:
            yield
        except BaseException:
            traceback.print_exc()
            raise
