"""What the Snakefile needs at parse time: the preset, the videos to process, each stage's settings.

Kept out of the Snakefile so it can be tested and so the Snakefile reads as
the story of the data. Snakemake parses the Snakefile in every cluster job and
dry run, so nothing imported here loads torch, cv2 or av (a test checks). Every stage setting the Snakefile passes through
``params:`` comes from here, so a changed setting reruns exactly the jobs
that depend on it.
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

from pipeline.core import annotation_io, demo_layout
from pipeline.core.settings import (RUNTIME, DecodeRuntime, DecodeSettings, DemoSettings, EvaluationSettings,
                               FeatureRuntime, FeatureSettings, FlowRuntime, FlowSettings, LocalizeSettings,
                               TrainRuntime, TrainSettings, build, from_dict, kind_of, section_values)


class ConfigError(ValueError):
    pass


def one_line(what: str, text: str) -> str:
    """``text``, when it is one line as the stages read their argument files (argparse splits them with
    ``str.splitlines``: at ``\\n``, ``\\r`` and the other line boundaries it knows), else a ConfigError
    naming ``what``: the Snakefile passes file lists as ``@<(printf '%s\\n' ...)``, a line per argument."""
    if text.splitlines() not in ([text], []):
        raise ConfigError(f"{what} {text!r}: contains a line break, and the stages read their arguments a line each")
    return text


# ------------------------------------------------------------------ layers


class Layers(NamedTuple):
    """Where the settings come from, lowest precedence first (docs/configuration.md)."""

    base: dict  # workflow_config.yaml without its presets
    presets: dict  # name -> overlay: the yaml's presets, with the command line's edits of them
    command_line: dict  # --configfile files (in order), then --config words; their `presets` edits excluded


def _merge(low: dict, high: dict) -> dict:
    """``high`` over ``low``: nested mappings merge key by key, any other value replaces."""
    out = dict(low)
    for k, v in high.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_layers(own_yaml: str | Path, configfiles=(), words: dict | None = None) -> Layers:
    """The layers of a run: the workflow's own yaml, and what the command line gave: every ``--configfile``
    but the workflow's own yaml (in order), then the ``--config`` words (Snakemake's
    ``workflow.config_settings.configfiles`` and ``.config``)."""
    import yaml
    from snakemake.common.configfile import load_configfile

    base = yaml.safe_load(Path(own_yaml).read_text()) or {}
    line: dict = {}
    own = Path(own_yaml).resolve()
    for f in configfiles or ():
        if Path(f).resolve() != own:
            line = _merge(line, load_configfile(f) or {})
    line = _merge(line, dict(words or {}))
    presets = _merge(base.pop("presets", {}) or {}, line.pop("presets", {}) or {})
    return Layers(base, presets, line)


def resolve(layers: Layers, preset_name: str | None = None) -> dict:
    """The run's settings: declared defaults, the yaml, the preset, the command line (docs/configuration.md),
    checked and typed against pipeline/core/settings.py; ``presets`` kept for reference."""
    from pipeline.core.settings import SettingsError, defaults, validate_config

    name = preset_name or layers.command_line.get("preset") or layers.base.get("preset") or "demo"
    if name not in layers.presets:
        raise ConfigError(f"workflow_config: preset {name!r} is not one of the presets "
                          f"({', '.join(sorted(layers.presets))})")
    overlay = dict(layers.presets[name] or {})
    pinned = overlay.pop("pinned", [])
    for key in pinned:
        given, own = _lookup(layers.command_line, key), _lookup(overlay, key)
        if given is not _ABSENT and given != own:
            raise ConfigError(f"preset {name} pins {key} to {own!r}; the command line's {given!r} conflicts with it "
                              f"(use another preset, or edit presets.{name})")
    config = _merge(_merge(_merge(defaults(), layers.base), overlay), {**layers.command_line, "preset": name})
    config["presets"] = layers.presets
    try:
        return validate_config(config)
    except SettingsError as e:
        where = f"preset {name}" + (" and the command line" if layers.command_line else "")
        raise ConfigError(f"workflow_config ({where}): {e}") from None


_ABSENT = object()


def _lookup(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return _ABSENT
        d = d[part]
    return d


def check_presets(layers: Layers) -> None:
    """Every preset resolves (a misspelled key in any of them stops the run, not only in the chosen one)."""
    for name in layers.presets:
        resolve(Layers(layers.base, layers.presets, {}), name)


def annotation_spec(config: dict) -> dict:
    """The ``annotations`` block as the readers take it (unset keys left out)."""
    return {k: v for k, v in config["annotations"].items() if v is not None}


def annotated(config: dict) -> bool:
    """Whether the run has annotations (train, evaluate, report); the folder preset has none."""
    return config.get("annotations") is not None


def scratch_dir(config: dict, out: str, grouped: bool) -> str:
    """Where a run's temporary decoded frames and flow go: ``scratch`` when set, else the node's own temp
    folder when the per-video stages run grouped in cluster jobs, else "" (the results folder). Per user
    (a private folder, pipeline/core/nodelocal.py) and per results folder, so two runs never share files; a
    cluster job computes its own node's folder when it parses this file."""
    import hashlib

    from pipeline.core.nodelocal import private_dir

    if not (config["scratch"] or grouped):
        return ""
    run = hashlib.sha256(os.path.abspath(out).encode()).hexdigest()[:12]
    return str(private_dir("scratch", base=config["scratch"] or None) / run)


