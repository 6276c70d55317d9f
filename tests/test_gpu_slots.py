"""The GPU allocator with real concurrent processes (no CUDA needed: the slots are lock files; a stand-in
nvidia-smi gives the physical GPUs' UUIDs where a test needs them)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.core import gpu_slots
from conftest import REPO
from test_workflow import snakemake

# A job as flow/features/train run it: take a slot (pipeline.compute.device does this once it chose CUDA), hold it
# for a while, report what it got and when.
JOB = """
import json, sys, time
from pipeline.core import gpu_slots
i = gpu_slots.cuda_index("job")
start = time.time()
time.sleep(float(sys.argv[1]))
print(json.dumps({"index": i, "id": gpu_slots._held.device_id, "identity": gpu_slots._held.identity,
                  "start": start, "end": time.time()}), flush=True)
"""

NVIDIA_SMI = """#!/bin/sh
# stand-in: the GPUs this job may see, one UUID a line, as `nvidia-smi --query-gpu=uuid --format=csv,noheader`
for u in $FAKE_GPU_UUIDS; do echo "$u"; done
"""


def start_job(tmp_path, hold_s, devices, per_device=1, **env_extra):
    node = tmp_path / "node"  # the node's temp folder: where the private slot folder goes
    node.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    env = {**env, "CUDA_VISIBLE_DEVICES": devices, gpu_slots.ENV: str(per_device), "PYTHONPATH": str(REPO),
           "TMPDIR": str(node), **env_extra}
    return subprocess.Popen([sys.executable, "-c", JOB, str(hold_s)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def slot_folder(tmp_path):
    return tmp_path / "node" / f"vidloc-{os.getuid()}" / "gpu-slots"


def fake_nvidia_smi(tmp_path) -> str:
    """A PATH whose nvidia-smi lists $FAKE_GPU_UUIDS."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "nvidia-smi").write_text(NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def results(procs):
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0, stderr
        out.append({**json.loads(stdout), "stderr": stderr})
    return out


def overlap(a, b):
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_overlapping_jobs_get_distinct_devices_one_per_device_first(tmp_path):
    jobs = results([start_job(tmp_path, 1.5, "3,5,7,9", per_device=2) for _ in range(4)])
    assert sorted(j["id"] for j in jobs) == ["3", "5", "7", "9"]  # 4 jobs, 4 devices: one each, not two on one
    assert sorted(j["index"] for j in jobs) == [0, 1, 2, 3]  # torch's cuda:<index> among the visible devices
    assert all("job: on GPU " in j["stderr"] for j in jobs)

    jobs = results([start_job(tmp_path, 1.5, "0,1", per_device=2) for _ in range(4)])
    assert sorted(j["id"] for j in jobs) == ["0", "0", "1", "1"]  # two slots per device


def test_more_jobs_than_slots_wait_and_never_share(tmp_path):
    jobs = results([start_job(tmp_path, 0.6, "0") for _ in range(3)])
    for a in jobs:
        for b in jobs:
            assert a is b or not overlap(a, b)
    assert sum("all 1 GPU slot(s) are taken; waiting" in j["stderr"] for j in jobs) >= 1


def test_a_killed_holders_slot_is_reclaimed(tmp_path):
    holder = start_job(tmp_path, 600, "0")
    deadline = time.time() + 30
    while not list(slot_folder(tmp_path).glob("gpu-0-0.lock")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the holder has the lock
    waiting = start_job(tmp_path, 0.1, "0")
    time.sleep(1.0)
    assert waiting.poll() is None  # it waits: the slot is held
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    (job,) = results([waiting])
    assert job["id"] == "0"


def test_jobs_that_each_number_their_gpu_0_share_no_slot_unless_it_is_the_same_gpu(tmp_path):
    """SLURM with device cgroups numbers each job's GPUs from 0: the slot follows the physical GPU."""
    path = fake_nvidia_smi(tmp_path)
    jobs = results([start_job(tmp_path, 1.0, "0", PATH=path, FAKE_GPU_UUIDS=uuid, SLURM_JOB_ID=str(n))
                    for n, uuid in enumerate(("GPU-aaaa", "GPU-bbbb"))])
    assert [j["identity"] for j in jobs] == ["GPU-aaaa", "GPU-bbbb"] and overlap(*jobs)  # both at once
    jobs = results([start_job(tmp_path, 0.6, "0", PATH=path, FAKE_GPU_UUIDS="GPU-aaaa", SLURM_JOB_ID=str(n))
                    for n in range(2)])
    assert not overlap(*jobs)  # the same GPU: one waits for the other
    # no nvidia-smi: a visible id is qualified by the scheduler job, so different jobs never wait
    jobs = results([start_job(tmp_path, 1.0, "0", PATH="/usr/bin:/bin", SLURM_JOB_ID=str(n)) for n in (7, 8)])
    assert overlap(*jobs) and {j["identity"] for j in jobs} == {"SLURM_JOB_ID=7-0", "SLURM_JOB_ID=8-0"}
    assert oct(slot_folder(tmp_path).stat().st_mode & 0o777) == "0o700"  # the user's own, on the node


def test_a_file_system_that_refuses_locks_gives_one_line_and_the_first_device(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    slot = gpu_slots.acquire(["2", "3"], 1, tmp_path, stage="flow", environ={"PATH": "/usr/bin:/bin"})
    assert (slot.index, slot.device_id, slot.path) == (0, "2", None)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "flow: GPU slots unavailable:" in err and "refuses file locks" in err


def test_visible_devices_come_from_the_scheduler_when_set():
    assert gpu_slots.device_ids({"CUDA_VISIBLE_DEVICES": "2,GPU-1a2b"}) == ["2", "GPU-1a2b"]
    assert gpu_slots.device_ids({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpu_slots.device_ids({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert gpu_slots.cuda_index("x", {}) is None  # outside the workflow: torch's own choice


def test_a_dry_run_on_four_devices_gives_the_gpu_rules_one_each(tmp_path, monkeypatch):
    from test_workflow import TINY_DEMO

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    _, out = snakemake(tmp_path, TINY_DEMO, "-n")
    assert "GPUs: 0, 1, 2, 3 (1 job(s) per device); GPU jobs at once: 4" in out
    per_rule = {}
    for block in out.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        res = next(line for line in block.splitlines() if line.strip().startswith("resources:"))
        per_rule.setdefault(rule, set()).add("gpu=1" in res)
    assert per_rule["flow"] == per_rule["features"] == per_rule["train"] == {True}
    assert per_rule["decode"] == per_rule["localize"] == {False}
    _, out = snakemake(tmp_path, {**TINY_DEMO, "gpu": {"jobs_per_device": 2}}, "-n",
                       "--resources", "gpu=3")
    assert "GPUs: 0, 1, 2, 3 (2 job(s) per device); GPU jobs at once: 3" in out

    # a job that will not run CUDA takes no GPU: flow on OpenCV's TV-L1, features on the CPU
    _, out = snakemake(tmp_path, {**TINY_DEMO, "flow": {"backend": "opencv"}, "features": {"device": "cpu"}}, "-n")
    per_rule = {}
    for block in out.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        res = next(line for line in block.splitlines() if line.strip().startswith("resources:"))
        per_rule.setdefault(rule, set()).add("gpu=0" in res)
    assert per_rule["flow"] == per_rule["features"] == {True} and per_rule["train"] == {False}

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    if not gpu_slots.device_ids():  # this machine: no GPU, nothing changes
        _, out = snakemake(tmp_path, TINY_DEMO, "-n")
        assert "GPUs:" not in out and "gpu=1" not in out
