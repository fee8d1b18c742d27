"""Small helpers shared by the CLI verbs: JSON output, the ``--set`` argument, logging to stderr.

Kept free of heavy imports so that ``cram --help`` and the reading verbs never load torch.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from cram.core.jsonio import json_safe


def log(*parts: object) -> None:
    """Progress and log lines go to stderr, so that stdout stays one JSON document."""
    print(*parts, file=sys.stderr, flush=True)


def emit_json(obj: Any) -> None:
    """Print exactly one JSON document on stdout with finite numbers only (non-finite → null)."""
    sys.stdout.write(json.dumps(json_safe(obj), allow_nan=False, indent=None) + "\n")
    sys.stdout.flush()


def add_set_argument(parser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a config field of the preset (repeatable); checked against the dataclass",
    )
