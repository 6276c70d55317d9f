"""What the Snakefile needs at parse time: the preset, the videos to process, each stage's settings.

Kept out of the Snakefile so it can be tested and so the Snakefile reads as
the story of the data. Snakemake parses the Snakefile in every cluster job and
dry run, so nothing imported here loads torch, cv2 or av (a test checks). Every stage setting the Snakefile passes through
``params:`` comes from here, so a changed setting reruns exactly the jobs
that depend on it.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

from models.tvl1_params import TVL1Params
from pipeline import annotations, demo_data, gpu_slots
from pipeline.settings import (DecodeSettings, DemoSettings, FeatureRuntime, FeatureSettings, FlowRuntime,
                               FlowSettings, LocalizeSettings, TrainSettings, from_dict)


class ConfigError(ValueError):
    pass


def typed_overrides(config: dict, schema_path: str | Path) -> dict:
    """``config`` with ``--config`` strings converted to the schema's types (pipeline/overrides.py)."""
    import yaml

    from pipeline.overrides import OverrideError, typed

    schema = yaml.safe_load(Path(schema_path).read_text())
    try:
        return typed(config, schema)
    except OverrideError as e:
        raise ConfigError(str(e)) from None


def preset(config: dict) -> dict:
    """The chosen preset, with its videos folder replaced by the top-level ``videos`` when that is set."""
    name = config["preset"]
    if name not in config["presets"]:
        raise ConfigError(f"workflow_config: preset {name!r} is not one of the presets "
                          f"({', '.join(sorted(config['presets']))})")
    p = config["presets"][name]
    if config.get("videos"):
        p = {**p, "videos": config["videos"]}
    if not p["videos"]:
        raise ConfigError(f"preset {name} needs a folder of videos: --config preset={name} videos=PATH")
    return p


def annotated(config: dict) -> bool:
    """Whether the preset has annotations (train, evaluate, report); the folder preset has none."""
    return "annotations" in preset(config)


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
    return from_dict(DemoSettings, fields, "demo")


def decode_settings(config: dict) -> DecodeSettings:
    p = preset(config)
    d = config["decode"]
    return DecodeSettings(fps=p["fps"], snippet_frames=p["snippet_frames"], snippet_stride=p.get("snippet_stride"),
                          short_side=p["short_side"], crop=p["crop"], backend=d["backend"],
                          chunk_snippets=d["chunk_snippets"], threads=d["threads"], autorotate=d["autorotate"])


def flow_settings(config: dict) -> FlowSettings:
    f = config["flow"]
    tvl1 = {**f["tvl1"], **preset(config).get("tvl1", {})}
    tvl1["lambda_"] = tvl1.pop("lambda")
    return FlowSettings(backend=f["backend"], bound=f["bound"], quantize=f["quantize"], tvl1=TVL1Params(**tvl1))


def flow_runtime(config: dict) -> FlowRuntime:
    f = config["flow"]
    # one compile cache per run: torch.compile's warm-up is paid once, not by every flow job
    return FlowRuntime(device=f["device"], batch_size=f["batch_size"], compile=f["compile"], threads=f["threads"],
                       cache_dir=f"{results_dir(config)}/.cache/torch")


def feature_settings(config: dict) -> FeatureSettings:
    f = config["features"]
    return FeatureSettings(rgb_weights=f["rgb_weights"], flow_weights=f["flow_weights"],
                           random_seed=f["random_seed"], rgb_backbone=f.get("rgb_backbone", "i3d"), dtype=f["dtype"])


def feature_runtime(config: dict) -> FeatureRuntime:
    f = config["features"]
    return FeatureRuntime(device=f["device"], batch_size=f["batch_size"], threads=f["threads"])


def feature_signature(config: dict) -> dict:
    """What makes features comparable: a model trained on one signature predicts only on features of the same.

    Weight files count by content (their sha256, cached by path, size and mtime), not by path, so a
    checkpoint moved to another machine still matches.
    """
    d, f = decode_settings(config), feature_settings(config)

    def weights(spec: str):
        return spec if spec in ("kinetics400", "random") else {"sha256": _sha256(spec)}

    flow = asdict(flow_settings(config))
    flow.pop("backend")  # torch and OpenCV TV-L1 agree to the quantization step (tests/test_tvl1.py)
    return {"fps": d.fps, "snippet_frames": d.snippet_frames, "snippet_stride": d.stride,
            "short_side": d.short_side, "crop": d.crop, "flow": flow,
            "rgb_backbone": f.rgb_backbone, "rgb_weights": weights(f.rgb_weights),
            "flow_weights": weights(f.flow_weights),
            "random_seed": f.random_seed if "random" in (f.rgb_weights, f.flow_weights) else None}


