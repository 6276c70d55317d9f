"""decode: any FFmpeg-readable video -> fixed-fps, resized, center-cropped 16-frame snippets.

Output per video:
- ``frames.npy``: uint8 (n_blocks, stride, crop, crop, 3), RGB, in blocks of
  one snippet stride (with the default stride, the snippet length: one block
  per snippet), written as a stream of chunks under a header that is
  finalised at the end, so memory is bounded by one chunk whatever the
  video's length.
- ``meta.json``: the sampling (fps, window, stride, short side, crop), frame,
  block and snippet counts, durations, backend, status.

Snippet i is frames [i * stride, i * stride + snippet_frames): with a stride
shorter than the window, snippets overlap (16 frames every 4 is how
ActionFormer's THUMOS14 features were made), and n_snippets = n_blocks -
snippet_frames / stride + 1. Its time span is [i * stride, i * stride +
snippet_frames] / fps (``pipeline.core.intervals.snippet_span``).

Frames are resampled to the preset fps (or, with ``fps: native``, to the
video's own average rate) by presentation timestamps with the rule of FFmpeg's
``fps`` filter (output frame k shows the latest source frame whose timestamp
rounds to <= k), which handles variable frame rate. The resize is bilinear to
the preset short side, then the center crop. The tail shorter than one block
is dropped.

A video that cannot be used (unreadable, corrupt, no video stream, no frames,
shorter than one snippet) raises ``DecodeError`` naming the file. Under
``on_bad_video: skip`` the CLI records it instead: meta.json gets
``status: "skipped"`` and the reason, frames.npy holds zero snippets, and the
workflow's skipped-videos list picks it up.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import cv2
import numpy as np

from pipeline.core.io import NpyAppender, atomic_path, atomic_write_json
from pipeline.core.jobclock import Stopwatch, peak_rss_mb, process_age_s
from pipeline.core.progress import progress_bar
from pipeline.core.settings import DecodeRuntime, DecodeSettings, from_dict

BACKENDS = ("pyav", "decord")


class DecodeError(Exception):
    """A video that cannot be decoded into at least one snippet; the message names the file."""


# ------------------------------------------------------------ source frames
# A backend yields (time_s, rgb_frame) in presentation order, times relative
# to the first frame, and returns the end time of the last frame.


class Probe(NamedTuple):
    rate: float | None  # the stream's average frame rate, None if unknown
    rotation: int  # clockwise degrees players turn the stored frames
    stream: int  # the index (among all streams) of the video stream decoded
    choice: str  # which video stream, and why, when there are several


def probe(path: str) -> Probe:
    """The video stream a player would play and what it records; DecodeError unless FFmpeg opens ``path``
    and finds a video stream (same message for every backend).

    The stream is the one FFmpeg's players pick (``av_find_best_stream``: not an attached picture such as a
    cover, the most frames, the default disposition), not simply the first: a file may start with a
    one-frame still or carry a second camera angle. decord picks the same way.

    The display rotation is the clockwise turn, in degrees (0, 90, 180 or 270), that players apply to the
    stored frames: phones store portrait video as landscape frames plus a display matrix. It is read from
    the first frame (FFmpeg attaches the container's matrix to every decoded frame), for both backends."""
    import av

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise DecodeError(f"{path}: cannot open as a video: {e}") from None
    with container:
        videos = list(container.streams.video)
        if not videos:
            raise DecodeError(f"{path}: no video stream (streams: "
                              f"{', '.join(s.type for s in container.streams) or 'none'})")
        stream = container.streams.best("video") or videos[0]
        choice = ""
        if len(videos) > 1:
            others = ", ".join(f"#{s.index} {s.codec_context.name}" for s in videos if s is not stream)
            choice = (f"stream #{stream.index} ({stream.codec_context.name}) of {len(videos)} video streams: the "
                      f"one FFmpeg's players pick (not an attached picture, most frames, default disposition); "
                      f"not {others}")
        rate = stream.average_rate or stream.guessed_rate
        rotation = 0
        try:
            for frame in container.decode(stream):
                rotation = display_rotation(frame.rotation)
                break
        except av.FFmpegError:
            pass  # an undecodable stream is reported, with the frame count, where the frames are read
        return Probe(float(rate) if rate else None, rotation, stream.index, choice)


def has_edit_list(path: str, stream: int | None = None) -> bool:
    """Whether the file's edit list cuts the start of the video stream: FFmpeg then marks the packets before
    the cut as discarded (what ``ffmpeg -ss ... -c copy`` off a keyframe makes). PyAV honours that; decord
    0.6 ignores it and returns the frames before the cut too. Reads packets up to the first one kept, no
    decoding."""
    import av

    try:
        with av.open(path) as container:
            st = container.streams[stream] if stream is not None else container.streams.video[0]
            for packet in container.demux(st):
                if packet.size and not packet.is_discard:
                    return False
                if packet.is_discard:
                    return True
    except (av.FFmpegError, OSError, IndexError):
        return False
    return False


def display_rotation(matrix_degrees: float) -> int:
    """FFmpeg's display-matrix angle (counter-clockwise, e.g. -90 for a phone held upright) as the clockwise
    quarter turn a player applies: 0, 90, 180 or 270."""
    return (-round(matrix_degrees / 90) * 90) % 360


def rotate(frame: np.ndarray, clockwise_degrees: int) -> np.ndarray:
    """The frame as a player shows it: turned clockwise by a multiple of 90 degrees."""
    return np.ascontiguousarray(np.rot90(frame, -(clockwise_degrees // 90))) if clockwise_degrees else frame


def _pyav_frames(path: str, threads: int, index: int | None = None) -> Iterator[tuple[float, np.ndarray]]:
    import av

    with av.open(path) as container:
        stream = container.streams[index] if index is not None else container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.thread_count = threads
        rate = stream.average_rate or stream.guessed_rate
        default_step = 1.0 / float(rate) if rate else None
        t0 = None
        index = 0
        try:
            for frame in container.decode(stream):
                t = frame.time
                if t is None:
                    if default_step is None:
                        raise DecodeError(f"{path}: frames carry no timestamps and the stream no frame rate")
                    t = index * default_step
                if t0 is None:
                    t0 = t
                index += 1
                dur = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else None
                yield t - t0, frame.to_ndarray(format="rgb24"), dur or default_step
        except av.FFmpegError as e:
            if index == 0:
                raise DecodeError(f"{path}: the video stream has no decodable frames ({e})") from None
            raise DecodeError(f"{path}: decoding failed after {index} frames: {e}") from None


def _decord_message(e: Exception) -> str:
    """decord's first error line without its '[time] source.cc:line: Check failed: ...' prefix."""
    line = str(e).splitlines()[0]
    line = re.sub(r"^\[[^\]]*\]\s+\S+:\d+:\s*", "", line)
    return re.sub(r"^Check failed: .*\(-?\d+ vs\. -?\d+\)\s*", "", line)


def _decord_frames(path: str, threads: int, batch: int = 16) -> Iterator[tuple[float, np.ndarray]]:
    import decord

    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
        n = len(vr)
        stamps = vr.get_frame_timestamp(np.arange(n)) if n else np.zeros((0, 2))
    except decord.DECORDError as e:
        raise DecodeError(f"{path}: cannot open as a video: {_decord_message(e)}") from None
    t0 = stamps[0, 0] if n else 0.0
    for a in range(0, n, batch):
        idx = list(range(a, min(a + batch, n)))
        try:
            frames = vr.get_batch(idx).asnumpy()
        except decord.DECORDError as e:
            raise DecodeError(f"{path}: decoding failed at frame {a}: {_decord_message(e)}") from None
        for i, frame in zip(idx, frames):
            yield float(stamps[i, 0] - t0), frame, float(stamps[i, 1] - stamps[i, 0]) or None


def source_frames(path: str, backend: str = "pyav", threads: int = 0, stream: int | None = None):
    """Frames of a video stream as (time_s, rgb uint8 HxWx3, duration_s or None): ``stream`` (an index among
    all streams, as ``probe`` gives it) for PyAV; decord picks the same one itself."""
    if backend == "pyav":
        return _pyav_frames(path, threads, stream)
    if backend == "decord":
        return _decord_frames(path, threads)
    raise ValueError(f"unknown decode backend {backend!r}; choose one of {BACKENDS}")


def sampling(settings: DecodeSettings, fps: float) -> dict:
    """What decides which frames a snippet holds: recorded in every meta and provenance, checked by predict."""
    return {"fps": fps, "fps_setting": settings.fps, "snippet_frames": settings.snippet_frames,
            "snippet_stride": settings.stride, "short_side": settings.short_side, "crop": settings.crop}


# ------------------------------------------------------------------ numerics


def _round(x: float) -> int:
    return math.floor(x + 0.5)


def resample(frames: Iterable[tuple[float, np.ndarray, float | None]], fps: float, fallback_step: float | None = None):
    """Yield frames at a constant ``fps`` from frames at arbitrary timestamps.

    Output frame k (time k/fps) repeats the latest source frame whose
    timestamp rounds to <= k on the output grid, as FFmpeg's ``fps`` filter
    does; the last source frame lasts until its end time. Timestamps that do
    not increase are dropped. Returns (via StopIteration.value) the source end time.
    """
    prev = None  # (time, frame, duration)
    k = 0
    for t, frame, dur in frames:
        if prev is not None:
            if t <= prev[0]:
                continue
            for _ in range(k, _round(t * fps)):
                yield prev[1]
                k += 1
        prev = (t, frame, dur)
    if prev is None:
        return 0.0
    step = prev[2] or fallback_step or 1.0 / fps
    end = prev[0] + step
    for _ in range(k, max(_round(end * fps), 1)):
        yield prev[1]
    return end


def resize_crop(frame: np.ndarray, short_side: int, crop: int) -> np.ndarray:
    """Bilinear resize so the short side is ``short_side``, then the center ``crop`` x ``crop``."""
    h, w = frame.shape[:2]
    scale = short_side / min(h, w)
    nh, nw = max(short_side, _round(h * scale)), max(short_side, _round(w * scale))
    if (nh, nw) != (h, w):
        frame = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    return frame[top:top + crop, left:left + crop]


# ---------------------------------------------------------------- the stage


def decode_video(path: str | os.PathLike, frames_out: str | os.PathLike, settings: DecodeSettings,
                 progress: bool = False, runtime: DecodeRuntime = DecodeRuntime()) -> dict:
    """Decode ``path`` into ``frames_out`` (.npy) and return the metadata.

    ``frames_out`` appears only when the whole video decoded into at least one
    snippet; on any error nothing is left behind.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DecodeError(f"{path}: no such file")
    if not os.access(path, os.R_OK):
        raise DecodeError(f"{path}: not readable (permission denied)")
    if os.path.getsize(path) == 0:
        raise DecodeError(f"{path}: empty file (0 bytes)")

    block, crop = settings.stride, settings.crop
    per_snippet = settings.snippet_frames // block  # blocks in one snippet
    probed = probe(path)
    rate, rotation = probed.rate, probed.rotation
    if probed.choice:
        print(f"decode: {path}: {probed.choice}", file=sys.stderr)
    if rotation and not settings.autorotate:
        print(f"decode: warning: {path}: the container asks players to turn the video {rotation} degrees "
              "clockwise; decoded as stored (decode.autorotate: false)", file=sys.stderr)
    turn = rotation if settings.autorotate else 0
    backend, backend_note = settings.backend, ""
    if backend == "decord" and has_edit_list(path, probed.stream):
        backend, backend_note = "pyav", ("an MP4 edit list moves the start (a clip cut by stream copy): decoded "
                                         "with PyAV, which honours it (decord would return the frames before the cut)")
        print(f"decode: {path}: {backend_note}", file=sys.stderr)
    # decord (0.6) turns the frames itself; PyAV hands them over as stored
    extra_turn = (turn - (rotation if backend == "decord" else 0)) % 360
    if settings.fps == "native":
        if not rate:
            raise DecodeError(f"{path}: fps: native, but the video stream records no frame rate")
        fps = rate
    else:
        fps = float(settings.fps)
    chunk = np.empty((runtime.chunk_snippets * per_snippet, block, crop, crop, 3), np.uint8)
    n_out = 0  # resampled frames, including the dropped tail
    n_source = 0
    source_size = None
    # raises before any output for bad files
    frames = source_frames(path, backend, runtime.threads, probed.stream)
    bar = progress_bar(desc=Path(path).name, unit="frame") if progress else None

    def counted(frames):
        nonlocal n_source, source_size
        for t, frame, dur in frames:
            n_source += 1
            frame = rotate(frame, extra_turn)
            source_size = frame.shape[:2]
            yield t, frame, dur

    per_chunk = chunk.shape[0] * block
    with atomic_path(frames_out) as tmp:
        writer = NpyAppender(tmp, (block, crop, crop, 3))
        try:
            gen = resample(counted(frames), fps)
            while True:
                try:
                    frame = next(gen)
                except StopIteration as stop:
                    source_end = stop.value
                    break
                if frame.ndim != 3 or frame.shape[2] != 3:
                    raise DecodeError(f"{path}: unexpected frame shape {frame.shape}")
                pos = n_out % per_chunk
                chunk[pos // block, pos % block] = resize_crop(frame, settings.short_side, crop)
                n_out += 1
                if pos + 1 == per_chunk:
                    writer.write(chunk)
                if bar is not None:
                    bar.update()
            full = (n_out % per_chunk) // block  # complete blocks left in the chunk
            if full:
                writer.write(chunk[:full])
        finally:
            writer.close()
            if bar is not None:
                bar.close()
        if n_source == 0:
            raise DecodeError(f"{path}: the video stream has no decodable frames")
        if writer.count < per_snippet:
            raise DecodeError(f"{path}: too short: {n_out} frame(s) at {fps:g} fps "
                              f"({source_end:.2f} s), fewer than one {settings.snippet_frames}-frame snippet")
    n_blocks = writer.count
    return {
        "video": Path(path).stem,
        "source": path,
        "status": "ok",
        "backend": settings.backend,
        "backend_used": backend,  # PyAV for decord's files with an edit list
        "backend_note": backend_note,
        **span_fields(settings, fps),
        "sampling": sampling(settings, fps),
        "n_blocks": n_blocks,
        "n_snippets": n_blocks - per_snippet + 1,
        "n_frames": n_blocks * block,
        "n_frames_resampled": n_out,
        "n_frames_source": n_source,
        "source_size_hw": list(source_size),  # as shown: after the display rotation when it was applied
        "display_rotation_deg": rotation,
        "rotation_applied": bool(turn),
        "source_fps": rate,
        "video_stream": probed.stream,  # among all the file's streams
        "video_stream_choice": probed.choice,  # which and why, when the file has several video streams
        "source_duration_s": source_end,
        "kept_duration_s": n_blocks * block / fps,
        "short_side": settings.short_side,
        "crop": crop,
    }


def span_fields(settings: DecodeSettings, fps: float | None) -> dict:
    """The meta fields that turn snippet indices into seconds (localize, evaluate, exports)."""
    return {"fps": fps, "snippet_frames": settings.snippet_frames, "snippet_stride": settings.stride,
            "snippet_duration_s": settings.snippet_frames / fps if fps else None,
            "snippet_stride_s": settings.stride / fps if fps else None}


def open_frames(path: str | os.PathLike) -> np.ndarray:
    """The decoded snippets of one video, memory-mapped (n_snippets, snippet_frames, H, W, 3)."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def skipped_meta(path: str, settings: DecodeSettings, reason: str) -> dict:
    fps = None if settings.fps == "native" else float(settings.fps)  # native: no rate was read
    return {"video": Path(path).stem, "source": path, "status": "skipped", "reason": reason,
            "backend": settings.backend, **span_fields(settings, fps), "sampling": sampling(settings, fps),
            "n_blocks": 0, "n_snippets": 0, "n_frames": 0, "short_side": settings.short_side, "crop": settings.crop}


def run(video: str, frames_out: str, meta_out: str, settings: DecodeSettings, on_bad_video: str,
        progress: bool = True, startup_s: float | None = None, name: str | None = None,
        runtime: DecodeRuntime = DecodeRuntime()) -> dict:
    """The stage as the workflow runs it: decode, or record a bad video as skipped.

    ``name``: the video's name in the run (an annotation name such as ActivityNet's ``video_4`` may
    differ from the file's stem); by default the file's stem."""
    compute = Stopwatch()
    try:
        meta = decode_video(video, frames_out, settings, progress=progress, runtime=runtime)
    except DecodeError as e:
        if on_bad_video != "skip":
            raise
        print(f"decode: skipping bad video: {e}", file=sys.stderr)
        with atomic_path(frames_out) as tmp:
            NpyAppender(tmp, (settings.stride, settings.crop, settings.crop, 3)).close()
        meta = skipped_meta(video, settings, str(e))
    meta["timing"] = {"startup_s": startup_s, "setup_s": 0.0, "compute_s": compute(), "peak_rss_mb": peak_rss_mb()}
    if name:
        meta["video"] = name
    atomic_write_json(meta_out, meta)
    return meta


def main(argv=None) -> int:
    startup_s = process_age_s()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("--frames", required=True, help="output frames.npy")
    ap.add_argument("--meta", required=True, help="output meta.json")
    ap.add_argument("--settings", default="{}", help="DecodeSettings as JSON")
    ap.add_argument("--runtime", default="{}", help="DecodeRuntime as JSON (chunk size, threads)")
    ap.add_argument("--on-bad-video", choices=("skip", "fail"), default="skip")
    ap.add_argument("--name", help="the video's name in the run (default: the file's stem)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    settings = from_dict(DecodeSettings, json.loads(args.settings), "decode")
    runtime = from_dict(DecodeRuntime, json.loads(args.runtime), "decode runtime")
    try:
        run(args.video, args.frames, args.meta, settings, args.on_bad_video, progress=not args.no_progress,
            startup_s=startup_s, name=args.name, runtime=runtime)
    except DecodeError as e:
        print(f"decode: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
