"""pipeline/core/settings.py is the one declaration of every setting: workflow_config.yaml agrees with it, the
configuration reference is generated from it, the stage CLIs validate through it, and the precedence
(defaults < yaml < preset < command line) holds for every key a preset sets."""
import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, resolved
from declared import changed, command_line_word, lookup, nested
from pipeline.core import settings as S
from pipeline.workflow import rules as wf
from pipeline.core.settings import DecodeSettings, FlowSettings, LocalizeSettings, SettingsError, from_dict

CONFIG_TEXT = (REPO / "workflow_config.yaml").read_text()
CONFIG = yaml.safe_load(CONFIG_TEXT)
WHY = "not the declared default"  # what a yaml line says when its value differs from the declaration


def top_level_lines() -> dict[str, str]:
    """dotted key -> its line, for the yaml's top level (before presets:), by indentation."""
    out, path = {}, []
    for line in CONFIG_TEXT.split("\npresets:")[0].splitlines():
        m = re.match(r"^( *)([A-Za-z_][\w]*):", line)
        if not m:
            continue
        depth = len(m.group(1)) // 2
        path = path[:depth] + [m.group(2)]
        out[".".join(path)] = line
    return out


def test_the_yaml_top_level_equals_the_declared_defaults_unless_it_says_why():
    lines, defaults = top_level_lines(), S.defaults()
    differ = []
    for key, *_ in S.declared_settings():
        try:
            given = lookup(CONFIG, key)
        except (KeyError, TypeError):
            continue  # the yaml keeps the user-facing values; the declaration fills the rest
        if given != lookup(defaults, key) and WHY not in lines.get(key, ""):
            differ.append(f"{key}: yaml {given!r}, declared {lookup(defaults, key)!r}")
    assert differ == []


def test_every_yaml_key_is_declared():
    with pytest.raises(SettingsError, match=r"unknown decode setting\(s\): decode.chunk_snipets"):
        S.validate_config({**S.defaults(), "decode": {"chunk_snipets": 3}})
    for name in CONFIG["presets"]:
        resolved(name)  # every preset resolves, its keys known and typed


def test_the_configuration_reference_is_current():
    page = (REPO / "docs" / "configuration.md").read_text()
    assert page == S.reference_markdown(CONFIG["presets"]), \
        "docs/configuration.md is stale: python -m pipeline.core.settings > docs/configuration.md"
    for key, *_ in S.declared_settings():
        assert f"| `{key}` |" in page


def test_every_setting_has_a_kind_readers_and_a_description():
    for key, cls, name, info in S.declared_settings():
        kind = S.kind_of(cls, name)
        assert kind in S.KINDS and info.description, key
        assert bool(S.readers_of(cls, name)) == (kind == S.COMPUTED), key


@pytest.mark.parametrize("preset", sorted(CONFIG["presets"]))
def test_the_command_line_wins_over_the_preset_for_every_key_it_sets(preset, tmp_path):
    """Each key a preset sets, nested ones included, given on the command line (as the strings Snakemake hands
    over) reaches the resolved settings, unless the preset pins it."""
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"")
    overlay = CONFIG["presets"][preset]
    declared = {key: info for key, _, _, info in S.declared_settings()}
    plain = resolved(preset)
    checked = 0
    for key in S.dotted_keys({k: v for k, v in overlay.items() if k not in overlay.get("pinned", []) + ["pinned"]}):
        if key not in declared:
            continue  # the annotations block and other structure: replaced whole, below
        value = changed(declared[key], lookup(plain, key), str(weights))
        got = resolved(preset, **nested(key, command_line_word(value)))
        assert lookup(got, key) == (list(value) if isinstance(value, tuple) else value), key
        checked += 1
    assert checked or preset == "folder"


