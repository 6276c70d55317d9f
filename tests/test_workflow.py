"""The Snakemake workflow as a user runs it: config validation, the DAG, a small demo run, bad videos."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.demo_data import write_video
from conftest import REPO, garbage, resolved, thumos_dir

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# The demo preset, tiny: these keys on the command line (--configfile) win over the preset's.
TINY_DEMO = {"generate": {"n_train": 2, "n_test": 1, "min_duration_s": 3.0, "max_duration_s": 4.0,
                          "min_action_s": 1.0, "max_action_s": 1.5, "max_actions": 1},
             "train": {"iterations": 6, "batch_size": 2, "pdmi_start_iter": 2, "seeds": [1]}}
# Eager TV-L1 (no compile warm-up per job) with few iterations keeps workflow tests quick.
QUICK_FLOW = {"flow": {"compile": False, "tvl1": {"nscales": 2, "warps": 1, "outer_iterations": 2,
                                                   "inner_iterations": 5}}}


def snakemake(workdir, override: dict, *args, check=True):
    """Run the repository's Snakefile in ``workdir`` with workflow_config.yaml plus ``override``."""
    workdir = Path(workdir)
    (workdir / "override.yaml").write_text(yaml.safe_dump(override, allow_unicode=True))
    # targets and options first: --configfile takes every word after it
    cmd = [SNAKEMAKE, *args, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2",
           "--configfile", str(REPO / "workflow_config.yaml"), str(workdir / "override.yaml")]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    out = r.stdout + r.stderr
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake failed ({r.returncode}):\n{out[-4000:]}")
    return r.returncode, out


def planned_jobs(output: str) -> dict[str, int]:
    """Rule -> job count from a dry run's 'Job stats' table."""
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("override, names", [
    ({"decode": {"chunk_snipets": 3}}, ["unknown decode setting(s): decode.chunk_snipets"]),
    ({"on_bad_video": "ignore"}, ["config setting on_bad_video: Input should be 'skip' or 'fail', got 'ignore'"]),
    ({"presets": {"demo": {"train": {"nms_iuo": 0.5}}}}, ["preset demo", "unknown train setting(s): train.nms_iuo"]),
    ({"localize": {"nms_iuo": 0.5}}, ["unknown localize setting(s): localize.nms_iuo"]),
    ({"evaluation": {"protocol": "voc"}}, ["config setting evaluation.protocol: Input should be 'activitynet' or "
                                           "'d2net', got 'voc'"]),
    ({"presets": {"thumos14": {"annotations": {"format": "thumos14_txt", "path": "x"}}}},
     ["preset thumos14", "annotations: format thumos14_txt takes `dirs`"]),
])
def test_config_errors_name_the_key(tmp_path, override, names):
    rc, out = snakemake(tmp_path, override, "-n", check=False)
    assert rc != 0 and "ConfigError" in out
    for name in names:
        assert name in out, out[-3000:]


def test_unknown_preset(tmp_path):
    rc, out = snakemake(tmp_path, {"preset": "thumos15"}, "-n", check=False)
    assert rc != 0 and "preset 'thumos15' is not one of the presets (activitynet12, demo, folder, thumos14)" in out


# ------------------------------------------------------------ THUMOS14 DAG


def fake_thumos(tmp_path, skip=()):
    """A THUMOS14 layout: the real annotation files and one empty file per annotated video."""
    from pipeline.core.annotation_io import read_thumos14_txt

    root = thumos_dir()
    ann = read_thumos14_txt({"validation": root / "annotations_val", "test": root / "annotations_test"})
    videos = tmp_path / "thumos videos"
    videos.mkdir()
    for v in ann.videos:
        if v not in skip:
            (videos / f"{v}.mp4").touch()
    return {"preset": "thumos14", "presets": {"thumos14": {
        "videos": str(videos),
        "annotations": {"format": "thumos14_txt",
                        "dirs": {"validation": str(root / "annotations_val"), "test": str(root / "annotations_test")}}}}}


def test_thumos14_dry_run_job_counts(tmp_path):
    _, out = snakemake(tmp_path, fake_thumos(tmp_path), "-n")
    assert planned_jobs(out) == {"annotations": 1, "decode": 413, "flow": 413, "features": 413, "durations": 1,
                                 "skipped_videos": 1,
                                 "train": 2, "curve": 2, "localize": 2, "evaluate": 2, "costs": 1, "report": 1, "all": 1}


