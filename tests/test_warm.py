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
    while not list((tmp_path / "out" / ".vidloc-tmp").glob("v.npy.tmp-*")) and time.time() < deadline:
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


# ------------------------------------------------ a shared node: nothing crosses a user's or a job's boundary


def warm_env(tmp_path, **extra) -> dict:
    """A job's environment with its own temp folder (where the private folder goes)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")}
    (tmp_path / "node-tmp").mkdir(exist_ok=True)  # an absent TMPDIR would send tempfile back to /tmp
    return {**env, "TMPDIR": str(tmp_path / "node-tmp"), "TQDM_DISABLE": "1", **extra}


def socket_of(env: dict) -> str:
    return subprocess.run([sys.executable, "-c", "from pipeline.warm import socket_path; print(socket_path())"],
                          capture_output=True, text=True, env=env, check=True).stdout.strip()


def stop_servers(folder) -> None:
    for sock in folder.glob("*.sock"):
        subprocess.run(["pkill", "-f", f"pipeline.warm --serve {sock}"])


def fake_server(path: str, uid: int, behaviour: str):
    """A process listening at ``path`` as ``uid`` (bound first, as this user, then listening as ``uid``: the
    kernel reports the listener's credentials). It writes what it receives to a pipe; ``close`` hangs up on
    each connection at once, as a server that dies before forking would."""
    import socket as so

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            srv = so.socket(so.AF_UNIX, so.SOCK_STREAM)
            if os.path.exists(path):
                os.unlink(path)
            srv.bind(path)
            os.setgid(uid)
            os.setuid(uid)
            srv.listen(4)
            conn, _ = srv.accept()
            if behaviour == "record":
                conn.settimeout(5)
                try:
                    os.write(write, conn.recv(1 << 16) or b"")
                except OSError:
                    pass
            conn.close()
        finally:
            os._exit(0)
    os.close(write)
    return pid, read


def test_a_private_folder_owned_by_another_user_is_refused_and_the_job_runs_cold(tmp_path):
    write_inputs(tmp_path, 3, size=64)
    env = warm_env(tmp_path)
    planted = tmp_path / "node-tmp" / f"vidloc-{os.getuid()}"
    planted.mkdir()
    os.chown(planted, 65534, 65534)  # another user made the folder first
    r = subprocess.run([*WARM, "features", *features_args(tmp_path)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert f"warm start: {planted}: owned by uid 65534" in r.stderr and "running in this process" in r.stderr
    assert (tmp_path / "out" / "v.npy").exists()


def test_a_socket_served_by_another_user_gets_nothing_of_the_job(tmp_path):
    write_inputs(tmp_path, 3, size=64)
    env = warm_env(tmp_path, SECRET_OF_THE_JOB="do-not-send")
    path = socket_of(env)
    pid, received = fake_server(path, 65534, "record")
    try:
        time.sleep(0.5)
        r = subprocess.run([*WARM, "features", *features_args(tmp_path)], capture_output=True, text=True, env=env)
    finally:
        got = os.read(received, 1 << 16)
        os.waitpid(pid, 0)
    assert r.returncode == 0, r.stderr
    assert "runs as uid 65534, not" in r.stderr and "running in this process" in r.stderr
    assert got == b""  # neither the environment nor the standard streams went there
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "v.npy").shape[1], 2048)


def test_a_server_that_hangs_up_before_forking_means_a_cold_run_with_the_same_outputs(tmp_path):
    write_inputs(tmp_path, 3, size=64)
    env = warm_env(tmp_path)
    cold = subprocess.run([sys.executable, "-m", "pipeline.features", *features_args(tmp_path, "cold")],
                          capture_output=True, text=True, env=env)
    assert cold.returncode == 0, cold.stderr
    pid, received = fake_server(socket_of(env), os.getuid(), "close")
    try:
        time.sleep(0.5)
        r = subprocess.run([*WARM, "features", *features_args(tmp_path, "warm")], capture_output=True, text=True,
                           env=env)
    finally:
        os.waitpid(pid, 0)
        os.close(received)
    assert r.returncode == 0, r.stderr
    # the worker hung up (closed, reset or a broken pipe, as the kernel saw it) before the stage started: one
    # line, a cold run
    assert re.fullmatch(r"warm start: .*(closed the connection|reset by peer|Broken pipe).*; running in this process\n",
                        r.stderr), r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "cold.npy"), np.load(tmp_path / "out" / "warm.npy"))


def test_two_scheduler_jobs_get_separate_servers_and_a_server_runs_only_declared_stages(tmp_path):
    import socket as so

    write_inputs(tmp_path, 3, size=64)
    jobs = [warm_env(tmp_path, SLURM_JOB_ID=str(n)) for n in (101, 102)]
    paths = [socket_of(env) for env in jobs]
    assert paths[0] != paths[1] and os.path.dirname(paths[0]) == os.path.dirname(paths[1])
    folder = tmp_path / "node-tmp" / f"vidloc-{os.getuid()}" / "warm"
    try:
        for n, env in enumerate(jobs):
            r = subprocess.run([*WARM, "features", *features_args(tmp_path, f"job{n}")], capture_output=True,
                               text=True, env=env)
            assert r.returncode == 0 and "warm start: pipeline.features runs in pid" in r.stderr, r.stderr
        servers = [subprocess.run(["pgrep", "-f", f"pipeline.warm --serve {p}"], capture_output=True,
                                  text=True).stdout.split() for p in paths]
        assert all(len(s) == 1 for s in servers) and servers[0] != servers[1]  # one server per job
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        # a request for anything but a declared stage is hung up on, nothing run
        conn = so.socket(so.AF_UNIX, so.SOCK_STREAM)
        conn.connect(paths[0])
        so.send_fds(conn, [json.dumps({"stage": "os", "args": [], "cwd": "/", "env": {}}).encode()], [0, 1, 2])
        conn.settimeout(10)
        assert conn.recv(100) == b""
        conn.close()
    finally:
        stop_servers(folder)
