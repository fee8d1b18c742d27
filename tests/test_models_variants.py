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

from cram.consolidation.config import (
    BEFORE_ISSUE_28_TRAIN,
    PRESETS,
    SHORTCUT_CLOSED,
    VARIANTS,
    TrainConfig,
    Variant,
    resolve,
    token_refusal,
)
from cram.core.errors import ConfigError
from cram.core.identity import LEGACY_VALUES, RETIRED_FIELDS, drop_retired
from cram.models import MODEL_NAMES, MODEL_VARIANTS, ModelVariant

GOLDEN = json.loads((Path(__file__).parent / "data" / "variants_golden.json").read_text())
ROOT = Path(__file__).resolve().parents[1]
#: model fields added after the golden file that a preset sets away from their default:
#: cpu-tiny keeps the layer its pinned runs (tests/data/golden_cpu_tiny) were made with
PRESET_SETS = {"cpu-tiny": {"working_dropout": 0.0}}
#: the golden file's presets are, since issue 28 (2026-12-07), the ``*-labelled`` ones: the
#: demo, cpu and paper presets as they were (cpu-tiny kept its values)
LABELLED = {"cpu-tiny": "cpu-tiny", "demo": "demo-labelled", "cpu": "cpu-labelled",
            "paper": "paper-labelled"}
#: what issue 28 changed in the demo, cpu and paper presets (besides the task, SHORTCUT_CLOSED)
ISSUE_28_MODEL = {"router_feature", "familiarity_hidden", "semantic_rank"}
ISSUE_28_TRAIN = {"consolidation_raw_weight", "router_consistency_weight", "cost_gate", "steps"}


def test_golden_covers_every_name_and_preset():
    assert sorted(GOLDEN) == sorted(MODEL_NAMES)
    assert all(sorted(GOLDEN[name]) == sorted(LABELLED) for name in GOLDEN)
    assert sorted(PRESETS) == sorted({*LABELLED, *LABELLED.values()})


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_resolved_configs_are_unchanged(name):
    for preset, want in GOLDEN[name].items():
        config = resolve(name, LABELLED[preset])
        model = json.loads(json.dumps(dataclasses.asdict(config.model)))  # tuples → lists
        assert {k: v for k, v in model.items() if k in want["model"]} == want["model"], (
            name, preset)
        # model fields added since must sit at their defaults too
        added = {k: v for k, v in model.items() if k not in want["model"]}
        defaults = {f.name: f.default for f in dataclasses.fields(config.model)}
        preset_sets = PRESET_SETS.get(preset, {})
        assert added == {k: preset_sets.get(k, defaults[k]) for k in added}, (name, preset)
        train = json.loads(json.dumps(dataclasses.asdict(config.train)))
        # fields added after the golden file was captured must sit at their defaults
        added = {k: v for k, v in train.items() if k not in want["train"]}
        defaults = {**{f.name: f.default for f in dataclasses.fields(config.train)},
                    **BEFORE_ISSUE_28_TRAIN, **VARIANTS[name].train}
        assert added == {k: defaults[k] for k in added}, (name, preset)
        # fields removed since (RETIRED_FIELDS) sat at their off value
        retired = {k.split(".", 1)[1]: v for k, v in RETIRED_FIELDS.items()
                   if k.startswith("train.")}
        assert {k: want["train"][k] for k in retired if k in want["train"]} == {
            k: v for k, v in retired.items() if k in want["train"]}, (name, preset)
        assert {k: train[k] for k in want["train"] if k not in retired} == {
            k: v for k, v in want["train"].items() if k not in retired}, (name, preset)
        mv = MODEL_VARIANTS[name]
        assert f"{mv.module}.{mv.cls}" == want["model_class"]


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("preset", ["demo", "cpu", "paper"])
def test_issue_28_presets_differ_from_the_labelled_ones_in_the_named_fields_only(name, preset):
    new, old = resolve(name, preset), resolve(name, f"{preset}-labelled")
    for section, changed in (("data", set(SHORTCUT_CLOSED)), ("model", ISSUE_28_MODEL),
                             ("train", ISSUE_28_TRAIN)):
        a, b = dataclasses.asdict(getattr(new, section)), dataclasses.asdict(getattr(old, section))
        assert {k for k in a if a[k] != b[k]} <= changed, (section, name, preset)
    assert new.data.library_answer == "unlabelled" and new.data.key_encoding == "vector"
    variant = VARIANTS[name]
    for field, value in BEFORE_ISSUE_28_TRAIN.items():  # a variant's own value wins
        assert getattr(new.train, field) == variant.train.get(
            field, getattr(TrainConfig(), field)), (name, field)
        assert getattr(old.train, field) == variant.train.get(field, value), (name, field)


def test_labelled_presets_are_the_presets_before_issue_28():
    """Every run made on demo/cpu/paper before 2026-12-07 is one preset name away."""
    before = json.loads((Path(__file__).parent / "data" / "presets_before_issue28.json")
                        .read_text())
    for name, record in before.items():
        record = {k: drop_retired(k, v, "golden") for k, v in record.items()}
        for dotted, value in LEGACY_VALUES.items():  # fields added since, at their old meaning
            section, field = dotted.split(".", 1)
            record[section].setdefault(field, value)
        now = PRESETS[LABELLED[name]].to_dict()
        assert json.loads(json.dumps(now, sort_keys=True, default=list)) == record, name


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
