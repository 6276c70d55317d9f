"""The demo dataset's names and annotation files: they follow from its settings alone, so the workflow
knows them at parse time, before rule demo_data (pipeline/demo_data.py) generates the videos."""
from __future__ import annotations

from pathlib import Path

from pipeline.core.settings import DemoSettings

CLASSES = ("Bounce", "Pulse", "Slide", "Spin")
SPLITS = {"validation": "val", "test": "test"}  # subset -> THUMOS file suffix


def video_names(s: DemoSettings) -> dict[str, list[str]]:
    """Names per subset; they depend only on the counts, so the workflow knows them before generating."""
    return {
        "validation": [f"demo_validation_{i:04d}" for i in range(1, s.n_train + 1)],
        "test": [f"demo_test_{i:04d}" for i in range(1, s.n_test + 1)],
    }


def annotation_files(s: DemoSettings, root: str | Path) -> list[Path]:
    root = Path(root)
    return [root / f"annotations_{suffix}" / f"{c}_{suffix}.txt" for suffix in SPLITS.values() for c in CLASSES]