def results_dir(config: dict) -> str:
    return one_line("results_dir", f"{config['results_dir']}/{config['preset']}")


def check_writable(folder: str) -> None:
    """Fail at start-up, naming the folder, rather than in every job once work has begun."""
    import tempfile

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"results_dir {folder} is not writable: {e.strerror or e}") from None


def demo_settings(config: dict) -> DemoSettings | None:
    """The generated dataset's settings (the demo preset), or None."""
    return None if config.get("generate") is None else build(config, DemoSettings)


def decode_settings(config: dict) -> DecodeSettings:
    return build(config, DecodeSettings)


def decode_runtime(config: dict) -> DecodeRuntime:
    return build(config, DecodeRuntime)


def flow_settings(config: dict) -> FlowSettings:
    return build(config, FlowSettings)


def flow_runtime(config: dict) -> FlowRuntime:
    # An empty cache_dir stays empty: the flow job finds its node's folder where it runs.
    return build(config, FlowRuntime)


def feature_settings(config: dict) -> FeatureSettings:
    return build(config, FeatureSettings)


def feature_runtime(config: dict) -> FeatureRuntime:
    return build(config, FeatureRuntime)


def train_runtime(config: dict) -> TrainRuntime:
    return build(config, TrainRuntime)


def uses_cuda(config: dict, stage: str) -> bool:
    """Whether a stage's jobs will run on CUDA (given a GPU): not with ``device: cpu``, nor flow with the
    OpenCV backend (a CPU implementation). Only those take the ``gpu`` resource."""
    device = {"flow": flow_runtime, "features": feature_runtime, "train": train_runtime}[stage](config).device
    return device != "cpu" and not (stage == "flow" and flow_settings(config).backend == "opencv")


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
    overrides: dict[str, dict]  # name -> train settings over the run's, in the report's row order
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
                           one_line(f"experiment_sets.{chosen}.caption", s.get("caption", chosen)))
    if not isinstance(chosen, dict) or not chosen:
        raise ConfigError(f"experiments: expected a mapping of names to settings or an experiment set, got {chosen!r}")
    return Experiments(dict(chosen), {n: n for n in chosen}, "")


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


# Blocks an experiment may override besides training settings (the reference_code profile uses both).
PER_EXPERIMENT_BLOCKS = ("localize", "evaluation")


def _own(config: dict, run: str | None) -> dict:
    return (experiments(config).overrides[run_parts(config, run)[0]] or {}) if run else {}


def train_settings(config: dict, run: str | None = None) -> TrainSettings:
    """The run's ``train`` settings, then its experiment's own keys; the seed is the run's (``d2net.s2``)."""
    seed = run_parts(config, run)[1] if run else config["train"]["seeds"][0]
    own = {k: v for k, v in _own(config, run).items() if k not in PER_EXPERIMENT_BLOCKS}
    return from_dict(TrainSettings, {**section_values(config, TrainSettings), **own, "seed": seed},
                     f"experiment {run}" if run else "train")


