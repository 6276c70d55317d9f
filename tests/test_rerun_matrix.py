"""Rerun exactly what a change makes stale: on one finished tiny demo run, a dry run per declared setting.

Generated from the declaration (pipeline/core/settings.py): a computed setting, changed, reruns exactly the stages
it names as its readers and what depends on them (Snakemake's own DAG gives the dependents); a runtime setting
reruns nothing. Beside them: --cores, a touched but unchanged config file, and one replaced video (that
video's per-video jobs, no other video's). A new setting is covered without writing a test for it.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from declared import COMPUTED, changed, command_line_word, lookup, nested, settings_to_change
from pipeline.workflow import rules as wf
from test_workflow import QUICK_FLOW, TINY_DEMO, snakemake

OVERRIDE = {**TINY_DEMO, **QUICK_FLOW}
SETTINGS = list(settings_to_change())
PER_VIDEO = ("decode", "flow", "features")


def dry_runs(workdir: Path, cases: dict) -> dict:
    spec = workdir / "cases.json"
    spec.write_text(json.dumps({"snakefile": str(REPO / "Snakefile"), "cases": cases,
                                "configfiles": [str(REPO / "workflow_config.yaml"), str(workdir / "override.yaml")]}))
    r = subprocess.run([sys.executable, str(REPO / "tests" / "dry_runs.py"), str(workdir), str(spec)],
                       capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}, cwd=workdir)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny demo run, and every case's dry run on it."""
    workdir = tmp_path_factory.mktemp("rerun")
    snakemake(workdir, OVERRIDE)
    weights = workdir / "weights.pt"
    weights.write_bytes(b"not read by a dry run")
    layers = wf.config_layers(REPO / "workflow_config.yaml", [workdir / "override.yaml"])
    config = wf.resolve(layers)
    cases = {}
    for key, _, _, info in SETTINGS:
        value = changed(info, lookup(config, key), str(weights))
        cases[key] = {"config": nested(key, command_line_word(value))}
    cases["--cores 1"] = {"cores": 1}
    # a config file rewritten with the same contents: newer, unchanged
    override = workdir / "override.yaml"
    override.write_text(override.read_text())
    os.utime(override, (override.stat().st_atime + 60, override.stat().st_mtime + 60))
    cases["nothing changed, config file touched"] = {}
    results = dry_runs(workdir, cases)
    # one video replaced by another file (then put back)
    video = workdir / "data" / "demo" / "videos" / "demo_validation_0001.mp4"
    kept = workdir / "kept.mp4"
    shutil.copy2(video, kept)
    shutil.copyfile(workdir / "data" / "demo" / "videos" / "demo_validation_0002.mp4", video)
    try:
        results["cases"]["one video replaced"] = dry_runs(workdir, {"one video replaced": {}})["cases"][
            "one video replaced"]
    finally:
        shutil.copy2(kept, video)
    return {**results, "config": config}


def shadowed(config: dict, key: str) -> bool:
    """A train key that every experiment of the run sets for itself: the experiments' values hold, so
    changing the run's value changes no run."""
    section, _, name = key.partition(".")
    overrides = wf.experiments(config).overrides.values()
    return section == "train" and all(name in (o or {}) for o in overrides)


def expected_rules(graph: dict, readers) -> set:
    here = [r for r in readers if r in graph]
    assert here, f"none of the readers {readers} is in the run's DAG ({', '.join(sorted(graph))})"
    return set(here).union(*(graph[r] for r in here))


@pytest.mark.parametrize("key, kind, readers", [(k, kind, r) for k, kind, r, _ in SETTINGS],
                         ids=[k for k, *_ in SETTINGS])
def test_a_changed_setting_reruns_exactly_its_readers_and_their_dependents(finished, key, kind, readers):
    jobs = finished["cases"][key]
    assert "error" not in jobs, jobs.get("error")
    if kind == COMPUTED and not shadowed(finished["config"], key):
        assert set(jobs) == expected_rules(finished["rules"], readers), f"{key} (read by {', '.join(readers)})"
    elif kind == COMPUTED:
        assert jobs == {}, f"{key}: every experiment sets its own"
    else:
        assert jobs == {}, f"{key} is how it runs, not what it computes: it must rerun nothing"


@pytest.mark.parametrize("case", ["--cores 1", "nothing changed, config file touched"])
def test_what_is_not_a_setting_reruns_nothing(finished, case):
    assert finished["cases"][case] == {}


def test_one_replaced_video_reruns_its_own_jobs_and_what_depends_on_them(finished):
    jobs = finished["cases"]["one video replaced"]
    assert {r: jobs[r] for r in PER_VIDEO} == {r: 1 for r in PER_VIDEO}, jobs
    assert set(jobs) == expected_rules(finished["rules"], ["decode"])

