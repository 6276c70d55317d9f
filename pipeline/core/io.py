"""Atomic, durable file output: write to a temporary file, flush it to disk, rename, flush the folder.

A killed job leaves at most a temporary file, never a file with the final
name that looks finished; Snakemake and every stage trust final names only.
The temporary file is fsync'd before the rename and the folder after it, so
a node that crashes right after a job ends leaves the whole file or none
(not an empty file under the final name). Temporary files live in a
``.vidloc-tmp`` folder beside the target, removed when empty: the next
writer of the same target removes what a killed writer left there by
reading that small folder only, never the target's whole folder (ActivityNet
1.2's features/ holds ~14,000 files). A write that fails because the file
system is full (ENOSPC) or the user's quota is spent (EDQUOT) says so, with
the path; any other error is left as it is.
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

TMP_DIR = ".vidloc-tmp"


class DiskFullError(OSError):
    """A write failed because its file system is full or the user's quota is spent."""

    def __init__(self, path: Path, code: int = errno.ENOSPC):
        if code == errno.EDQUOT:
            self.message = (f"{path}: disk quota exceeded (your quota on the file system of {path.parent} is "
                            "spent); free some of it or ask for more, and rerun: finished outputs are kept")
        else:
            free = free_bytes(path.parent)
            self.message = (f"{path}: no space left on device ({free / 1e6:.1f} MB free in {path.parent}); "
                            "free some space and rerun: finished outputs are kept")
        super().__init__(code, self.message)

    def __str__(self):
        return self.message


def free_bytes(folder: str | os.PathLike) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def _tmp_prefix(path: Path) -> str:
    return f"{path.name}.tmp-"


def _remove_leftovers(path: Path, tmp_dir: Path) -> None:
    """Delete temporary files of earlier, killed writers of ``path``. Snakemake never runs two jobs for one
    output at once, so only a live process on this host (``<host>.<pid>`` in the name) can still own one."""
    host, prefix = socket.gethostname(), _tmp_prefix(path)
    try:
        entries = [e.name for e in os.scandir(tmp_dir)]
    except FileNotFoundError:
        return
    for name in entries:
        if not name.startswith(prefix):
            continue
        owner = name[len(prefix):].rsplit("-", 1)[0]  # <host>.<pid>, or mkstemp's letters
        owner_host, _, pid = owner.rpartition(".")
        if owner_host == host and pid.isdigit() and _alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_dir / name)
            print(f"removed {tmp_dir / name}: left by an interrupted job", file=sys.stderr)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        pass
    return True


def _mkstemp(path: Path, tmp_dir: Path) -> str:
    prefix = f"{_tmp_prefix(path)}{socket.gethostname()}.{os.getpid()}-"
    for _ in range(5):  # another writer may remove the (empty) folder between our mkdir and mkstemp
        tmp_dir.mkdir(exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(prefix=prefix, dir=tmp_dir)
        except FileNotFoundError:
            continue
        os.close(fd)
        return tmp
    raise FileNotFoundError(errno.ENOENT, f"{tmp_dir} keeps disappearing")


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's entries') data to the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path on the target's file system; on success flush it, rename it to ``path`` and flush
    the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = path.parent / TMP_DIR
    _remove_leftovers(path, tmp_dir)
    tmp = None
    try:
        tmp = _mkstemp(path, tmp_dir)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make outputs private
        yield Path(tmp)
        if os.path.isfile(tmp):
            fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)  # the rename itself is durable only once the folder is
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(path, e.errno) from e
        raise
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        with contextlib.suppress(OSError):  # the last writer in flight removes it
            os.rmdir(tmp_dir)


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
