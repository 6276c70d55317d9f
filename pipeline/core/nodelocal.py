"""What stays on the node and with the user: a private folder on node-local storage, and the scheduler job.

On a shared machine (a SLURM GPU node with other users' jobs beside ours) the
warm-start socket and the GPU slot locks must be seen by this user's processes
only, and must not go to the shared results folder. ``private_dir`` is
``<tmp>/vidloc-<uid>/<name>`` (``<tmp>``: ``TMPDIR``, which schedulers often
point at per-job node-local scratch, else /tmp), created with mode 0700; a
folder found there that is not a real directory owned by this user and closed
to others is refused, never used. ``scheduler_job`` names the batch job the
process runs in, so that per-job things stay per job.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

# The variables the common schedulers set in every job: SLURM, PBS/Torque, LSF, SGE/UGE, Flux, Cobalt, HTCondor.
JOB_ID_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID", "FLUX_JOB_ID", "COBALT_JOBID",
                    "_CONDOR_JOB_AD")


class NotPrivate(OSError):
    """A folder that should be this user's alone is not: the message says why."""


def scheduler_job(environ=None) -> str:
    """``<variable>=<id>`` of the scheduler job this process belongs to, or "" outside one."""
    environ = os.environ if environ is None else environ
    for name in JOB_ID_VARIABLES:
        if environ.get(name):
            return f"{name}={environ[name]}"
    return ""


def check_private(path: Path) -> Path:
    """``path`` if it is a real directory (not a link), owned by this user, that no one else may enter."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotPrivate(f"{path}: not a directory (a link or a file is there); refusing to use it")
    if st.st_uid != os.getuid():
        raise NotPrivate(f"{path}: owned by uid {st.st_uid}, not this user ({os.getuid()}); refusing to use it")
    if st.st_mode & 0o077:
        raise NotPrivate(f"{path}: open to other users (mode {stat.S_IMODE(st.st_mode):o}); refusing to use it")
    return path


def _private(path: Path) -> Path:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    return check_private(path)


def private_dir(name: str, base: str | os.PathLike | None = None) -> Path:
    """``<base>/vidloc-<uid>/<name>``, this user's alone (see the module's docstring); NotPrivate otherwise."""
    top = _private(Path(base or tempfile.gettempdir()) / f"vidloc-{os.getuid()}")
    return _private(top / name)
