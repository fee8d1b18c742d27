"""``cram docs render [--check]``: the generated pages, rewritten from their data.

``docs/benchmarks.md`` is rendered from the result files in ``results/``
(:mod:`cram.core.render`); ``docs/claims.md`` from the claims registry when the module
``cram.core.claims`` exists (``render_claims(registry, out, check=...)``, which returns whether
the page already equals its rendering). Run from the repository root. With ``--check`` nothing is
written: exit 1 with one line naming every page that differs from what would be rendered.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cram.commands._util import log

#: the claims registry when cram.core.claims names none (``DEFAULT_REGISTRY``)
CLAIMS_REGISTRY = "claims/registry.toml"


def register(sub) -> None:
    """Add ``cram docs`` and its ``render`` verb to ``sub``."""
    p = sub.add_parser("docs", help="generated documentation pages (cram docs render)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = p.add_subparsers(dest="docs", metavar="VERB")
    dsub.required = True
    r = dsub.add_parser("render", help="rewrite docs/benchmarks.md (and docs/claims.md) from data",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 naming the pages that differ from their rendering")
    r.add_argument("--results", default="results", metavar="DIR",
                   help="folder of result files (one subfolder per study)")
    r.add_argument("--out", default="docs/benchmarks.md", metavar="PATH",
                   help="the benchmarks page")
    r.add_argument("--claims-registry", default=None, metavar="PATH",
                   help="claims registry for docs/claims.md (default: cram.core.claims's own, "
                        f"else {CLAIMS_REGISTRY}); skipped while cram.core.claims does not exist")
    r.add_argument("--claims-out", default="docs/claims.md", metavar="PATH")
    r.add_argument("--no-claims", action="store_true", help="render docs/benchmarks.md only")
    r.set_defaults(func=_render)


def _claims(args) -> tuple[str, bool] | None:
    """(page, differs) for docs/claims.md, or None (``--no-claims``; no cram.core.claims)."""
    if args.no_claims:
        return None
    try:
        from cram.core import claims
    except ImportError:
        return None
    registry = Path(args.claims_registry or getattr(claims, "DEFAULT_REGISTRY", CLAIMS_REGISTRY))
    up_to_date = claims.render_claims(registry, Path(args.claims_out), check=args.check)
    return args.claims_out, not up_to_date


def _render(args) -> int:
    from cram.core.render import render_benchmarks_file

    pages = [(args.out, render_benchmarks_file(args.results, args.out, check=args.check))]
    claims = _claims(args)
    if claims is not None:
        pages.append(claims)
    changed = [page for page, differs in pages if differs]
    if args.check:
        if changed:
            verb = "differs" if len(changed) == 1 else "differ"
            print(f"cram docs render --check: {', '.join(changed)} {verb} from the rendering of "
                  "the data; run `cram docs render` (make docs)", file=sys.stderr)
            return 1
        log(f"up to date: {', '.join(page for page, _ in pages)}")
        return 0
    for page, differs in pages:
        log(f"{'rewrote' if differs else 'unchanged'}: {page}")
    return 0
