"""report: one page comparing the experiments, as report.md and a self-contained report.html.

First line: which I3D weights and flow backend made the features (random
weights are flagged there). Then the paper's Table 3 shape (mAP per tIoU per
experiment and their mean), F1 at tIoU 0.5, video-level classification mAP,
the skipped videos, and the plots: per-class AP, precision-recall at tIoU 0.5
and timelines of a few test videos (ground truth, detections, TCAM: the
paper's Figure 5). The PNGs are also outputs of their own, so
``snakemake --report`` shows them.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import os
import sys
from pathlib import Path

import numpy as np

from pipeline.core.figures import pyplot, save_png
from pipeline.core.io import atomic_write_text


def plot_ap_per_class(metrics: dict[str, dict], path: Path, tiou: str = "0.5") -> None:
    plt = pyplot()
    names = list(metrics)
    col = {n: [f"{t:g}" for t in m["tiou_thresholds"]].index(tiou) if tiou in m["map"] else 0
           for n, m in metrics.items()}
    classes = sorted({c for m in metrics.values() for c in m["ap_per_class"]})
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(classes) * max(1, len(names) / 2)), 4))
    x = np.arange(len(classes))
    for i, n in enumerate(names):
        ap = [metrics[n]["ap_per_class"].get(c, [0] * (col[n] + 1))[col[n]] for c in classes]
        ax.bar(x + i * width - 0.4 + width / 2, ap, width, label=n)
    ax.set_xticks(x, classes, rotation=60 if len(classes) > 6 else 0, ha="right" if len(classes) > 6 else "center")
    ax.set_ylabel(f"AP at tIoU {tiou} (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    ax.set_title("Average precision per class")
    fig.tight_layout()
    save_png(fig, path)


def plot_pr(metrics: dict[str, dict], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 4), squeeze=False)
    for ax, (n, m) in zip(axes[0], metrics.items()):
        curves = m["pr_at_tiou_0.5"]
        for c, pr in curves.items():
            ax.plot(pr["recall"], pr["precision"], lw=1, label=c if len(curves) <= 10 else None)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"{n}: precision-recall at tIoU 0.5")
        if 0 < len(curves) <= 10:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def plot_timelines(videos: list[str], ann, detections: dict, tcams: dict, classes: list[str],
                   centres: dict[str, np.ndarray], path: Path, experiment: str) -> None:
    """Per video: ground truth, detections (shade = score) and the TCAM of the video's classes, in seconds."""
    plt = pyplot()
    colors = {c: plt.cm.tab10(i % 10) for i, c in enumerate(classes)}
    fig, axes = plt.subplots(len(videos), 1, figsize=(10, 2.2 * len(videos)), squeeze=False)
    for ax, v in zip(axes[:, 0], videos):
        tcam = tcams.get(v)
        dets = detections.get(v, [])
        shown = sorted(set(ann.labels_of(v)) | {d["label"] for d in dets}, key=classes.index)
        if tcam is not None:
            t = centres[v]
            for c in shown:
                ax.plot(t, tcam[:, classes.index(c)], color=colors[c], lw=1)
        for s in (s for s in ann.segments if s.video == v):
            ax.axvspan(s.start_s, s.end_s, ymin=0.9, ymax=1.0, color=colors[s.label])
        for s in (s for s in ann.ambiguous if s.video == v):
            ax.axvspan(s.start_s, s.end_s, ymin=0.9, ymax=1.0, color="0.7", hatch="//", fill=False)
        top = max([d["score"] for d in dets] or [1])
        for d in dets:
            a = 0.25 + 0.75 * max(d["score"], 0) / top if top > 0 else 1
            ax.axvspan(*d["segment"], ymin=0.78, ymax=0.88, color=colors[d["label"]], alpha=a)
        ax.set_ylim(0, 1.12)
        ax.set_ylabel("TCAM")
        ax.set_title(f"{v}: ground truth (top band), {experiment} detections (second band), TCAM", fontsize=9)
        handles = [plt.Line2D([], [], color=colors[c], lw=3, label=c) for c in shown]
        if handles:
            ax.legend(handles=handles, fontsize=7, loc="center right")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    save_png(fig, path)


