"""Warm starts: per-video stage jobs fork from a process that has already imported torch.

    python -m pipeline.warm <stage> [stage arguments...]

runs ``python -m pipeline.<stage> [stage arguments...]``, but the work is
done by a child forked from a per-node server that imported torch, numpy and
cv2 once. ``import torch`` alone costs ~3.5 s per process on a 2-core machine
(the CUDA build loads its libraries); THUMOS14 has 826 flow and features jobs,
ActivityNet 1.2 14,404, so that is paid once per node instead of per job
(bench/job_overhead.py measures both ways).

The child behaves like the process it replaces: it gets this process's
argv, environment, working directory and standard streams (passed as file
descriptors), its exit code is this process's exit code, SIGTERM/SIGINT are
forwarded to it, and it kills itself when this process dies (SIGKILL
included), so a killed job leaves no worker behind. The server imports no
project module: each child imports the stage fresh, so edits to pipeline/
and models/ take effect at once. The server is started on demand, exits after
``IDLE_S`` without requests, and when anything goes wrong before the stage
starts, the stage runs in this process instead (one log line says why).
``VIDLOC_WARM_START=0`` turns warm starts off.

On a shared node nothing crosses a job's or a user's boundary. There is one
server per user, interpreter, checkout and scheduler job (SLURM_JOB_ID and the
other schedulers' ids: pipeline/core/nodelocal.py), started by a process of that
job, so a job's stages run inside its own cgroup, CPU set and memory limit and
end with it. Its socket lives in the user's private node-local folder (0700,
owner and type checked); each end checks the other's uid (SO_PEERCRED) before
sending anything, and the server runs only the stages declared here. The cost
this saves (bench/job_overhead.py, 2 CPU cores): a cold flow job pays 2.2 s
and a features job 2.8 s of start-up (importing torch, cv2), warm 0.16 / 0.69 s;
a CUDA job's own context creation comes on top either way, so warm starts stay
on under a scheduler too, one server per job.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import struct
import threading
import time
from pathlib import Path

from pipeline.core.nodelocal import check_private, private_dir, scheduler_job

STAGES = ("flow", "features")
PRELOAD = ("numpy", "torch", "torch.nn.functional", "cv2")
IDLE_S = 120.0
CONNECT_WAIT_S = 60.0
ROOT = Path(__file__).resolve().parents[1]


def socket_path(environ=None) -> Path:
    """This user's, interpreter's, checkout's and scheduler job's socket, in the user's private folder."""
    key = hashlib.sha256(f"{sys.executable}\0{ROOT}\0{scheduler_job(environ)}".encode()).hexdigest()[:16]
    return private_dir("warm") / f"{key}.sock"


class Refused(OSError):
    """The other end of the socket is not this user's."""


def check_peer(conn: socket.socket) -> None:
    """The process at the other end runs as this user (the kernel's word: SO_PEERCRED)."""
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    if uid != os.getuid():
        raise Refused(f"the process at the other end of the warm-start socket runs as uid {uid}, not {os.getuid()}")


def _send(conn: socket.socket, obj) -> None:
    data = json.dumps(obj).encode()
    conn.sendall(len(data).to_bytes(4, "big") + data)


def _recv(conn: socket.socket):
    head = _recv_exact(conn, 4)
    return None if head is None else json.loads(_recv_exact(conn, int.from_bytes(head, "big")))


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


# ------------------------------------------------------------------ server


def serve(path: Path) -> int:
    check_private(path.parent)
    lock = open(str(path) + ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another server holds it
    for name in PRELOAD:
        __import__(name)
    path.unlink(missing_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    try:
        while True:
            ready, _, _ = select.select([srv], [], [], IDLE_S)
            if not ready:
                return 0
            conn, _ = srv.accept()
            try:
                check_peer(conn)  # another user's process gets nothing run, not even a reply
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                if json.loads(msg)["stage"] not in STAGES:  # only the declared stages, never any module
                    raise ValueError("not a declared stage")
            except (OSError, ValueError, KeyError, TypeError):
                conn.close()
                continue
            if os.fork() == 0:
                srv.close()
                lock.close()  # the lock is the server's: a running child must not keep a new server out
                _child(conn, msg, fds)  # never returns
            conn.close()
            for fd in fds:
                os.close(fd)
    finally:
        srv.close()
        path.unlink(missing_ok=True)


def _child(conn: socket.socket, msg: bytes, fds: list[int]) -> None:
    rc = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        req = json.loads(msg)
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.argv = [f"pipeline.{req['stage']}", *req["args"]]
        _send(conn, {"pid": os.getpid()})

        def orphaned():  # the job's process is gone (killed): so is this one
            try:
                conn.recv(1)
            except OSError:
                pass
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=orphaned, daemon=True).start()
        try:
            runpy.run_module(f"pipeline.{req['stage']}", run_name="__main__", alter_sys=True)
            rc = 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            sys.excepthook(*sys.exc_info())  # as a cold job would print it (pipeline.core.io's one-line errors)
            rc = 1
        sys.stdout.flush()
        sys.stderr.flush()
        _send(conn, {"rc": rc})
    finally:
        os._exit(rc)


# ------------------------------------------------------------------ client


def _connect(path: Path, wait_s: float) -> socket.socket | None:
    deadline = time.monotonic() + wait_s
    started = False
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(path))
            return conn
        except OSError:
            conn.close()
        if not started:
            subprocess.Popen([sys.executable, "-m", "pipeline.warm", "--serve", str(path)], cwd=ROOT,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
            started = True
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def run_warm(stage: str, args: list[str], wait_s: float = CONNECT_WAIT_S) -> int | None:
    """The stage's exit code, run by a forked worker; None when no worker could be had, which includes any
    failure before the stage started (then the caller runs it in its own process)."""
    try:
        conn = _connect(socket_path(), wait_s)
        if conn is None:
            raise OSError("no worker answered")
    except OSError as e:
        print(f"warm start: {e}; running in this process", file=sys.stderr, flush=True)
        return None
    with conn:
        try:
            check_peer(conn)  # before anything of this job (environment, streams) is sent
            req = {"stage": stage, "args": args, "cwd": os.getcwd(), "env": dict(os.environ)}
            socket.send_fds(conn, [json.dumps(req).encode()], [0, 1, 2])
            first = _recv(conn)
            if first is None:
                raise OSError("the worker closed the connection before the stage started")
            pid = first["pid"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"warm start: {e}; running in this process", file=sys.stderr, flush=True)
            return None
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda s, _f: os.kill(pid, s))
        print(f"warm start: pipeline.{stage} runs in pid {pid}", file=sys.stderr, flush=True)
        last = _recv(conn)
    return 1 if last is None else last["rc"]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:
        return serve(Path(argv[1]))
    if not argv or argv[0] not in STAGES:
        print(f"usage: python -m pipeline.warm {{{','.join(STAGES)}}} [stage arguments]", file=sys.stderr)
        return 2
    stage, args = argv[0], argv[1:]
    if os.environ.get("VIDLOC_WARM_START", "1") != "0":
        rc = run_warm(stage, args)
        if rc is not None:
            return rc
    sys.argv = [f"pipeline.{stage}", *args]
    runpy.run_module(f"pipeline.{stage}", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
