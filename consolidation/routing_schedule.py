"""The routing schedule: when forced episodic routing ends and the attention cost starts.

Two kinds (``train.schedule``):

- ``"fixed"``: the step-count schedule (``warmup_steps``, then ``tau_anneal_steps`` and
  ``cost_ramp_steps``); numbers identical to ``TrainConfig.temperature`` / ``cost_scale``.
- ``"learned"``: warm-up (routing forced to episodic memory, no cost) lasts until a criterion
  measured on the training batches says the episodic path has learned retrieval, or until the
  maximum wait (``schedule_max_fraction`` × ``steps``) has passed. The step after the criterion
  fires is the *switch step*; from there temperature anneals and the cost ramps in over the same
  step counts as in the fixed schedule, counted from the switch.

The criterion reads only what every task provides: the labels of scored tokens and the model's
own predictions. ``schedule_criterion="retrieval"`` (default): accuracy of the training forward on
the scored tokens that a *no-retrieval* forward of the same model (every layer forced to working
memory) gets wrong. Tokens answerable without attention (on SRCD the library queries, memorised
by embeddings and readout by step 75) drop out of it, so it stays near chance until attention
really retrieves. During warm-up the training forward routes every token to episodic memory, so
this is the accuracy of the episodic path on what needs it. ``"accuracy"``: accuracy on every
scored token (an ablation, fooled by the memorised tokens). The signal is a ratio of two EMAs
(hits and counts, horizon ``schedule_horizon`` steps), so steps with few counted tokens weigh
less. It fires when the signal reaches ``schedule_threshold`` after at least ``schedule_horizon``
updates.
"""

from __future__ import annotations

import math

import torch

from .config import TrainConfig

WARMUP, TRAIN = "warmup", "train"


def criterion_counts(logits: torch.Tensor, answer: torch.Tensor, ignore_index: int,
                     baseline_logits: torch.Tensor | None = None) -> tuple[float, float]:
    """(hits, count) of the criterion on one batch.

    logits (B, T, V): the training forward; answer (B, T), ``ignore_index`` where not scored;
    baseline_logits (B, T, V) or None: the no-retrieval forward. With a baseline, only scored
    tokens the baseline gets wrong are counted; without, every scored token is.
    """
    scored = answer != ignore_index  # (B, T)
    if baseline_logits is not None:
        scored = scored & (baseline_logits.argmax(-1) != answer)
    hits = (logits.argmax(-1) == answer) & scored
    return float(hits.sum()), float(scored.sum())


