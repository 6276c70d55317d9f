import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.tvl1 import TVL1Params
from pipeline.decode import DecodeSettings, run as decode_run
from pipeline.demo_data import DemoSettings, generate
from pipeline.flow import FlowRuntime, FlowSettings, compute_flow, run
from pipeline.core.flow_files import dequantize, quantize
from pipeline.core.io import NpyAppender

FAST = FlowSettings(tvl1=TVL1Params(nscales=2, warps=2, outer_iterations=2, inner_iterations=10))
EAGER = FlowRuntime(compile=False, batch_size=8)


def test_quantize_by_hand():
    f = np.array([-25.0, -20.0, -0.1, 0.0, 0.1, 19.99, 20.0, 30.0], np.float32)
    assert quantize(f, 20, "floor").tolist() == [0, 0, 126, 127, 128, 254, 255, 255]
    assert quantize(f, 20, "round").tolist() == [0, 0, 127, 128, 128, 255, 255, 255]
    assert dequantize(np.array([0, 255], np.uint8)).tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match="quantize must be"):
        quantize(f, 20, "ceil")


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    root = tmp_path_factory.mktemp("flowdemo")
    generate(root, DemoSettings(n_train=1, n_test=1, min_duration_s=3, max_duration_s=3, min_action_s=1,
                                max_action_s=1.5, max_actions=1), progress=False)
    out = root / "decoded"
    meta = decode_run(str(root / "videos" / "demo_test_0001.mp4"), str(out / "frames.npy"), str(out / "meta.json"),
                      DecodeSettings(short_side=64, crop=64), "skip", progress=False)
    assert meta["n_snippets"] == 4
    return out


def test_flow_layout_and_last_frame(tmp_path, decoded):
    meta = compute_flow(decoded / "frames.npy", tmp_path / "flow.npy", FAST, EAGER)
    flow = np.load(tmp_path / "flow.npy", mmap_mode="r")
    assert flow.shape == (4, 16, 64, 64, 2) and flow.dtype == np.uint8
    assert meta["n_pairs"] == 63 and meta["n_blocks"] == 4
    seq = flow.reshape(64, 64, 64, 2)
    assert np.array_equal(seq[-1], seq[-2])  # the last frame repeats the flow before it
    assert seq.std() > 0.5  # the background scrolls: the flow is not all zero


def test_batch_size_does_not_change_flow(tmp_path, decoded):
    compute_flow(decoded / "frames.npy", tmp_path / "a.npy", FAST, FlowRuntime(compile=False, batch_size=5))
    compute_flow(decoded / "frames.npy", tmp_path / "b.npy", FAST, FlowRuntime(compile=False, batch_size=64))
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_torch_and_opencv_backends_agree(tmp_path, decoded):
    compute_flow(decoded / "frames.npy", tmp_path / "t.npy", FAST, EAGER)
    compute_flow(decoded / "frames.npy", tmp_path / "o.npy", FlowSettings(**{**FAST.__dict__, "backend": "opencv"}),
                 EAGER)
    a = np.load(tmp_path / "t.npy").astype(int)
    b = np.load(tmp_path / "o.npy").astype(int)
    diff = np.abs(a - b)
    assert np.mean(diff <= 1) > 0.99, np.mean(diff <= 1)  # within one quantization step (0.16 px)


def test_skipped_video_gets_empty_flow(tmp_path):
    frames = tmp_path / "frames.npy"
    NpyAppender(frames, (16, 48, 48, 3)).close()
    (tmp_path / "dmeta.json").write_text(json.dumps({"video": "bad", "status": "skipped", "reason": "corrupt"}))
    meta = run(str(frames), str(tmp_path / "dmeta.json"), str(tmp_path / "flow.npy"), str(tmp_path / "meta.json"),
               FAST, EAGER, progress=False)
    assert meta["status"] == "skipped" and meta["reason"] == "corrupt" and meta["n_pairs"] == 0
    assert np.load(tmp_path / "flow.npy").shape == (0, 16, 48, 48, 2)


