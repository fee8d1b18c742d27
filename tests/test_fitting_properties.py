"""Property tests (hypothesis) for forms, point fits and the user-CSV loader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cram.fitting import FORMS, fit_mle
from cram.psych_data import load_curves_csv

delays = st.lists(st.floats(0.5, 500.0, allow_nan=False), min_size=4, max_size=12,
                  unique_by=lambda x: round(x, 2)).map(sorted)


@pytest.mark.slow  # 20 fits; the default tier keeps test_fitting_forms.py's
# test_mle_recovers_noise_free_parameters
@settings(max_examples=20, deadline=None)
@given(a=st.floats(0.2, 1.0), gamma=st.floats(0.05, 1.2), t=delays)
def test_power_mle_recovers_gamma_from_noise_free_curves(a, gamma, t):
    t = np.asarray(t)
    df = pd.DataFrame({"curve": "c", "group": "human", "source": "s", "delay_value": t,
                       "delay_unit": "days", "measure": "recall",
                       "value": np.clip(FORMS["power"](t, a=a, gamma=gamma), 0, 1), "n": np.nan,
                       "derived": False})
    if (df["value"] >= 1).any():  # outside the proportion scale: not a valid curve
        return
    fit = fit_mle(df, form="power")
    assert abs(fit.params["gamma"] - gamma) < 2e-3


@settings(max_examples=20, deadline=None)
@given(d=st.floats(0.05, 1.5), S=st.floats(0.1, 1000.0), t=st.floats(0.0, 1e4))
def test_fsrs_identity_and_monotone(d, S, t):
    assert abs(FORMS["fsrs"](S, S=S, gamma=d) - 0.9) < 1e-9
    r1, r2 = FORMS["fsrs"](np.array([t, t + 1.0]), S=S, gamma=d)
    assert 0 < r2 <= r1 <= 1


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=15),
       extra=st.booleans())
def test_user_csv_round_trip_keeps_values_and_extra_columns(tmp_path, values, extra):
    df = pd.DataFrame({"delay_value": np.arange(len(values), dtype=float),
                       "delay_unit": "items", "measure": "recall", "value": values,
                       "curve": ["a" if i % 2 else "b" for i in range(len(values))]})
    if extra:
        df["subject"] = "s1"
    p = tmp_path / "curves.csv"
    df.to_csv(p, index=False)
    out = load_curves_csv(p)
    np.testing.assert_allclose(out["value"].to_numpy(), df["value"].to_numpy(), rtol=1e-12)
    assert set(out["curve"]) == {f"curves/{c}" for c in df["curve"]}
    assert ("subject" in out.columns) == extra
