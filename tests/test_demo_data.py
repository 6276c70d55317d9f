"""The demo's videos are the same bytes on every run, so results and cluster-vs-local comparisons reproduce."""
import hashlib

from pipeline.demo_data import DemoSettings, generate

TINY = DemoSettings(n_train=2, n_test=1, min_duration_s=3.0, max_duration_s=4.0, min_action_s=1.0, max_action_s=1.5,
                    max_actions=1)


def digests(root):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "videos").glob("*.mp4"))}


def test_generation_is_byte_identical(tmp_path):
    runs = [digests((generate(tmp_path / f"run{i}", TINY, progress=False), tmp_path / f"run{i}")[1])
            for i in range(4)]
    assert len(runs[0]) == 3 and all(r == runs[0] for r in runs)
