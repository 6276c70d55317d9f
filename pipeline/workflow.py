"""What the Snakefile needs at parse time: the preset, the videos to process, each stage's settings.

Kept out of the Snakefile so it can be tested and so the Snakefile reads as
the story of the data. Snakemake parses the Snakefile in every cluster job and
dry run, so nothing imported here loads torch, cv2 or av (a test checks). Every stage setting the Snakefile passes through
``params:`` comes from here, so a changed setting reruns exactly the jobs
that depend on it.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

from models.tvl1_params import TVL1Params
from pipeline import annotations, demo_data
from pipeline.settings import (DecodeSettings, DemoSettings, FeatureRuntime, FeatureSettings, FlowRuntime,
                               FlowSettings, LocalizeSettings, TrainSettings)
from pipeline.videos import match, find_videos


class ConfigError(ValueError):
    pass


def preset(config: dict) -> dict:
    name = config["preset"]
    if name not in config["presets"]:
        raise ConfigError(f"workflow_config: preset {name!r} is not one of the presets "
                          f"({', '.join(sorted(config['presets']))})")
    return config["presets"][name]


def results_dir(config: dict) -> str:
    return f"{config['results_dir']}/{config['preset']}"


def check_writable(folder: str) -> None:
    """Fail at start-up, naming the folder, rather than in every job once work has begun."""
    import tempfile

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"results_dir {folder} is not writable: {e.strerror or e}") from None


def demo_settings(p: dict) -> DemoSettings | None:
    gen = p.get("generate")
    if gen is None:
        return None
    fields = {k: v for k, v in gen.items() if k != "root"}
    return DemoSettings(**fields)


def decode_settings(config: dict) -> DecodeSettings:
    p = preset(config)
    d = config["decode"]
    return DecodeSettings(fps=p["fps"], snippet_frames=p["snippet_frames"], short_side=p["short_side"],
                          crop=p["crop"], backend=d["backend"], chunk_snippets=d["chunk_snippets"],
                          threads=d["threads"])


def flow_settings(config: dict) -> FlowSettings:
    f = config["flow"]
    tvl1 = {**f["tvl1"], **preset(config).get("tvl1", {})}
    tvl1["lambda_"] = tvl1.pop("lambda")
    return FlowSettings(backend=f["backend"], bound=f["bound"], quantize=f["quantize"], tvl1=TVL1Params(**tvl1))


def flow_runtime(config: dict) -> FlowRuntime:
    f = config["flow"]
    return FlowRuntime(device=f["device"], batch_size=f["batch_size"], compile=f["compile"], threads=f["threads"])


def feature_settings(config: dict) -> FeatureSettings:
    f = config["features"]
    return FeatureSettings(rgb_weights=f["rgb_weights"], flow_weights=f["flow_weights"],
                           random_seed=f["random_seed"])


def feature_runtime(config: dict) -> FeatureRuntime:
    f = config["features"]
    return FeatureRuntime(device=f["device"], batch_size=f["batch_size"], threads=f["threads"])


def weight_files(config: dict) -> list[str]:
    """Checkpoint files the features depend on, so replacing one reruns features."""
    f = config["features"]
    return [p for p in (f["rgb_weights"], f["flow_weights"]) if p not in ("kinetics400", "random")]


def train_settings(config: dict, experiment: str) -> TrainSettings:
    """The preset's D2-Net settings, the global training settings, then the experiment's overrides."""
    d2 = preset(config)["d2net"]
    t = {k: v for k, v in config["train"].items() if k != "threads"}
    return TrainSettings.from_dict({**d2, **t, **config["experiments"][experiment]})


def localize_config(config: dict) -> dict:
    """The global ``localize:`` block with the preset's overrides."""
    return {**config["localize"], **preset(config).get("localize", {})}


def localize_settings(config: dict) -> LocalizeSettings:
    loc = localize_config(config)
    return LocalizeSettings.from_dict({k: v for k, v in loc.items() if k != "report_videos"})


def as_param(settings) -> str:
    """A settings dataclass as the JSON string a rule passes to its stage's CLI."""
    return json.dumps(asdict(settings), sort_keys=True)


class Video(NamedTuple):
    path: str
    subset: str


def videos(config: dict) -> dict[str, Video]:
    """The videos this run processes: name -> (path, subset).

    The demo's names follow from its settings (the files may not exist yet:
    rule demo_data makes them). Otherwise they are the annotated videos found
    on disk (pipeline/videos.py pairs names and files); annotated videos that are missing are skipped or stop the run
    per ``on_missing_video``.
    """
    p = preset(config)
    demo = demo_settings(p)
    if demo is not None:
        return {v: Video(f"{p['videos']}/{v}.mp4", subset) for subset, vs in demo_data.video_names(demo).items()
                for v in vs}
    ann = annotations.read(p["annotations"])
    found = match(ann.videos, find_videos(p["videos"], config["video_extensions"]), ann.aliases)
    present, _ = annotations.select_videos(ann, found.paths, config["on_missing_video"])
    return {v: Video(found.paths[v], ann.videos[v][0]) for v in present}