class RoutingSchedule:
    """State machine warmup → train; ``state_dict`` holds everything needed to resume."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.kind = cfg.schedule
        self.phase = WARMUP if (self.kind == "learned" or cfg.warmup_steps > 0) else TRAIN
        self.switch_step: int | None = None if self.kind == "learned" else cfg.warmup_steps
        self.fired_by: str | None = None if self.kind == "learned" else "fixed"
        self.ema_hits = self.ema_count = 0.0
        self.updates = 0
        self.signal_at_switch: float | None = None

    # ------------------------------------------------------------------ queries
    @property
    def max_wait(self) -> int:
        """The last step that can still be forced: the switch comes at this step at the latest."""
        return round(self.cfg.schedule_max_fraction * self.cfg.steps)

    def warmup(self, step: int) -> bool:
        """Is ``step`` in warm-up (routing forced to episodic memory, no cost)?"""
        if self.kind == "fixed":
            return step < self.cfg.warmup_steps
        return self.switch_step is None or step < self.switch_step

    def phase_at(self, step: int) -> str:
        return WARMUP if self.warmup(step) else TRAIN

    def onset(self) -> int | None:
        """The first step after warm-up (None while a learned warm-up has not ended)."""
        return self.switch_step

    def temperature(self, step: int) -> float:
        if self.kind == "fixed":
            return self.cfg.temperature(step)
        after = 0 if self.switch_step is None else max(step - self.switch_step, 0)
        c = self.cfg
        frac = min(after / c.tau_anneal_steps, 1.0) if c.tau_anneal_steps else 1.0
        return float(c.tau_start * (c.tau_end / c.tau_start) ** frac)

    def cost_scale(self, step: int) -> float:
        if self.kind == "fixed":
            return self.cfg.cost_scale(step)
        if self.warmup(step):
            return 0.0
        if not self.cfg.cost_ramp_steps:
            return 1.0
        return min((step - self.switch_step + 1) / self.cfg.cost_ramp_steps, 1.0)

    def needs_signal(self, step: int) -> bool:
        """Is the criterion measured at ``step``? (in warm-up, both kinds, for the log)."""
        return self.warmup(step)

    @property
    def signal(self) -> float:
        """The criterion's current value (ratio of EMAs); NaN before any counted token."""
        return self.ema_hits / self.ema_count if self.ema_count > 0 else math.nan

    # ------------------------------------------------------------------ updates
    def update(self, step: int, hits: float, count: float) -> str | None:
        """Feed the counts measured on batch ``step``; return a log line when warm-up ends.

        A learned warm-up ends after the step where the signal reached the threshold (with at
        least ``schedule_horizon`` updates), or after ``max_wait``, whichever comes first.
        """
        decay = 1.0 - 1.0 / max(self.cfg.schedule_horizon, 1)
        # plain floats: the state goes into checkpoints read with weights_only=True
        self.ema_hits = decay * self.ema_hits + float(hits)
        self.ema_count = decay * self.ema_count + float(count)
        self.updates += 1
        if self.kind != "learned" or self.switch_step is not None:
            return None
        reached = (self.updates >= self.cfg.schedule_horizon
                   and self.signal >= self.cfg.schedule_threshold)
        if not (reached or step + 1 >= self.max_wait):
            return None
        self.switch_step, self.phase = step + 1, TRAIN
        self.fired_by = "criterion" if reached else "max_wait"
        self.signal_at_switch = self.signal
        if reached:
            return (f"routing schedule: retrieval criterion met at step {step} "
                    f"({self.cfg.schedule_criterion} = {self.signal:.3f} >= "
                    f"{self.cfg.schedule_threshold}); warm-up ends, cost ramps in from step "
                    f"{step + 1}")
        return (f"routing schedule: WARNING retrieval criterion NOT met within the maximum wait "
                f"({self.max_wait} steps; {self.cfg.schedule_criterion} = {self.signal:.3f} < "
                f"{self.cfg.schedule_threshold}); warm-up ends anyway at step {step + 1}, "
                "routing may collapse")

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        return {"kind": self.kind, "phase": self.phase, "switch_step": self.switch_step,
                "fired_by": self.fired_by, "ema_hits": self.ema_hits,
                "ema_count": self.ema_count, "updates": self.updates,
                "signal_at_switch": self.signal_at_switch}

    def load_state_dict(self, state: dict) -> None:
        self.phase = state["phase"]
        self.switch_step = state["switch_step"]
        self.fired_by = state["fired_by"]
        self.ema_hits, self.ema_count = float(state["ema_hits"]), float(state["ema_count"])
        self.updates = int(state["updates"])
        self.signal_at_switch = state["signal_at_switch"]

    def summary(self) -> dict:
        """What ``transition.json`` records about the schedule."""
        c = self.cfg
        out = {"kind": self.kind, "warmup_end": self.switch_step, "fired_by": self.fired_by}
        if self.kind == "learned":
            out.update(criterion=c.schedule_criterion, threshold=c.schedule_threshold,
                       horizon=c.schedule_horizon, max_wait=self.max_wait,
                       signal_at_switch=self.signal_at_switch,
                       criterion_met=self.fired_by == "criterion",
                       max_wait_reached=self.fired_by in ("max_wait", None))
        return out


@torch.no_grad()
def measure_criterion(model, batch: dict, logits: torch.Tensor, criterion: str,
                      ignore_index: int) -> tuple[float, float]:
    """(hits, count) of ``criterion`` for the training forward's ``logits`` (B, T, V) on ``batch``.

    ``"retrieval"`` runs one extra forward without gradients, every layer forced to working
    memory (hard routing: no attention is computed), as the no-retrieval baseline.
    """
    baseline = None
    if criterion == "retrieval":
        was_training = model.training
        model.eval()
        baseline = model(batch, mode="hard", force="working").value_logits  # (B, T, V)
        model.train(was_training)
    return criterion_counts(logits.detach(), batch["answer"], ignore_index, baseline)
