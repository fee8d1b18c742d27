"""scripts/optimizer_trace.py: per-module gradient, update and AdamW denominator in a window.

The trace must only read: the traced run's logged rows equal those of the same run without it.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from script_helpers import load_script

from cram.consolidation.config import resolve
from cram.consolidation.train import train


@pytest.fixture(scope="module")
def traced():
    script = load_script("optimizer_trace")
    steps, logged = script.trace("cram", "cpu-tiny", 0, ["train.log_every=5"], 6, 20)
    return script, steps, logged


def test_the_trace_covers_the_window_and_changes_nothing(traced, tmp_path):
    script, steps, logged = traced
    assert sorted(steps["step"].unique()) == list(range(6, 21))
    assert "blocks.1.working.w1" in set(steps["module"])  # the CT-ODE recurrence, by name
    assert (steps["update_norm"] >= 0).all() and (steps["adam_rms"] > 0).any()
    plain = train("cram", resolve("cram", "cpu-tiny", ["train.log_every=5"]), tmp_path / "r",
                  seed=0, progress=False)
    metrics = pd.read_csv(plain / "metrics.csv").set_index("step")
    assert list(logged["step"]) == [10, 15, 20]
    for _, row in logged.iterrows():  # bit for bit: the hooks read, they never write
        assert row["loss_total"] == metrics.loc[row["step"], "loss_total"]
        assert row["retrieval_acc_library"] == metrics.loc[row["step"], "retrieval_acc_library"]


def test_the_summary_ranks_modules_by_their_peak_update(traced, tmp_path):
    script, steps, logged = traced
    table = script.summarise(steps, baseline=5, top=4)
    assert len(table) == 4 and list(table.columns) == script.COLUMNS
    assert table["peak_update_ratio"].is_monotonic_decreasing
    assert (table["peak_step"] >= 6).all() and (table["median_update"] > 0).all()
    json.dumps(table.to_dict("records"))  # plain data for a result file
    png = tmp_path / "trace.png"
    script.plot(steps, logged, table, 5, png, "t")
    assert png.stat().st_size > 0


def test_a_window_shorter_than_the_baseline_is_refused(monkeypatch, capsys):
    script = load_script("optimizer_trace")
    monkeypatch.setattr("sys.argv", ["optimizer_trace.py", "--window", "10:20", "--title", "t"])
    assert script.main() == 2
    assert "--window 10:20" in capsys.readouterr().err


def test_modules_that_barely_move_are_not_ranked(traced):
    script, steps, _ = traced
    every = script.summarise(steps, baseline=5, top=100, min_share=0.0)
    kept = script.summarise(steps, baseline=5, top=100, min_share=0.5)
    assert set(kept["module"]) < set(every["module"])
    assert kept["median_update"].min() > 0.5 * every["median_update"].max()
