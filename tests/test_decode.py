import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.decode import DecodeError, DecodeRuntime, DecodeSettings, decode_video, open_frames, resample, resize_crop, run
from pipeline.core.io import NpyAppender
from pipeline.demo_data import write_video
from conftest import brightness_frames, frame_index, garbage

SMALL = DecodeSettings(fps=25, snippet_frames=16, short_side=64, crop=48)


def decoded_indices(frames_npy):
    f = open_frames(frames_npy)
    return [frame_index(x) for x in f.reshape(-1, *f.shape[2:])]


def expected_indices(times, fps, end):
    """FFmpeg fps-filter rule, computed independently: frame k shows the last source frame with round(t*fps) <= k."""
    n_out = math.floor(end * fps + 0.5)
    rounded = [math.floor(t * fps + 0.5) for t in times]
    return [max(i for i, r in enumerate(rounded) if r <= k) for k in range(n_out)]


# ------------------------------------------------------------------- numerics


def test_resample_constant_rate_is_identity():
    frames = [(i / 25, i, None) for i in range(10)]
    assert list(resample(frames, 25)) == list(range(10))


def test_resample_down_and_up():
    # 50 fps -> 25 fps keeps every other frame; 10 fps -> 25 fps repeats frames.
    assert list(resample([(i / 50, i, 0.02) for i in range(8)], 25)) == [0, 2, 4, 6]
    # Frame times round to output slots 0, 3 (2.5 rounds up) and 5; the last frame lasts until 0.3 s.
    assert list(resample([(i / 10, i, 0.1) for i in range(3)], 25)) == [0, 0, 0, 1, 1, 2, 2, 2]
    # Without a duration, the last frame lasts one output period.
    assert list(resample([(i / 10, i, None) for i in range(3)], 25)) == [0, 0, 0, 1, 1, 2]
    times = [0.0, 0.02, 0.1, 0.33, 0.34]
    got = list(resample([(t, i, 0.04) for i, t in enumerate(times)], 25))
    assert got == expected_indices(times, 25, 0.38)


def test_resample_drops_non_increasing_timestamps():
    assert list(resample([(0.0, 0, None), (0.04, 1, None), (0.04, 9, None), (0.02, 8, None), (0.08, 2, None)], 25)) \
        == [0, 1, 2]


def test_resize_crop_short_side_and_center():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :, 0] = np.arange(200)[None, :]  # column index in red
    out = resize_crop(img, 50, 40)
    assert out.shape == (40, 40, 3)
    # Resized to 50x100, the crop starts at column 30 of the resized image, i.e. column ~60 of the source.
    assert abs(int(out[0, 0, 0]) - 60) <= 1 and abs(int(out[0, -1, 0]) - 138) <= 1
    assert resize_crop(np.zeros((256, 340, 3), np.uint8), 256, 224).shape == (224, 224, 3)


def test_appender_writes_a_standard_npy(tmp_path):
    w = NpyAppender(tmp_path / "x.npy", (2, 3, 3, 3))
    for i in range(3):
        w.write(np.full((1, 2, 3, 3, 3), i, np.uint8))
    w.close()
    a = np.load(tmp_path / "x.npy", allow_pickle=False)
    assert a.shape == (3, 2, 3, 3, 3) and a[:, 0, 0, 0, 0].tolist() == [0, 1, 2]
    assert np.load(tmp_path / "x.npy", mmap_mode="r").shape == (3, 2, 3, 3, 3)
    w = NpyAppender(tmp_path / "f.npy", (4,), np.float32)
    w.write(np.arange(8, dtype=np.float32).reshape(2, 4))
    w.close()
    assert np.load(tmp_path / "f.npy").tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


