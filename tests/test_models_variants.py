"""Typed variants resolve every model name to the configs it had before.

Every model name resolves to exactly the configs it resolved to before the ``Variant`` table
replaced the positional tuples (golden file captured from that code), and the table refuses changes
to fields that do not exist.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from cram.consolidation.config import PRESETS, VARIANTS, Variant, resolve, token_refusal
from cram.core.errors import ConfigError
from cram.models import MODEL_NAMES, MODEL_VARIANTS, ModelVariant

GOLDEN = json.loads((Path(__file__).parent / "data" / "variants_golden.json").read_text())
ROOT = Path(__file__).resolve().parents[1]
#: model fields added after the golden file that a preset sets away from their default:
#: cpu-tiny keeps the layer its pinned runs (tests/data/golden_cpu_tiny) were made with
PRESET_SETS = {"cpu-tiny": {"working_dropout": 0.0}}


def test_golden_covers_every_name_and_preset():
    assert sorted(GOLDEN) == sorted(MODEL_NAMES)
    assert all(sorted(GOLDEN[name]) == sorted(PRESETS) for name in GOLDEN)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_resolved_configs_are_unchanged(name):
    for preset, want in GOLDEN[name].items():
        config = resolve(name, preset)
        model = json.loads(json.dumps(dataclasses.asdict(config.model)))  # tuples → lists
        assert {k: v for k, v in model.items() if k in want["model"]} == want["model"], (
            name, preset)
        # model fields added since must sit at their defaults too (issue 28: semantic_input)
        added = {k: v for k, v in model.items() if k not in want["model"]}
        defaults = {f.name: f.default for f in dataclasses.fields(config.model)}
        preset_sets = PRESET_SETS.get(preset, {})
        assert added == {k: preset_sets.get(k, defaults[k]) for k in added}, (name, preset)
        train = json.loads(json.dumps(dataclasses.asdict(config.train)))
        # fields added after the golden file was captured must sit at their defaults
        added = {k: v for k, v in train.items() if k not in want["train"]}
        defaults = {f.name: f.default for f in dataclasses.fields(config.train)}
        assert added == {k: defaults[k] for k in added}, (name, preset)
        assert {k: train[k] for k in want["train"]} == want["train"], (name, preset)
        mv = MODEL_VARIANTS[name]
        assert f"{mv.module}.{mv.cls}" == want["model_class"]


def test_every_variant_is_one_record_of_the_one_table():
    assert list(VARIANTS) == list(MODEL_NAMES)
    assert all(VARIANTS[name].model is MODEL_VARIANTS[name] for name in MODEL_NAMES)
    assert VARIANTS["cram-no-consolidation"].train["consolidation_weight"] == 0.0
    assert dict(VARIANTS["cram"].train) == {} and dict(VARIANTS["cram"].model.changes) == {}
    assert {name for name in MODEL_NAMES if token_refusal(name)} == {"cram-static"}
    assert token_refusal("cram-static").startswith("it routes by the query mask")
    assert token_refusal("cram") == ""
    with pytest.raises(ConfigError, match="unknown model"):
        token_refusal("nope")


def test_variant_changes_are_checked_and_frozen():
    with pytest.raises(ConfigError, match="unknown ModelConfig fields.*q_spaec"):
        ModelVariant("x", "typo", "cram", "CRAM", {"q_spaec": "raw"})
    with pytest.raises(ConfigError, match="unknown TrainConfig fields.*cost_gat"):
        Variant(ModelVariant("x", "typo", "cram", "CRAM", train={"cost_gat": "none"}))
    with pytest.raises(TypeError):
        MODEL_VARIANTS["cram-raw-q"].changes["q_space"] = "value"  # read-only mapping
    with pytest.raises(TypeError):
        MODEL_VARIANTS["cram-ungated"].train["cost_gate"] = "familiarity"  # read-only mapping
    with pytest.raises(dataclasses.FrozenInstanceError):
        MODEL_VARIANTS["cram"].name = "other"


def test_a_bad_value_in_a_variant_fails_when_applied():
    bad = ModelVariant("x", "bad value", "cram", "CRAM", {"router_reads": "qq"})
    with pytest.raises(ConfigError, match="router_reads"):
        Variant(bad).apply(PRESETS["cpu-tiny"])


def test_docs_table_lists_every_variant_with_its_description():
    text = (ROOT / "docs" / "models.md").read_text().split("## Variants", 1)[1].split("\n## ")[0]
    rows = dict(re.findall(r"^\| `([\w-]+)` \| (.+?) \|", text, flags=re.M))
    for name, variant in VARIANTS.items():
        assert name in rows, f"docs/models.md has no row for {name}"
        assert rows[name] == variant.description, name
