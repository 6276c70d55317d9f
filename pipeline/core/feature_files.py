"""What a features file is: ``features/<video>.npy``, float32 (n_snippets, 2048) = [I3D RGB 1024 | flow 1024].

Every stage that reads one reads it here, so a file of another shape (1024 columns copied from another
extractor, a transposed array) or type stops the run with the file, its shape and the expected one,
instead of a broadcast or conv1d error that names no file.
"""
from __future__ import annotations

import os

import numpy as np

FEATURE_DIM = 2048  # RGB 1024 + flow 1024 (I3D Mixed_5c, or S3D's 1024 for RGB)


class FeatureFileError(ValueError):
    pass


def read_features(path: str | os.PathLike, dim: int = FEATURE_DIM) -> np.ndarray:
    """One video's features, checked: shape (T, ``dim``), float32, finite."""
    try:
        feats = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise FeatureFileError(f"{path}: not a readable .npy features file ({e})") from None
    if feats.ndim != 2 or feats.shape[1] != dim or feats.dtype != np.float32:
        raise FeatureFileError(f"{path}: features of shape {feats.shape} and type {feats.dtype}; expected "
                               f"(n_snippets, {dim}) float32 (I3D RGB 1024 + flow 1024), as the features stage "
                               "writes them")
    if len(feats) and not np.isfinite(feats).all():
        raise FeatureFileError(f"{path}: non-finite values in the features")
    return feats
