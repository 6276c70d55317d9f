"""Which GPU a local job uses: one lock file per device slot, taken atomically, freed when the job ends.

Snakemake limits how many GPU jobs run at once (the ``gpu`` resource) but does not say which device
each one gets, so on a many-GPU node every job would land on GPU 0. A job that runs on CUDA takes the
first free slot here: ``jobs_per_device`` slots per device, filled one per device before any device
gets a second job. A slot is an exclusive ``flock`` on ``<slots_dir>/<host>/gpu-<id>-<k>.lock``: the
kernel drops it when the process ends however it ends (kill -9 included), so a dead job's slot is free
at once. With more jobs than slots, a job waits for a slot rather than share one.

Devices are the ones the process sees: ``CUDA_VISIBLE_DEVICES`` when a scheduler (SLURM) or the user
set it, else every device. Locks are named by the device's id in that list, so jobs that see the same
list agree; the host's name keeps nodes apart on a shared file system. No torch import here: the
Snakefile counts devices with ``device_ids`` at parse time.
"""
from __future__ import annotations

import fcntl
import glob
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "VIDLOC_GPU_SLOTS"  # "<jobs_per_device>:<slots_dir>", set by the Snakefile for local runs


def device_ids(environ=None) -> list[str]:
    """The GPUs this process may use, by id: ``CUDA_VISIBLE_DEVICES`` when set (empty: none), else the
    NVIDIA device nodes present (/dev/nvidia0, ...; a container sees only the ones it was given)."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    nodes = [int(m.group(1)) for p in glob.glob("/dev/nvidia*") if (m := re.fullmatch(r"/dev/nvidia(\d+)", p))]
    return [str(i) for i in sorted(nodes)]


@dataclass
class Slot:
    index: int  # the device's position among the visible ones: torch's cuda:<index>
    device_id: str
    k: int  # which of the device's jobs_per_device slots
    path: Path
    fd: int

    def release(self) -> None:
        os.close(self.fd)  # closing drops the flock


def slot_paths(device_ids: list[str], jobs_per_device: int, slots_dir: str | os.PathLike) -> list[tuple[int, str, int, Path]]:
    """Every (index, id, k, lock path), in the order they are tried: slot 0 of each device, then slot 1, ..."""
    folder = Path(slots_dir) / socket.gethostname()
    safe = lambda d: re.sub(r"[^A-Za-z0-9_.-]", "_", d)
    return [(i, d, k, folder / f"gpu-{safe(d)}-{k}.lock")
            for k in range(jobs_per_device) for i, d in enumerate(device_ids)]


def try_acquire(device_ids: list[str], jobs_per_device: int, slots_dir: str | os.PathLike) -> Slot | None:
    for index, dev, k, path in slot_paths(device_ids, jobs_per_device, slots_dir):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a person looking
        return Slot(index, dev, k, path, fd)
    return None


def acquire(device_ids: list[str], jobs_per_device: int, slots_dir: str | os.PathLike, stage: str = "",
            poll_s: float = 0.2) -> Slot:
    """The first free slot, waiting (with one message) while all are taken."""
    if not device_ids:
        raise ValueError("no GPU to take a slot on")
    said = False
    while True:
        slot = try_acquire(device_ids, jobs_per_device, slots_dir)
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
        per_device, _, slots_dir = spec.partition(":")
        ids = device_ids(environ)
        if not ids:
            return None
        _held = acquire(ids, int(per_device), slots_dir, stage)
        print(f"{stage or 'job'}: on GPU {_held.device_id} (cuda:{_held.index}; slot {_held.k + 1} of "
              f"{per_device} on it, {len(ids)} device(s))", file=sys.stderr)
    return _held.index
