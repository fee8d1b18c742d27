"""Where a gated baseline's attention gates sit, and what its soft and hard passes answer.

For each SeqBoat-style run folder (``seqboat``, ``seqboat-matched``): σ(gate) per query token,
the largest over layers, as quantiles at novel queries, library queries and non-query tokens of
the run's own evaluation set; and novel / library accuracy of a soft pass (attention mixed in as
the training forward mixes it, temperature ``--temperature``) against the hard pass that every
table reports (attention read where σ(gate) > ``model.seqboat_threshold``).

It answers one question: did a gate that reads as "collapsed" in the hard tables learn nothing, or
learn a separation that the hard threshold does not see? ``--soft-mix`` evaluates a run trained
before 2026-12-02 (``seqboat-matched`` then mixed attention as σ(gate) · Attn, like SeqBoat) with
that soft pass.

Usage::

    python scripts/gate_profile.py runs/bench-srcd-demo-learned/seqboat-matched-seed{0,1,2,3,4}
    python scripts/gate_profile.py --soft-mix runs/old/seqboat-matched-seed0 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

QUANTILES = (0.1, 0.5, 0.9)


def gate_profile(run_dir: Path, soft_mix: bool = False, temperature: float = 0.2,
                 seed: int = 0) -> dict:
    """Gate quantiles by token kind and soft / hard accuracy of one trained run (see module doc)."""
    from cram.consolidation.checkpoint import load_trained
    from cram.core.errors import ConfigError
    from cram.experiments.mechanism import eval_batches
    from cram.models import HARD, Route

    model, config, _ = load_trained(run_dir)
    if getattr(model, "family", None) != "seqboat":
        raise ConfigError(f"{run_dir}: not a SeqBoat-style run (family {model.family!r})")
    model.eval()
    if soft_mix:
        for block in model.blocks:
            block.relaxed = False
    gen = torch.Generator().manual_seed(seed)
    gates = {"novel": [], "library": [], "nonquery": []}
    hits = {"soft": [], "hard": []}
    libs = []
    with torch.no_grad():
        for b, query, answer, is_lib in eval_batches(run_dir, config, "cpu"):
            soft = model(b, Route(temperature=temperature, generator=gen))
            hard = model(b, HARD)
            g = torch.stack([s.extra["gate"] for s in hard.layers]).amax(0)  # (B, T)
            library = torch.zeros_like(query)
            library[query] = torch.as_tensor(is_lib, dtype=torch.bool)
            gates["novel"].append(g[query & ~library].numpy())
            gates["library"].append(g[library].numpy())
            gates["nonquery"].append(g[~query].numpy())
            for name, out in (("soft", soft), ("hard", hard)):
                hits[name].append((out.value_logits.argmax(-1) == answer)[query].numpy())
            libs.append(np.asarray(is_lib, dtype=bool))
    lib = np.concatenate(libs)
    row = {"run": str(run_dir), "soft_mix": soft_mix, "temperature": temperature}
    for kind, parts in gates.items():
        values = np.concatenate(parts)
        row[f"gate_{kind}_q"] = [round(float(v), 4) for v in np.quantile(values, QUANTILES)]
        row[f"gate_{kind}_open"] = float((values > model.config.seqboat_threshold).mean())
    for name, parts in hits.items():
        correct = np.concatenate(parts)
        row[f"acc_novel_{name}"] = float(correct[~lib].mean())
        row[f"acc_library_{name}"] = float(correct[lib].mean())
    return row


def main(argv: list[str] | None = None) -> int:
    from cram.core.errors import CramError

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="SeqBoat-style run folders")
    p.add_argument("--soft-mix", action="store_true",
                   help="soft pass mixes σ(gate)·Attn (runs trained before 2026-12-02)")
    p.add_argument("--temperature", type=float, default=0.2,
                   help="soft pass temperature of a sampled gate (default: 0.2, tau_end)")
    p.add_argument("--seed", type=int, default=0, help="seed of the soft pass's gate noise")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON list")
    args = p.parse_args(argv)
    rows = []
    try:
        for run in args.runs:
            rows.append(gate_profile(run, args.soft_mix, args.temperature, args.seed))
    except CramError as err:
        print(f"gate_profile: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    q = ", ".join(f"{x:.0%}" for x in QUANTILES)
    print(f"σ(gate), largest over layers, quantiles {q}; share above the threshold")
    for r in rows:
        print(f"{r['run']}: novel {r['gate_novel_q']} ({r['gate_novel_open']:.3f} open), "
              f"library {r['gate_library_q']} ({r['gate_library_open']:.3f}), non-query "
              f"{r['gate_nonquery_q']} ({r['gate_nonquery_open']:.3f}) | accuracy novel soft "
              f"{r['acc_novel_soft']:.3f} hard {r['acc_novel_hard']:.3f}, library soft "
              f"{r['acc_library_soft']:.3f} hard {r['acc_library_hard']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