# ------------------------------------------------------------ real videos


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    frames = brightness_frames(41)
    write_video(d / "cfr25.mp4", frames, 25, crf=0)
    write_video(d / "cfr50.mp4", frames, 50, crf=0)
    write_video(d / "cfr30.mp4", frames, 30, crf=0)
    rng = np.random.default_rng(0)
    vfr_times = np.concatenate([[0.0], np.cumsum(rng.choice([0.013, 0.04, 0.07, 0.11], 40))])
    write_video(d / "vfr.mp4", frames, 25, crf=0, times_s=vfr_times)
    return d, vfr_times


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_decode_constant_rate(tmp_path, videos, backend):
    d, _ = videos
    s = DecodeSettings(**{**SMALL.__dict__, "backend": backend})
    meta = decode_video(d / "cfr25.mp4", tmp_path / "f.npy", s)
    assert meta["n_snippets"] == 2 and meta["n_frames"] == 32 and meta["n_frames_resampled"] == 41
    assert meta["n_frames_source"] == 41 and meta["source_duration_s"] == pytest.approx(41 / 25)
    assert meta["snippet_duration_s"] == 0.64
    assert open_frames(tmp_path / "f.npy").shape == (2, 16, 48, 48, 3)
    assert decoded_indices(tmp_path / "f.npy") == list(range(32))  # tail of 9 frames dropped


@pytest.mark.parametrize("name, rate", [("cfr50.mp4", 50), ("cfr30.mp4", 30)])
def test_decode_resamples_to_preset_fps(tmp_path, videos, name, rate):
    d, _ = videos
    meta = decode_video(d / name, tmp_path / "f.npy", SMALL)
    want = expected_indices([i / rate for i in range(41)], 25, 41 / rate)
    assert meta["n_frames_resampled"] == len(want)
    assert decoded_indices(tmp_path / "f.npy") == want[: meta["n_frames"]]


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_decode_variable_frame_rate_by_timestamps(tmp_path, videos, backend):
    d, times = videos
    s = DecodeSettings(**{**SMALL.__dict__, "backend": backend})
    meta = decode_video(d / "vfr.mp4", tmp_path / "f.npy", s)
    # The last frame lasts one frame period of the stream's average rate, as FFmpeg assumes.
    got = decoded_indices(tmp_path / "f.npy")
    want = expected_indices(list(times), 25, meta["source_duration_s"])
    assert meta["n_frames_resampled"] == len(want) and len(got) == 16 * (len(want) // 16)
    assert got == want[: len(got)]


def test_chunk_size_does_not_change_output(tmp_path, bikes_mp4):
    a = decode_video(bikes_mp4, tmp_path / "a.npy", DecodeSettings(short_side=128, crop=112), runtime=DecodeRuntime(chunk_snippets=1))
    b = decode_video(bikes_mp4, tmp_path / "b.npy", DecodeSettings(short_side=128, crop=112), runtime=DecodeRuntime(chunk_snippets=7))
    assert a == b and np.array_equal(open_frames(tmp_path / "a.npy"), open_frames(tmp_path / "b.npy"))


def test_backends_agree_on_real_video(tmp_path, bikes_mp4):
    pa = decode_video(bikes_mp4, tmp_path / "pyav.npy", DecodeSettings(backend="pyav"))
    de = decode_video(bikes_mp4, tmp_path / "decord.npy", DecodeSettings(backend="decord"))
    assert pa["n_snippets"] == de["n_snippets"] > 0 and pa["n_frames_source"] == de["n_frames_source"]
    a = open_frames(tmp_path / "pyav.npy").astype(np.int16)
    b = open_frames(tmp_path / "decord.npy").astype(np.int16)
    diff = np.abs(a - b)
    # Same frames, same resize; only the YUV->RGB conversion of the two FFmpeg builds may differ.
    assert diff.mean() < 1.5, diff.mean()
    assert np.percentile(diff, 99) <= 6
    per_frame = diff.reshape(-1, *diff.shape[2:]).mean(axis=(1, 2, 3))
    assert per_frame.max() < 3.0  # no frame is a different frame


# ------------------------------------------------------------- bad input


def _audio_only(path):
    import av

    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)


