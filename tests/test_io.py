"""pipeline/io.py: atomic writes, the streamed .npy writer, and the chunked reader the stages use."""
import numpy as np
import pytest

from pipeline.io import NpyAppender, NpyRows


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