def test_thumos14_missing_videos_skip_or_fail(tmp_path):
    gone = ["video_test_0000004", "video_validation_0000051"]
    config = fake_thumos(tmp_path, skip=gone)
    _, out = snakemake(tmp_path, config, "-n")
    assert planned_jobs(out)["decode"] == planned_jobs(out)["flow"] == planned_jobs(out)["features"] == 411
    rc, out = snakemake(tmp_path, {**config, "on_missing_video": "fail"}, "-n", check=False)
    assert rc != 0 and "2 annotated video(s) not found on disk: video_test_0000004, video_validation_0000051" in out


# ---------------------------------------------------------------- demo run


def test_demo_runs_through_flow_and_reruns_only_what_changed(tmp_path):
    override = {**TINY_DEMO, **QUICK_FLOW}
    snakemake(tmp_path, override)
    out = tmp_path / "results" / "demo"
    assert json.loads((out / "skipped_videos.json").read_text()) == {"skipped": [], "n_videos": 3}
    meta = json.loads((out / "decoded" / "demo_test_0001" / "meta.json").read_text())
    assert meta["status"] == "ok" and meta["n_snippets"] >= 4 and meta["fps"] == 25
    frames = np.load(out / "decoded" / "demo_test_0001" / "frames.npy", mmap_mode="r")
    assert frames.shape == (meta["n_snippets"], 16, 80, 80, 3)  # blocks of one stride: the window by default
    table = (out / "annotations" / "annotations.tsv").read_text().splitlines()
    assert table[0] == "video\tsubset\tlabel\tstart_s\tend_s\tduration\tsource" and len(table) == 4
    assert table[1].split("\t")[-1].startswith("data/demo/annotations_")  # the file and line it came from
    # the table later stages read: each video's decoded duration filled in (THUMOS txt has none)
    checked = (out / "annotations" / "decoded" / "videos.tsv").read_text().splitlines()[1:]
    assert len(checked) == 3 and all(float(row.split("\t")[2]) > 2.5 for row in checked)
    flow = np.load(out / "flow" / "demo_test_0001" / "flow.npy", mmap_mode="r")
    assert flow.shape == (meta["n_snippets"], 16, 80, 80, 2) and flow.dtype == np.uint8
    features = np.load(out / "features" / "demo_test_0001.npy")
    assert features.shape == (meta["n_snippets"], 2048) and np.isfinite(features).all()
    provenance = json.loads((out / "features" / "demo_test_0001.json").read_text())
    assert provenance["provenance"].startswith("I3D RGB: kinetics400") and "RANDOM" in provenance["provenance"]
    for experiment in ("d2net", "ce_only"):
        assert (out / "runs" / experiment / "model.pt").exists()
        assert (out / "runs" / experiment / "log.csv").read_text().count("\n") == 7
        metrics = json.loads((out / "runs" / experiment / "metrics.json").read_text())
        assert metrics["n_videos"] == 1 and set(metrics["map"]) == {"0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"}
    assert "<table>" in (out / "report" / "report.html").read_text()
    # Every heavy job left a Snakemake benchmark record; the report turns them into costs and a projection.
    costs = json.loads((out / "costs.json").read_text())
    assert {s: costs["stages"][s]["jobs"] for s in costs["stages"]} == {
        "decode": 3, "flow": 3, "features": 3, "train": 2, "localize": 2}
    assert all(costs["stages"][s]["seconds"] > 0 for s in costs["stages"])
    assert costs["stages"]["flow"]["video_minutes"] > 0 and costs["stages"]["train"]["s_per_1000_iterations"] > 0
    # warm-started jobs record their own peak memory (the worker is not the benchmarked process): torch is in it
    assert costs["stages"]["flow"]["peak_rss_mb"] > 200 and costs["stages"]["features"]["peak_rss_mb"] > 200
    assert set(costs["projection"]) == {"thumos14", "activitynet12"}
    report_md = (out / "report" / "report.md").read_text()
    assert "## Stage costs of this run" in report_md and "## Projected job time of the full datasets" in report_md
    # The same plots in Snakemake's own report, with their captions.
    import zipfile

    snakemake(tmp_path, override, "--report", str(tmp_path / "snakemake_report.zip"))
    names = zipfile.ZipFile(tmp_path / "snakemake_report.zip").namelist()
    for plot in ("report.html", "ap_per_class.png", "pr_curve.png", "timelines.png"):
        assert any(n.endswith("/" + plot) for n in names), names

    # `export` writes the W-TALC and ActionFormer layouts from the same features (tests/test_export.py reads them
    # as those projects do).
    snakemake(tmp_path, override, "export")
    wtalc = np.load(out / "export" / "wtalc" / "demo-I3D-JOINTFeatures.npy", encoding="bytes", allow_pickle=True)
    assert [len(f) for f in wtalc] == [json.loads((out / "decoded" / v / "meta.json").read_text())["n_snippets"]
                                       for v in ("demo_validation_0001", "demo_validation_0002", "demo_test_0001")]
    database = json.loads((out / "export" / "actionformer" / "database.json").read_text())["database"]
    assert sorted(database) == ["demo_test_0001", "demo_validation_0001", "demo_validation_0002"]

    _, dry = snakemake(tmp_path, override, "-n")
    assert planned_jobs(dry) == {}  # a second run does nothing (tests/test_rerun_matrix.py: what each change reruns)
    # An experiment's own key retrains that experiment only.
    _, dry = snakemake(tmp_path, {**override, "experiments": {"d2net": {"alpha": 0.5}}}, "-n")
    assert planned_jobs(dry) == {"train": 1, "curve": 1, "localize": 1, "evaluate": 1, "costs": 1, "report": 1, "all": 1}