def plot_curves(curves: dict[str, list], path: Path) -> None:
    """mAP@0.5 and the mean mAP on the test subset against the training iteration, one line per experiment."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, col, name in zip(axes, (1, 2), ("mAP@0.5", "mean mAP over the tIoU thresholds")):
        for exp, rows in curves.items():
            if rows:
                line, = ax.plot([r[0] for r in rows], [r[col] for r in rows], marker=".", label=exp)
                for r in rows:
                    if r[3]:  # the point whose weights became model.pt: selection on the test set
                        ax.plot(r[0], r[col], marker="*", markersize=12, color=line.get_color())
        ax.set_xlabel("iteration")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    if any(curves.values()):
        axes[0].legend(fontsize=8)
    else:
        axes[0].text(0.5, 0.5, "no learning curve (train.eval_every: 0)", ha="center", va="center",
                     transform=axes[0].transAxes)
    fig.suptitle("Learning curves on the test subset (a star: weights selected on the test set)", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


def skipped_ground_truth(ann, subset: str, skipped: list[dict]) -> tuple[int, int]:
    """(ground-truth segments, videos) of the test subset on videos the run skipped: evaluation keeps them
    (the benchmark's ground truth does not shrink with what a run could read), so they are misses."""
    names = {s["video"] for s in skipped}
    segs = [s for s in ann.segments if s.subset == subset and s.video in names]
    return len(segs), len({s.video for s in segs})


def past_end_note(rows: list[dict], subset: str) -> str | None:
    """One line on the test subset's segments past their decoded video's end (durations stage), per video."""
    from collections import Counter

    rows = [r for r in rows if r["subset"] == subset]
    if not rows:
        return None
    per_video = Counter(r["video"] for r in rows)
    actions = Counter(r["action"] for r in rows)
    what = "; ".join(text for text, n in (
        (f"{actions['kept']} kept as ground truth (they can only be missed, as in the official evaluation)",
         actions["kept"]),
        (f"{actions['dropped']} dropped (on_bad_annotation: skip)", actions["dropped"])) if n)
    return (f"{len(rows)} ground-truth segment(s) on {len(per_video)} test video(s) end past the decoded video: "
            f"{what}: " + ", ".join(f"{v} ({n})" for v, n in sorted(per_video.items())) + ".")


def timeline_videos(ann, subset: str, detections: dict, n: int) -> list[str]:
    """The first ``n`` test videos (by name) that have ground truth and were localized."""
    return [v for v in ann.videos_in(subset) if ann.labels_of(v) and v in detections][:n]


def table_rows(metrics: dict[str, dict], labels: dict[str, str] | None = None,
               groups: dict[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """The results table, one row per experiment; ``labels`` name the rows as a paper table does (e.g.
    "L_Dis + L_D (dis_ld)"); ``groups`` (run -> experiment) folds the seeds of an experiment into one row
    of mean ± standard deviation."""
    labels = labels or {}
    groups = groups or {n: n for n in metrics}
    thresholds = next(iter(metrics.values()))["tiou_thresholds"]
    header = ["experiment"] + [f"mAP@{t:g}" for t in thresholds] + ["avg", "F1@0.5", "cls mAP"]
    by_experiment: dict[str, list[dict]] = {}
    for run, m in metrics.items():
        by_experiment.setdefault(groups.get(run, run), []).append(m)

    def cell(values):
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        if len(values) == 1:
            return f"{values[0]:.1f}"
        return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"

    rows = []
    for n, ms in by_experiment.items():
        label = labels.get(n, n)
        name = n if label == n else f"{label} ({n})"
        if len(ms) > 1:
            name += f", {len(ms)} seeds"
        rows.append([name] + [cell([m["map"][f"{t:g}"] for m in ms]) for t in thresholds] + [
            cell([m["average_map"] for m in ms]), cell([100 * m["f1"]["f1"] for m in ms]),
            cell([m.get("classification_map") for m in ms])])
    first, m = next(iter(metrics.items()))
    if "chance" in m:
        c = m["chance"]
        rows.append([f"chance ({first}'s detections placed at random)"] +
                    [f"{c['map'][f'{t:g}']:.1f}" for t in thresholds] +
                    [f"{c['average_map']:.1f}", f"{100 * c['f1']['f1']:.1f}", "-"])
    return header, rows


def cost_tables(costs: dict) -> list[tuple[str, list[str], list[list[str]], str]]:
    """The stage-cost table and the projection onto the full datasets, from pipeline/costs.py's costs.json."""
    from pipeline.core.run_files import hours

    def num(x, fmt):
        return "-" if x is None or x != x else format(x, fmt)

    stages = costs["stages"]
    header = ["stage", "jobs", "job s", "video min", "s per video min", "mean s per job", "fixed s per job",
              "peak RSS MB", "device"]
    rows = [[name, str(r["jobs"]), num(r["seconds"], ".1f"), num(r["video_minutes"], ".1f"),
             num(r.get("s_per_1000_iterations") if name == "train" else r["s_per_video_minute"], ".1f")
             + (" per 1000 it" if name == "train" else ""),
             num(r["mean_job_s"], ".1f"), num(r.get("fixed_s_per_job"), ".1f"), num(r["peak_rss_mb"], ".0f"),
             ", ".join(r["devices"]) or "-"]
            for name, r in stages.items()]
    measured = ("Stage costs of this run (Snakemake benchmark records)", header, rows,
                "Job seconds summed over jobs; with N jobs at once the wall time is about the sum / N. Fixed: "
                "what a job pays besides its compute (process start, imports, weights, writing).")
    order = ["decode", "flow", "features", "train", "localize"]
    proj = costs.get("projection", {})
    cols = [s for s in order if any(s in p["seconds"] for p in proj.values())]
    header = ["dataset", "videos", "video h"] + cols + ["total"]
    rows = [[name, str(p["videos"]), f"{p['minutes'] / 60:.1f}"] + [hours(p["seconds"][c]) for c in cols]
            + [hours(p["seconds"]["total"])] for name, p in proj.items()]
    projected = ("Projected job time of the full datasets on this machine", header, rows,
                 "Fixed cost per video job plus compute per minute of video from the rates above, the compute "
                 "scaled to each preset's crop and TV-L1 settings, training by one real step at each preset's "
                 "shape, both timed on this machine (decode as measured: it depends on the source resolution); "
                 "all experiments of this run. See pipeline/costs.py.")
    return [measured, projected] if rows else [measured]


def markdown(title: str, provenance: list[str], metrics: dict[str, dict], skipped: list[dict],
             plots: dict[str, str], notes: list[str], tables=(), labels=None, caption: str = "",
             groups=None) -> str:
    header, rows = table_rows(metrics, labels, groups)
    out = [f"**{line}**  " for line in provenance] + ["", f"# {title}", ""] + ([f"## {caption}", ""] if caption else [])
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out += [""] + [f"- {n}" for n in notes] + [""]
    out += ["## Skipped videos", ""]
    out += [f"- {s['video']} ({s['stage']}): {s['reason']}" for s in skipped] or ["None."]
    for caption, header, rows, note in tables:
        out += ["", f"## {caption}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in rows] + ["", note]
    for caption, name in plots.items():
        out += ["", f"## {caption}", "", f"![{caption}]({name})"]
    return "\n".join(out) + "\n"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    table = "<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>"
    return table + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</tbody></table>"


def page(title: str, provenance: list[str], metrics: dict[str, dict], skipped: list[dict],
         plots: dict[str, Path], notes: list[str], tables=(), labels=None, caption: str = "", groups=None) -> str:
    """The HTML report, its PNGs inlined so the one file can be mailed or archived."""
    e = html.escape
    table = (f"<h2>{e(caption)}</h2>" if caption else "") + _html_table(*table_rows(metrics, labels, groups))
    extra = "".join(f"<h2>{e(c)}</h2>{_html_table(h, r)}<p>{e(n)}</p>" for c, h, r, n in tables)
    skipped_html = ("<ul>" + "".join(f"<li>{e(s['video'])} ({e(s['stage'])}): {e(s['reason'])}</li>"
                                     for s in skipped) + "</ul>") if skipped else "<p>None.</p>"
    figs = "".join(f"<h2>{e(c)}</h2><img alt='{e(c)}' src='data:image/png;base64,"
                   f"{base64.b64encode(p.read_bytes()).decode()}'>" for c, p in plots.items())
    # random weights are flagged in red on their line
    prov = "".join(f"<p class='prov{' warn' if 'RANDOM' in line else ''}'>{e(line)}</p>" for line in provenance)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}.prov{font-weight:bold}"
             ".warn{color:#a00}img{max-width:100%}")
    notes_html = "<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{style}</style>"
            f"</head><body>{prov}<h1>{e(title)}</h1>{table}{notes_html}<h2>Skipped videos</h2>{skipped_html}"
            f"{extra}{figs}</body></html>\n")


def provenance_lines(feature_jsons) -> list[str]:
    """The distinct provenance lines of the features (more than one means mixed weights: say so)."""
    lines, flows = [], []
    for p in feature_jsons:
        prov = json.loads(Path(p).read_text())
        if prov.get("status", "ok") != "ok":
            continue
        if prov["provenance"] not in lines:
            lines.append(prov["provenance"])
        flow = (prov.get("flow_settings") or {}).get("backend")
        if flow and f"TV-L1 flow backend: {flow}" not in flows:
            flows.append(f"TV-L1 flow backend: {flow}")
    return lines + flows


def write_viewer(out: Path, title: str, ann, subset: str, runs: Path, experiments: list[str], sources: dict[str, str],
                 feature_jsons: list[str]) -> Path:
    """report/viewer.html: the test videos playable, with ground truth and each run's detections
    (pipeline/core/viewer.py)."""
    from pipeline.core.metrics import load_detections
    from pipeline.core.viewer import relative_src, viewer_html

    durations = {}
    for p in feature_jsons:
        prov = json.loads(Path(p).read_text())
        durations[Path(p).stem] = prov.get("source_duration_s")
    gt: dict[str, list] = {}
    for s in ann.segments:
        gt.setdefault(s.video, []).append([s.label, s.start_s, s.end_s])
    detections = {n: load_detections(runs / n / "detections.json") for n in experiments}
    videos = []
    for v in ann.videos_in(subset):
        ends = [g[2] for g in gt.get(v, [])] + [d["segment"][1] for r in detections.values() for d in r.get(v, [])]
        duration = durations.get(v) or max(ends, default=1.0)
        videos.append({"name": v, "src": relative_src(sources[v], out) if v in sources else "",
                       "duration": float(duration), "gt": sorted(gt.get(v, []), key=lambda g: g[1])})
    path = out / "viewer.html"
    atomic_write_text(path, viewer_html(f"{title}: test videos", ann.classes, videos, detections,
                                        "Click a span to play the video from there; the red line is the playhead."))
    return path


def run(preset: str, experiments: list[str], runs_dir: str, annotations_dir: str, subset: str, skipped_json: str,
        feature_jsons: list[str], out_dir: str, n_timelines: int, costs_json: str | None = None,
        labels: dict[str, str] | None = None, caption: str = "", groups: dict[str, str] | None = None,
        sources: dict[str, str] | None = None) -> None:
    from pipeline.core.annotation_io import read_table
    from pipeline.core.metrics import load_detections
    from pipeline.core.run_files import read_tcams

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(runs_dir)
    metrics = {n: json.loads((runs / n / "metrics.json").read_text()) for n in experiments}
    ann = read_table(annotations_dir)
    skipped = json.loads(Path(skipped_json).read_text())["skipped"]
    first = experiments[0]
    dets = load_detections(runs / first / "detections.json")
    videos = timeline_videos(ann, subset, dets, n_timelines)
    classes, tcams, centres = read_tcams(runs / first / "scores.npz", videos)
    plots = {"Average precision per class at tIoU 0.5": out / "ap_per_class.png",
             "Precision-recall at tIoU 0.5": out / "pr_curve.png"}
    plot_ap_per_class(metrics, plots["Average precision per class at tIoU 0.5"])
    plot_pr(metrics, plots["Precision-recall at tIoU 0.5"])
    timelines = out / "timelines.png"
    if videos:
        plot_timelines(videos, ann, dets, tcams, classes, centres, timelines, first)
    else:  # nothing localized: an empty figure keeps the outputs complete and says why
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 1))
        ax.text(0.5, 0.5, "no localized test video with ground truth", ha="center", va="center")
        ax.axis("off")
        save_png(fig, timelines)
    plots[f"Test videos: ground truth, detections and TCAM ({first})"] = timelines
    m0 = metrics[first]
    notes = [f"Preset {preset}, {m0['subset']} subset: {m0['n_videos']} videos, {m0['n_ground_truth']} ground-truth "
             f"segments ({m0['n_ambiguous']} Ambiguous).",
             f"Evaluation protocol: {m0['protocol']} (" + (
                 "ActivityNet rules: continuous tIoU, best-tIoU matching, interpolated AP; unmatched detections "
                 "on Ambiguous segments are ignored" if m0["protocol"] == "activitynet" else
                 "D2-Net reference: snippet grid, first-match, detections on Ambiguous segments dropped") + ").",
             "F1 at tIoU 0.5 over all kept detections; cls mAP: video-level classification mAP (top-k pooled scores)."]
    unlearnable = m0.get("classes_without_training_videos") or []
    if unlearnable:
        notes.insert(1, f"{len(unlearnable)} class(es) have test ground truth but no training video, so no run "
                        f"could learn them (AP 0 in every row): {', '.join(unlearnable)}.")
    lost = skipped_ground_truth(ann, subset, skipped)
    if lost[0]:
        notes.insert(1, f"{lost[0]} ground-truth segment(s) on {lost[1]} skipped test video(s) count as misses "
                        "in every row: a video the run could not read still has its actions.")
    from pipeline.core.run_files import read_past_end

    past = past_end_note(read_past_end(annotations_dir), subset)
    if past:
        notes.insert(1, past)
    if groups and len(set(groups.values())) < len(groups):
        notes.append("a ± b: mean and standard deviation over the seeds of an experiment (train.seeds); "
                     "the chance row, timelines and per-class plots use the first run.")
    protocols = {n: m["protocol"] for n, m in metrics.items()}
    if len(set(protocols.values())) > 1:  # e.g. the reference_code profile evaluates as the authors' code does
        notes.insert(2, "Protocols differ between rows: " + "; ".join(f"{n}: {p}" for n, p in protocols.items())
                     + ": numbers under different protocols are not comparable.")
    provenance = provenance_lines(feature_jsons)
    title = f"Weakly supervised action localization: {preset}"
    from pipeline.core.run_files import read_curve

    curves = {n: read_curve(runs / n / "curve.csv") for n in experiments if (runs / n / "curve.csv").exists()}
    plot_curves(curves, out / "learning_curves.png")  # empty axes when train.eval_every is 0
    plots["Learning curves (test subset)"] = out / "learning_curves.png"
    for n, rows in curves.items():
        chosen = [r[0] for r in rows if r[3]]
        if chosen:
            notes.append(f"{labels.get(n, n) if labels else n}: model SELECTED ON THE TEST SET (best mean mAP, "
                         f"iteration {chosen[0]}), as the authors' code does: optimistic, not a held-out result.")
    for n in experiments:
        if (runs / n / "loss.png").exists():
            plots[f"Training loss ({n})"] = runs / n / "loss.png"
    tables = cost_tables(json.loads(Path(costs_json).read_text())) if costs_json else []
    atomic_write_text(out / "report.md", markdown(title, provenance, metrics, skipped,
                                                  {c: os.path.relpath(p, out) for c, p in plots.items()}, notes,
                                                  tables, labels, caption, groups))
    notes.append("viewer.html (beside this report): each test video playable, its ground truth and every run's "
                 "detections on a timeline; click a detection to see the action.")
    atomic_write_text(out / "report.html", page(title, provenance, metrics, skipped, plots, notes, tables, labels,
                                                caption, groups))
    write_viewer(out, title, ann, subset, runs, experiments, sources or {}, feature_jsons)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], fromfile_prefix_chars="@")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--experiments", required=True, help="comma-separated experiment names (runs/<name>)")
    ap.add_argument("--labels", default="{}", help="JSON experiment -> row label (an experiment set's)")
    ap.add_argument("--caption", default="", help="heading of the results table (an experiment set's)")
    ap.add_argument("--groups", default="{}", help="JSON run -> experiment: seeds of one experiment share a row")
    ap.add_argument("--runs", required=True, help="folder of <experiment>/{metrics.json,detections.json,scores.npz}")
    ap.add_argument("--annotations", required=True, help="folder written by the annotations stage")
    ap.add_argument("--subset", required=True)
    ap.add_argument("--skipped", required=True, help="skipped_videos.json")
    ap.add_argument("--timelines", type=int, default=4, help="test videos drawn as timelines")
    ap.add_argument("--costs", help="costs.json of pipeline/costs.py: the stage-cost tables")
    ap.add_argument("--out", required=True, help="report folder")
    ap.add_argument("--sources", default="{}", help="JSON video -> its file (the viewer plays it)")
    ap.add_argument("feature_jsons", nargs="*", help="features/<video>.json provenance files")
    args = ap.parse_args(argv)
    run(args.preset, args.experiments.split(","), args.runs, args.annotations, args.subset, args.skipped,
        args.feature_jsons, args.out, args.timelines, args.costs, json.loads(args.labels), args.caption,
        json.loads(args.groups) or None, json.loads(args.sources))
    print(f"report: {Path(args.out) / 'report.html'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