def _no_frames(path, source):
    """A valid container and video stream whose packets hold only zeros: nothing decodes."""
    data = bytearray(Path(source).read_bytes())
    start, end = data.index(b"mdat") + 4, data.index(b"moov") - 4
    assert start < end
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))


def _truncated(path, source):
    data = Path(source).read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _garbage_in_stream(path, source):
    data = bytearray(Path(source).read_bytes())
    rng = np.random.default_rng(1)
    start = len(data) // 4
    data[start:] = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


BAD = {
    "missing": (lambda p, src: None, "no such file"),
    "directory": (lambda p, src: p.mkdir(), "no such file"),
    "empty": (lambda p, src: p.write_bytes(b""), "empty file"),
    "random_bytes": (lambda p, src: p.write_bytes(garbage(5000)), "cannot open as a video"),
    "truncated": (_truncated, "cannot open as a video|no decodable|too short|decoding failed"),
    "audio_only": (lambda p, src: _audio_only(p), "no video stream"),
    "no_frames": (_no_frames, "no decodable frames|cannot open as a video: Cannot create buffer source"),
    "too_short": (lambda p, src: write_video(p, brightness_frames(10), 25), r"too short: 10 frame\(s\)"),
}


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_video_clear_error_no_output(tmp_path, videos, kind, backend):
    make, message = BAD[kind]
    path = tmp_path / f"bad {kind}.mp4"
    make(path, videos[0] / "cfr25.mp4")
    out = tmp_path / "out" / "frames.npy"
    s = DecodeSettings(**{**SMALL.__dict__, "backend": backend})
    with pytest.raises(DecodeError, match=message) as err:
        decode_video(path, out, s)
    assert str(path) in str(err.value)
    assert not out.exists() and not any(out.parent.glob(".*tmp*"))


def test_corrupt_stream_is_an_error_or_decodes_what_it_can(tmp_path, bikes_mp4):
    path = tmp_path / "garbled.mp4"
    _garbage_in_stream(path, bikes_mp4)
    try:
        meta = decode_video(path, tmp_path / "f.npy", SMALL)
    except DecodeError as e:
        assert str(path) in str(e)
        assert not (tmp_path / "f.npy").exists()
    else:
        assert meta["n_snippets"] >= 1 and open_frames(tmp_path / "f.npy").shape[0] == meta["n_snippets"]