def test_bad_video_among_good_ones(tmp_path):
    videos = tmp_path / "my videos"
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(40)]
    write_video(videos / "clip é 1.mp4", frames, 25)
    write_video(videos / "clip2.mp4", frames, 25)
    (videos / "broken.mp4").write_bytes(garbage(4000))
    (tmp_path / "ann.csv").write_text("video,subset,label,start,end\nclip é 1,train,Jump,0.2,1.0\n"
                                      "clip2,test,Jump,0.5,1.2\nbroken,train,Jump,0.1,0.5\n")
    config = {"preset": "mine", **QUICK_FLOW, "presets": {"mine": {
        "videos": str(videos), "annotations": {"format": "csv", "path": str(tmp_path / "ann.csv")},
        "train_subset": "train", "test_subset": "test", "decode": {"short_side": 64, "crop": 48},
        "evaluation": {"tiou_thresholds": [0.5]}, "train": {"iterations": 3, "batch_size": 2}}}}
    snakemake(tmp_path, config)
    skipped = json.loads((tmp_path / "results" / "mine" / "skipped_videos.json").read_text())["skipped"]
    assert [(s["video"], s["stage"]) for s in skipped] == [("broken", "decode")]
    assert "broken.mp4: cannot open as a video" in skipped[0]["reason"]
    meta = json.loads((tmp_path / "results" / "mine" / "decoded" / "clip é 1" / "meta.json").read_text())
    assert meta["status"] == "ok" and meta["n_snippets"] == 2
    assert np.load(tmp_path / "results" / "mine" / "features" / "clip é 1.npy").shape == (2, 2048)
    broken = json.loads((tmp_path / "results" / "mine" / "features" / "broken.json").read_text())
    assert broken["status"] == "skipped" and broken["n_snippets"] == 0
    report = (tmp_path / "results" / "mine" / "report" / "report.md").read_text()
    assert "- broken (decode): " in report and "cannot open as a video" in report

    rc, out = snakemake(tmp_path, {**config, "results_dir": "strict", "on_bad_video": "fail"}, check=False)
    assert rc != 0
    assert f"decode: error: {videos / 'broken.mp4'}: cannot open as a video" in out  # shown, not only logged
    log = (tmp_path / "strict" / "mine" / "logs" / "decode" / "broken.log").read_text()
    assert f"decode: error: {videos / 'broken.mp4'}: cannot open as a video" in log
    assert not (tmp_path / "strict" / "mine" / "decoded" / "broken" / "frames.npy").exists()


# ------------------------------------------------------- stale-only reruns


def reasons(output: str) -> dict[str, set[str]]:
    """Rule -> the reasons a dry run gives for its jobs (from the per-job 'reason:' lines)."""
    found: dict[str, set[str]] = {}
    for block in output.split("rule ")[1:]:
        rule = block.split(":", 1)[0].strip()
        m = re.search(r"^\s+reason: (.*)$", block, re.M)
        if m:
            found.setdefault(rule, set()).update(r.split(":")[0].strip() for r in m.group(1).split("; "))
    return found


