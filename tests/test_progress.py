"""One progress helper for every long stage."""
import os
import re
import subprocess
import sys

from conftest import REPO
from pipeline.core.progress import progress_bar


def test_stages_draw_progress_only_through_the_helper():
    direct = [p.name for p in (REPO / "pipeline").glob("*.py")
              if p.name != "progress.py" and re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)]
    assert direct == []


def test_a_log_file_gets_a_line_at_most_every_30_s_and_a_disabled_bar_still_counts(tmp_path):
    # in a fresh process: tqdm reads TQDM_DISABLE once, when it is imported
    code = ("from pipeline.core.progress import progress_bar\n"
            "bar = progress_bar(total=3, desc='x', unit='it')\n"
            "print(bar.mininterval, bar.disable)")
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    with open(tmp_path / "log", "w") as log:  # stderr to a file, as a job's log
        r = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                           env=env, check=True)
    assert r.stdout.split() == ["30.0", "False"]
    off = progress_bar(range(3), desc="y", unit="it", enabled=False)
    assert list(off) == [0, 1, 2] and off.disable
