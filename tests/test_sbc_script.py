"""scripts/sbc_hierarchical.py without fitting: coverage table, pooling runs, simulated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from script_helpers import load_script


def _script():
    return load_script("sbc_hierarchical")


def _ranks(n_sims: int, covered_share: float, seed: int) -> pd.DataFrame:
    """Rank records of ``n_sims`` simulations, uniform ranks, a set share covered."""
    rng = np.random.default_rng(seed)
    rows = []
    for quantity in ("mu_gamma[human]", "delta_gamma"):
        covered = np.arange(n_sims) < round(covered_share * n_sims)
        for i in range(n_sims):
            rows.append({"sim": i, "quantity": quantity, "truth": 0.3, "post_mean": 0.3,
                         "rank": int(rng.integers(0, 200)), "n_rank": 199,
                         "covered": bool(covered[i]), "divergences": int(i == 0)})
    return pd.DataFrame(rows)


def test_coverage_outside_the_tolerance_fails_the_group_checks():
    sbc = _script()
    table, fail = sbc.coverage_table(_ranks(200, 0.80, seed=0), level=0.9, tol=5.0)
    row = table.set_index("quantity").loc["delta_gamma"]
    assert row["coverage_%"] == 80.0 and row["mc_error_%"] == 2.1 and not row["within_tol"]
    assert fail == ["mu_gamma[human]", "delta_gamma"]
    _, fail = sbc.coverage_table(_ranks(200, 0.89, seed=0), level=0.9, tol=5.0)
    assert fail == []


def test_pooling_keeps_every_simulation_of_every_run(tmp_path):
    sbc = _script()
    for k, share in enumerate((0.80, 0.98)):
        (tmp_path / f"run{k}").mkdir()
        _ranks(200, share, seed=k).to_csv(tmp_path / f"run{k}" / "sbc_ranks.csv", index=False)
    ranks, table, fail = sbc.pool([str(tmp_path / "run0"), str(tmp_path / "run1")], 0.9, 5.0)
    assert ranks["sim"].nunique() == 400  # the same sim ids of two runs are kept apart
    row = table.set_index("quantity").loc["mu_gamma[human]"]
    assert row["sims"] == 400 and row["coverage_%"] == 89.0 and row["mc_error_%"] == 1.5
    assert fail == []
    with pytest.raises(SystemExit, match="no sbc_ranks.csv"):
        sbc.pool([str(tmp_path / "missing")], 0.9, 5.0)


def test_simulated_proportions_are_moved_only_off_exact_0_and_1():
    sbc = _script()
    y = np.array([0.0, 1e-300, 1e-7, 0.5, 1.0])
    inside = sbc._inside_unit_interval(y)
    assert 0 < inside[0] < 1e-300 and inside[-1] < 1.0
    np.testing.assert_array_equal(inside[1:4], y[1:4])  # draws from the model stay as drawn


@pytest.mark.parametrize("trials, likelihood", [(None, "beta"), (50, "binomial")])
def test_the_design_gets_the_likelihood_it_asks_for(trials, likelihood):
    from cram.fitting.bayes import prepare
    from cram.fitting.rules import ComparisonRules

    table = _script().design(3, 2, 8, trials)
    assert table["curve"].nunique() == 5 and len(table) == 5 * 8
    md = prepare(table, ComparisonRules(form="power"))
    assert set(md.lik.values()) == {likelihood}
