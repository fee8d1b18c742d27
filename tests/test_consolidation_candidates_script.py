"""scripts/consolidation_candidates.py: the per-binding hand-over (issue 28, item 2)."""

from __future__ import annotations

import pandas as pd
import pytest
from script_helpers import load_script

COLUMNS = ["step", "pattern", "exposures", "episodic_share", "q", "qhat", "n_queries", "accuracy"]


def _patterns(tmp_path, rows) -> None:
    pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp_path / "patterns.csv", index=False)


def test_handover_aligns_each_binding_at_the_step_it_left_for_good(tmp_path):
    script = load_script("consolidation_candidates")
    rows = []
    for step in range(0, 700, 100):
        # binding 0 attends, wavers at 200, comes back, and leaves for good at 400,
        # answering 1.0 while attending and 0.8 after; binding 1 never leaves
        share0 = 1.0 if step < 400 and step != 200 else 0.0
        rows.append([step, 0, 0, share0, 0, 0, 10, 1.0 if share0 or step < 400 else 0.8])
        rows.append([step, 1, 0, 1.0, 0, 0, 10, 0.9])
    _patterns(tmp_path, rows)
    h = script.handover(tmp_path)
    assert set(h["pattern"]) == {0}
    assert list(h.sort_values("step")["since"]) == [-400, -300, -200, -100, 0, 100, 200]
    summary = script.handover_summary(tmp_path)
    assert summary["bindings_left"] == 1
    assert summary["handover_dip"] == pytest.approx(0.2)


def test_handover_of_a_folder_without_per_binding_accuracy_is_unknown(tmp_path):
    script = load_script("consolidation_candidates")
    _patterns(tmp_path, [[0, 0, 0, 1.0, 0, 0, 10, 1.0]])
    pd.read_csv(tmp_path / "patterns.csv").drop(columns="accuracy").to_csv(
        tmp_path / "patterns.csv", index=False)  # written before 2026-12-07
    summary = script.handover_summary(tmp_path)
    assert summary["bindings_left"] is None and summary["handover_dip"] != summary["handover_dip"]


def test_row_reads_a_real_run_and_can_evaluate_its_checkpoint_on_held_out_sequences(tmp_path):
    from cram.consolidation.config import resolve
    from cram.consolidation.train import train

    script = load_script("consolidation_candidates")
    run = train("cram", resolve("cram", "cpu-tiny", ["train.steps=10"]), tmp_path / "r",
                seed=0, progress=False)
    logged, held_out = script.row("a", run), script.row("a", run, eval_sequences=24)
    assert logged["eval_sequences"] == 16 and held_out["eval_sequences"] == 24
    assert logged["steps"] == held_out["steps"] == 10
    assert 0 <= held_out["novel_acc"] <= 1 and 0 <= held_out["attention_library"] <= 1
    assert logged["bindings_left"] is not None  # this version writes per-binding accuracy


def _metrics(library_attention, library_acc) -> pd.DataFrame:
    steps = range(0, 100 * len(library_attention), 100)
    return pd.DataFrame({"step": steps, "phase": "train", "attention_library": library_attention,
                         "retrieval_acc_library": library_acc})


def test_leaving_dip_is_read_inside_the_hand_over_and_dip_over_the_rest_of_the_run():
    script = load_script("consolidation_candidates")
    # attention answers until step 200, has left by step 400; accuracy falls 0.04 while it
    # leaves and 0.3 long after (a fall that is not the hand-over's)
    m = _metrics([1.0, 0.95, 0.92, 0.5, 0.04, 0.02, 0.01],
                 [0.9, 0.99, 0.98, 0.95, 0.97, 0.69, 0.98])
    d = script.dips(m)
    assert d["attention_acc_library"] == pytest.approx(0.99)
    assert d["leaving_dip"] == pytest.approx(0.04)
    assert d["dip"] == pytest.approx(0.30) and d["dip_step"] == 500


def test_dips_of_a_run_where_attention_never_left_are_unknown():
    script = load_script("consolidation_candidates")
    d = script.dips(_metrics([1.0, 0.99, 0.98], [0.5, 0.9, 1.0]))
    assert d["attention_acc_library"] == pytest.approx(1.0)
    assert d["leaving_dip"] != d["leaving_dip"] and d["dip_step"] is None


def test_reuse_takes_the_final_columns_only_from_a_row_of_the_same_folder_and_evaluation(tmp_path):
    from cram.consolidation.config import resolve
    from cram.consolidation.train import train

    script = load_script("consolidation_candidates")
    run = train("cram", resolve("cram", "cpu-tiny", ["train.steps=10"]), tmp_path / "r",
                seed=0, progress=False)
    fresh = script.row("a", run, eval_sequences=24)
    marked = {**fresh, "library_acc": -1.0}  # a value no evaluation gives
    assert script.row("a", run, 24, reuse={str(run): marked})["library_acc"] == -1.0
    assert script.row("a", run, 20, reuse={str(run): marked})["library_acc"] >= 0  # other N
    moved = {**marked, "steps": 5}  # the run went on since
    assert script.row("a", run, 24, reuse={str(run): moved})["library_acc"] >= 0