@pytest.mark.slow
def test_stale_only_reruns_on_a_reduced_dataset(tmp_path):
    """A user's dataset (the demo's videos and THUMOS-format annotations): each change reruns exactly what it
    makes stale, and nothing else (about 5 min on 2 cores)."""
    import shutil

    gen = tmp_path / "gen"
    gen.mkdir()
    snakemake(gen, {**TINY_DEMO, "generate": {**TINY_DEMO["generate"], "n_train": 3}}, "--until", "demo_data")
    made = gen / "data" / "demo"
    videos = tmp_path / "videos"
    videos.mkdir()
    for v in ("demo_validation_0001", "demo_validation_0002", "demo_test_0001"):
        shutil.copy(made / "videos" / f"{v}.mp4", videos)
    demo = yaml.safe_load((REPO / "workflow_config.yaml").read_text())["presets"]["demo"]
    mine = {**{k: v for k, v in demo.items() if k not in ("generate", "pinned")}, "videos": str(videos),
            "annotations": {"format": "thumos14_txt", "dirs": {"validation": str(made / "annotations_val"),
                                                                "test": str(made / "annotations_test")}},
            "train": {**demo["train"], **TINY_DEMO["train"]}}
    config = {"preset": "mine", "presets": {"mine": mine}, **QUICK_FLOW}
    snakemake(tmp_path, config)  # demo_validation_0003 is annotated but not there yet: skipped
    skipped = json.loads((tmp_path / "results" / "mine" / "skipped_videos.json").read_text())["skipped"]
    assert [s["video"] for s in skipped] == ["demo_validation_0003"]
    _, dry = snakemake(tmp_path, config, "-n")
    assert planned_jobs(dry) == {}  # touch nothing: nothing runs

    # Add one video: its extraction and the stages that aggregate over videos.
    shutil.copy(made / "videos" / "demo_validation_0003.mp4", videos)
    _, dry = snakemake(tmp_path, config, "-n")
    assert planned_jobs(dry) == {"annotations": 1, "decode": 1, "flow": 1, "features": 1, "durations": 1,
                                 "skipped_videos": 1, "train": 2, "curve": 2, "localize": 2, "evaluate": 2, "costs": 1,
                                 "report": 1, "all": 1}
    why = reasons(dry)
    assert "Missing output files" in why["decode"] and "Params have changed since last execution" in why["annotations"]
    assert "Input files updated by another job" in why["train"]
    snakemake(tmp_path, config)
    assert json.loads((tmp_path / "results" / "mine" / "skipped_videos.json").read_text())["skipped"] == []
    _, dry = snakemake(tmp_path, config, "-n")
    assert planned_jobs(dry) == {}

    # A flow parameter: flow and everything after it, not decode.
    flow = {"flow": {**QUICK_FLOW["flow"], "tvl1": {**QUICK_FLOW["flow"]["tvl1"], "theta": 0.25}}}
    _, dry = snakemake(tmp_path, {**config, **flow}, "-n")
    assert planned_jobs(dry) == {"flow": 4, "features": 4, "train": 2, "curve": 2, "localize": 2, "evaluate": 2,
                                 "costs": 1, "report": 1, "all": 1}
    assert "Params have changed since last execution" in reasons(dry)["flow"]
    # A D2-Net loss weight: that experiment's training onward.
    _, dry = snakemake(tmp_path, {**config, "experiments": {"d2net": {"compactness_weight": 0.05}}}, "-n")
    assert planned_jobs(dry) == {"train": 1, "curve": 1, "localize": 1, "evaluate": 1, "costs": 1, "report": 1,
                                 "all": 1}
    # A localization setting: localize and the curves onward, never training; the evaluation protocol:
    # evaluate and the curves onward.
    _, dry = snakemake(tmp_path, {**config, "localize": {"nms_iou": 0.3}}, "-n")
    assert planned_jobs(dry) == {"curve": 2, "localize": 2, "evaluate": 2, "costs": 1, "report": 1, "all": 1}
    _, dry = snakemake(tmp_path, {**config, "evaluation": {"protocol": "d2net"}}, "-n")
    assert planned_jobs(dry) == {"curve": 2, "evaluate": 2, "report": 1, "all": 1}


# ------------------------------------------------------------- real scale


