"""pipeline/settings.py is the one declaration of the stage settings: the schema agrees with it, and every
stage CLI validates through it (an unknown or mistyped key names the key and the stage)."""
import subprocess
import sys
import typing
from dataclasses import fields, is_dataclass

import pytest
import yaml

from conftest import REPO
from models.tvl1_params import TVL1Params
from pipeline.settings import (DecodeSettings, DemoSettings, FeatureRuntime, FeatureSettings, FlowRuntime,
                               FlowSettings, LocalizeSettings, TrainSettings, from_dict)

SCHEMA = yaml.safe_load((REPO / "pipeline" / "schemas" / "config.schema.yaml").read_text())
CONFIG = yaml.safe_load((REPO / "workflow_config.yaml").read_text())


def resolve(node):
    while "$ref" in node:
        target = SCHEMA
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    for sub in node.get("allOf", []):
        node = {**resolve(sub), **{k: v for k, v in node.items() if k != "allOf"}}
    return node


def props(node) -> dict:
    return {k: resolve(v) for k, v in resolve(node).get("properties", {}).items()}


# schema places -> the dataclass they fill, and the keys there that are not its fields (where they go instead)
BLOCKS = [
    (lambda: {**props(SCHEMA["properties"]["decode"]),
              **{k: v for k, v in props(SCHEMA["$defs"]["preset"]).items()
                 if k in ("fps", "snippet_frames", "snippet_stride", "short_side", "crop")}}, DecodeSettings, set()),
    (lambda: {k: v for k, v in props(SCHEMA["properties"]["flow"]).items()
              if k in {f.name for f in fields(FlowSettings)}}, FlowSettings, set()),
    (lambda: {k: v for k, v in props(SCHEMA["properties"]["flow"]).items()
              if k not in {f.name for f in fields(FlowSettings)}}, FlowRuntime, {"cache_dir"}),
    (lambda: {("lambda_" if k == "lambda" else k): v for k, v in props(SCHEMA["$defs"]["tvl1"]).items()},
     TVL1Params, set()),
    (lambda: {k: v for k, v in props(SCHEMA["properties"]["features"]).items()
              if k in {f.name for f in fields(FeatureSettings)}}, FeatureSettings, set()),
    (lambda: {k: v for k, v in props(SCHEMA["properties"]["features"]).items()
              if k not in {f.name for f in fields(FeatureSettings)}}, FeatureRuntime, set()),
    (lambda: {**props(SCHEMA["$defs"]["d2net"]), **{k: v for k, v in props(SCHEMA["properties"]["train"]).items()
                                                   if k not in ("threads", "seeds")},
              **{k: props(SCHEMA["$defs"]["experiments"]["additionalProperties"])[k] for k in ("variant", "seed")}},
     TrainSettings, set()),
    (lambda: {k: v for k, v in props(SCHEMA["$defs"]["localize"]).items() if k != "report_videos"},
     LocalizeSettings, set()),
    (lambda: {k: v for k, v in props(SCHEMA["$defs"]["generate"]).items() if k != "root"}, DemoSettings, set()),
]


def accepts(schema: dict, hint) -> bool:
    """Whether every value the schema allows is one the dataclass field's type takes."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType) \
        else (hint,)
    if "oneOf" in schema or "anyOf" in schema:
        return all(accepts(resolve(s), hint) for s in schema.get("oneOf", []) + schema.get("anyOf", []))
    if "const" in schema:
        return type(schema["const"]) in options
    if "enum" in schema:
        return all(type(v) in options or (type(v) is int and float in options) for v in schema["enum"])
    if schema.get("type") == "object":
        return is_dataclass(hint)
    kind = {"integer": (int, float), "number": (float,), "boolean": (bool,), "string": (str,),
            "array": (tuple,)}[schema["type"]]
    return any(k in options or typing.get_origin(o) is k for k in kind for o in options)


@pytest.mark.parametrize("block", range(len(BLOCKS)))
def test_the_schema_declares_exactly_the_settings_fields_with_their_types(block):
    get, cls, computed = BLOCKS[block]
    schema = get()
    names = {f.name for f in fields(cls)}
    assert set(schema) == names - computed, cls.__name__
    hints = typing.get_type_hints(cls)
    wrong = [k for k, s in schema.items() if not accepts(s, hints[k])]
    assert wrong == [], f"{cls.__name__}: schema types disagree with the dataclass for {wrong}"


def test_every_default_config_block_builds_its_settings():
    from pipeline import workflow as wf

    for preset in CONFIG["presets"]:
        config = {**CONFIG, "preset": preset, "videos": "somewhere"}
        wf.decode_settings(config), wf.flow_settings(config), wf.flow_runtime(config)
        wf.feature_settings(config), wf.feature_runtime(config)
        if "d2net" in CONFIG["presets"][preset]:
            for e in CONFIG["experiments"]:
                wf.train_settings(config, e)
            wf.localize_settings(config)


@pytest.mark.parametrize("cls, bad, message", [
    (FlowSettings, {"bound": "abc"}, "flow setting bound: expected float, got 'abc'"),
    (FlowSettings, {"tvl1": {"wraps": 2}}, "unknown flow setting(s): tvl1.wraps"),
    (DecodeSettings, {"crop": "224"}, "decode setting crop: expected int, got '224'"),
    (LocalizeSettings, {"nms_iuo": 0.4}, "unknown localize setting(s): nms_iuo"),
])
def test_a_mistyped_or_unknown_key_names_the_key_and_the_stage(cls, bad, message):
    with pytest.raises(ValueError) as e:
        from_dict(cls, bad, message.split(" setting")[0].replace("unknown ", ""))
    assert str(e.value) == message


@pytest.mark.parametrize("stage, args, message", [
    ("decode", ["x.mp4", "--frames", "f.npy", "--meta", "m.json", "--settings", '{"crp": 224}'],
     "unknown decode setting(s): crp"),
    ("flow", ["f.npy", "--decode-meta", "m.json", "--flow", "o.npy", "--meta", "o.json", "--settings",
              '{"bound": "abc"}'], "flow setting bound: expected float, got 'abc'"),
    ("features", ["f.npy", "--flow", "o.npy", "--flow-meta", "m.json", "--out", "x.npy", "--provenance", "x.json",
                  "--runtime", '{"batch_size": 2.5}'], "features runtime setting batch_size: expected int, got 2.5"),
])
def test_stage_clis_validate_through_the_settings_module(tmp_path, stage, args, message):
    r = subprocess.run([sys.executable, "-m", f"pipeline.{stage}", *args], cwd=tmp_path, capture_output=True,
                       text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode != 0 and message in r.stderr, r.stderr[-2000:]
