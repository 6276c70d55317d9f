"""The reduced demo through a real one-node SLURM (slurm-wlm + munge on localhost) equals a local run.

As docs/cluster.md describes: installs slurm-wlm and munge with
apt-get when missing, writes a one-node slurm.conf (the machine's own is put
back afterwards), starts munged, slurmctld and slurmd, and stops exactly the
daemons it started, by their PIDs. Needs root. The cluster profile is
profiles/slurm with what this node lacks taken out: no GPU, at most its 2
CPUs and 4 GB per job, no accounting (squeue for job status).
"""
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO
from test_workflow import QUICK_FLOW, TINY_DEMO, snakemake

SLURM_CONF = """\
ClusterName=vidloctest
SlurmctldHost=localhost
SlurmUser=slurm
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdTimeout=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=20000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, **kw)


def _pid(path, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if Path(path).exists() and Path(path).read_text().strip():
            return int(Path(path).read_text().split()[0])
        time.sleep(0.2)
    raise AssertionError(f"{path} did not appear")


@pytest.fixture
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("starting SLURM daemons needs root")
    if not (shutil.which("slurmctld") and shutil.which("munged")):
        r = _sh("apt-get install -y slurm-wlm munge || (apt-get update && apt-get install -y slurm-wlm munge)",
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
        assert r.returncode == 0, f"could not install slurm-wlm and munge:\n{r.stderr[-2000:]}"
    for name in ("slurmctld", "slurmd", "munged"):
        assert _sh(f"pgrep -x {name}").returncode != 0, f"a {name} is already running: not starting another"
    conf = Path("/etc/slurm/slurm.conf")
    saved = conf.read_bytes() if conf.exists() else None
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(SLURM_CONF)
    _sh("mkdir -p /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/munge && "
        "chown -R slurm:slurm /var/lib/slurm /var/log/slurm && chown munge:munge /run/munge && "
        "chmod 755 /run/munge")
    for stale in ("/run/slurmctld.pid", "/run/slurmd.pid", "/run/munge/munged.pid"):
        Path(stale).unlink(missing_ok=True)
    pids = []
    try:
        r = _sh("su -s /bin/sh munge -c /usr/sbin/munged")
        assert r.returncode == 0, r.stderr
        pids.append(_pid("/run/munge/munged.pid"))
        assert "Success" in _sh("munge -n | unmunge").stdout
        assert _sh("/usr/sbin/slurmctld").returncode == 0
        pids.append(_pid("/run/slurmctld.pid"))
        assert _sh("/usr/sbin/slurmd -N localhost").returncode == 0
        pids.append(_pid("/run/slurmd.pid"))
        deadline = time.time() + 60
        while "idle" not in _sh("sinfo -h -o %t").stdout and time.time() < deadline:
            time.sleep(1)
        assert "idle" in _sh("sinfo -h -o %t").stdout, _sh("sinfo").stdout
        yield
    finally:
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in pids:
            deadline = time.time() + 30
            while Path(f"/proc/{pid}").exists() and time.time() < deadline:
                time.sleep(0.2)
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
        if saved is None:
            conf.unlink(missing_ok=True)
        else:
            conf.write_bytes(saved)


def node_profile(dest: Path) -> Path:
    """profiles/slurm fitted to this node: no GPU, at most 2 CPUs and 4 GB per job."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    for res in profile["set-resources"].values():
        res.pop("gpu", None)
        res["cpus_per_task"] = min(res.get("cpus_per_task", 1), 2)
        res["mem_mb"] = min(res.get("mem_mb", 1000), 4000)
    profile["resources"] = ["mem_mb=4000", "cpus_per_task=2"]
    profile["set-resource-scopes"] = ["cpus_per_task=local"]
    profile.update({"slurm-status-command": "squeue", "slurm-no-account": True, "latency-wait": 10,
                    "slurm-init-seconds-before-status-checks": 5, "retries": 0,
                    "slurm-keep-successful-logs": True})
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile))
    return dest


@pytest.mark.slow
def test_reduced_demo_through_slurm_equals_a_local_run(tmp_path, slurm_cluster):
    override = {**TINY_DEMO, **QUICK_FLOW}
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    local.mkdir()
    cluster.mkdir()
    snakemake(local, override)
    _, out = snakemake(cluster, override, "--profile", str(node_profile(tmp_path / "profile")))
    # Every job went through sbatch; decode, flow and features of the 3 videos as one group job.
    logs = cluster / ".snakemake" / "slurm_logs"
    jobs: dict[str, int] = {}
    for p in logs.rglob("*.log"):
        kind = p.relative_to(logs).parts[0]
        jobs[kind] = jobs.get(kind, 0) + 1
    assert jobs == {"group_extract_decode_features_flow": 1, "rule_demo_data": 1, "rule_annotations": 1,
                    "rule_skipped_videos": 1, "rule_durations": 1, "rule_train": 2, "rule_curve": 2,
                    "rule_localize": 2, "rule_evaluate": 2,
                    "rule_costs": 1, "rule_report": 1}, (jobs, out[-3000:])
    a, b = local / "results" / "demo", cluster / "results" / "demo"
    assert (a / "annotations" / "annotations.tsv").read_text() == (b / "annotations" / "annotations.tsv").read_text()
    for v in ("demo_validation_0001", "demo_validation_0002", "demo_test_0001"):
        assert np.array_equal(np.load(a / "decoded" / v / "frames.npy"), np.load(b / "decoded" / v / "frames.npy"))
        assert np.array_equal(np.load(a / "flow" / v / "flow.npy"), np.load(b / "flow" / v / "flow.npy"))
        np.testing.assert_allclose(np.load(b / "features" / f"{v}.npy"), np.load(a / "features" / f"{v}.npy"),
                                   rtol=1e-5, atol=1e-5)
    for exp in ("d2net", "ce_only"):
        ma = json.loads((a / "runs" / exp / "metrics.json").read_text())
        mb = json.loads((b / "runs" / exp / "metrics.json").read_text())
        assert ma["map"] == pytest.approx(mb["map"], abs=1e-6) and ma["f1"] == mb["f1"]
    assert (b / "report" / "report.html").exists()