def test_parsing_the_snakefile_loads_no_torch_cv2_or_av():
    """Snakemake parses the Snakefile in every cluster job and dry run: its imports, and every module of the
    torch-free packages (pipeline/core, pipeline/workflow), load none of the heavy libraries."""
    code = ("import sys, re, importlib, pkgutil; src = open('Snakefile').read()\n"
            "for frm, names, imp in re.findall(r'^from (\\S+) import ([\\w, ]+)|^import (\\S+)', src, re.M):\n"
            "    m = importlib.import_module(imp or frm)\n"
            "    for name in (n.split()[0] for n in names.split(',') if n.strip()):\n"
            "        if not hasattr(m, name): importlib.import_module(f'{frm}.{name}')\n"
            "import pipeline.core, pipeline.workflow\n"
            "for pkg in (pipeline.core, pipeline.workflow):\n"
            "    for info in pkgutil.iter_modules(pkg.__path__): importlib.import_module(f'{pkg.__name__}.{info.name}')\n"
            "print(sorted({'torch', 'cv2', 'av', 'decord', 'torchvision'} & set(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def anet_subset(tmp_path, n=12, extra=()):
    """The real ActivityNet 1.2 annotations, with crawler-named placeholder files for ``n`` of the videos."""
    from pipeline.core.annotation_io import read_wtalc_npy

    path = REPO / "data" / "activitynet12" / "ActivityNet1.2-Annotations"
    ann = read_wtalc_npy(path)
    videos = tmp_path / "anet videos"
    videos.mkdir()
    names = sorted(ann.videos)[:n]
    for i, v in enumerate(names):
        yid = ann.aliases[v]
        (videos / (f"v_{yid}.mp4" if i % 2 else f"{yid}.mkv")).touch()  # both crawler layouts
    for name in extra:
        (videos / name).touch()
    return names, {"preset": "activitynet12", "presets": {"activitynet12": {
        "videos": str(videos), "annotations": {"format": "wtalc_npy", "path": str(path)}}}}


def test_activitynet12_dry_run_finds_crawler_named_videos(tmp_path):
    names, config = anet_subset(tmp_path, extra=["not_in_activitynet.mp4"])
    _, out = snakemake(tmp_path, config, "-n")
    jobs = planned_jobs(out)
    assert jobs["decode"] == jobs["flow"] == jobs["features"] == len(names)
    assert "7190 annotated video(s) not found on disk" in out
    # the annotations stage lists both sides: annotated videos without a file, files without annotations
    snakemake(tmp_path, config, "--until", "annotations")
    ann = tmp_path / "results" / "activitynet12" / "annotations"
    assert (ann / "unannotated_videos.txt").read_text() == "not_in_activitynet\n"
    assert len((ann / "missing_videos.txt").read_text().split()) == 7202 - len(names)
    table = (ann / "videos.tsv").read_text().splitlines()
    assert len(table) == 1 + len(names) and {r.split("\t")[0] for r in table[1:]} == set(names)


def snakefile_rules() -> dict[str, str]:
    """rule name -> the text of its block, from the Snakefile."""
    text = (REPO / "Snakefile").read_text()
    heads = list(re.finditer(r"^\s*rule (\w+):", text, re.M))
    return {m.group(1): text[m.end():heads[i + 1].start() if i + 1 < len(heads) else len(text)]
            for i, m in enumerate(heads)}


def test_every_stage_is_called_one_way():
    """Each rule that runs a stage is a shell: rule running `python -m pipeline.<stage> ... 2> {log:q}`."""
    rules = snakefile_rules()
    assert not re.search(r"^\s+run:\s*$", (REPO / "Snakefile").read_text(), re.M)
    stages = {name: re.search(r'shell:\s*"python -m pipeline\.(\w+)', block) for name, block in rules.items()
              if name != "all"}
    assert all(stages.values()), [n for n, m in stages.items() if not m]
    for name, block in rules.items():
        if name != "all":
            assert re.search(r'2> \{log:q\}"\s*$', block.split("shell:")[1].strip().split("\n\n")[0]), name
    assert (REPO / "pipeline" / f"{stages['curve'].group(1)}.py").exists()


def test_a_line_break_in_a_name_stops_the_run_at_parse_time(tmp_path):
    """A name with any line boundary argparse splits argument files at would become two arguments: the run
    stops before any job, naming it (video files, results_dir, an experiment set's caption)."""
    from pipeline.workflow.rules import ConfigError, one_line, results_dir, videos

    for text in ("a\nb", "a\rb", "a\x0cb", "a\u2028b"):
        with pytest.raises(ConfigError, match="line break"):
            one_line("name", text)
    assert one_line("name", "") == "" and one_line("name", "ä b-c.mp4") == "ä b-c.mp4"
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "bad\nname.mp4").write_bytes(b"")
    with pytest.raises(ConfigError, match="video file .*bad\\\\nname.mp4"):
        videos(resolved("folder", videos=str(folder)))
    with pytest.raises(ConfigError, match="results_dir"):
        results_dir(resolved(results_dir=str(tmp_path / "a\rb")))


