"""pipeline/core/io.py: atomic writes, the streamed .npy writer, and the chunked reader the stages use."""
import os

import numpy as np
import pytest

from pipeline.core.io import NpyAppender, NpyRows


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_rows_and_frames_read_back_exactly(tmp_path):
    a = np.random.default_rng(0).integers(0, 255, (3, 16, 8, 8, 3), dtype=np.uint8)
    w = NpyAppender(tmp_path / "f.npy", (16, 8, 8, 3))
    w.write(a)
    w.close()
    snippets, frames = NpyRows(tmp_path / "f.npy"), NpyRows(tmp_path / "f.npy", lead_dims=2)
    assert snippets.shape == (3, 16, 8, 8, 3) and frames.shape == (48, 8, 8, 3)
    assert np.array_equal(snippets[1:3], a[1:3]) and np.array_equal(frames[5:37], a.reshape(48, 8, 8, 3)[5:37])
    assert frames[47:60].shape == (1, 8, 8, 3) and frames[60:70].shape == (0, 8, 8, 3)
    with pytest.raises(TypeError):
        frames[::2]


def test_a_pass_over_a_long_file_keeps_memory_to_a_chunk(tmp_path):
    """A memory map keeps every page it touched resident; the stages' reader holds one chunk."""
    rows, row = 400, np.full((1024, 1024), 7, np.uint8)  # 400 MB
    w = NpyAppender(tmp_path / "big.npy", row.shape)
    for _ in range(rows // 50):
        w.write(np.broadcast_to(row, (50,) + row.shape))
    w.close()

    def peak_growth(reader) -> float:
        base, peak, total = rss_mb(), 0.0, 0
        for i in range(0, rows, 8):
            total += int(np.asarray(reader[i:i + 8])[:, 0, 0].sum())
            peak = max(peak, rss_mb() - base)
        assert total == 7 * rows
        return peak

    assert peak_growth(NpyRows(tmp_path / "big.npy")) < 40
    assert peak_growth(np.load(tmp_path / "big.npy", mmap_mode="r")) > 200  # what the stages used to do


def test_a_write_reads_no_more_than_its_own_temporary_folder(tmp_path, monkeypatch):
    """ActivityNet 1.2's features/ holds ~14,000 files: finding a killed writer's leftovers must not list them
    all on every write (on NFS or Lustre each listing is slow). Before: 14,010 entries read per write."""
    import os

    from pipeline.core.io import atomic_write_text

    for i in range(14000):
        (tmp_path / f"video_{i:05d}.npy").write_bytes(b"")
    read = []
    real_scandir = os.scandir

    def counting(path="."):
        entries = list(real_scandir(path))
        read.extend(entries)
        return iter(entries)

    monkeypatch.setattr(os, "scandir", counting)
    monkeypatch.setattr("pathlib.os.scandir", counting, raising=False)
    for i in range(10):
        atomic_write_text(tmp_path / f"new_{i}.json", "{}")
    assert len(read) <= 10  # no listing of the 14,000 (at most the small temporary folder's entries)
    assert not (tmp_path / ".vidloc-tmp").exists()


def test_writes_are_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    import os

    from pipeline.core import io as vio

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd))[1])
    events = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1])
    vio.atomic_write_text(tmp_path / "a.json", "{}")
    assert len(synced) == 2 and ".vidloc-tmp/a.json.tmp-" in synced[0] and synced[1] == str(tmp_path)
    assert events == [("replace", str(tmp_path / "a.json"))]


@pytest.mark.parametrize("code, words", [(28, "no space left on device"), (122, "disk quota exceeded")])
def test_only_a_full_disk_or_a_spent_quota_is_called_one(tmp_path, code, words):
    import errno

    from pipeline.core.io import DiskFullError, atomic_path

    with pytest.raises(DiskFullError, match=f"^{tmp_path / 'x.bin'}: {words}"):
        with atomic_path(tmp_path / "x.bin"):
            raise OSError(code, os.strerror(code))
    assert (errno.ENOSPC, errno.EDQUOT) == (28, 122)
    # anything else (a CUDA out-of-memory, a permission error) keeps its own words, whatever space is left
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        with atomic_path(tmp_path / "y.bin"):
            raise RuntimeError("CUDA out of memory")
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "z.bin"):
            raise PermissionError(13, "Permission denied")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left behind
