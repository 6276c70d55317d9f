"""Atomic file output: write to a temporary name beside the target, then rename.

A killed job leaves at most a ``.tmp-*`` file, never a file with the final
name that looks finished; Snakemake and every stage trust final names only.
The next job that writes the same target removes such leftovers, and a write
that fails because the disk is full says so, with the path.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np

# Below this many free bytes after a failed write, the failure is the full disk (torch.save reports
# it as "RuntimeError: [enforce fail at inline_container.cc ...] file write failed", without errno).
FULL_DISK_BYTES = 1 << 20


class DiskFullError(OSError):
    """A write failed because its file system is full."""

    def __init__(self, path: Path):
        free = free_bytes(path.parent)
        self.message = (f"{path}: no space left on device ({free / 1e6:.1f} MB free in {path.parent}); "
                        "free some space and rerun: finished outputs are kept")
        super().__init__(errno.ENOSPC, self.message)

    def __str__(self):
        return self.message


def free_bytes(folder: str | os.PathLike) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def _is_disk_full(exc: BaseException, folder: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, (OSError, RuntimeError)) and free_bytes(folder) < FULL_DISK_BYTES


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def _remove_leftovers(path: Path) -> None:
    """Delete ``.tmp-*`` files of earlier, killed writers of ``path``. Snakemake never runs two jobs for one
    output at once, so only a live process on this host (``<host>.<pid>`` in the name) can still own one."""
    host, prefix = socket.gethostname(), _tmp_prefix(path)
    for old in path.parent.glob(f"{prefix}*"):
        owner = old.name[len(prefix):].rsplit("-", 1)[0]  # <host>.<pid>, or mkstemp's letters
        owner_host, _, pid = owner.rpartition(".")
        if owner_host == host and pid.isdigit() and _alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
            print(f"removed {old}: left by an interrupted job", file=sys.stderr)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        pass
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path in the target's folder; rename it to ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_tmp_prefix(path)}{socket.gethostname()}.{os.getpid()}-", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make outputs private
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if _is_disk_full(e, path.parent):  # judged before the partial file is removed and frees its space
            raise DiskFullError(path) from e
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _excepthook(kind, value, tb, default=sys.excepthook):
    """A full disk is one line naming the file, not a traceback, in every stage that writes through here."""
    if isinstance(value, DiskFullError):
        print(f"{Path(sys.argv[0]).stem}: error: {value}", file=sys.stderr)
        return
    default(kind, value, tb)


sys.excepthook = _excepthook


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


class NpyAppender:
    """Append items to a ``.npy`` file whose leading dimension is fixed at close.

    The header is written with room for any item count and rewritten in place
    at the end, so the result is a standard .npy that ``np.load(mmap_mode="r")``
    reads, and memory holds only what is being appended. Write it under
    ``atomic_path``: until closed, the file's header says zero items.
    """

    HEADER_BYTES = 128  # magic (8) + length (2) + dict padded to a multiple of 64

    def __init__(self, path: str | os.PathLike, item_shape: tuple[int, ...], dtype=np.uint8):
        self.item_shape = tuple(item_shape)
        self.dtype = np.dtype(dtype)
        self.count = 0
        self._f = open(path, "wb")
        self._write_header()

    def _write_header(self):
        d = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (
            np.lib.format.dtype_to_descr(self.dtype), (self.count,) + self.item_shape)
        body = d.ljust(self.HEADER_BYTES - 10 - 1) + "\n"
        self._f.seek(0)
        self._f.write(b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1"))
        self._f.seek(0, os.SEEK_END)

    def write(self, items: np.ndarray):
        if items.dtype != self.dtype or items.shape[1:] != self.item_shape:
            raise ValueError(f"expected items {self.dtype}{self.item_shape}, got {items.dtype}{items.shape[1:]}")
        self._f.write(np.ascontiguousarray(items).data)
        self.count += len(items)

    def close(self):
        self._write_header()
        self._f.close()


class NpyRows:
    """Rows of a ``.npy`` file read on demand with ``pread``: memory holds only the rows asked for.

    A memory map would do the same reads, but every page it touches stays mapped into the process
    and counts in its resident memory until the kernel evicts it, so a long video's pass over its
    frames would grow the job's RSS with the video's length. ``lead_dims`` merges the leading
    dimensions into rows: frames.npy (n, 16, H, W, 3) with ``lead_dims=2`` reads single frames.
    """

    def __init__(self, path: str | os.PathLike, lead_dims: int = 1):
        self._fd = -1
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if fortran or dtype.hasobject:
            raise ValueError(f"{self.path}: expected a C-ordered numeric array")
        self.dtype = dtype
        self.row_shape = tuple(shape[lead_dims:])
        self.n_rows = int(np.prod(shape[:lead_dims], dtype=np.int64))
        self.full_shape = tuple(shape)
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_rows,) + self.row_shape

    def __len__(self) -> int:
        return self.n_rows

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("NpyRows supports contiguous slices only")
        start, stop, _ = index.indices(self.n_rows)
        n = max(stop - start, 0)
        out = np.empty((n,) + self.row_shape, self.dtype)
        if out.size == 0:
            return out
        view, pos, want = memoryview(out).cast("B"), self.offset + start * self.row_bytes, n * self.row_bytes
        got = 0
        while got < want:
            k = os.preadv(self._fd, [view[got:]], pos + got)
            if k == 0:
                raise ValueError(f"{self.path}: truncated (rows {start}..{stop} of {self.n_rows})")
            got += k
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()