def test_argument_files_carry_lists_past_the_kernel_limits(tmp_path):
    """A list that grows with the dataset goes through `@<(printf ...)`, as the Snakefile's aggregating rules
    pass it, through Snakemake's own shell: 2.6 MiB of paths, past both the kernel's limit on one argument
    (128 KiB, which the command string itself exceeds) and on a whole command line (about 2 MiB)."""
    import shlex

    from snakemake.shell import shell

    metas = []
    for i in range(11_000):
        p = tmp_path / "decoded" / (f"{i:05d} a long video name " + "x" * 200) / "meta.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps({"video": p.parent.name, "status": "ok"}))
        metas.append(str(p))
    assert sum(len(m) + 1 for m in metas) > 2.5 * 2**20
    (tmp_path / "missing.txt").write_text("")
    quoted = " ".join(shlex.quote(m) for m in metas)
    shell.executable("bash")
    shell(f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} -m pipeline.skipped "
          f"@<(printf '%s\\n' {quoted}) --missing {tmp_path / 'missing.txt'} --out {tmp_path / 's.json'}")
    assert json.loads((tmp_path / "s.json").read_text()) == {"skipped": [], "n_videos": 11_000}


def test_disk_check_names_the_folder_and_free_space(tmp_path):
    from pipeline.workflow.rules import ConfigError, check_disk, disk_estimate, intermediate_bytes

    config = resolved("thumos14")
    assert intermediate_bytes(25 * 60, 224) == 25 * 60 * 224 * 224 * 5
    fits = disk_estimate(str(tmp_path), config, [60.0] * 413, running=2)  # 3 one-minute videos in flight
    assert fits.fits
    check_disk(str(tmp_path), fits, config)
    with pytest.raises(ConfigError) as e:  # 3 videos of 11 days each
        check_disk(str(tmp_path), disk_estimate(str(tmp_path), config, [1e6] * 413, running=2), config)
    msg = str(e.value)
    assert str(tmp_path) in msg and "3 video(s) in flight" in msg and f"GB are free in {tmp_path}" in msg
    config["keep_intermediates"] = True
    with pytest.raises(ConfigError, match="413 video\\(s\\) in flight"):
        check_disk(str(tmp_path), disk_estimate(str(tmp_path), config, [1e4] * 413, running=2), config)


@pytest.mark.parametrize("dataset", ["thumos14", "activitynet12"])
def test_a_dry_run_prints_the_disk_estimate_and_never_fails_on_it(tmp_path, dataset):
    """A dry run writes nothing: with every video's intermediates kept (more than this disk holds), it still
    plans, and says so."""
    config = fake_thumos(tmp_path) if dataset == "thumos14" else anet_subset(tmp_path, n=400)[1]
    config = {**config, "keep_intermediates": True}
    rc, out = snakemake(tmp_path, config, "-n", check=False)
    assert rc == 0, out[-3000:]
    assert re.search(r"Disk: the decoded frames and flow of \d+ video\(s\) in flight need about [\d.]+ GB .* "
                     r"\(not enough for a real run\)", out), out[-3000:]
    assert planned_jobs(out)["decode"] > 0
    # a real run stops before its first job
    rc, out = snakemake(tmp_path, config, check=False)
    assert rc != 0 and "GB are free in" in out and ": not enough. Free space" in out
    assert not (tmp_path / "results" / dataset / "annotations").exists()