def localize_settings(config: dict, run: str | None = None) -> LocalizeSettings:
    """The run's ``localize`` settings, then the experiment's own ``localize`` block (if any)."""
    own = _own(config, run).get("localize", {})
    return from_dict(LocalizeSettings, {**config["localize"], **own}, f"experiment {run}" if run else "localize")


def evaluation_settings(config: dict, run: str | None = None) -> EvaluationSettings:
    """The run's ``evaluation`` settings, then the experiment's own ``evaluation`` block (if any)."""
    own = _own(config, run).get("evaluation", {})
    return from_dict(EvaluationSettings, {**config["evaluation"], **own}, f"experiment {run}" if run else "evaluation")


def selection_args(config: dict, run: str) -> list[str]:
    """train's arguments for a run that selects its weights on the test set (``select_on_test``): the
    localize and evaluation settings it scores with. Empty otherwise, so that they never retrain."""
    if not train_settings(config, run).select_on_test:
        return []
    return ["--localize", as_param(localize_settings(config, run)),
            "--evaluation", as_param(evaluation_settings(config, run))]


def cost_settings(config: dict, names: list[str], layers: Layers) -> dict:
    """What pipeline/costs.py needs to project this run's rates onto the full THUMOS14 and ActivityNet 1.2,
    each with its own preset's settings (the command line's are this run's, and may not fit another preset)."""

    def shape(c: dict) -> dict:
        d2 = train_settings(c)
        return {"crop": c["decode"]["crop"], "tvl1": asdict(flow_settings(c).tvl1), "batch_size": d2.batch_size,
                "seqlen": d2.max_seqlen, "iterations": d2.iterations, "train": asdict(d2)}

    return {"run": {"crop": config["decode"]["crop"], "tvl1": asdict(flow_settings(config).tvl1)},
            "experiments": {e: {"iterations": train_settings(config, e).iterations} for e in names},
            "targets": {n: {**shape(resolve(layers._replace(command_line={}), n)), "experiments": len(names)}
                        for n in ("thumos14", "activitynet12") if n in layers.presets}}


def intermediate_bytes(n_frames: float, crop: int) -> float:
    """Decoded frames (RGB) plus flow (2 channels), uint8, of ``n_frames`` frames."""
    return n_frames * crop * crop * (3 + 2)


class DiskEstimate(NamedTuple):
    need: float  # bytes the decoded frames and flow in flight need
    free: float  # bytes free where they go
    text: str  # the estimate in words

    @property
    def fits(self) -> bool:
        return self.need <= self.free


def disk_estimate(folder: str, config: dict, durations_s: list[float], running: int) -> DiskEstimate:
    """How much the intermediates in flight need, and what is free in ``folder``.

    ``durations_s``: the videos' durations (a lower bound where the annotations have none). Without
    ``keep_intermediates`` a video's frames and flow are deleted once its features exist and rule
    priorities move a decoded video on before the next is decoded, so at most ``running`` + 1
    videos hold them at once; with it, all of them do.
    """
    import shutil

    keep, crop = config["keep_intermediates"], config["decode"]["crop"]
    fps = 30.0 if config["decode"]["fps"] == "native" else config["decode"]["fps"]  # native: most are <= 30 fps
    sizes = sorted((intermediate_bytes(d * fps, crop) for d in durations_s if math.isfinite(d)),
                   reverse=True)
    in_flight = len(sizes) if keep else min(len(sizes), running + 1)
    need = sum(sizes[:in_flight])
    existing = Path(folder).absolute()
    while not existing.exists():  # a run's scratch folder is made by its first job
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    return DiskEstimate(need, free, f"the decoded frames and flow of {in_flight} video(s) in flight need about "
                                    f"{need / 1e9:.1f} GB (frames x {crop}^2 x 3 + flow x {crop}^2 x 2 bytes at "
                                    f"{fps:g} fps); {free / 1e9:.1f} GB are free in {folder}")


