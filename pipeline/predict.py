"""predict: a trained D2-Net on unlabeled videos' features -> detections, a CSV, timelines and a page.

For a folder of videos that have no annotations (the ``folder`` preset with
``model=PATH``). The checkpoint carries its classes and the signature of its
training features (sampling, flow, weights: ``pipeline.workflow.rules.feature_signature``);
the localization settings are the run's (``localize:``; a model trained on
ActivityNet 1.2 localizes as that preset does with
``--config 'localize={class_selection: top2, attention_rescale: true}'``).
Features made any other way would give meaningless scores, so they are
refused with a message naming both signatures.

Outputs in ``--out``: ``detections.json`` (ActivityNet results format),
``detections.csv`` (video, label, start_s, end_s, score; best first per
video), ``timelines/<video>.png`` (the TCAM of the detected classes and the
detections, in seconds), ``index.html`` linking them, and ``viewer.html``
(pipeline/core/viewer.py: each video playable with its detections on a timeline).
"""
from __future__ import annotations

import argparse
import csv
import html
import io
import json
import sys
from pathlib import Path

import numpy as np

from pipeline.core.intervals import snippet_centres
from pipeline.core.io import atomic_write_json, atomic_write_text
from pipeline.core.progress import progress_bar
from pipeline.core.settings import LocalizeSettings


class SignatureError(ValueError):
    """Features made with other settings than the model's training features."""


def check_signature(model_path: str, trained: dict, here: dict) -> None:
    """Raise SignatureError naming every setting where ``here`` differs from what the model was trained on."""
    if not trained:
        raise SignatureError(f"{model_path}: records no feature signature (trained before predict existed); "
                             "retrain it to predict with it")
    diff = sorted(k for k in set(trained) | set(here) if trained.get(k) != here.get(k))
    if diff:
        lines = "; ".join(f"{k}: model {json.dumps(trained.get(k))}, these features {json.dumps(here.get(k))}"
                          for k in diff)
        raise SignatureError(f"{model_path} was trained on features made with other settings ({lines}). "
                             "Extract this folder's features the same way (the folder preset's fps, "
                             "snippet_frames, snippet_stride, short_side, crop, flow and features settings).")