def test_intermediates_stay_bounded_by_running_jobs(tmp_path):
    """8 real videos, --cores 2, no kept intermediates: a decoded video's flow and features run before more
    videos are decoded, so at most running jobs + 1 videos hold decoded frames or flow at any time."""
    import threading
    import time

    override = {**TINY_DEMO, "keep_intermediates": False, **QUICK_FLOW,
                "generate": {**TINY_DEMO["generate"], "n_train": 6, "n_test": 2, "min_duration_s": 2.0,
                             "max_duration_s": 2.5}}
    out = tmp_path / "results" / "demo"
    peak, seen, stop = [0], set(), threading.Event()

    def poll():
        while not stop.is_set():
            held = {p.parent.name for sub in ("decoded", "flow") if (out / sub).is_dir()
                    for p in (out / sub).glob("*/*.npy")}
            seen.update(held)
            peak[0] = max(peak[0], len(held))
            time.sleep(0.05)

    t = threading.Thread(target=poll)
    t.start()
    try:
        snakemake(tmp_path, override, "--until", "features")
    finally:
        stop.set()
        t.join()
    assert len(list((out / "features").glob("*.npy"))) == 8
    assert len(seen) == 8  # the poller saw every video's intermediates
    assert 1 <= peak[0] <= 3, peak[0]  # 2 running jobs + 1
    assert not list((out / "decoded").glob("*/frames.npy")) and not list((out / "flow").glob("*/flow.npy"))


# ------------------------------------------------- command-line overrides, as the README shows them


@pytest.mark.parametrize("override", ["flow={bound: 15}", "localize={nms_iou: 0.4}", "flow={compile: true}",
                                      "decode={fps: native, snippet_stride: 8}"])
def test_nested_command_line_overrides_are_typed(tmp_path, override):
    rc, out = snakemake(tmp_path, {}, "-n", "--config", override, check=False)
    assert rc == 0 and "Job stats" in out, out[-3000:]


def test_a_mistyped_command_line_override_names_the_key_and_type(tmp_path):
    rc, out = snakemake(tmp_path, {}, "-n", "--config", "flow={bound: abc}", check=False)
    assert rc != 0 and "config setting flow.bound: Input should be a valid number, unable to parse string as a " \
                       "number, got 'abc'" in out


def test_a_mistyped_value_in_a_config_file_names_the_key_and_type(tmp_path):
    rc, out = snakemake(tmp_path, {"presets": {"demo": {"decode": {"fps": "fast"}}}}, "-n", check=False)
    assert rc != 0 and "preset demo" in out and "config setting decode.fps: Input should be a valid number" in out


# ------------------------------------------------------------ no shared filesystem


RSYNC = shutil.which("rsync")


def test_the_workflow_runs_without_a_shared_filesystem(tmp_path):
    """Every file a job reads is a declared input: with --shared-fs-usage none and the fs storage plugin as the
    default storage provider, jobs see only what Snakemake stages for them, and the report still comes out."""
    if RSYNC is None:  # the fs storage plugin copies with rsync; CI (.ci/run) installs it
        if os.environ.get("VIDLOC_CI") == "1":
            pytest.fail("no rsync on PATH (apt-get install rsync)")
        pytest.skip("needs rsync (apt-get install rsync)")
    storage = tmp_path / "storage"
    override = {**TINY_DEMO, **QUICK_FLOW}
    snakemake(tmp_path, override, "--shared-fs-usage", "none", "--default-storage-provider", "fs",
              "--default-storage-prefix", str(storage), "--local-storage-prefix", str(tmp_path / "local"))
    out = storage / "results" / "demo"
    html = (out / "report" / "report.html").read_text()
    assert "<table>" in html and "<td>d2net</td>" in html
    metrics = json.loads((out / "runs" / "d2net" / "metrics.json").read_text())
    assert metrics["n_videos"] == 1
    assert not (tmp_path / "results" / "demo" / "report").exists()  # nothing went around the storage


# ------------------------------------------------------------ the paper's ablation tables


@pytest.mark.parametrize("name, runs", [("table3", ["ce", "dis", "dis_ld", "focal"]),
                                        ("table4", ["ld_bce", "ld_l1", "ld_pdmi"])])
def test_an_ablation_table_is_one_word(tmp_path, name, runs):
    _, dry = snakemake(tmp_path, {}, "-n", "--config", f"experiments={name}", "train={seeds: [1]}")
    assert planned_jobs(dry)["train"] == len(runs)
    trained = sorted(set(re.findall(r"runs/([\w.-]+)/model\.pt", dry)))
    assert trained == runs


def test_an_unknown_experiment_set_names_the_sets(tmp_path):
    rc, out = snakemake(tmp_path, {}, "-n", "--config", "experiments=table9", check=False)
    assert rc != 0 and "experiments: 'table9' is not one of the experiment_sets (reference_code, table3, table4)" in out


def test_the_reference_code_profile_runs_beside_the_paper_settings(tmp_path):
    _, dry = snakemake(tmp_path, {}, "-n", "-p", "--config", "experiments=reference_code", "train={seeds: [1]}")
    assert planned_jobs(dry)["train"] == 2
    assert "--protocol activitynet" in dry and "--protocol d2net" in dry
    assert '"nms_iou": 0.3' in dry and '"weight_decay": 0.0005' in dry


