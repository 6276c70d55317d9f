"""Which file on disk holds which annotated video.

Annotation names and file names do not always agree. THUMOS14 files carry the
annotation name (``video_test_0000004.mp4``); ActivityNet files, as the
official crawler downloads them, carry the YouTube id, with or without a
``v_`` prefix (``v_--0edUL8zmA.mp4``, ``--0edUL8zmA.mkv``), while the W-TALC
set names the same video ``video_4`` and keeps the id in ``url.npy``. A video
is matched by its name, then by its alias (the YouTube id), each with and
without ``v_``. Light on purpose: the Snakefile imports it at parse time.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class VideoFolderError(ValueError):
    pass


def find_videos(folder: str | Path, extensions) -> dict[str, str]:
    """File stem -> path for the video files in ``folder`` and its sub-folders, at any depth (THUMOS14's
    validation and test archives unpack into folders of their own); extensions without the dot, any case.
    Hidden folders are skipped; two files of one stem, in one folder or two, are an error naming both."""
    import os

    folder = Path(folder)
    exts = {"." + e.lower() for e in extensions}
    found: dict[str, str] = {}
    if not folder.is_dir():
        return found
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix.lower() not in exts or not path.is_file():
                continue
            if path.stem in found:
                raise VideoFolderError(f"{folder}: two files for video {path.stem!r}: {found[path.stem]} and {path}")
            found[path.stem] = str(path)
    return found


def candidate_stems(name: str, alias: str | None = None) -> list[str]:
    """File stems that may hold video ``name``, most specific first."""
    stems = [name, f"v_{name}"]
    if alias:
        stems += [alias, f"v_{alias}"]
    return stems


class Match(NamedTuple):
    paths: dict[str, str]  # annotated name -> file
    missing: list[str]  # annotated names with no file
    unannotated: list[str]  # files (stems) that no annotated name claims


def match(names, on_disk: dict[str, str], aliases: dict[str, str] | None = None) -> Match:
    """Pair annotated video names with the files found by ``find_videos``."""
    aliases = aliases or {}
    paths, missing, claimed = {}, [], {}
    for name in sorted(names):
        stem = next((s for s in candidate_stems(name, aliases.get(name)) if s in on_disk), None)
        if stem is None:
            missing.append(name)
            continue
        if stem in claimed:
            raise VideoFolderError(f"{on_disk[stem]} matches two annotated videos: {claimed[stem]} and {name}")
        claimed[stem] = name
        paths[name] = on_disk[stem]
    return Match(paths, missing, sorted(set(on_disk) - set(claimed)))
