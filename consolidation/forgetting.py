"""The study protocol's test (``tasks/study.py``): every library binding, its store removed.

At each test step every library binding is queried in the fixed test sequences with its store
taken out of the sequence, under the model's own routing and, for a model with memory tiers,
with each tier taken away:

- ``none``: the router's own choice (what the model recalls);
- ``semantic_zeroed``: the same choice with the semantic tier's output zeroed;
- ``episodic_off``: the same choice with episodic reads turned into working-memory ones;
- ``working_only``: every layer forced to working memory (neither attention nor the semantic
  tier);
- ``semantic_only``: every layer forced to the semantic tier (what consolidation wrote, whatever
  the router would choose).

Each test gives one row per (binding, ablation) of ``forgetting.csv`` (columns:
``cram.core.columns.FORGETTING_COLUMNS``): the binding's schedule, its phase, its delay since
the last exposure in training steps and in training sequences, and ``n`` / ``correct`` counts.
"""

from __future__ import annotations

import numpy as np
import torch

from cram.models.routing import HARD, Route

#: the ablations of a test, in the order of ``forgetting.csv``; all but ``none`` need tiers
ABLATIONS = (("none", HARD),
             ("semantic_zeroed", Route("hard", ablate="semantic")),
             ("episodic_off", Route("hard", force="no-episodic")),
             ("working_only", Route("hard", force="working")),
             ("semantic_only", Route("hard", force="semantic")))


@torch.no_grad()
def probe_bindings(model, test_set, task, batch_size: int, device, autocast=None,
                   ablations: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per ablation: (pattern, correct) over the library queries of ``test_set``.

    The model's mode is restored. A model without tiers, or ``ablations=False``, is tested with
    its own routing only.
    """
    was_training = model.training
    model.eval()
    tiered = ablations and getattr(model, "consolidates", False)
    routes = ABLATIONS if tiered else ABLATIONS[:1]
    ctx = autocast if autocast is not None else torch.autocast("cpu", enabled=False)
    got: dict[str, list] = {name: [] for name, _ in routes}
    patterns = []
    for start in range(0, len(test_set), batch_size):
        b = test_set.slice(start, start + batch_size).to_torch(device)
        view = task.eval_view(b)
        lib = view["query"] & view["is_library"]  # (B, T)
        patterns.append(view["pattern"][lib].cpu().numpy())
        for name, route in routes:
            with ctx:
                out = model(b, route)
            right = out.value_logits.argmax(-1) == view["answer"]  # (B, T)
            got[name].append(right[lib].cpu().numpy())
    model.train(was_training)
    pattern = np.concatenate(patterns)
    return {name: (pattern, np.concatenate(parts)) for name, parts in got.items()}


def forgetting_rows(results: dict[str, tuple[np.ndarray, np.ndarray]], schedule, step: int,
                    sequences_per_step: int) -> list[dict]:
    """Tidy rows of one test at ``step``: one per (library binding, ablation) that was queried.

    ``sequences_per_step``: training sequences per step (the global batch), the delay's second
    unit. Recurring and not-yet-studied bindings carry no delay (empty cells).
    """
    phase = schedule.phase(step)
    done = schedule.exposures_done(step)
    rows = []
    for ablation, (pattern, correct) in results.items():
        n = np.bincount(pattern, minlength=schedule.n_library)
        k = np.bincount(pattern, weights=correct.astype(float), minlength=schedule.n_library)
        for p in np.flatnonzero(n):
            retired = phase[p] == "retired"
            delay = step - int(schedule.last[p]) if retired else None
            rows.append({
                "step": step, "binding": int(p), "schedule": schedule.kind[p],
                "cohort": int(schedule.cohort[p]), "exposures": int(done[p]),
                "spacing": _spacing(schedule, p), "last_exposure": int(schedule.last[p]),
                "phase": phase[p], "delay_steps": delay,
                "delay_sequences": None if delay is None else delay * sequences_per_step,
                "ablation": ablation, "n": int(n[p]), "correct": int(k[p])})
    return rows


def _spacing(schedule, p: int) -> int:
    """Steps between the binding's exposures (1 massed, 0 for a recurring binding)."""
    steps = schedule.exposure_steps[p]
    return int(steps[1] - steps[0]) if len(steps) > 1 else (1 if len(steps) else 0)