def csv_text(results: dict[str, list[dict]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["video", "label", "start_s", "end_s", "score"])
    for v in sorted(results):
        for d in results[v]:
            w.writerow([v, d["label"], f"{d['segment'][0]:.3f}", f"{d['segment'][1]:.3f}", f"{d['score']:.6f}"])
    return buf.getvalue()


def plot_timeline(video: str, centres: np.ndarray, tcam: np.ndarray, dets: list[dict], classes: list[str],
                  path: Path) -> None:
    """The TCAM of the detected classes (or the top one) over time, detections as shaded spans."""
    from pipeline.core.figures import pyplot, save_png

    plt = pyplot()
    shown = sorted({d["label"] for d in dets}, key=classes.index) or [classes[int(tcam.max(0).argmax())]]
    colors = {c: plt.cm.tab10(i % 10) for i, c in enumerate(shown)}
    fig, ax = plt.subplots(figsize=(10, 2.4))
    best = max((d["score"] for d in dets), default=1.0) or 1.0
    for d in dets:
        ax.axvspan(*d["segment"], color=colors[d["label"]], alpha=0.15 + 0.45 * max(d["score"], 0) / best, lw=0)
    for c in shown:
        ax.plot(centres, tcam[:, classes.index(c)], color=colors[c], lw=1, label=c)
    ax.set_xlim(0, max(float(centres[-1]) * 1.02, 1e-3) if len(centres) else 1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("TCAM")
    ax.set_title(video, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save_png(fig, path)


def page(results: dict[str, list[dict]], skipped: dict[str, str], model_path: str, classes: list[str]) -> str:
    e = html.escape
    rows = []
    for v in sorted(results):
        dets = "".join(f"<li>{e(d['label'])} {d['segment'][0]:.1f}-{d['segment'][1]:.1f} s "
                       f"(score {d['score']:.3f})</li>" for d in results[v][:10])
        more = f"<li>... {len(results[v]) - 10} more in detections.csv</li>" if len(results[v]) > 10 else ""
        rows.append(f"<h2>{e(v)}</h2><ul>{dets or '<li>no detections</li>'}{more}</ul>"
                    f"<img src='timelines/{e(timeline_name(v))}' alt='timeline of {e(v)}' width='900'>")
    skipped_html = "".join(f"<li>{e(v)}: {e(r)}</li>" for v, r in sorted(skipped.items()))
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Predictions</title>"
            "<style>body{font-family:sans-serif;max-width:960px;margin:auto}</style></head><body>"
            f"<h1>Predictions</h1><p>Model {e(model_path)} ({len(classes)} classes), {len(results)} videos. "
            "All detections: <a href='detections.csv'>detections.csv</a>, "
            "<a href='detections.json'>detections.json</a>.</p>"
            + (f"<h2>Skipped videos</h2><ul>{skipped_html}</ul>" if skipped else "") + "".join(rows)
            + "</body></html>\n")


def timeline_name(video: str) -> str:
    return f"{video}.png"


def run(model_path: str, features: list[str], out_dir: str, settings: LocalizeSettings | None = None,
        signature: dict | None = None, progress: bool = True, sources: dict[str, str] | None = None) -> dict[str, list[dict]]:
    """Detections for each ``<video>.npy`` in ``features`` (its ``<video>.json`` provenance beside it)."""
    from pipeline.core.feature_files import read_features
    from pipeline.compute.localization import infer, localize, to_results
    from pipeline.core.intervals import snippet_seconds
    from pipeline.compute.checkpoint import load_model, read_checkpoint

    ckpt = read_checkpoint(model_path)
    if signature is not None:
        check_signature(model_path, ckpt.get("features", {}), signature)
    model, classes, ts = load_model(model_path)
    s = settings or LocalizeSettings()
    out = Path(out_dir)
    (out / "timelines").mkdir(parents=True, exist_ok=True)
    results, skipped, durations = {}, {}, {}
    for path in progress_bar(features, desc="predict", unit="video", enabled=progress):
        path = Path(path)
        prov = json.loads(path.with_suffix(".json").read_text())
        video = path.stem
        feats = read_features(path, dim=ckpt["feature_dim"])  # the model's width: a wrong file names itself
        if prov.get("status") != "ok" or len(feats) == 0:
            skipped[video] = prov.get("reason", "no snippets")
            continue
        stride_s, window_s = snippet_seconds(prov)
        durations[video] = prov.get("source_duration_s") or len(feats) * stride_s
        tcam, _ = infer(model, feats, s, ts.topk_divisor)
        results[video] = to_results(localize(tcam, s, ts.topk_divisor), classes, stride_s, window_s)
        plot_timeline(video, snippet_centres(len(tcam), stride_s, window_s), tcam, results[video], classes,
                      out / "timelines" / timeline_name(video))
    atomic_write_json(out / "detections.json", {"version": "vidloc D2-Net predict", "results": results,
                                                "external_data": {"used": True, "details": "I3D features"},
                                                "skipped": skipped})
    atomic_write_text(out / "detections.csv", csv_text(results))
    atomic_write_text(out / "index.html", page(results, skipped, model_path, classes))
    from pipeline.core.viewer import relative_src, viewer_html

    sources = sources or {}
    videos = [{"name": v, "src": relative_src(sources[v], out) if v in sources else "",
               "duration": float(durations[v]), "gt": []} for v in sorted(results)]
    atomic_write_text(out / "viewer.html", viewer_html(f"Detections of {Path(model_path).name}", classes, videos,
                                                       {Path(model_path).parent.name or "model": results}))
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], fromfile_prefix_chars="@")
    ap.add_argument("features", nargs="+", help="<video>.npy files (their <video>.json provenance beside them)")
    ap.add_argument("--model", required=True, help="model.pt from train")
    ap.add_argument("--signature", help="JSON: how these features were made (pipeline.workflow.rules.feature_signature)")
    ap.add_argument("--localize", default="{}", help="LocalizeSettings as JSON")
    ap.add_argument("--sources", default="{}", help="JSON video -> its file (the viewer plays it)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        results = run(args.model, args.features, args.out, LocalizeSettings.from_dict(json.loads(args.localize)),
                      signature=json.loads(args.signature) if args.signature else None,
                      sources=json.loads(args.sources))
    except (SignatureError, ValueError) as e:
        print(f"predict: error: {e}", file=sys.stderr)
        return 1
    n = sum(len(d) for d in results.values())
    print(f"predict: {n} detections in {len(results)} videos -> {Path(args.out) / 'index.html'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
