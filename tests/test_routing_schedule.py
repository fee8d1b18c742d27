"""The learned routing schedule (issue 13): criterion, state machine, resume, run-folder fields."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cram.consolidation.checkpoint import load_checkpoint
from cram.consolidation.config import TrainConfig, resolve
from cram.consolidation.routing_schedule import RoutingSchedule, criterion_counts
from cram.consolidation.train import train
from cram.core.errors import ConfigError

IGNORE = -100


def _logits(pred: list[int], n_values: int = 4) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor([pred]), n_values).float()  # (1, T, V)


def test_criterion_counts_only_tokens_the_baseline_misses():
    answer = torch.tensor([[0, 1, 2, 3, IGNORE]])
    full = _logits([0, 1, 2, 0, 1])  # right on tokens 0-2, wrong on 3
    baseline = _logits([0, 1, 0, 0, 1])  # no-retrieval forward: right on 0, 1 (the memorised)
    assert criterion_counts(full, answer, IGNORE) == (3.0, 4.0)  # every scored token
    assert criterion_counts(full, answer, IGNORE, baseline) == (1.0, 2.0)  # tokens 2 and 3 only


def _cfg(**kw) -> TrainConfig:
    base = {"steps": 100, "schedule": "learned", "schedule_threshold": 0.8,
            "schedule_horizon": 4, "schedule_max_fraction": 0.5, "tau_anneal_steps": 10,
            "cost_ramp_steps": 5}
    return TrainConfig(**{**base, **kw})


def test_learned_warmup_ends_one_step_after_the_criterion_holds():
    s = RoutingSchedule(_cfg())
    for step in range(10):  # signal 0.2: stays in warm-up
        assert s.warmup(step) and s.cost_scale(step) == 0.0
        assert s.update(step, 2.0, 10.0) is None
    assert s.signal == pytest.approx(0.2)
    msgs = [s.update(step, 10.0, 10.0) for step in range(10, 40)]
    fired = next(i for i, m in enumerate(msgs) if m) + 10
    assert "criterion met" in msgs[fired - 10]
    assert s.switch_step == fired + 1 and s.fired_by == "criterion"
    assert s.warmup(fired) and not s.warmup(fired + 1)
    assert s.cost_scale(fired + 1) == pytest.approx(1 / 5) and s.cost_scale(fired + 9) == 1.0
    assert s.temperature(fired + 1) == 1.0 and s.temperature(fired + 11) == pytest.approx(0.2)
    assert s.summary()["criterion_met"] and not s.summary()["max_wait_reached"]


def test_learned_warmup_needs_horizon_updates_before_firing():
    s = RoutingSchedule(_cfg(schedule_horizon=6))
    assert [s.update(k, 5.0, 5.0) is not None for k in range(6)] == [False] * 5 + [True]


def test_max_wait_ends_warmup_with_a_warning():
    s = RoutingSchedule(_cfg())
    msgs = [s.update(step, 0.0, 10.0) for step in range(50)]
    assert all(m is None for m in msgs[:49]) and "NOT met" in msgs[49]
    assert s.switch_step == 50 and s.summary()["max_wait_reached"] is True
    assert s.summary()["criterion_met"] is False


def test_max_wait_extends_while_the_signal_rises_up_to_the_hard_limit():
    # base max wait 50, hard limit 80; horizon 4, min rise 0.02 per 4 updates
    cfg = _cfg(schedule_extend_fraction=0.8, schedule_min_rise=0.02, schedule_threshold=0.99)
    s = RoutingSchedule(cfg)
    assert (s.max_wait, s.hard_max_wait) == (50, 80)
    # signal rising steadily (hit rate up 1% a step): extended past 50 to the hard limit
    msgs = [s.update(step, min(step, 98) / 100 * 10, 10.0) for step in range(80)]
    assert all(m is None for m in msgs[:79]) and "still rising at the hard limit" in msgs[79]
    assert s.switch_step == 80 and s.fired_by == "max_wait"
    # a rise that stops: warm-up ends once the last horizon gained less than min rise
    s = RoutingSchedule(cfg)
    hits = [min(step, 55) / 100 * 10 for step in range(80)]  # rises to 0.55 at step 55, flat
    msgs = [s.update(step, h, 10.0) for step, h in enumerate(hits)]
    fired = next(i for i, m in enumerate(msgs) if m)
    assert 55 < fired < 70 and "no longer rising" in msgs[fired]
    assert s.summary()["hard_max_wait"] == 80 and s.summary()["max_wait_reached"]


def _run(cfg: TrainConfig, rates: list[float]) -> tuple[RoutingSchedule, list]:
    """Feed a hit rate per step (10 counted tokens a step); the schedule and its messages."""
    s = RoutingSchedule(cfg)
    return s, [s.update(step, rate * 10, 10.0) for step, rate in enumerate(rates)]


def test_plateau_ends_warmup_where_retrieval_stops_improving_below_the_threshold():
    # issue 32: retrieval rises to 0.6 by step 30 and stays: the 0.8 threshold is never reached
    cfg = _cfg(steps=400)  # base maximum wait 200
    s, msgs = _run(cfg, [min(step, 30) / 50 for step in range(200)])
    fired = next(i for i, m in enumerate(msgs) if m)
    assert 30 + s.plateau_window <= fired < 30 + s.plateau_window + 20, fired  # far before 200
    assert "plateaued" in msgs[fired] and "WARNING" not in msgs[fired]
    assert s.fired_by == "plateau" and s.switch_step == fired + 1
    summary = s.summary()
    assert summary["plateau_met"] and not summary["criterion_met"]
    assert not summary["max_wait_reached"] and summary["plateau_window"] == 40
    assert summary["signal_lowest"] < 0.1
    assert summary["signal_at_switch"] == pytest.approx(0.6, rel=0.05)


def test_plateau_needs_a_gain_a_stall_shorter_than_the_window_and_can_be_turned_off():
    flat_low = [0.1] * 150  # nothing learned: the maximum wait's case, never a plateau
    s, _ = _run(_cfg(steps=200), flat_low)
    assert s.fired_by == "max_wait"
    # a 12-step stall at 0.4 (window 40), then the rise resumes: the threshold ends warm-up
    stall = [min(step, 20) / 50 for step in range(32)] + [0.4 + k / 40 for k in range(1, 60)]
    s, msgs = _run(_cfg(steps=400), stall)
    assert s.fired_by == "criterion"
    # schedule_plateau_horizons=0: the plateau rule is off, the maximum wait decides
    s, msgs = _run(_cfg(steps=200, schedule_plateau_horizons=0),
                   [min(step, 30) / 50 for step in range(150)])
    assert s.fired_by == "max_wait" and "NOT met" in next(m for m in msgs if m)


def test_checkpoint_state_without_the_lowest_signal_still_loads():
    a = RoutingSchedule(_cfg())
    for step in range(8):
        a.update(step, 3.0, 10.0)
    state = a.state_dict()
    assert state["lowest"] == pytest.approx(0.3)
    old = {k: v for k, v in state.items() if k != "lowest"}  # written before issue 32
    b = RoutingSchedule(_cfg())
    b.load_state_dict(old)
    assert b.lowest is None
    b.update(8, 3.0, 10.0)
    assert b.lowest == pytest.approx(0.3)


def test_fixed_schedule_keeps_device_tensors_until_read():
    s = RoutingSchedule(dataclasses.replace(_cfg(), schedule="fixed", warmup_steps=7))
    for step in range(5):
        s.update(step, *torch.tensor([3.0, 4.0], dtype=torch.float64))
    assert isinstance(s.ema_hits, torch.Tensor)  # nothing read back per step
    assert s.signal == pytest.approx(0.75)
    assert type(s.state_dict()["ema_hits"]) is float


def test_fixed_schedule_reproduces_the_config_numbers():
    cfg = dataclasses.replace(_cfg(), schedule="fixed", warmup_steps=7)
    s = RoutingSchedule(cfg)
    for step in range(40):
        assert s.warmup(step) == (step < 7)
        assert s.cost_scale(step) == cfg.cost_scale(step)
        assert s.temperature(step) == cfg.temperature(step)
        s.update(step, 10.0, 10.0)  # the signal is logged but decides nothing
    assert s.switch_step == 7 and s.fired_by == "fixed"


def test_state_dict_round_trip_resumes_identically():
    a = RoutingSchedule(_cfg())
    for step in range(6):
        a.update(step, *np.array([3.0, 10.0]))  # numpy scalars, as train.py's all_sum gives
    state = a.state_dict()
    assert all(type(v) in (str, int, float, type(None), list) for v in state.values())
    assert state["recent"] and all(type(x) is float for x in state["recent"])
    b = RoutingSchedule(_cfg())
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for step in range(6, 60):
        assert a.update(step, 9.0, 10.0) == b.update(step, 9.0, 10.0)
    assert a.state_dict() == b.state_dict()


@pytest.mark.parametrize("override", ["train.schedule=clock", "train.schedule_threshold=2",
                                      "train.schedule_horizon=0", "train.schedule_min_rise=2"])
def test_bad_schedule_fields_fail_naming_the_field(override):
    with pytest.raises(ConfigError, match=override.split(".")[1].split("=")[0]):
        resolve("cram", "cpu-tiny", [override])


def test_learned_run_writes_signal_phase_and_transition(tmp_path):
    cfg = resolve("cram", "cpu-tiny", ["train.schedule=learned", "train.schedule_horizon=3",
                                       "train.schedule_threshold=0", "train.steps=20"])
    run = train("cram", cfg, tmp_path / "r", seed=0, progress=False)
    metrics = pd.read_csv(run / "metrics.csv")
    sched = json.loads((run / "transition.json").read_text())["schedule"]
    assert sched["kind"] == "learned" and sched["fired_by"] == "criterion"
    assert sched["warmup_end"] == 3  # threshold 0: fires once the horizon has passed
    assert list(metrics["phase"]) == ["warmup", "train", "train"]
    assert math.isfinite(metrics["schedule_signal"].iloc[1])
    assert metrics.loc[1, "temperature"] < 1.0  # annealing counted from the switch, not step 10
    assert {"attention_tokens", "attention_library_l1", "qhat_novel_l0"} <= set(metrics.columns)
    saved = load_checkpoint(run / "checkpoints" / "last.pt")["routing_schedule"]  # weights_only
    assert saved["switch_step"] == 3 and saved["fired_by"] == "criterion"


def test_fixed_schedule_signal_is_opt_in_and_changes_no_number(tmp_path):
    """Fixed schedule: the criterion forward is opt-in and changes no logged number.

    By default the column is NaN; with ``train.schedule_signal`` it is logged in warm-up and
    every golden column stays identical.
    """
    golden = pd.read_csv(Path(__file__).parent / "data" / "golden_cpu_tiny" / "cram_metrics.csv")
    golden = golden.drop(columns=["train_seconds"])
    cfg = resolve("cram", "cpu-tiny", ["train.schedule_signal=true"])
    run = train("cram", cfg, tmp_path / "r", seed=0, progress=False)
    metrics = pd.read_csv(run / "metrics.csv")
    warm = metrics[metrics["phase"] == "warmup"]["schedule_signal"]
    assert warm.iloc[1:].notna().all()  # measured from the first training step on
    pd.testing.assert_frame_equal(metrics[list(golden.columns)], golden)
    plain = train("cram", resolve("cram", "cpu-tiny", ["train.steps=10"]), tmp_path / "p",
                  seed=0, progress=False)
    assert pd.read_csv(plain / "metrics.csv")["schedule_signal"].isna().all()


def test_learned_schedule_anchors_retention_on_the_log_grid_fixed_refuses_off_grid():
    from cram.consolidation.train import check_run_args, retention_steps

    off_grid = ["train.warmup_steps=150", "train.log_every=100", "train.steps=600"]
    with pytest.raises(ConfigError, match="retention curves are due at steps \\[150\\]"):
        check_run_args(resolve("cram", "demo", [*off_grid, "train.schedule=fixed"]), 0)  # fixed:
        # warm-up really ends at 150
    learned = resolve("cram", "demo", off_grid)  # learned (the default): warmup_steps only
    assert learned.train.schedule == "learned"  # anchors the grid
    check_run_args(learned, 0)
    steps = retention_steps(learned)
    assert all(s % 100 == 0 for s in steps) and 600 in steps and 200 in steps


def test_criterion_reads_the_forward_without_working_memory_dropout(tmp_path, monkeypatch):
    """Under working-memory dropout the criterion scores the whole-memory forward.

    That is the step's forward with every CT-ODE output kept (the model as evaluated), not the
    dropped training forward.
    """
    from cram.consolidation import train as train_mod
    from cram.models import Route

    seen = []
    measure = train_mod._measure_signal

    def spy(model, batch, logits, cfg_t):
        keep = tuple(torch.ones(batch["dtau"].shape[0]) for _ in model.blocks)  # per layer (B,)
        with torch.no_grad():
            whole = model(batch, Route(force="episodic", working_keep=keep)).value_logits
            dropped = model(batch, Route(force="episodic", working_keep=tuple(
                torch.zeros_like(k) for k in keep))).value_logits
        seen.append((torch.allclose(logits, whole), torch.allclose(logits, dropped)))
        return measure(model, batch, logits, cfg_t)

    monkeypatch.setattr(train_mod, "_measure_signal", spy)
    cfg = resolve("cram", "cpu-tiny", ["train.schedule=learned", "train.steps=6",
                                       "model.working_dropout=0.5",
                                       "model.working_dropout_phase=warmup"])
    train("cram", cfg, tmp_path / "r", seed=0, progress=False)
    assert seen and all(whole and not dropped for whole, dropped in seen)
