"""Shared fixtures for the explorer's tests: a folder of synthetic runs plus a fit folder.

``make_demo_like(root)`` mimics what ``make demo`` writes (``runs/demo/cram-seed*`` and
``runs/demo/fit/``) with synthetic runs (:func:`cram.testing.write_synthetic_run`) and a fixture
fit folder (:func:`cram.apps.fixtures.write_laplace_fit`); nothing here is a measured result.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def make_demo_like(root: str | Path, seeds: int = 3, with_fit: bool = True) -> Path:
    """Write ``seeds`` synthetic runs and (optionally) a fit folder below ``root``."""
    from cram.apps.fixtures import write_laplace_fit
    from cram.fitting.model_curves import model_curves
    from cram.psych_data import load_dataset
    from cram.testing import write_synthetic_run

    root = Path(root)
    paths = [write_synthetic_run(root / f"cram-seed{s}", seed=s) for s in range(seeds)]
    if with_fit:
        curves = pd.concat([model_curves(paths), load_dataset("rubin1999")], ignore_index=True)
        write_laplace_fit(root / "fit", curves, form="power", offset=1.0, seed=0)
    return root


def make_study_like(root: str | Path, with_fit: bool = True) -> Path:
    """A plain synthetic run and a synthetic study run (``forgetting.csv``) below ``root``.

    With ``with_fit``: ``fit-forgetting/``, the MLE fit of the study run's forgetting curve
    beside rubin1999 that ``make demo`` writes (the real ``cram fit gamma`` pipeline, point fits
    only, about 5 s), so the explorer can show its form check.
    """
    from cram.fitting.pipeline import fit_gamma, gather_curves, rules_from_args
    from cram.fitting.rules import parse_offset
    from cram.testing import write_synthetic_run

    root = Path(root)
    write_synthetic_run(root / "cram-seed0", seed=0)
    study = write_synthetic_run(root / "study-cram-seed0", seed=0, study=True)
    if with_fit:
        rules = rules_from_args("power", None, parse_offset(["intervening_items=1"]), 0.05, 0.9)
        df = gather_curves([str(study)], ("rubin1999",), curve_kind="forgetting")
        fit_gamma(df, rules, "mle", out=root / "fit-forgetting", progress=False, figures=False,
                  window_sens=False)
    return root
