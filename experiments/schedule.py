"""``cram bench schedule``: is the consolidation transition learned, or set by the schedule.

Each variant changes one schedule (warm-up length, temperature annealing, cost ramp) or the speed of
consolidation itself, and is trained like any other run. For each run we read, from
``transition.json``:

- ``transition_step``: change point of library-query attention after warm-up;
- ``familiarity_rise_step``: change point of q̂(library) − q̂(novel), the rise of familiarity;
- ``lag_after_familiarity``: their difference.

A transition that follows q̂ keeps its lag after the familiarity rise when the schedules move; a
scheduled one keeps its lag after the end of the schedule (``after_schedule``: transition step minus
the step where warm-up and cost ramp are both over).
"""

from __future__ import annotations

from pathlib import Path

from .bench import ensure_run, srcd_row

_FIXED = "train.schedule=fixed"
#: variant → extra ``--set`` overrides (on top of the preset and the user's overrides). Every
#: step-count variant runs the fixed schedule (under the default learned one, warm-up and ramp
#: start follow the retrieval criterion and ``warmup_steps`` only anchors the retention grid).
SCHEDULE_VARIANTS: dict[str, list[str]] = {
    "fixed": [_FIXED],  # the preset's step counts (the default until issue 13)
    "warmup x2": [_FIXED, "train.warmup_steps=*2"],
    "warmup /3": [_FIXED, "train.warmup_steps=/3"],  # issue 13: ends before retrieval is learned
    "no warm-up": [_FIXED, "train.warmup_steps=0"],  # issue 13: the cost applies from step 0
    "tau anneal /4": [_FIXED, "train.tau_anneal_steps=/4"],
    "tau anneal x3": [_FIXED, "train.tau_anneal_steps=*3"],
    "no cost ramp": [_FIXED, "train.cost_ramp_steps=0"],
    "cost ramp x3": [_FIXED, "train.cost_ramp_steps=*3"],
    "consolidation /5": [_FIXED, "train.consolidation_weight=/5",
                         "train.consolidation_raw_weight=/5"],
    "learned": ["train.schedule=learned"],  # issue 13: the default; warm-up ends on the criterion
}


def _warmup_end(run_dir: Path, fixed: int) -> int:
    """The step where warm-up ended: from transition.json's schedule block when it has one."""
    from cram.core.runs import load_run

    run = load_run(run_dir)  # a transition.json of the wrong shape is a warning, then ignored
    end = ((run.transition or {}).get("schedule") or {}).get("warmup_end")
    return int(end) if end is not None else fixed


def _scaled(overrides: list[str], base) -> list[str]:
    """``train.x=*2`` / ``=/4``: multiply or divide the preset's value (kept an int for ints).

    A scaled ``warmup_steps`` is rounded to a multiple of ``log_every`` (at least one), which
    the retention check of the trainer requires.
    """
    out = []
    for item in overrides:
        name, value = item.split("=", 1)
        if value[:1] in "*/":
            section, field = name.split(".")
            current = getattr(getattr(base, section), field)
            factor = float(value[1:])
            new = current * factor if value[0] == "*" else current / factor
            if field == "warmup_steps" and current:  # retention needs a multiple of log_every
                every = base.train.log_every
                new = max(every, every * round(new / every))
            value = str(int(round(new))) if isinstance(current, int) else repr(new)
        out.append(f"{name}={value}")
    return out


def run_schedule(models: list[str], preset: str, seeds: int, variants: list[str], root: Path,
                 overrides: list[str], progress: bool = True) -> list[dict]:
    """Train each model under each schedule variant; one row per (model, variant, seed)."""
    from cram.consolidation.config import resolve

    rows = []
    for model in models:
        base = resolve(model, preset, overrides)
        for variant in variants:
            extra = _scaled(SCHEDULE_VARIANTS[variant], base)
            config = resolve(model, preset, [*overrides, *extra])
            slug = variant.replace(" ", "-").replace("/", "div").replace("*", "x")
            for seed in range(seeds):
                run_dir = Path(root) / f"{model}-{slug}-seed{seed}"
                ensure_run(model, preset, seed, run_dir, [*overrides, *extra], progress=progress)
                row = srcd_row(model, seed, run_dir, None)
                warmup_end = _warmup_end(run_dir, config.train.warmup_steps)
                schedule_end = warmup_end + config.train.cost_ramp_steps
                step = row["transition_step"]
                rows.append({
                    "variant": variant, "settings": " ".join(extra) or "preset",
                    "warmup_end": warmup_end, "schedule_end": schedule_end,
                    "after_schedule": None if step is None else step - schedule_end, **row})
    return rows