@functools.lru_cache(maxsize=None)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256(path: str) -> str:
    try:
        st = Path(path).stat()
    except OSError as e:
        raise ConfigError(f"weights file {path}: {e.strerror or e}") from None
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def weight_files(config: dict) -> list[str]:
    """Checkpoint files the features depend on, so replacing one reruns features."""
    f = config["features"]
    return [p for p in (f["rgb_weights"], f["flow_weights"]) if p not in ("kinetics400", "random")]


class Experiments(NamedTuple):
    overrides: dict[str, dict]  # name -> D2-Net settings over the preset's, in the report's row order
    labels: dict[str, str]  # name -> the report's row label
    caption: str  # the report's heading for the table ("" for the default table)


def experiments(config: dict) -> Experiments:
    """``experiments:`` as a mapping, or the name of one of ``experiment_sets`` (the paper's ablation tables)."""
    chosen = config["experiments"]
    if isinstance(chosen, str):
        sets = config.get("experiment_sets", {})
        if chosen not in sets:
            raise ConfigError(f"experiments: {chosen!r} is not one of the experiment_sets "
                              f"({', '.join(sorted(sets)) or 'none defined'})")
        s = sets[chosen]
        return Experiments(dict(s["experiments"]), {n: s.get("labels", {}).get(n, n) for n in s["experiments"]},
                           s.get("caption", chosen))
    return Experiments(dict(chosen), {n: n for n in chosen}, "")


def apply_preset_seeds(config: dict, command_line: dict) -> None:
    """A preset's own ``seeds`` (the demo's) replace ``train.seeds``, unless ``--config`` gives
    ``train.seeds`` (``--config 'train={seeds: [2]}'``): what a user types wins. ``command_line`` is the
    ``--config`` words only (Snakemake's overwrite_config also holds every ``--configfile``)."""
    own = preset(config).get("seeds")
    given = command_line.get("train")
    typed = (isinstance(given, dict) and "seeds" in given) or (isinstance(given, str) and "seeds" in given)
    if own and not typed:
        config["train"]["seeds"] = list(own)


def runs(config: dict) -> list[str]:
    """One training run per experiment and seed, in the report's order: ``<experiment>`` with one seed,
    ``<experiment>.s<seed>`` with several (``train.seeds``)."""
    seeds = config["train"]["seeds"]
    return [e if len(seeds) == 1 else f"{e}.s{seed}" for e in experiments(config).overrides for seed in seeds]


def run_parts(config: dict, run: str) -> tuple[str, int]:
    """(experiment, seed) of a run name from ``runs``."""
    names = experiments(config).overrides
    if run in names:
        return run, config["train"]["seeds"][0]
    experiment, _, seed = run.rpartition(".s")
    if experiment not in names or not seed.isdigit():
        raise ConfigError(f"run {run!r} is none of the experiments ({', '.join(names)}) with a seed")
    return experiment, int(seed)


def train_settings(config: dict, experiment: str | None = None) -> TrainSettings:
    """The global training settings, the preset's D2-Net settings, then the experiment's overrides (if any).

    ``experiment`` may be a run name (``d2net.s2``): its seed is that run's."""
    d2 = preset(config)["d2net"]
    t = {k: v for k, v in config["train"].items() if k not in ("threads", "seeds")}
    t["seed"] = config["train"]["seeds"][0]
    if experiment is not None:
        experiment, t["seed"] = run_parts(config, experiment)
    own = experiments(config).overrides[experiment] if experiment else {}
    # global train settings, then the preset's (more specific), then the experiment's
    return TrainSettings.from_dict({**t, **d2, **{k: v for k, v in own.items() if k not in PER_EXPERIMENT_BLOCKS}})


# Blocks an experiment may override besides D2-Net's settings (the reference_code profile uses both).
PER_EXPERIMENT_BLOCKS = ("localize", "evaluation")


def evaluation_protocol(config: dict, experiment: str | None = None) -> str:
    experiment = run_parts(config, experiment)[0] if experiment else None
    own = experiments(config).overrides[experiment].get("evaluation", {}) if experiment else {}
    return own.get("protocol", config["evaluation"]["protocol"])


