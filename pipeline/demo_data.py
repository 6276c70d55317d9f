"""demo_data: a small, deterministic dataset of real H.264 videos with known action times.

Each video shows a textured background scrolling at its own speed, sensor
noise and a slowly drifting distractor blob. At known times one of four
"actions" appears, each a distinct shape with a distinct motion:

- Bounce: a disk falling and rebounding (vertical, accelerating motion)
- Spin:   a bar rotating about its center (rotation, no translation)
- Slide:  a square sliding left and right at constant speed (horizontal translation)
- Pulse:  a ring growing and shrinking (expansion, no translation)

Colors are drawn per instance, so a model has to use shape and motion, not
color. Annotations are written in the THUMOS14 txt format
(``<Class>_{val,test}.txt``, ``video  start end`` with 0.1 s precision);
the ``validation`` subset trains and ``test`` evaluates, as in THUMOS14.
Everything follows from the seed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline.core.io import atomic_path, atomic_write_json, atomic_write_text
from pipeline.core.demo_layout import CLASSES, SPLITS, video_names
from pipeline.core.settings import DemoSettings, from_dict

# ---------------------------------------------------------------- planning


def plan_video(rng: np.random.Generator, s: DemoSettings) -> tuple[int, list[dict]]:
    """Frame count and action instances [{label, start, end (frames, end exclusive)}] of one video."""
    n_frames = int(rng.integers(round(s.min_duration_s * s.fps), round(s.max_duration_s * s.fps) + 1))
    classes = list(rng.choice(len(CLASSES), size=int(rng.integers(1, 3)), replace=False))
    n_actions = int(rng.integers(1, s.max_actions + 1))
    lengths = [int(rng.integers(round(s.min_action_s * s.fps), round(s.max_action_s * s.fps) + 1))
               for _ in range(n_actions)]
    margin = s.fps  # at least 1 s of background before, between and after actions
    slack = n_frames - sum(lengths) - margin * (n_actions + 1)
    if slack < 0:  # too many actions for this duration: keep one that fits
        lengths = [min(lengths[0], n_frames - 2 * margin)]
        slack = n_frames - lengths[0] - 2 * margin
    # Split the slack randomly among the gaps so actions land anywhere.
    cuts = np.sort(rng.integers(0, slack + 1, size=len(lengths)))
    actions, t = [], 0
    prev_cut = 0
    for i, (length, cut) in enumerate(zip(lengths, cuts)):
        t += margin + int(cut - prev_cut)
        prev_cut = cut
        label = CLASSES[classes[i % len(classes)]]
        actions.append({"label": label, "start": t, "end": t + length})
        t += length
    return n_frames, actions


# --------------------------------------------------------------- rendering


def _smooth_texture(rng, h, w, colors) -> np.ndarray:
    import cv2

    noise = rng.random((h, w)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), 3.0)
    tex = (tex - tex.min()) / max(float(np.ptp(tex)), 1e-6)
    stripes = 0.5 + 0.5 * np.sin(np.arange(w, dtype=np.float32)[None, :] * 2 * math.pi / rng.uniform(12, 30))
    mix = np.clip(0.75 * tex + 0.25 * stripes, 0, 1)[..., None]
    return (colors[0] * (1 - mix) + colors[1] * mix).astype(np.float32)


def _bright_color(rng) -> np.ndarray:
    c = rng.uniform(0, 1, 3)
    c[rng.integers(3)] = 1.0
    c[rng.integers(3)] *= 0.3
    return (c * 255).astype(np.float32)


class _Renderer:
    """Draws frames of one video; all randomness is drawn up front from the video's generator."""

    def __init__(self, rng, s: DemoSettings, actions):
        self.s, self.rng = s, rng
        h, w = s.height, s.width
        dark = rng.uniform(30, 90, 3)
        self.texture = _smooth_texture(rng, 2 * h, 2 * w, (dark, dark + rng.uniform(40, 90, 3)))
        angle = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(0.3, 1.2)  # px per frame
        self.bg_velocity = (speed * math.sin(angle), speed * math.cos(angle))
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.distractor = (rng.uniform(0.3, 0.7) * h, rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.4),
                           rng.uniform(6, 10), rng.uniform(80, 160))
        # Actions stay inside the central crop so the decoded frames keep them.
        self.actions = []
        for a in actions:
            self.actions.append(dict(a, color=_bright_color(rng), cy=rng.uniform(0.35, 0.65) * h,
                                     cx=rng.uniform(0.35, 0.65) * w, size=rng.uniform(9, 13),
                                     phase=rng.uniform(0, 2 * math.pi), rate=rng.uniform(0.8, 1.3)))

    def frame(self, t: int) -> np.ndarray:
        s = self.s
        h, w = s.height, s.width
        oy = int(round(t * self.bg_velocity[0])) % h
        ox = int(round(t * self.bg_velocity[1])) % w
        img = self.texture[oy:oy + h, ox:ox + w].copy()
        dy, dx, dv, dr, dgray = self.distractor
        cy = (dy + 8 * math.sin(t * dv / s.fps)) % h
        cx = (dx + t * dv) % w
        blob = ((self.yy - cy) ** 2 + (self.xx - cx) ** 2) < dr * dr
        img[blob] = dgray
        for a in self.actions:
            if a["start"] <= t < a["end"]:
                self._draw(img, a, (t - a["start"]) / s.fps)
        img += self.rng.normal(0.0, s.noise_std, img.shape).astype(np.float32)
        return np.clip(img, 0, 255).astype(np.uint8)

    def _draw(self, img, a, sec):
        yy, xx, r, color = self.yy, self.xx, a["size"], a["color"]
        w = a["rate"] * 2 * math.pi  # ~1 cycle per second
        label = a["label"]
        if label == "Bounce":
            height = 34.0
            phase = (sec * a["rate"] * 1.2 + a["phase"] / (2 * math.pi)) % 1.0
            y = a["cy"] + height / 2 - height * 4 * phase * (1 - phase)  # parabola: fall and rebound
            mask = (yy - y) ** 2 + (xx - a["cx"]) ** 2 < (0.8 * r) ** 2
        elif label == "Spin":
            th = a["phase"] + w * sec
            u = (xx - a["cx"]) * math.cos(th) + (yy - a["cy"]) * math.sin(th)
            v = -(xx - a["cx"]) * math.sin(th) + (yy - a["cy"]) * math.cos(th)
            mask = (np.abs(u) < 2.0 * r) & (np.abs(v) < 0.35 * r)
        elif label == "Slide":
            x = a["cx"] + 30.0 * (2 / math.pi) * math.asin(math.sin(w * 0.6 * sec + a["phase"]))  # triangle wave
            mask = (np.abs(xx - x) < 0.8 * r) & (np.abs(yy - a["cy"]) < 0.8 * r)
        elif label == "Pulse":
            radius = r * (1.0 + 0.6 * math.sin(w * sec + a["phase"]))
            d = np.sqrt((yy - a["cy"]) ** 2 + (xx - a["cx"]) ** 2)
            mask = np.abs(d - radius) < 2.5
        else:
            raise ValueError(label)
        img[mask] = color


