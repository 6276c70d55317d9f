"""Warm starts (pipeline/warm.py): a job forked from the per-node worker behaves like the process it replaces."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

from test_features import write_inputs

WARM = [sys.executable, "-m", "pipeline.warm"]
RANDOM = json.dumps({"rgb_weights": "random", "flow_weights": "random", "random_seed": 0})


def features_args(tmp_path, out_name="v"):
    frames, flow = tmp_path / "frames.npy", tmp_path / "flow.npy"
    out = tmp_path / "out"
    return [str(frames), "--flow", str(flow), "--flow-meta", str(tmp_path / "flow_meta.json"),
            "--out", str(out / f"{out_name}.npy"), "--provenance", str(out / f"{out_name}.json"), "--threads", "1",
            "--settings", RANDOM, "--runtime", json.dumps({"device": "cpu", "batch_size": 1, "threads": 1}),
            "--no-progress"]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_warm_job_writes_what_a_cold_job_writes(tmp_path):
    write_inputs(tmp_path, 3, size=64)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cold = subprocess.run([sys.executable, "-m", "pipeline.features", *features_args(tmp_path, "cold")],
                          capture_output=True, text=True, env=env)
    warm = subprocess.run([*WARM, "features", *features_args(tmp_path, "warm")], capture_output=True, text=True,
                          env=env)
    assert cold.returncode == 0 and warm.returncode == 0, warm.stderr
    assert "warm start: pipeline.features runs in pid" in warm.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "cold.npy"), np.load(tmp_path / "out" / "warm.npy"))
    timing = json.loads((tmp_path / "out" / "warm.json").read_text())["timing"]
    assert timing["startup_s"] < 1.0  # torch was already imported by the worker


def test_warm_job_reports_errors_and_exit_codes_as_its_own(tmp_path):
    r = subprocess.run([*WARM, "flow", str(tmp_path / "missing.npy"), "--decode-meta", str(tmp_path / "m.json"),
                        "--flow", str(tmp_path / "f.npy"), "--meta", str(tmp_path / "f.json")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "m.json" in r.stderr  # the stage's own message, on the job's stderr
    off = subprocess.run([*WARM, "features", "--help"], capture_output=True, text=True,
                         env={**os.environ, "VIDLOC_WARM_START": "0"})
    assert off.returncode == 0 and "warm start" not in off.stderr and "--provenance" in off.stdout


def test_kill_9_of_a_warm_job_kills_its_worker_and_leaves_nothing_finished(tmp_path):
    write_inputs(tmp_path, 24, size=96)
    args = features_args(tmp_path)
    proc = subprocess.Popen([*WARM, "features", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    pid = int(re.search(r"runs in pid (\d+)", line).group(1))
    deadline = time.time() + 120
    while not list((tmp_path / "out").glob(".v.npy.tmp-*")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    assert proc.poll() is None and alive(pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(pid), "the worker outlived its job"
    assert not (tmp_path / "out" / "v.npy").exists() and not (tmp_path / "out" / "v.json").exists()
    r = subprocess.run([*WARM, "features", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "out" / "v.npy").shape == (24, 2048)


def test_sigterm_reaches_the_worker(tmp_path):
    write_inputs(tmp_path, 24, size=96)
    proc = subprocess.Popen([*WARM, "features", *features_args(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    pid = int(re.search(r"runs in pid (\d+)", proc.stderr.readline()).group(1))
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(pid) and proc.returncode != 0
