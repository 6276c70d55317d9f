"""Directory entries one atomic write reads, and its time, in a folder of many files.

    python bench/atomic_writes.py [--files 14000] [--writes 20]

ActivityNet 1.2's features/ holds ~14,000 files; on NFS or Lustre every entry a
listing reads costs a round trip. The writer (pipeline/core/io.py) looks for a killed
writer's leftovers in a small temporary folder of its own, not in the target's
folder: this counts the entries os.scandir yields during the writes.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.io import atomic_write_text  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=14000)
    ap.add_argument("--writes", type=int, default=20)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="atomic-writes-"))
    for i in range(args.files):
        (folder / f"video_{i:05d}.npy").write_bytes(b"")
    read = [0]
    real = os.scandir

    def counting(path="."):
        entries = list(real(path))
        read[0] += len(entries)
        return iter(entries)

    os.scandir = counting
    t = time.perf_counter()
    for i in range(args.writes):
        atomic_write_text(folder / f"new_{i}.json", "{}")
    elapsed = (time.perf_counter() - t) / args.writes
    os.scandir = real
    print(f"{args.files} files present: {read[0] / args.writes:.0f} directory entries read per write, "
          f"{elapsed * 1e3:.2f} ms per write (fsync included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
