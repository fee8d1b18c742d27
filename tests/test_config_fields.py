"""One validator for every config: type hints plus field metadata (``cram.core.fields``).

The configs (``SRCDConfig``, ``ModelConfig``, ``TrainConfig``) declare bounds as metadata and call
``check_fields``; ``ExperimentConfig.from_dict`` asks the same ``expected`` of config.json values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from cram.consolidation.config import ExperimentConfig, TrainConfig
from cram.core.errors import ConfigError
from cram.core.fields import check_fields, config_field, expected
from cram.models import ModelConfig
from cram.tasks.srcd_stream import SRCDConfig


@dataclass(frozen=True)
class Cfg:
    n: int = config_field(1, min=1)
    k: int = config_field(0, min=0)
    rate: float = config_field(0.5, gt=0, lt=1)
    share: float = config_field(0.5, range=(0, 1))
    cap: float = config_field(0.5, gt=0, max=1)
    scale: float = config_field(1.0, gt=0, finite=True)
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    window: int | None = config_field(None, min=1)
    layers: tuple[int, ...] = (1,)
    device: str = config_field("cpu", pattern=(r"cpu|cuda(:\d+)?", "cpu or cuda[:N]"))

    def __post_init__(self) -> None:
        check_fields(self)


@pytest.mark.parametrize("changes,message", [
    ({"n": 0}, "Cfg.n=0: must be an integer >= 1"),
    ({"n": 2.0}, "Cfg.n=2.0: must be an integer >= 1"),
    ({"n": True}, "Cfg.n=True: must be an integer >= 1"),
    ({"k": -1}, "Cfg.k=-1: must be an integer >= 0"),
    ({"rate": 1.0}, "Cfg.rate=1.0: must lie in (0, 1)"),
    ({"share": 1.5}, "Cfg.share=1.5: must lie in [0, 1]"),
    ({"share": float("nan")}, "Cfg.share=nan: must lie in [0, 1]"),
    ({"cap": 0}, "Cfg.cap=0: must lie in (0, 1]"),
    ({"scale": float("inf")}, "Cfg.scale=inf: must be a finite number > 0"),
    ({"scale": "x"}, "Cfg.scale='x': must be a finite number > 0"),
    ({"flag": 1}, "Cfg.flag=1: must be true or false"),
    ({"mode": "c"}, "Cfg.mode='c': must be one of ['a', 'b']"),
    ({"window": 0}, "Cfg.window=0: must be an integer >= 1 or None"),
    ({"layers": (1, "x")}, "Cfg.layers=(1, 'x'): must be a list of integers"),
    ({"device": "gpu"}, "Cfg.device='gpu': must be cpu or cuda[:N]"),
])
def test_a_bad_field_is_one_line_naming_class_field_and_rule(changes, message):
    with pytest.raises(ConfigError) as err:
        Cfg(**changes)
    assert str(err.value) == message


def test_good_values_pass_and_metadata_leaves_defaults_and_asdict_alone():
    Cfg(n=3, k=0, rate=0.01, share=1, cap=1, window=None, layers=[0, 2], device="cuda:1")
    Cfg(window=4, flag=True, mode="b")
    assert dataclasses.asdict(Cfg()) == {"n": 1, "k": 0, "rate": 0.5, "share": 0.5, "cap": 0.5,
                                         "scale": 1.0, "flag": False, "mode": "a",
                                         "window": None, "layers": (1,), "device": "cpu"}


@pytest.mark.parametrize("hint,value,want", [
    (bool, 1, "true or false"), (int, 1.5, "an integer"), (int, True, "an integer"),
    (float, "x", "a number"), (str, 3, "a string"), (Literal["a", "b"], "c", "one of ['a', 'b']"),
    (int | None, "x", "an integer or null"), (tuple[int, ...], "x", "a list of integers"),
    (bool, False, None), (float, 3, None), (int | None, None, None), (tuple[int, ...], [1], None),
])
def test_expected_answers_whether_a_value_is_of_a_hint(hint, value, want):
    assert expected(hint, value) == want


@pytest.mark.parametrize("klass,changes,message", [
    (TrainConfig, {"steps": 0}, "TrainConfig.steps=0: must be an integer >= 1"),
    (TrainConfig, {"prefetch": -1}, "TrainConfig.prefetch=-1: must be an integer >= 0"),
    (TrainConfig, {"lr": 0.0}, "TrainConfig.lr=0.0: must be a number > 0"),
    (TrainConfig, {"cost_query": -1.0}, "TrainConfig.cost_query=-1.0: must be a number >= 0"),
    (TrainConfig, {"schedule_threshold": 2.0},
     "TrainConfig.schedule_threshold=2.0: must lie in [0, 1]"),
    (TrainConfig, {"device": "gpu"},
     "TrainConfig.device='gpu': must be auto, cpu, cuda[:N] or mps"),
    (ModelConfig, {"mod_capacity": 0.0}, "ModelConfig.mod_capacity=0.0: must lie in (0, 1]"),
    (ModelConfig, {"attention_window": 0},
     "ModelConfig.attention_window=0: must be an integer >= 1 or None"),
    (SRCDConfig, {"n_values": 1}, "SRCDConfig.n_values=1: must be an integer >= 2"),
    (SRCDConfig, {"gap_max": float("inf")}, "SRCDConfig.gap_max=inf: must be a finite number > 0"),
])
def test_the_configs_use_the_one_validator(klass, changes, message):
    with pytest.raises(ConfigError) as err:
        klass(**changes)
    assert str(err.value) == message


def test_the_configs_accept_their_defaults_and_the_devices_they_did():
    for device in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        TrainConfig(device=device)
    ModelConfig(attention_window=8, attention_layers=(0, 1))
    with pytest.raises(ConfigError, match=r"attention_layers=\(2,\): indices must lie in \[0, 2\)"):
        ModelConfig(attention_layers=(2,))


def test_from_dict_checks_types_with_the_same_answer_and_ranges_in_the_dataclass():
    doc = ExperimentConfig().to_dict()
    doc["train"]["steps"] = "x"
    with pytest.raises(ConfigError, match=r"^RUN: train.steps='x': expected an integer$"):
        ExperimentConfig.from_dict(doc, source="RUN")
    doc["train"]["steps"] = 0
    with pytest.raises(ConfigError, match=r"^RUN: TrainConfig.steps=0: must be an integer >= 1$"):
        ExperimentConfig.from_dict(doc, source="RUN")
    doc["train"]["steps"] = 5
    doc["model_config"]["attention_layers"] = [0, 1]
    assert ExperimentConfig.from_dict(doc).model.attention_layers == (0, 1)