def write_video(path: Path, frames, fps: int, crf: int = 20, times_s=None) -> None:
    """Encode RGB uint8 frames as H.264 in MP4, atomically.

    ``times_s`` gives each frame's presentation time (variable frame rate);
    by default frames are 1/fps apart.
    """
    from fractions import Fraction

    import av

    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=fps)
            # Identical bytes from run to run need a single thread and no macroblock-tree rate control:
            # with mbtree this libx264 encodes the same frames differently now and then.
            stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1", "x264-params": "no-mbtree=1"}
            stream.thread_count = 1
            if times_s is not None:
                stream.codec_context.time_base = Fraction(1, 1000)
            for i, img in enumerate(frames):
                if i == 0:
                    stream.height, stream.width = img.shape[:2]
                    stream.pix_fmt = "yuv420p"
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                if times_s is not None:
                    frame.pts, frame.time_base = round(times_s[i] * 1000), Fraction(1, 1000)
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)


# ------------------------------------------------------------------- the stage


def generate(root: str | Path, s: DemoSettings, progress: bool = True) -> dict:
    """Write videos/, annotations_{val,test}/ and manifest.json under ``root``."""
    root = Path(root)
    manifest = {"settings": asdict(s), "classes": list(CLASSES), "videos": {}}
    rows = {(suffix, c): [] for suffix in SPLITS.values() for c in CLASSES}
    names = [(sub, v) for sub, vs in video_names(s).items() for v in vs]
    from pipeline.core.progress import progress_bar

    for index, (subset, name) in enumerate(progress_bar(names, desc="demo videos", unit="video", enabled=progress)):
        rng = np.random.default_rng([s.seed, index])
        n_frames, actions = plan_video(rng, s)
        renderer = _Renderer(rng, s, actions)
        write_video(root / "videos" / f"{name}.mp4", (renderer.frame(t) for t in range(n_frames)), s.fps, s.crf)
        for a in actions:
            rows[(SPLITS[subset], a["label"])].append(f"{name}  {a['start'] / s.fps:.1f} {a['end'] / s.fps:.1f}")
        manifest["videos"][name] = {"subset": subset, "n_frames": n_frames, "duration_s": n_frames / s.fps,
                                    "actions": actions}
    for (suffix, label), lines in rows.items():
        atomic_write_text(root / f"annotations_{suffix}" / f"{label}_{suffix}.txt",
                          "".join(line + "\n" for line in lines))
    atomic_write_json(root / "manifest.json", manifest)
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="output folder (videos/, annotations_val/, annotations_test/)")
    ap.add_argument("--settings", default="{}", help="DemoSettings as JSON")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    generate(args.root, from_dict(DemoSettings, json.loads(args.settings), "demo_data"), progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