@pytest.mark.slow
def test_cancelled_group_job_then_rerun_redoes_only_the_lost_videos(tmp_path, slurm_cluster):
    """16 real videos in 2 group jobs of 8 (decode, flow, features); the running group job is cancelled with
    scancel mid-run; the rerun redoes exactly the videos whose features were lost, and finishes."""
    from test_workflow import SNAKEMAKE, planned_jobs

    gen = {**TINY_DEMO["generate"], "n_train": 13, "n_test": 3, "min_duration_s": 2.0, "max_duration_s": 2.5}
    override = {**TINY_DEMO, "generate": gen, "keep_intermediates": False, **QUICK_FLOW}
    profile = node_profile(tmp_path / "profile")
    work = tmp_path / "cluster"
    work.mkdir()
    snakemake(work, override, "--until", "demo_data")  # the videos, locally
    (work / "override.yaml").write_text(yaml.safe_dump(override))
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work), "--cores", "2",
           "--configfile", str(REPO / "workflow_config.yaml"), str(work / "override.yaml"),
           "--profile", str(profile), "--until", "features"]
    features = work / "results" / "demo" / "features"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    cancelled = None
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        done = len(list(features.glob("*.npy")))
        running = _sh("squeue -h -t R -o %i").stdout.split()
        if 10 <= done < 16 and running:  # the second group job is part-way through its 8 videos
            cancelled = running[0]
            assert _sh(f"scancel {cancelled}").returncode == 0
            break
        time.sleep(0.5)
    out = proc.communicate(timeout=600)[0]
    assert cancelled, f"no group job was caught running part-way:\n{out[-3000:]}"
    assert proc.returncode != 0  # the cancelled job failed the run
    kept = {p.stem: p.stat().st_mtime_ns for p in features.glob("*.npy")}
    assert 8 <= len(kept) < 16, out[-4000:]
    _, dry = snakemake(work, override, "--profile", str(profile), "--until", "features", "-n")
    lost = 16 - len(kept)
    assert planned_jobs(dry)["features"] == lost, dry[-3000:]
    assert planned_jobs(dry)["decode"] == planned_jobs(dry)["flow"] == lost
    snakemake(work, override, "--profile", str(profile), "--until", "features")
    assert len(list(features.glob("*.npy"))) == 16
    assert all(features.joinpath(f"{v}.npy").stat().st_mtime_ns == t for v, t in kept.items())  # not redone


@pytest.mark.slow
def test_group_jobs_keep_intermediates_on_node_local_scratch(tmp_path, slurm_cluster):
    """Decoded frames and flow of the grouped per-video jobs live on node-local scratch (here a folder apart
    from the results): nothing under results/ ever holds frames.npy or flow.npy, and the features and metrics
    equal a local run's."""
    import threading

    override = {**TINY_DEMO, **QUICK_FLOW, "keep_intermediates": False}
    local, cluster, scratch = tmp_path / "local", tmp_path / "cluster", tmp_path / "node-scratch"
    for d in (local, cluster, scratch):
        d.mkdir()
    snakemake(local, override)
    seen = {"results": set(), "scratch": set()}
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            for where, root in (("results", cluster / "results"), ("scratch", scratch)):
                seen[where].update(str(p.relative_to(root)) for name in ("frames.npy", "flow.npy")
                                   for p in root.rglob(name))
            time.sleep(0.05)

    t = threading.Thread(target=poll)
    t.start()
    try:
        _, out = snakemake(cluster, {**override, "scratch": str(scratch)}, "--profile",
                           str(node_profile(tmp_path / "profile")))
    finally:
        stop.set()
        t.join()
    assert seen["results"] == set(), seen["results"]
    assert {p.rsplit("/", 1)[1] for p in seen["scratch"]} == {"frames.npy", "flow.npy"}, out[-3000:]
    assert all(p.startswith(f"vidloc-{os.getuid()}/scratch/") for p in seen["scratch"])
    assert not list(scratch.rglob("*.npy"))  # temporary: gone once the features exist
    a, b = local / "results" / "demo", cluster / "results" / "demo"
    for v in ("demo_validation_0001", "demo_validation_0002", "demo_test_0001"):
        np.testing.assert_allclose(np.load(b / "features" / f"{v}.npy"), np.load(a / "features" / f"{v}.npy"),
                                   rtol=1e-5, atol=1e-5)
        assert (b / "decoded" / v / "meta.json").exists() and (b / "flow" / v / "meta.json").exists()
    for exp in ("d2net", "ce_only"):
        ma = json.loads((a / "runs" / exp / "metrics.json").read_text())
        mb = json.loads((b / "runs" / exp / "metrics.json").read_text())
        assert ma["map"] == pytest.approx(mb["map"], abs=1e-6)
