"""One progress helper for every long stage."""
import re

from conftest import REPO
from pipeline.progress import progress_bar


def test_stages_draw_progress_only_through_the_helper():
    direct = [p.name for p in (REPO / "pipeline").glob("*.py")
              if p.name != "progress.py" and re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)]
    assert direct == []


def test_a_log_file_gets_a_line_at_most_every_30_s_and_a_disabled_bar_still_counts(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    bar = progress_bar(total=3, desc="x", unit="it")
    assert bar.mininterval == 30.0  # pytest's stderr is not a tty
    bar.close()
    off = progress_bar(range(3), desc="y", unit="it", enabled=False)
    assert list(off) == [0, 1, 2] and off.disable
