"""The one progress bar every long stage uses: tqdm on stderr, which the workflow sends to the job's log.

In a terminal it redraws as usual. In a log file (not a tty) it writes a line
at most every 30 s, so a day-long job's log stays readable and small.
``TQDM_DISABLE=1`` turns every bar off (tqdm's own switch).
"""
from __future__ import annotations

import sys


def progress_bar(iterable=None, *, desc: str, unit: str, total: int | None = None, initial: int = 0,
                 enabled: bool = True):
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    kwargs = {} if enabled else {"disable": True}  # enabled: tqdm's default, which TQDM_DISABLE can turn off
    return tqdm(iterable, desc=desc, unit=unit, total=total, initial=initial, file=sys.stderr,
                mininterval=0.1 if tty else 30.0, dynamic_ncols=tty, ascii=not tty, **kwargs)
