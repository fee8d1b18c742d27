"""The findings of ``cram bench forgetting`` (issue 29, item 2) on planted forgetting data.

Each finding is a measurement that can fall either way: the tests plant data where it must come
out one way and data where it must come out the other, and check that the table says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cram.experiments.forgetting import (
    consolidation_rows,
    curve_rows,
    finding_rows,
    form_rows,
    jost_rows,
    spacing_rows,
)

CHANCE = 1 / 32
DELAYS = np.array([10, 17, 28, 46, 76, 127, 211, 350])
TESTS = np.arange(0, 701, 50)


def planted(retained, seeds=3, n=400, spaced_bonus=0.0, semantic_share=0.0, model="cram",
            seed0=0) -> pd.DataFrame:
    """forgetting.csv rows of runs whose retention is ``retained(delay)`` above chance.

    Eight cohorts end their study at ``700 - DELAYS``; each is tested every 50 steps after.
    ``semantic_share``: the share of the above-chance retention lost when the semantic output
    is zeroed. ``spaced_bonus``: added to the spaced bindings' above-chance share.
    """
    rng = np.random.default_rng(seed0)
    rows = []
    for seed in range(seeds):
        for cohort, delay in enumerate(DELAYS):
            last = 700 - delay
            for schedule in ("massed", "spaced"):
                for step in TESTS[TESTS > last]:
                    d = step - last
                    keep = min(1.0, retained(d) + (spaced_bonus if schedule == "spaced" else 0))
                    for ablation, share in (("none", 1.0), ("semantic_zeroed",
                                                            1 - semantic_share)):
                        p = CHANCE + (1 - CHANCE) * keep * share
                        rows.append({"model": model, "seed": seed, "step": step,
                                     "binding": cohort * 2 + (schedule == "spaced"),
                                     "schedule": schedule, "cohort": cohort, "exposures": 4,
                                     "spacing": 20 if schedule == "spaced" else 1,
                                     "last_exposure": last, "phase": "retired",
                                     "delay_steps": d, "delay_sequences": d * 32,
                                     "ablation": ablation, "n": n,
                                     "correct": int(rng.binomial(n, p))})
    return pd.DataFrame(rows)


def power(d):
    return 0.9 * (1 + d) ** -0.5


def exponential(d):
    return 0.9 * np.exp(-d / 60)


@pytest.mark.parametrize("curve, winner", [(power, "power"), (exponential, "exponential")])
def test_the_form_comparison_recovers_the_planted_form(curve, winner):
    rows = {r["measure"]: r for r in form_rows(planted(curve), CHANCE)}
    vs_exp = rows["ΔELPD power − exponential (leave-one-delay-out, final test)"]
    if winner == "power":
        assert vs_exp["lo"] > 0 and "power fits better" in vs_exp["reading"]
    else:
        assert vs_exp["hi"] < 0 and "exponential fits better" in vs_exp["reading"]


def test_jost_law_holds_for_a_power_law_and_fails_for_an_exponential():
    # a power law's proportional loss per step falls with age; an exponential's is constant
    holds = jost_rows(planted(power), CHANCE)[0]
    assert holds["lo"] > 0 and "Jost's law holds" in holds["reading"]
    flat = jost_rows(planted(exponential), CHANCE)[0]
    assert flat["lo"] < 0 < flat["hi"] or flat["estimate"] < 0.1 * holds["estimate"]


@pytest.mark.parametrize("bonus, word", [(0.15, "spacing helps"), (-0.15, "massed study"),
                                         (0.0, "no difference")])
def test_the_spacing_effect_is_read_either_way(bonus, word):
    row = spacing_rows(planted(lambda d: 0.5 * (1 + d) ** -0.2, spaced_bonus=bonus))[0]
    assert word in row["reading"]


def test_what_the_semantic_tier_carries_is_the_zeroing_difference():
    carried = consolidation_rows(planted(power, semantic_share=0.8))[0]  # none − zeroed
    assert carried["lo"] > 0 and "carries retention" in carried["reading"]
    none = consolidation_rows(planted(power, semantic_share=0.0))[0]
    assert none["lo"] < 0 < none["hi"] or abs(none["estimate"]) < 0.01


def test_curves_have_every_delay_and_the_table_has_every_finding():
    df = pd.concat([planted(power), planted(exponential, model="transformer", seed0=1)])
    curves = pd.DataFrame(curve_rows(df))
    final = curves[(curves["model"] == "cram") & (curves["ablation"] == "none")
                   & (curves["schedule"] == "all")]
    assert sorted(final["delay_steps"]) == sorted(DELAYS.tolist())
    assert (final["accuracy_lo"] <= final["accuracy"]).all()
    assert final.sort_values("delay_steps")["accuracy"].is_monotonic_decreasing
    findings = finding_rows(df, CHANCE)
    assert {r["finding"] for r in findings} == {"a", "b", "c", "d", "e"}


def _relearn_curve(old, new, seeds=3, model="cram"):
    steps = [0, 1, 2, 4, 8, 16, 32]
    return pd.DataFrame([{"model": model, "seed": s, "relearn_step": r,
                          "old_accuracy": old(r) + 0.01 * s, "new_accuracy": new(r),
                          "old_n": 100, "new_n": 100}
                         for s in range(seeds) for r in steps])


def test_steps_to_criterion_interpolates_and_censors_at_the_last_test():
    from cram.experiments.forgetting import steps_to

    curve = pd.DataFrame({"relearn_step": [0, 2, 4], "acc": [0.2, 0.4, 0.8]})
    assert steps_to(curve, "acc", 0.6) == pytest.approx(3.0)
    assert steps_to(curve, "acc", 0.1) == 0.0
    assert steps_to(curve, "acc", 0.9) == 4.0  # never reached: the last test


@pytest.mark.parametrize("faster, word", [("old", "faster than new learning"),
                                          ("new", "relearned more slowly")])
def test_savings_are_read_either_way(faster, word):
    from cram.experiments.forgetting import savings_rows

    quick, slow = (lambda r: min(1.0, 0.1 + 0.2 * r)), (lambda r: min(1.0, 0.05 + 0.04 * r))
    old, new = (quick, slow) if faster == "old" else (slow, quick)
    row = savings_rows(_relearn_curve(old, new))[0]
    assert word in row["reading"]


def test_relearning_reads_a_studied_run_and_writes_nothing_to_it(tmp_path):
    import hashlib

    from cram.consolidation.config import resolve
    from cram.consolidation.train import train
    from cram.experiments.forgetting import relearning_rows

    overrides = ["study.protocol=study-test", "study.studied=10", "study.held_out=2",
                 "study.cohorts=4", "study.spacing=5", "study.probes=24", "train.steps=120",
                 "train.pattern_every=20", "train.log_every=10"]
    run_dir = train("cram", resolve("cram", "cpu-tiny", overrides), tmp_path / "run",
                    progress=False)

    def digest():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(run_dir.rglob("*")) if p.is_file()}

    before = digest()
    rows = pd.DataFrame(relearning_rows(run_dir, steps=4, checks=(0, 2, 4)))
    assert digest() == before
    assert rows["relearn_step"].tolist() == [0, 2, 4]
    assert rows[["old_accuracy", "new_accuracy"]].stack().between(0, 1).all()
    assert (rows["new_n"] > 0).all() and (rows["old_n"] > rows["new_n"]).all()


def test_a_curve_that_never_left_chance_has_no_form_and_no_jost():
    flat = planted(lambda d: 0.0)
    for row in form_rows(flat, CHANCE) + jost_rows(flat, CHANCE):
        assert row["reading"].startswith("not measurable") and np.isnan(row["estimate"])
