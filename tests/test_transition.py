"""Change points of the attention transition and of the familiarity rise, on known series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cram.consolidation.transition import change_point, familiarity_rise, transition_summary

STEPS = np.arange(0, 700, 25)


def _step_series(at: int, before: float, after: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(STEPS < at, before, after) + noise * rng.standard_normal(len(STEPS))


@pytest.mark.parametrize("at", [200, 325, 500])
def test_change_point_finds_a_planted_drop(at):
    result = change_point(STEPS, _step_series(at, 1.0, 0.02, 0.02, seed=at))
    assert result["step"] == at
    assert result["low"] <= at <= result["high"]


def test_no_drop_gives_no_step():
    assert change_point(STEPS, np.full(len(STEPS), 0.99))["step"] is None


@pytest.mark.parametrize("at", [150, 250, 400])
def test_familiarity_rise_finds_a_planted_rise(at):
    library = _step_series(at, 0.05, 0.6, 0.02, seed=1)
    novel = _step_series(at, 0.05, 0.1, 0.02, seed=2)
    result = familiarity_rise(STEPS, library, novel)
    assert result["step"] == at
    assert result["level_after"] > result["level_before"] + 0.3


def test_transition_summary_reports_the_lag():
    metrics = pd.DataFrame({
        "step": STEPS,
        "attention_library": _step_series(325, 1.0, 0.0, 0.01, seed=3),
        "qhat_library": _step_series(250, 0.05, 0.5, 0.01, seed=4),
        "qhat_novel": _step_series(250, 0.05, 0.15, 0.01, seed=5),
    })
    summary = transition_summary(metrics, warmup_steps=150)
    assert summary["step"] == 325 and summary["familiarity_rise"]["step"] == 250
    assert summary["lag_after_familiarity"] == 75
    flat = metrics.assign(qhat_library=metrics["qhat_novel"])  # q̂ never separates
    assert transition_summary(flat, 150)["lag_after_familiarity"] is None
