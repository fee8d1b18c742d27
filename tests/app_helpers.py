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
