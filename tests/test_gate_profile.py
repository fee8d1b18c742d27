"""scripts/gate_profile.py: gate quantiles by token kind, soft vs hard accuracy, clear refusals."""

from __future__ import annotations

import json

import pytest
from script_helpers import load_script

from cram.consolidation.config import resolve
from cram.consolidation.train import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    sets = ["train.steps=10"]
    return {m: train(m, resolve(m, "cpu-tiny", sets), root / m, seed=0, progress=False)
            for m in ("seqboat-matched", "cram")}


def test_profile_reads_gates_by_token_kind_and_both_passes(runs):
    row = load_script("gate_profile").gate_profile(runs["seqboat-matched"])
    for kind in ("novel", "library", "nonquery"):
        low, mid, high = row[f"gate_{kind}_q"]
        assert 0 <= low <= mid <= high <= 1
        assert 0 <= row[f"gate_{kind}_open"] <= 1
    for key in ("acc_novel_soft", "acc_novel_hard", "acc_library_soft", "acc_library_hard"):
        assert 0 <= row[key] <= 1
    # 10 steps of a 30-step preset: still in warm-up, the gates keep their open bias (σ(1) = 0.73)
    assert row["gate_novel_open"] == 1.0 and row["gate_nonquery_q"][0] > 0.5


def test_cli_json_and_a_non_seqboat_run_is_refused_in_one_line(runs, capsys):
    script = load_script("gate_profile")
    assert script.main([str(runs["seqboat-matched"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["soft_mix"] is False
    assert script.main([str(runs["cram"])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a SeqBoat-style run" in err
