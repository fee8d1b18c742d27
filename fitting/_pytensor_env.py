"""PyTensor environment set-up, done before the first ``import pytensor``/``import pymc``.

In CI (``CI`` set) and under pytest, PyTensor's compile cache goes inside the checkout
(``.cache/pytensor``) unless ``PYTENSOR_FLAGS`` already names a ``base_compiledir`` or
``CRAM_PYTENSOR_CACHE`` names another folder; elsewhere PyTensor's default (~/.pytensor) is kept.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def configure_compiledir() -> str | None:
    """Point ``base_compiledir`` at the checkout's cache when in CI/pytest; return it (or None)."""
    if "pytensor" in sys.modules:
        return None
    flags = os.environ.get("PYTENSOR_FLAGS", "")
    if "base_compiledir" in flags:
        return None
    target = os.environ.get("CRAM_PYTENSOR_CACHE")
    if not target and (os.environ.get("CI") or "PYTEST_CURRENT_TEST" in os.environ
                       or "pytest" in sys.modules):
        target = str(REPO_ROOT / ".cache" / "pytensor")
    if not target:
        return None
    Path(target).mkdir(parents=True, exist_ok=True)
    os.environ["PYTENSOR_FLAGS"] = ",".join(x for x in (flags, f"base_compiledir={target}") if x)
    return target