def test_each_experiment_runs_once_per_seed(tmp_path):
    # the demo preset's own seeds
    _, dry = snakemake(tmp_path, {}, "-n")
    assert sorted(set(re.findall(r"runs/([\w.-]+)/model\.pt", dry))) == [
        f"{e}.s{k}" for e in ("ce_only", "d2net") for k in (1, 2)]
    # train.seeds on the command line wins over the preset's
    _, dry = snakemake(tmp_path, {}, "-n", "-p", "--config", "train={seeds: [1, 2]}")
    assert planned_jobs(dry)["train"] == 4
    runs = sorted(set(re.findall(r"runs/([\w.-]+)/model\.pt", dry)))
    assert runs == ["ce_only.s1", "ce_only.s2", "d2net.s1", "d2net.s2"]
    assert '"seed": 1' in dry and '"seed": 2' in dry


@pytest.mark.parametrize("override, message", [
    ({"localize": {"thresholds": [0.5, 0.1, 0.025]}}, "localize: thresholds [0.5, 0.1, 0.025] must be [start, stop, step]"),
    ({"decode": {"crop": 200}}, "decode: crop 200 is larger than short_side 96"),
    ({"preset": "thumos14", "presets": {"thumos14": {"videos": "no/such/folder"}}},
     "preset thumos14: videos folder no/such/folder does not exist"),
    ({"presets": {"demo": {"generate": {"root": "elsewhere"}}}},
     "generate.root is elsewhere, so videos must be elsewhere/videos (the generator writes there), not data/demo/videos"),
])
def test_settings_that_pass_the_schema_but_not_their_stage_stop_at_start_up(tmp_path, override, message):
    rc, out = snakemake(tmp_path, override, "-n", check=False)
    assert rc != 0 and message in out, out[-2000:]


@pytest.mark.slow  # a whole tiny demo run, then training again: 2-4 minutes on 2 cores
def test_ctrl_c_during_training_then_a_plain_rerun_resumes(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) once a training run has checkpointed;
    the same command again finishes, resuming from the checkpoint rather than refusing or starting over."""
    import signal
    import time

    override = {**TINY_DEMO, "train": {**TINY_DEMO["train"], "iterations": 200, "checkpoint_every": 10,
                                       "eval_every": 0},
                "experiments": {"d2net": {"variant": "dis_pdmi"}}, **QUICK_FLOW}
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(override))
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "2",
           "--configfile", str(REPO / "workflow_config.yaml"), str(tmp_path / "override.yaml")]
    run = tmp_path / "results" / "demo" / "runs" / "d2net"
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "TQDM_DISABLE": "1"})
        deadline = time.time() + 300
        while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) != 0
    assert not (run / "model.pt").exists() and (run / "checkpoint.pt").exists()
    _, out = snakemake(tmp_path, override)  # the plain rerun, no --rerun-incomplete
    assert (run / "model.pt").exists() and (tmp_path / "results" / "demo" / "report" / "report.html").exists()
    log = (tmp_path / "results" / "demo" / "logs" / "train" / "d2net.log").read_text()
    assert re.search(r"train: resuming from .*checkpoint.pt at iteration [1-9]\d*", log), log[-2000:]


def test_videos_in_subfolders_as_the_datasets_unpack_them(tmp_path):
    """THUMOS14's validation and test archives unpack into folders of their own: the videos are found there,
    and one name in two places is refused naming both."""
    config = fake_thumos(tmp_path)
    videos = Path(config["presets"]["thumos14"]["videos"])
    for split in ("validation", "test"):
        (videos / split).mkdir()
        for f in videos.glob(f"video_{split}_*.mp4"):
            f.rename(videos / split / f.name)
    _, out = snakemake(tmp_path, config, "-n")
    assert planned_jobs(out)["decode"] == 413 and "not found on disk" not in out
    (videos / "video_test_0000004.mp4").touch()  # a stray copy at the top
    rc, out = snakemake(tmp_path, config, "-n", check=False)
    assert rc != 0, out[-2000:]
    assert (f"two files for video 'video_test_0000004': {videos / 'video_test_0000004.mp4'} and "
            f"{videos / 'test' / 'video_test_0000004.mp4'}") in out, out[-2000:]