def check_disk(folder: str, estimate: DiskEstimate, config: dict) -> None:
    """Stop, naming the folder and its free space, when the intermediates cannot fit (a real run's start)."""
    if not estimate.fits:
        raise ConfigError(
            f"results_dir {folder}: {estimate.text}: not enough. Free space, point results_dir elsewhere"
            + (", or set keep_intermediates: false" if config["keep_intermediates"]
               else ", or run fewer jobs at once (--cores)") + ".")


def resource_value(resource) -> int:
    """A global resource's number, whether Snakemake holds it as a Resource (--resources) or a plain int."""
    return getattr(resource, "value", resource)


def as_param(settings) -> str:
    """A settings dataclass as the JSON string a rule passes to its stage's CLI: in ``params:``, so its
    runtime fields (if any) are left out, as they must never trigger a rerun."""
    cls = type(settings)
    return json.dumps({k: v for k, v in asdict(settings).items() if kind_of(cls, k) != RUNTIME}, sort_keys=True)


def as_runtime(settings) -> str:
    """A runtime settings dataclass as JSON for the environment (``envvars:``), never ``params:``."""
    return json.dumps(asdict(settings), sort_keys=True)


class Video(NamedTuple):
    path: str
    subset: str
    duration_s: float  # from the annotations; for formats without durations, the last segment's end


def videos(config: dict) -> tuple[dict[str, Video], list[str], list[str]]:
    """(name -> Video of every video this run processes, annotated names without a file, file stems no
    annotation claims); see ``_videos``. A file name with a line break stops the run here (``one_line``)."""
    found = _videos(config)
    for v in found[0].values():
        one_line("video file", v.path)
    return found


def _videos(config: dict) -> tuple[dict[str, Video], list[str], list[str]]:
    """(name -> Video of every video this run processes, annotated names without a file, file stems no
    annotation claims).

    The demo's names follow from its settings (the files may not exist yet:
    rule demo_data makes them). The folder preset takes every video file.
    Otherwise they are the annotated videos found on disk (pipeline/core/videos.py
    pairs names and files); annotated videos that are missing are skipped or
    stop the run per ``on_missing_video``.
    """
    folder = config["videos"]
    if not folder:
        raise ConfigError(f"preset {config['preset']} needs a folder of videos: --config preset={config['preset']} "
                          "videos=PATH")
    if not annotated(config):  # the folder preset: every video file, named by its stem
        from pipeline.core.videos import find_videos

        found = find_videos(folder, config["video_extensions"])
        if not found:
            raise ConfigError(f"videos folder {folder}: no video files "
                              f"(looked for {', '.join(config['video_extensions'])})")
        return {v: Video(path, "folder", math.nan) for v, path in found.items()}, [], []
    demo = demo_settings(config)
    if demo is not None:
        return {v: Video(f"{folder}/{v}.mp4", subset, demo.max_duration_s)
                for subset, vs in demo_layout.video_names(demo).items() for v in vs}, [], []
    if not Path(folder).is_dir():
        raise ConfigError(f"preset {config['preset']}: videos folder {folder} does not exist "
                          f"(put the videos there, or --config videos=PATH)")
    ann = annotation_io.read(annotation_spec(config))
    found = annotation_io.locate_videos(ann, folder, config["video_extensions"], config["on_missing_video"])
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
        if annotated(config):
            for run in runs(config):
                train_settings(config, run), localize_settings(config, run), evaluation_settings(config, run)
    except ValueError as e:
        raise ConfigError(f"workflow_config (preset {config['preset']}): {e}") from None
    check_generated_paths(config)


def check_generated_paths(config: dict) -> None:
    """A generated preset (the demo) writes its videos and annotation files under ``generate.root``: the
    preset must read them there, or the run would plan videos the generator never writes."""
    if config.get("generate") is None:
        return
    root = Path(config["generate"]["root"])
    wanted = {"videos": root / "videos", **{f"annotations.dirs.{subset}": root / f"annotations_{suffix}"
                                            for subset, suffix in demo_layout.SPLITS.items()}}
    dirs = (config.get("annotations") or {}).get("dirs") or {}
    given = {"videos": config["videos"], **{f"annotations.dirs.{k}": v for k, v in dirs.items()}}
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
