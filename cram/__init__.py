"""cram: CRAM hybrid sequence models, consolidation training and forgetting-curve fits.

The public API is imported lazily, so that ``import cram`` and the reading functions
(:func:`load_run`, :func:`load_dataset`, the fits) never load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_run": ("cram.core.runs", "load_run"),
    "Run": ("cram.core.runs", "Run"),
    "load_dataset": ("cram.psych_data", "load_dataset"),
    "list_datasets": ("cram.psych_data", "list_datasets"),
    "load_curves_csv": ("cram.psych_data", "load_curves_csv"),
    "CramError": ("cram.core.errors", "CramError"),
    "train": ("cram.consolidation.api", "train"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'cram' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
