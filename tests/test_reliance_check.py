"""Every evaluation row carries the causal check of the reliance it logs (issue 28, item 4).

Beside the tiers' shares, a consolidating model's rows hold library and novel accuracy with the
semantic tier's output zeroed (router choices kept) and novel accuracy with every layer forced to
working memory, so a run folder shows whether a logged semantic share is relied on. A model
without tiers leaves them empty.
"""

from __future__ import annotations

import numpy as np
import pytest

import cram
from cram.consolidation.config import resolve
from cram.consolidation.train import train
from cram.core.columns import metric_columns

CHECK = ("acc_library_semantic_zeroed", "acc_novel_semantic_zeroed", "acc_novel_working_only")


def test_the_check_columns_are_declared():
    assert set(CHECK) <= set(metric_columns(2))


@pytest.mark.parametrize("model, logged", [("cram", True), ("transformer", False)])
def test_every_row_logs_the_causal_check(tmp_path, model, logged):
    run = train(model, resolve(model, "cpu-tiny"), tmp_path / model, progress=False)
    metrics = cram.load_run(run).metrics
    values = metrics[list(CHECK)].to_numpy(dtype=float)  # (rows, 3)
    if logged:
        assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
        # the zeroed pass is a different route from forcing every layer to semantic memory
        assert not np.allclose(metrics["acc_library_semantic_zeroed"],
                               metrics["acc_library_semantic_only"])
    else:
        assert np.isnan(values).all()
