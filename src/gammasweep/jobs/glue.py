"""The little that every workflow script shares: logging to the rule's ``log:`` file."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from typing import Any


@contextlib.contextmanager
def job_log(snakemake: Any) -> Iterator[None]:
    """Send the job's stdout and stderr (and any traceback) to its log; use the job's thread count."""
    import torch

    torch.set_num_threads(max(int(snakemake.threads), 1))
    with open(snakemake.log[0], "w", buffering=1) as log, redirect_stdout(log), redirect_stderr(log):
        try:
            yield
        except BaseException:
            traceback.print_exc()
            raise