def localize_config(config: dict) -> dict:
    """The global ``localize:`` block with the preset's overrides."""
    return {**config["localize"], **preset(config).get("localize", {})}


def localize_settings(config: dict, experiment: str | None = None) -> LocalizeSettings:
    """The global ``localize:`` block, the preset's overrides, then the experiment's (if any)."""
    experiment = run_parts(config, experiment)[0] if experiment else None
    own = experiments(config).overrides[experiment].get("localize", {}) if experiment else {}
    loc = {**localize_config(config), **own}
    return LocalizeSettings.from_dict({k: v for k, v in loc.items() if k != "report_videos"})


def cost_settings(config: dict, names: list[str]) -> dict:
    """What pipeline/costs.py needs to project this run's rates onto the full THUMOS14 and ActivityNet 1.2."""

    def shape(name: str) -> dict:
        c = {**config, "preset": name}
        d2 = train_settings(c)
        return {"crop": preset(c)["crop"], "tvl1": asdict(flow_settings(c).tvl1), "batch_size": d2.batch_size,
                "seqlen": d2.max_seqlen, "iterations": d2.iterations, "train": asdict(d2)}

    return {"run": {"crop": preset(config)["crop"], "tvl1": asdict(flow_settings(config).tvl1)},
            "experiments": {e: {"iterations": train_settings(config, e).iterations} for e in names},
            "targets": {n: {**shape(n), "experiments": len(names)} for n in ("thumos14", "activitynet12")
                        if n in config["presets"]}}


def intermediate_bytes(n_frames: float, crop: int) -> float:
    """Decoded frames (RGB) plus flow (2 channels), uint8, of ``n_frames`` frames."""
    return n_frames * crop * crop * (3 + 2)


def check_disk(folder: str, config: dict, durations_s: list[float], running: int) -> None:
    """Stop at start-up, naming the folder and its free space, when the intermediates cannot fit.

    ``durations_s``: the videos' durations (a lower bound where the annotations have none). Without
    ``keep_intermediates`` a video's frames and flow are deleted once its features exist and rule
    priorities move a decoded video on before the next is decoded, so at most ``running`` + 1
    videos hold them at once; with it, all of them do.
    """
    import shutil

    p = preset(config)
    keep = p.get("keep_intermediates", False)
    fps = 30.0 if p["fps"] == "native" else p["fps"]  # native: most videos are at most 30 fps
    sizes = sorted((intermediate_bytes(d * fps, p["crop"]) for d in durations_s if math.isfinite(d)),
                   reverse=True)
    in_flight = len(sizes) if keep else min(len(sizes), running + 1)
    need = sum(sizes[:in_flight])
    free = shutil.disk_usage(folder).free
    if need > free:
        raise ConfigError(
            f"results_dir {folder}: the decoded frames and flow of {in_flight} video(s) in flight need about "
            f"{need / 1e9:.1f} GB (frames x {p['crop']}^2 x 3 + flow x {p['crop']}^2 x 2 bytes at {fps:g} fps), "
            f"but only {free / 1e9:.1f} GB are free there. Free space, point results_dir elsewhere"
            + (", or set keep_intermediates: false" if keep else ", or run fewer jobs at once (--cores)") + ".")


@contextlib.contextmanager
def args_file(*args):
    """The arguments, one per line, in a temporary file, for ``python -m pipeline.<stage> @file``.

    A shell command is one argument to bash, which Linux caps at 128 KiB (MAX_ARG_STRLEN); the
    per-video file lists of ActivityNet 1.2's aggregating rules are several times that.
    """
    import os
    import tempfile

    flat = [str(a) for arg in args for a in (arg if isinstance(arg, (list, tuple)) else [arg])]
    bad = [a for a in flat if "\n" in a]
    if bad:
        raise ConfigError(f"a file name contains a line break: {bad[0]!r}")
    fd, path = tempfile.mkstemp(prefix="args-", suffix=".txt")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("".join(a + "\n" for a in flat))
        yield path
    finally:
        os.unlink(path)


def run_stage(stage: str, *args, log: str) -> None:
    """``python -m pipeline.<stage> @args-file 2> log`` from a rule's ``run:`` block (see ``args_file``)."""
    import shlex
    import sys

    from snakemake.shell import shell

    with args_file(*args) as path:
        shell(f"{shlex.quote(sys.executable)} -m pipeline.{stage} @{shlex.quote(path)} 2> {shlex.quote(str(log))}")