def test_a_nested_command_line_key_merges_into_the_presets_block():
    tvl1 = resolved("demo", flow={"tvl1": {"warps": "2"}})["flow"]["tvl1"]
    # the command line's warps, the demo's other TV-L1 values, the defaults for the rest
    assert (tvl1["warps"], tvl1["nscales"], tvl1["inner_iterations"], tvl1["tau"]) == (2, 2, 10, 0.25)


def test_a_pinned_key_from_the_command_line_is_refused_naming_the_preset_and_the_key():
    with pytest.raises(wf.ConfigError, match="preset demo pins videos to 'data/demo/videos'"):
        resolved("demo", videos="my/videos")
    assert resolved("demo", videos="data/demo/videos")["videos"] == "data/demo/videos"  # the same value is fine


def test_localization_and_evaluation_settings_never_reach_training():
    config = resolved("demo")
    trained = wf.as_param(wf.train_settings(config, "d2net")) + str(wf.selection_args(config, "d2net"))
    for key in ("nms_iou", "keep_fraction", "class_selection", "protocol", "tiou_thresholds"):
        assert key not in trained
    profile = resolved("thumos14", experiments="reference_code")  # the documented exception
    assert "nms_iou" in str(wf.selection_args(profile, "reference_code"))


@pytest.mark.parametrize("cls, bad, message", [
    (FlowSettings, {"bound": "abc"}, "flow setting bound: Input should be a valid number, unable to parse string "
                                     "as a number, got 'abc'"),
    (FlowSettings, {"tvl1": {"wraps": 2}}, "unknown flow setting(s): tvl1.wraps"),
    (DecodeSettings, {"crop": 300}, "decode: crop 300 is larger than short_side 256"),
    (LocalizeSettings, {"nms_iuo": 0.4}, "unknown localize setting(s): nms_iuo"),
    (LocalizeSettings, {"nms_iou": 1.5}, "localize setting nms_iou: Input should be less than or equal to 1, got 1.5"),
])
def test_a_mistyped_or_unknown_key_names_the_key_and_the_stage(cls, bad, message):
    with pytest.raises(ValueError) as e:
        from_dict(cls, bad, message.split(" setting")[0].split(":")[0].replace("unknown ", ""))
    assert str(e.value) == message


def test_command_line_words_become_the_declared_types():
    s = from_dict(FlowSettings, {"bound": "15", "tvl1": {"lambda": "0.2", "median_filtering": "1"}}, "flow")
    assert (s.bound, s.tvl1.lambda_, s.tvl1.median_filtering) == (15.0, 0.2, 1)
    d = from_dict(DecodeSettings, {"fps": "native", "snippet_stride": "null", "autorotate": "false"}, "decode")
    assert (d.fps, d.snippet_stride, d.autorotate) == ("native", None, False)
    with pytest.raises(SettingsError, match="decode setting snippet_frames: Input should be a valid integer"):
        from_dict(DecodeSettings, {"snippet_frames": "2.5"}, "decode")


@pytest.mark.parametrize("stage, args, message", [
    ("decode", ["x.mp4", "--frames", "f.npy", "--meta", "m.json", "--settings", '{"crp": 224}'],
     "unknown decode setting(s): crp"),
    ("flow", ["f.npy", "--decode-meta", "m.json", "--flow", "o.npy", "--meta", "o.json", "--settings",
              '{"bound": "abc"}'], "flow setting bound: Input should be a valid number"),
    ("features", ["f.npy", "--flow", "o.npy", "--flow-meta", "m.json", "--out", "x.npy", "--provenance", "x.json",
                  "--runtime", '{"batch_size": 2.5}'], "features runtime setting batch_size: Input should be a valid "
                                                       "integer, got a number with a fractional part, got 2.5"),
])
def test_stage_clis_validate_through_the_settings_module(tmp_path, stage, args, message):
    r = subprocess.run([sys.executable, "-m", f"pipeline.{stage}", *args], cwd=tmp_path, capture_output=True,
                       text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode != 0 and message in r.stderr, r.stderr[-2000:]