def test_skip_records_bad_video(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(garbage(3000))
    meta = run(str(bad), str(tmp_path / "f.npy"), str(tmp_path / "meta.json"), SMALL, "skip", progress=False)
    assert meta["status"] == "skipped" and "corrupt.mp4: cannot open" in meta["reason"]
    assert json.loads((tmp_path / "meta.json").read_text()) == meta
    assert open_frames(tmp_path / "f.npy").shape == (0, 16, 48, 48, 3)


def test_cli_fail_names_the_file(tmp_path):
    bad = tmp_path / "vidéo corrompue.mp4"
    bad.write_bytes(garbage(3000))
    r = subprocess.run([sys.executable, "-m", "pipeline.decode", str(bad), "--frames", str(tmp_path / "f.npy"),
                        "--meta", str(tmp_path / "m.json"), "--on-bad-video", "fail", "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert f"decode: error: {bad}: cannot open as a video" in r.stderr
    assert not (tmp_path / "f.npy").exists() and not (tmp_path / "m.json").exists()


# ----------------------------------------------------------------- memory


MEASURE = """
import resource, sys
from pipeline.decode import DecodeRuntime, DecodeSettings, decode_video
decode_video(sys.argv[1], sys.argv[2], DecodeSettings(short_side=256, crop=224), runtime=DecodeRuntime(chunk_snippets=2))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB
"""


def _peak_rss_mb(video, out):
    r = subprocess.run([sys.executable, "-c", MEASURE, str(video), str(out)], capture_output=True, text=True,
                       check=True)
    return int(r.stdout.strip().splitlines()[-1]) / 1024


def test_peak_memory_does_not_grow_with_video_length(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)

    def frames(n):  # cheap frames that still change
        for i in range(n):
            yield np.roll(base, i, axis=1)

    write_video(tmp_path / "short.mp4", frames(250), 25, crf=35)     # 10 s
    write_video(tmp_path / "long.mp4", frames(4500), 25, crf=35)     # 3 min
    short = _peak_rss_mb(tmp_path / "short.mp4", tmp_path / "s.npy")
    long = _peak_rss_mb(tmp_path / "long.mp4", tmp_path / "l.npy")
    decoded_mb = (tmp_path / "l.npy").stat().st_size / 2**20
    assert decoded_mb > 600  # the long video's frames would dominate memory if they were held
    assert long - short < 40, f"peak RSS grew from {short:.0f} MB to {long:.0f} MB with video length"


# ------------------------------------------------------------ snippet sampling


def snippet_frames(frames_npy, meta):
    """Snippet i as the frame indices it holds: blocks i .. i + window/stride - 1, as features reads them."""
    from pipeline.features import windows

    blocks = open_frames(frames_npy)
    per = meta["snippet_frames"] // meta["snippet_stride"]
    return [[frame_index(f) for f in snip] for snip in windows(np.asarray(blocks), per)]


@pytest.mark.parametrize("stride", [4, 8, 16])
def test_overlapping_snippets_start_every_stride(tmp_path, videos, stride):
    d, _ = videos
    s = DecodeSettings(**{**SMALL.__dict__, "snippet_stride": stride})
    meta = decode_video(d / "cfr25.mp4", tmp_path / "f.npy", s)
    n = (41 - 16) // stride + 1  # every window that fits in 41 frames
    assert meta["n_snippets"] == n and meta["snippet_stride"] == stride
    assert meta["snippet_stride_s"] == pytest.approx(stride / 25) and meta["snippet_duration_s"] == 0.64
    snippets = snippet_frames(tmp_path / "f.npy", meta)
    assert snippets == [list(range(i * stride, i * stride + 16)) for i in range(n)]


def test_stride_must_divide_the_window():
    with pytest.raises(ValueError, match="snippet_stride 5 must divide snippet_frames 16"):
        DecodeSettings(snippet_stride=5)
    with pytest.raises(ValueError, match="(?s)fps.*Input should be 'native'"):
        DecodeSettings(fps="auto")


def test_snippet_spans_follow_from_fps_window_and_stride():
    from pipeline.core.intervals import snippet_span

    start, end = snippet_span(np.arange(3), np.arange(3) + 1, 4 / 25, 16 / 25)
    assert np.allclose(start, [0, 0.16, 0.32]) and np.allclose(end, [0.64, 0.8, 0.96])
    assert np.allclose(snippet_span(2, 5, 0.64, 0.64), (1.28, 3.2))  # no overlap: [a, b) * window
    assert np.allclose(snippet_span(2, 5, 0.16, 0.64), (0.32, 1.28))  # last start 4 * 0.16, plus one window


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_native_fps_keeps_every_source_frame(tmp_path, videos, backend):
    d, _ = videos
    s = DecodeSettings(**{**SMALL.__dict__, "fps": "native", "backend": backend})
    meta = decode_video(d / "cfr30.mp4", tmp_path / "f.npy", s)
    assert meta["fps"] == pytest.approx(30) and meta["sampling"]["fps_setting"] == "native"
    assert meta["snippet_duration_s"] == pytest.approx(16 / 30) and meta["n_frames_resampled"] == 41
    assert decoded_indices(tmp_path / "f.npy") == list(range(32))


def test_variable_frame_rate_snippet_spans_hold_the_frames_shown_then(tmp_path, videos):
    """With a VFR source and overlapping snippets, snippet i's frames are the source frames on screen in its span."""
    from pipeline.core.intervals import snippet_span

    d, times = videos
    s = DecodeSettings(**{**SMALL.__dict__, "snippet_frames": 8, "snippet_stride": 2, "fps": 10})
    meta = decode_video(d / "vfr.mp4", tmp_path / "f.npy", s)
    snippets = snippet_frames(tmp_path / "f.npy", meta)
    assert len(snippets) == meta["n_snippets"] >= 3
    for i, got in enumerate(snippets):
        a, b = snippet_span(i, i + 1, meta["snippet_stride_s"], meta["snippet_duration_s"])
        # output frame k at time k / fps shows the last source frame whose time rounds to <= k
        want = [max(j for j, t in enumerate(times) if math.floor(t * 10 + 0.5) <= k)
                for k in range(round(float(a) * 10), round(float(b) * 10))]
        assert got == want


# ------------------------------------------------------------- phone videos: the display matrix


def phone_video(path: Path, frames, matrix) -> Path:
    """An MP4 whose track header carries ``matrix`` (9 ints, 16.16 / 2.30 fixed point), as phones write it:
    the frames stay stored landscape and players turn them."""
    import struct

    write_video(path, frames, 25)
    data = bytearray(path.read_bytes())
    identity = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.find(identity, data.find(b"tkhd"))
    assert at > 0
    data[at:at + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_a_phone_video_is_turned_as_players_show_it(tmp_path, backend):
    # stored 96 wide x 64 high with a white mark at the top-left; an upright phone's matrix (FFmpeg: -90
    # degrees) makes players turn it 90 degrees clockwise: shown 64 wide x 96 high, the mark at the top-right
    frames = []
    for _ in range(32):
        f = np.full((64, 96, 3), 40, np.uint8)
        f[:16, :24] = 255
        frames.append(f)
    video = phone_video(tmp_path / "phone.mp4", frames, (0, 0x10000, 0, -0x10000, 0, 0, 64 << 16, 0, 0x40000000))
    s = DecodeSettings(fps=25, short_side=64, crop=64, backend=backend)
    meta = decode_video(video, tmp_path / "f.npy", s)
    assert meta["display_rotation_deg"] == 90 and meta["rotation_applied"] and meta["source_size_hw"] == [96, 64]
    # the centre 64x64 (rows 16-79) of the 64x96 portrait frame, whose mark is at rows 0-23, columns 48-63
    first = open_frames(tmp_path / "f.npy")[0, 0].mean(axis=2)
    assert first[:7, 50:].mean() > 200 and first[:7, :40].mean() < 80 and first[10:, :].mean() < 80

    # autorotate: false keeps the stored frames and says so
    r = subprocess.run([sys.executable, "-m", "pipeline.decode", str(video), "--frames", str(tmp_path / "g.npy"),
                        "--meta", str(tmp_path / "g.json"), "--no-progress", "--settings",
                        json.dumps({"fps": 25, "short_side": 64, "crop": 64, "backend": backend,
                                    "autorotate": False})], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (f"decode: warning: {video}: the container asks players to turn the video 90 degrees clockwise; "
            "decoded as stored (decode.autorotate: false)") in r.stderr
    meta = json.loads((tmp_path / "g.json").read_text())
    assert meta["display_rotation_deg"] == 90 and not meta["rotation_applied"] and meta["source_size_hw"] == [64, 96]
    stored = open_frames(tmp_path / "g.npy")[0, 0].mean(axis=2)  # centre 64x64 of the 96x64 stored frame
    assert stored[:14, :6].mean() > 200 and stored[20:, :].mean() < 80


def test_display_rotation_of_ffmpeg_angles():
    from pipeline.decode import display_rotation, rotate

    assert [display_rotation(a) for a in (0, -90, 90, 180, -180, 270)] == [0, 90, 270, 180, 180, 90]
    img = np.arange(6).reshape(2, 3)
    assert rotate(img, 90).tolist() == [[3, 0], [4, 1], [5, 2]]  # clockwise: the first column becomes the top row
    assert rotate(img, 0) is img


def two_stream_mkv(path, still_first=True):
    """An MKV as some files come: a one-frame MJPEG still and a 3 s H.264 movie (grey levels 0, 3, 6, ...)."""
    import av

    with av.open(str(path), "w") as out:
        def still():
            s = out.add_stream("mjpeg", rate=1)
            s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
            return s

        def movie():
            s = out.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            return s

        a, b = (still(), movie()) if still_first else (movie(), still())
        s_still, s_movie = (a, b) if still_first else (b, a)
        for p in s_still.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 200, np.uint8), format="rgb24")):
            out.mux(p)
        for p in s_still.encode():
            out.mux(p)
        for i in range(75):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 3, np.uint8), format="rgb24")
            for p in s_movie.encode(frame):
                out.mux(p)
        for p in s_movie.encode():
            out.mux(p)
    return path


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_the_stream_a_player_would_play_is_decoded_and_recorded(tmp_path, backend):
    """A still picture as stream 0 and the movie as stream 1: the movie is decoded (4 snippets of 3 s at
    25 fps, not one snippet of the still), and meta.json says which stream and why."""
    video = two_stream_mkv(tmp_path / "two.mkv")
    meta = decode_video(video, tmp_path / "f.npy", DecodeSettings(short_side=48, crop=48, backend=backend))
    assert meta["n_snippets"] == 4 and meta["video_stream"] == 1
    assert "stream #1 (h264) of 2 video streams" in meta["video_stream_choice"] and "not #0 mjpeg" in \
        meta["video_stream_choice"]
    frames = open_frames(tmp_path / "f.npy")
    assert abs(float(frames[0, 10].mean()) - 30) < 6  # the movie's 11th frame (grey 30), not the still (200)
    single = decode_video(two_stream_mkv(tmp_path / "movie_first.mkv", still_first=False), tmp_path / "g.npy",
                          DecodeSettings(short_side=48, crop=48, backend=backend))
    assert single["video_stream"] == 0 and single["n_snippets"] == 4