def resource_value(resource) -> int:
    """A global resource's number, whether Snakemake holds it as a Resource (--resources) or a plain int."""
    return getattr(resource, "value", resource)


def as_param(settings) -> str:
    """A settings dataclass as the JSON string a rule passes to its stage's CLI."""
    return json.dumps(asdict(settings), sort_keys=True)


class Video(NamedTuple):
    path: str
    subset: str
    duration_s: float  # from the annotations; for formats without durations, the last segment's end


def videos(config: dict) -> tuple[dict[str, Video], list[str], list[str]]:
    """(name -> Video of every video this run processes, annotated names without a file, file stems no
    annotation claims).

    The demo's names follow from its settings (the files may not exist yet:
    rule demo_data makes them). The folder preset takes every video file.
    Otherwise they are the annotated videos found on disk (pipeline/videos.py
    pairs names and files); annotated videos that are missing are skipped or
    stop the run per ``on_missing_video``.
    """
    p = preset(config)
    if "annotations" not in p:  # the folder preset: every video file, named by its stem
        from pipeline.videos import find_videos

        found = find_videos(p["videos"], config["video_extensions"])
        if not found:
            raise ConfigError(f"videos folder {p['videos']}: no video files "
                              f"(looked for {', '.join(config['video_extensions'])})")
        return {v: Video(path, "folder", math.nan) for v, path in found.items()}, [], []
    demo = demo_settings(p)
    if demo is not None:
        return {v: Video(f"{p['videos']}/{v}.mp4", subset, demo.max_duration_s)
                for subset, vs in demo_data.video_names(demo).items() for v in vs}, [], []
    if not Path(p["videos"]).is_dir():
        raise ConfigError(f"preset {config['preset']}: videos folder {p['videos']} does not exist "
                          f"(put the videos there, or --config videos=PATH)")
    ann = annotations.read(p["annotations"])
    found = annotations.locate_videos(ann, p["videos"], config["video_extensions"], config["on_missing_video"])
    last_end: dict[str, float] = {}
    for s in ann.segments + ann.ambiguous:
        last_end[s.video] = max(last_end.get(s.video, 0.0), s.end_s)
    return ({v: Video(path, ann.videos[v][0],
                      ann.videos[v][1] if math.isfinite(ann.videos[v][1]) else last_end.get(v, 0.0))
             for v, path in found.paths.items()}, found.missing, found.unannotated)


def check_settings(config: dict) -> None:
    """Build every stage's settings now, so a setting that passes the schema but not its stage (crop above
    the short side, thresholds start > stop, ...) stops the run at start-up, naming it, not in every job."""
    try:
        decode_settings(config), flow_settings(config), flow_runtime(config)
        feature_settings(config), feature_runtime(config)
        if annotated(config):
            for run in runs(config):
                train_settings(config, run), localize_settings(config, run)
    except ValueError as e:
        raise ConfigError(f"workflow_config (preset {config['preset']}): {e}") from None
    check_generated_paths(config)


def check_generated_paths(config: dict) -> None:
    """A generated preset (the demo) writes its videos and annotation files under ``generate.root``: the
    preset must read them there, or the run would plan videos the generator never writes."""
    p = preset(config)
    if "generate" not in p:
        return
    root = Path(p["generate"]["root"])
    wanted = {"videos": root / "videos", **{f"annotations.dirs.{subset}": root / f"annotations_{suffix}"
                                            for subset, suffix in demo_data.SPLITS.items()}}
    given = {"videos": p["videos"], **{f"annotations.dirs.{k}": v for k, v in p["annotations"].get("dirs", {}).items()}}
    for key, path in wanted.items():
        if os.path.normpath(str(given.get(key, ""))) != os.path.normpath(str(path)):
            raise ConfigError(f"workflow_config (preset {config['preset']}): generate.root is {root}, so {key} "
                              f"must be {path} (the generator writes there), not {given.get(key) or 'unset'}")


def staged_root(staged: str, original: str) -> str:
    """The folder a job sees ``original``'s tree under: ``staged`` is where the job got ``original``
    (the same path on a shared filesystem; under a storage plugin's local copy without one)."""
    staged, original = os.path.normpath(staged), os.path.normpath(original)
    if staged == original:
        return "."
    if not staged.endswith(os.sep + original.lstrip(os.sep)):
        raise ConfigError(f"cannot tell where {original} was staged from its copy {staged}")
    return staged[: len(staged) - len(original.lstrip(os.sep))].rstrip(os.sep) or os.sep