MEASURE = """
import resource, sys
from pipeline.flow import FlowRuntime, FlowSettings, compute_flow
from models.tvl1 import TVL1Params
s = FlowSettings(tvl1=TVL1Params(nscales=1, warps=1, outer_iterations=1, inner_iterations=2, median_filtering=1))
compute_flow(sys.argv[1], sys.argv[2], s, FlowRuntime(compile=False, batch_size=32))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_flow_memory_does_not_grow_with_video_length(tmp_path):
    rng = np.random.default_rng(0)
    peaks = {}
    for n in (20, 200):  # snippets of 16 frames at 64x64
        frames = tmp_path / f"f{n}.npy"
        w = NpyAppender(frames, (16, 64, 64, 3))
        for _ in range(n):
            w.write(rng.integers(0, 255, (1, 16, 64, 64, 3), dtype=np.uint8))
        w.close()
        r = subprocess.run([sys.executable, "-c", MEASURE, str(frames), str(tmp_path / f"o{n}.npy")],
                           capture_output=True, text=True, check=True)
        peaks[n] = int(r.stdout.split()[-1]) / 1024
    grown_data_mb = 180 * 16 * 64 * 64 * 5 / 2**20  # frames + flow of the extra 180 snippets
    assert grown_data_mb > 50
    assert peaks[200] - peaks[20] < 20, peaks


def test_compile_decided_by_break_even():
    """The CPU compiles where the saving outgrows the compile: never for the demo, for a minute at 224 px
    always, for a few seconds only when the node's cache is warm."""
    from pipeline.flow import compile_pays

    demo = TVL1Params(nscales=2, warps=1, outer_iterations=2, inner_iterations=10)
    assert not compile_pays(500, 80, 80, demo, "warm")[0]
    minute = compile_pays(1500, 224, 224, TVL1Params(), "cold")
    assert minute[0] and "1500 pairs of 224x224" in minute[1] and "cold" in minute[1]
    assert compile_pays(150, 224, 224, TVL1Params(), "warm")[0]
    assert not compile_pays(150, 224, 224, TVL1Params(), "cold")[0]
    assert not compile_pays(60, 224, 224, TVL1Params(), "warm")[0]


def test_compile_choice_recorded(tmp_path, decoded):
    meta = compute_flow(decoded / "frames.npy", tmp_path / "flow.npy", FAST, FlowRuntime(batch_size=8))
    assert meta["compile"]["asked"] == "auto" and meta["compile"]["compiled"] is False
    assert "63 pairs of 64x64" in meta["compile"]["why"]
    assert compute_flow(decoded / "frames.npy", tmp_path / "f2.npy", FAST, EAGER)["compile"] == \
        {"asked": False, "compiled": False}


def test_compile_cache_is_the_users_node_folder(monkeypatch, tmp_path):
    import os

    from pipeline.flow import compile_cache_dir

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the job's scratch: wiped with the job, not used
    path = compile_cache_dir(FlowRuntime())
    assert path == Path("/tmp") / f"vidloc-{os.getuid()}" / "torch-compile"
    assert oct(path.stat().st_mode & 0o777) == "0o700"
    assert compile_cache_dir(FlowRuntime(cache_dir=str(tmp_path / "c"))) == tmp_path / "c"


@pytest.mark.slow
def test_second_run_reuses_the_compiled_kernels(tmp_path, decoded):
    """Two runs in two processes and two results folders: the second finds every kernel in the node's cache."""
    def flow_job(out):
        subprocess.run([sys.executable, "-m", "pipeline.flow", str(decoded / "frames.npy"), "--decode-meta",
                        str(decoded / "meta.json"), "--flow", str(out / "flow.npy"), "--meta", str(out / "meta.json"),
                        "--settings", json.dumps({"tvl1": {"nscales": 2, "warps": 1, "outer_iterations": 1,
                                                            "inner_iterations": 3}}),
                        "--runtime", json.dumps({"compile": True}), "--no-progress"], check=True)
        return json.loads((out / "meta.json").read_text())["compile"]

    first = flow_job(tmp_path / "results_a")
    second = flow_job(tmp_path / "results_b")
    assert first["compiled"] and second["compiled"]
    assert first["cache_dir"] == second["cache_dir"]
    assert second["cache"] == "warm", second
    assert second["cache_misses"] == 0 and second["cache_hits"] > 0, second
