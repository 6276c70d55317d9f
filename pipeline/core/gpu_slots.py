"""Which GPU a job uses: one lock per device slot, named by the physical GPU, on node-local storage.

Snakemake limits how many GPU jobs run at once (the ``gpu`` resource) but does not say which device
each one gets, so on a many-GPU node every job would land on GPU 0. A job that runs on CUDA takes the
first free slot here: ``jobs_per_device`` slots per device, filled one per device before any device
gets a second job. A slot is an exclusive ``flock`` on ``gpu-<identity>-<k>.lock`` in the user's
private node-local folder (pipeline/core/nodelocal.py; never the shared results folder): the kernel drops
it when the process ends however it ends (kill -9 included), so a dead job's slot is free at once.
With more jobs than slots, a job waits for a slot rather than share one.

Devices are the ones the process sees (``CUDA_VISIBLE_DEVICES`` when a scheduler or the user set it,
else every device), and a lock is named by the device's *identity*: its UUID, read from ``nvidia-smi``
(no torch import: the Snakefile counts devices at parse time). A scheduler that numbers each job's
devices from 0 (SLURM with device cgroups) gives two jobs on different GPUs the same "0" but different
UUIDs, so they never wait for each other, and jobs on the same GPU do. The jobs run with
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so that CUDA's numbering is ``nvidia-smi``'s. Without ``nvidia-smi``
the identity is the visible id, qualified by the scheduler job when there is one (jobs of one scheduler
job share slots; different jobs never wait for each other). Where the file system refuses locks, one
line says so and each job takes the device its slot order gives, unlocked (docs/cluster.md).
"""
from __future__ import annotations

import fcntl
import glob
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "VIDLOC_GPU_SLOTS"  # "<jobs_per_device>", set by the Snakefile


def device_ids(environ=None) -> list[str]:
    """The GPUs this process may use, by id: ``CUDA_VISIBLE_DEVICES`` when set (empty: none), else the
    NVIDIA device nodes present (/dev/nvidia0, ...; a container sees only the ones it was given)."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    nodes = [int(m.group(1)) for p in glob.glob("/dev/nvidia*") if (m := re.fullmatch(r"/dev/nvidia(\d+)", p))]
    return [str(i) for i in sorted(nodes)]


def identities(device_ids: list[str], environ=None) -> list[str]:
    """The physical identity of each visible device (see the module's docstring)."""
    from pipeline.core.nodelocal import scheduler_job

    environ = os.environ if environ is None else environ
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=30, env=dict(environ)).stdout.split()
    except (OSError, subprocess.SubprocessError):
        listed = []
    job = scheduler_job(environ)
    out = []
    for d in device_ids:
        if d.startswith(("GPU-", "MIG-")):
            out.append(d)
        elif d.isdigit() and int(d) < len(listed):
            out.append(listed[int(d)])
        else:
            out.append(f"{job}-{d}" if job else d)
    return out


@dataclass
class Slot:
    index: int  # the device's position among the visible ones: torch's cuda:<index>
    device_id: str  # as the process sees it (CUDA_VISIBLE_DEVICES)
    identity: str  # the physical GPU (its UUID)
    k: int  # which of the device's jobs_per_device slots
    path: Path | None  # None: taken unlocked (a file system that refuses locks)
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock


class LocksRefused(OSError):
    pass


def slot_paths(device_ids: list[str], ids: list[str], jobs_per_device: int,
               folder: str | os.PathLike) -> list[tuple[int, str, str, int, Path]]:
    """Every (index, visible id, identity, k, lock path), in the order they are tried: slot 0 of each device,
    then slot 1, ..."""
    safe = lambda d: re.sub(r"[^A-Za-z0-9_.-]", "_", d)
    return [(i, d, ident, k, Path(folder) / f"gpu-{safe(ident)}-{k}.lock")
            for k in range(jobs_per_device) for i, (d, ident) in enumerate(zip(device_ids, ids))]


def try_acquire(device_ids: list[str], ids: list[str], jobs_per_device: int,
                folder: str | os.PathLike) -> Slot | None:
    for index, dev, ident, k, path in slot_paths(device_ids, ids, jobs_per_device, folder):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        except OSError as e:  # ENOLCK, EOPNOTSUPP: a file system mounted without locks
            os.close(fd)
            raise LocksRefused(f"{folder} refuses file locks ({e.strerror or e})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a person looking
        return Slot(index, dev, ident, k, path, fd)
    return None


def acquire(device_ids: list[str], jobs_per_device: int, folder: str | os.PathLike | None = None,
            stage: str = "", poll_s: float = 0.2, environ=None) -> Slot:
    """The first free slot, waiting (with one message) while all are taken. Where locks are refused: one
    line, and the first device, unlocked."""
    from pipeline.core.nodelocal import private_dir

    if not device_ids:
        raise ValueError("no GPU to take a slot on")
    ids = identities(device_ids, environ)
    said = False
    while True:
        try:
            slot = try_acquire(device_ids, ids, jobs_per_device, folder or private_dir("gpu-slots"))
        except OSError as e:  # refused locks, or a private folder that is not private
            print(f"{stage or 'job'}: GPU slots unavailable: {e}; running on GPU {device_ids[0]} without a slot "
                  "(docs/cluster.md: give each job its own GPUs, or locks on node-local storage)", file=sys.stderr)
            return Slot(0, device_ids[0], ids[0], 0, None, -1)
        if slot is not None:
            return slot
        if not said:
            print(f"{stage or 'job'}: all {len(device_ids) * jobs_per_device} GPU slot(s) are taken; waiting",
                  file=sys.stderr)
            said = True
        time.sleep(poll_s)


_held: Slot | None = None  # kept for the process's life: the lock must outlive the call


def cuda_index(stage: str = "", environ=None) -> int | None:
    """The CUDA device index this job should use, taking a slot when the workflow asked for it
    (``VIDLOC_GPU_SLOTS``); None outside the workflow (torch's current device)."""
    global _held
    environ = os.environ if environ is None else environ
    spec = environ.get(ENV)
    if not spec:
        return None
    if _held is None:
        visible = device_ids(environ)
        if not visible:
            return None
        _held = acquire(visible, int(spec), stage=stage, environ=environ)
        print(f"{stage or 'job'}: on GPU {_held.device_id} ({_held.identity}; cuda:{_held.index}; slot "
              f"{_held.k + 1} of {spec} on it, {len(visible)} device(s))", file=sys.stderr)
    return _held.index
