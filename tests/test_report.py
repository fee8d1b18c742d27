"""The demo report's summary rows say where warm-up ended, why, and both attention units."""

from __future__ import annotations

import json
import math

from cram.consolidation.report import summary_rows
from cram.core.runs import load_run
from cram.testing import write_synthetic_run


def test_summary_rows_name_the_warmup_end_and_its_cause(tmp_path):
    folder = write_synthetic_run(tmp_path / "cram-seed0", seed=0, gamma=0.45)
    (row,) = summary_rows([load_run(folder)])
    assert row["warmup_ended_by"] == "fixed" and row["warmup_end"] == load_run(folder).warmup_steps
    transition = folder / "transition.json"
    data = json.loads(transition.read_text()) if transition.is_file() else {}
    data["schedule"] = {"kind": "learned", "warmup_end": 223, "fired_by": "criterion"}
    transition.write_text(json.dumps(data))
    (row,) = summary_rows([load_run(folder)])
    assert (row["warmup_end"], row["warmup_ended_by"]) == (223, "criterion")
    tokens = row["attention_tokens"]
    assert math.isnan(tokens) or row["attention_all"] <= tokens <= 1  # a token attends in any layer
