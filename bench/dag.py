"""Snakefile parse + DAG cost at full dataset size, from the real annotations with placeholder videos.

    python bench/dag.py [--datasets thumos14,activitynet12] [--profile]

For THUMOS14 (413 videos) and ActivityNet 1.2 (7,202 videos) it lays one empty
placeholder file per annotated video in a temporary folder (ActivityNet ones
named as the official crawler saves them, ``v_<YouTube id>.mp4``), points the
preset at it, and times, as separate processes:
- ``import``: importing what the Snakefile imports;
- ``parse``: ``snakemake --list-rules`` (Snakemake's start, parsing the Snakefile, validating the config,
  reading the annotations and finding the videos: what every cluster job pays again);
- ``dag``: ``snakemake --list-changes params`` (the same plus the whole DAG with every job's inputs, params
  and needrun; prints only outputs whose params changed, none here);
- ``dry run``: ``snakemake -n`` as a user types it (the DAG, then every job formatted and printed:
  Snakemake formats each job's shell command and resources even under ``--quiet``).
``--profile`` runs the ``dag`` step under cProfile and prints the top entries.
``--floor`` also times Snakemake's own floor on the same video names: a bare Snakefile with no
settings, logs, benchmarks or params, with three rules per video (decode, flow, features: this
workflow's shape) and with one rule per video, each ending in one rule that reads every video's output.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.core.annotation_io import read_thumos14_txt, read_wtalc_npy  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def thumos14(tmp: Path) -> dict:
    root = ROOT / "data" / "thumos14"
    dirs = {"validation": str(root / "annotations_val"), "test": str(root / "annotations_test")}
    ann = read_thumos14_txt(dirs)
    videos = tmp / "videos"
    videos.mkdir()
    for v in ann.videos:
        (videos / f"{v}.mp4").touch()
    return {"preset": "thumos14", "presets": {"thumos14": {
        "videos": str(videos), "annotations": {"format": "thumos14_txt", "dirs": dirs}}}}


def activitynet12(tmp: Path) -> dict:
    path = ROOT / "data" / "activitynet12" / "ActivityNet1.2-Annotations"
    ann = read_wtalc_npy(path)
    videos = tmp / "videos"
    videos.mkdir()
    for v in ann.videos:
        (videos / f"v_{ann.aliases[v]}.mp4").touch()
    return {"preset": "activitynet12", "presets": {"activitynet12": {
        "videos": str(videos), "annotations": {"format": "wtalc_npy", "path": str(path)}}}}


DATASETS = {"thumos14": thumos14, "activitynet12": activitynet12}

BARE = """
import os
VIDEOS = sorted(os.path.splitext(f)[0] for f in os.listdir({videos!r}))
wildcard_constraints:
    video="[^/]+",
rule all:
    input: "res/all.txt"
{rules}
rule aggregate:
    input: lambda w: expand("res/features/{{video}}.npy", video=VIDEOS)
    output: "res/all.txt"
    shell: "touch {{output}}"
"""
THREE_RULES = """
rule decode:
    input: lambda w: os.path.join({videos!r}, w.video + ".mp4")
    output: f=temp("res/decoded/{{video}}/frames.npy"), m="res/decoded/{{video}}/meta.json"
    shell: "touch {{output}}"
rule flow:
    input: f=rules.decode.output.f, m=rules.decode.output.m
    output: f=temp("res/flow/{{video}}/flow.npy"), m="res/flow/{{video}}/meta.json"
    shell: "touch {{output}}"
rule features:
    input: f=rules.decode.output.f, fl=rules.flow.output.f, m=rules.flow.output.m
    output: "res/features/{{video}}.npy"
    shell: "touch {{output}}"
"""
ONE_RULE = """
rule video:
    input: lambda w: os.path.join({videos!r}, w.video + ".mp4")
    output: "res/features/{{video}}.npy"
    shell: "touch {{output}}"
"""


def floor(tmp: Path) -> dict:
    """Seconds of ``--list-changes params`` (parse + DAG) for the bare three-rule and one-rule Snakefiles."""
    videos = str(tmp / "videos")
    out = {}
    for name, rules in (("three_rules", THREE_RULES), ("one_rule", ONE_RULE)):
        work = tmp / name
        work.mkdir()
        (work / "Snakefile").write_text(BARE.format(videos=videos, rules=rules.format(videos=videos)))
        out[name] = timed([SNAKEMAKE, "--cores", "2", "--list-changes", "params"], work)[0]
    return out


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    return dt, r.stdout + r.stderr


def jobs(output: str) -> int:
    m = re.search(r"^total\s+(\d+)$", output, re.M)
    return int(m.group(1)) if m else 0


def measure(name: str, profile: bool, bare: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "override.yaml").write_text(yaml.safe_dump({**DATASETS[name](tmp), "results_dir": str(tmp / "results")}))
        base = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(ROOT), "--cores", "2",
                "--configfile", str(ROOT / "workflow_config.yaml"), str(tmp / "override.yaml"), "-n"]
        t_import, _ = timed([sys.executable, "-c", "import pipeline.workflow.rules, pipeline.core.annotation_io"], ROOT)
        no_dry = [a for a in base if a != "-n"]
        t_parse, _ = timed(no_dry + ["--list-rules"], ROOT)
        t_dag, _ = timed(no_dry + ["--list-changes", "params"], ROOT)
        t_dry, out = timed(base, ROOT)
        if profile:
            prof = tmp / "dag.prof"
            timed([sys.executable, "-m", "cProfile", "-o", str(prof), SNAKEMAKE, *no_dry[1:], "--list-changes",
                   "params"], ROOT)
            import pstats

            pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(25)
        row = {"dataset": name, "jobs": jobs(out), "import_s": t_import, "parse_s": t_parse, "dag_s": t_dag,
               "dry_run_s": t_dry}
        if bare:
            row.update(floor(tmp))
        return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="thumos14,activitynet12")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--floor", action="store_true", help="also time bare three-rule and one-rule Snakefiles")
    args = ap.parse_args()
    rows = [measure(name, args.profile, args.floor) for name in args.datasets.split(",")]
    print(f"{'dataset':<15}{'jobs':>8}{'import s':>10}{'parse s':>9}{'dag s':>8}{'dry run s':>11}")
    for r in rows:
        print(f"{r['dataset']:<15}{r['jobs']:>8}{r['import_s']:>10.2f}{r['parse_s']:>9.2f}{r['dag_s']:>8.2f}"
              f"{r['dry_run_s']:>11.2f}")
    if args.floor:
        print("Snakemake's floor, parse + DAG of a bare Snakefile over the same videos (seconds):")
        for r in rows:
            print(f"{r['dataset']:<15} three rules per video {r['three_rules']:.2f}   one rule per video "
                  f"{r['one_rule']:.2f}")


if __name__ == "__main__":
    main()