def cut_by_stream_copy(tmp_path):
    """6 s at 25 fps (grey level = frame index), remuxed by stream copy with its first 1.2 s before the start:
    the MP4 gets an edit list, as `ffmpeg -ss 1.2 -c copy` off a keyframe makes."""
    import av

    src = tmp_path / "src.mp4"
    with av.open(str(src), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.options = 64, 48, "yuv420p", {"g": "50"}
        for i in range(150):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), i, np.uint8), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    cut = tmp_path / "cut.mp4"
    with av.open(str(src)) as inp, av.open(str(cut), "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        shift = round(1.2 / ist.time_base)
        for p in inp.demux(ist):
            if p.dts is None:
                continue
            p.pts -= shift
            p.dts -= shift
            p.stream = ost
            out.mux(p)
    return src, cut


def test_decord_on_an_edit_list_decodes_as_pyav_does_and_says_so(tmp_path):
    from pipeline.decode import has_edit_list

    src, cut = cut_by_stream_copy(tmp_path)
    assert has_edit_list(str(cut)) and not has_edit_list(str(src)) and not has_edit_list(str(tmp_path))
    ref = decode_video(cut, tmp_path / "a.npy", DecodeSettings(short_side=48, crop=48, backend="pyav"))
    meta = decode_video(cut, tmp_path / "b.npy", DecodeSettings(short_side=48, crop=48, backend="decord"))
    assert ref["n_frames_source"] == meta["n_frames_source"] == 120  # 4.8 s, not decord's 150
    assert meta["backend_used"] == "pyav" and "edit list" in meta["backend_note"]
    assert np.array_equal(open_frames(tmp_path / "a.npy"), open_frames(tmp_path / "b.npy"))
    plain = decode_video(src, tmp_path / "c.npy", DecodeSettings(short_side=48, crop=48, backend="decord"))
    assert plain["backend_used"] == "decord" and plain["n_frames_source"] == 150
