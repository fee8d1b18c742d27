"""The routing schedule: when forced episodic routing ends and the attention cost starts.

Two kinds (``train.schedule``):

- ``"fixed"``: the step-count schedule (``warmup_steps``, then ``tau_anneal_steps`` and
  ``cost_ramp_steps``); numbers identical to ``TrainConfig.temperature`` / ``cost_scale``.
- ``"learned"``: warm-up (routing forced to episodic memory, no cost) lasts until a criterion
  measured on the training batches says the episodic path has learned retrieval, or until the
  maximum wait has passed: ``schedule_max_fraction`` × ``steps``, extended up to
  ``schedule_extend_fraction`` × ``steps`` while the signal is still rising (it gained at least
  ``schedule_min_rise`` over the last ``schedule_horizon`` updates). A task whose retrieval is
  learning slowly gets the time; one that is not learning at all is not held in warm-up.

Two rules end a learned warm-up before the maximum wait, whichever fires first:

- *threshold*: the signal reached ``schedule_threshold`` (the episodic path answers that share of
  what needs it);
- *plateau* (issue 32): retrieval has been learned as far as forced attention takes it on this
  task. The signal rose by ``schedule_plateau_gain`` or more above its lowest value, and then
  gained less than ``schedule_min_rise`` over the last ``schedule_plateau_horizons`` ×
  ``schedule_horizon`` updates. A task where attention can only answer 75% of what needs it
  (too many keys for the heads, say) is not held until the maximum wait for a level it never
  reaches. The rule reads the run's own trajectory, not an absolute accuracy, and no library or
  novel label. A flat signal (nothing learned) never counts as a plateau; that case is the
  maximum wait's, which stays as the safety net and says so in its log line.

The step after the criterion fires is the *switch step*; from there temperature anneals and the
cost ramps in over the same step counts as in the fixed schedule, counted from the switch.

The criterion reads only what every task provides: the labels of scored tokens and the model's
own predictions: the accuracy of the training forward on
the scored tokens that a *no-retrieval* forward of the same model (every layer forced to working
memory) gets wrong. Tokens answerable without attention (on SRCD the library queries, memorised
by embeddings and readout by step 75) drop out of it, so it stays near chance until attention
really retrieves. During warm-up the training forward routes every token to episodic memory, so
this is the accuracy of the episodic path on what needs it. (Plain accuracy on every scored
token, an ablation fooled by the memorised tokens, was removed on 2026-12-07.) The signal is a
ratio of two EMAs (hits and counts, horizon ``schedule_horizon`` steps), so steps with few
counted tokens weigh less. It fires when the signal reaches ``schedule_threshold`` after at least
``schedule_horizon`` updates.
"""

from __future__ import annotations

import math

import torch

from cram.models.routing import Route

from .config import TrainConfig

WARMUP, TRAIN = "warmup", "train"


def criterion_counts(logits: torch.Tensor, answer: torch.Tensor, ignore_index: int,
                     baseline_logits: torch.Tensor | None = None) -> tuple[float, float]:
    """(hits, count) as floats: :func:`criterion_tensors` read back to the host."""
    hits, count = criterion_tensors(logits, answer, ignore_index, baseline_logits)
    return float(hits), float(count)


def criterion_tensors(logits: torch.Tensor, answer: torch.Tensor, ignore_index: int,
                      baseline_logits: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(hits, count) of the criterion on one batch.

    logits (B, T, V): the training forward; answer (B, T), ``ignore_index`` where not scored;
    baseline_logits (B, T, V) or None: the no-retrieval forward. With a baseline, only scored
    tokens the baseline gets wrong are counted; without, every scored token is.
    """
    scored = answer != ignore_index  # (B, T)
    if baseline_logits is not None:
        scored = scored & (baseline_logits.argmax(-1) != answer)
    hits = (logits.argmax(-1) == answer) & scored
    return hits.sum().double(), scored.sum().double()


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
        self.recent: list[float] = []  # learned: the last window + 1 signals (rising, plateau)
        self.lowest: float | None = None  # learned: the lowest signal after horizon updates

    # ------------------------------------------------------------------ queries
    @property
    def max_wait(self) -> int:
        """The base maximum wait: past it, warm-up ends unless the signal is still rising."""
        return round(self.cfg.schedule_max_fraction * self.cfg.steps)

    @property
    def hard_max_wait(self) -> int:
        """The switch comes at this step at the latest, rising or not."""
        return max(round(self.cfg.schedule_extend_fraction * self.cfg.steps), self.max_wait)

    def rising(self) -> bool:
        """Whether the signal gained ``schedule_min_rise`` or more over the last horizon updates."""
        horizon = self.cfg.schedule_horizon
        if len(self.recent) <= horizon:
            return False
        return self.recent[-1] - self.recent[-horizon - 1] >= self.cfg.schedule_min_rise

    @property
    def plateau_window(self) -> int:
        """Updates over which a plateau must hold (0: the plateau rule is off)."""
        return self.cfg.schedule_plateau_horizons * self.cfg.schedule_horizon

    def plateaued(self) -> bool:
        """Whether the signal rose by the plateau gain, then stopped rising over the window."""
        window = self.plateau_window
        if not window or len(self.recent) <= window or self.lowest is None:
            return False
        c = self.cfg
        gained = self.recent[-1] - self.lowest >= c.schedule_plateau_gain
        flat = max(self.recent[-window - 1:]) - self.recent[-window - 1] < c.schedule_min_rise
        return gained and flat

    def warmup(self, step: int) -> bool:
        """Whether ``step`` is in warm-up (routing forced to episodic memory, no cost)."""
        if self.kind == "fixed":
            return step < self.cfg.warmup_steps
        return self.switch_step is None or step < self.switch_step

    def phase_at(self, step: int) -> str:
        """``"warmup"`` or ``"train"``: the metrics row's phase at ``step``."""
        return WARMUP if self.warmup(step) else TRAIN

    def onset(self) -> int | None:
        """The first step after warm-up (None while a learned warm-up has not ended)."""
        return self.switch_step

    def temperature(self, step: int) -> float:
        """Gumbel-softmax temperature: annealed from the switch step (fixed: the config's)."""
        if self.kind == "fixed":
            return self.cfg.temperature(step)
        after = 0 if self.switch_step is None else max(step - self.switch_step, 0)
        c = self.cfg
        frac = min(after / c.tau_anneal_steps, 1.0) if c.tau_anneal_steps else 1.0
        return float(c.tau_start * (c.tau_end / c.tau_start) ** frac)

    def cost_scale(self, step: int) -> float:
        """The attention cost's weight: 0 in warm-up, then a linear ramp from the switch."""
        if self.kind == "fixed":
            return self.cfg.cost_scale(step)
        if self.warmup(step):
            return 0.0
        if not self.cfg.cost_ramp_steps:
            return 1.0
        return min((step - self.switch_step + 1) / self.cfg.cost_ramp_steps, 1.0)

    def needs_signal(self, step: int) -> bool:
        """Whether the criterion is measured at ``step``.

        In warm-up: always for a learned schedule; for a fixed one only with
        ``train.schedule_signal`` (it decides nothing there, and costs a forward per step).
        """
        return self.warmup(step) and (self.kind == "learned" or self.cfg.schedule_signal)

    @property
    def signal(self) -> float:
        """The criterion's current value (ratio of EMAs); NaN before any counted token.

        Reading it synchronises with the device when the EMAs are device tensors (fixed kind).
        """
        count = float(self.ema_count)
        return float(self.ema_hits) / count if count > 0 else math.nan

    # ------------------------------------------------------------------ updates
    def update(self, step: int, hits, count) -> str | None:
        """Feed the counts measured on batch ``step``; return a log line when warm-up ends.

        ``hits`` and ``count`` are floats or 0-dim device tensors. The fixed kind only keeps the
        EMAs for the log (tensors stay on the device: no synchronisation per step). A learned
        warm-up ends after the step where the signal reached the threshold (with at least
        ``schedule_horizon`` updates), or at the maximum wait (see :meth:`rising`).
        """
        decay = 1.0 - 1.0 / max(self.cfg.schedule_horizon, 1)
        self.ema_hits = decay * self.ema_hits + hits
        self.ema_count = decay * self.ema_count + count
        self.updates += 1
        if self.kind != "learned" or self.switch_step is not None:
            return None
        # plain floats: the state goes into checkpoints read with weights_only=True
        self.ema_hits, self.ema_count = float(self.ema_hits), float(self.ema_count)
        signal = self.signal
        c = self.cfg
        keep = max(c.schedule_horizon, self.plateau_window) + 1
        value = 0.0 if math.isnan(signal) else signal
        self.recent = [*self.recent, value][-keep:]
        if self.updates >= c.schedule_horizon:  # the EMA has settled: track its lowest value
            self.lowest = value if self.lowest is None else min(self.lowest, value)
        reached = self.updates >= c.schedule_horizon and signal >= c.schedule_threshold
        plateau = not reached and self.plateaued()
        waited = step + 1 >= self.hard_max_wait or (
            step + 1 >= self.max_wait and not self.rising())
        if not (reached or plateau or waited):
            return None
        self.switch_step, self.phase = step + 1, TRAIN
        self.fired_by = "criterion" if reached else "plateau" if plateau else "max_wait"
        self.signal_at_switch = signal
        return self._switch_message(step)

    def _switch_message(self, step: int) -> str:
        c = self.cfg
        if self.fired_by == "criterion":
            return (f"routing schedule: retrieval criterion met at step {step} "
                    f"(retrieval = {self.signal:.3f} >= {c.schedule_threshold}); "
                    f"warm-up ends, cost ramps in from step {step + 1}")
        if self.fired_by == "plateau":
            return (f"routing schedule: retrieval plateaued at step {step} "
                    f"(retrieval = {self.signal:.3f}, "
                    f"up {self.signal - self.lowest:.3f} from its lowest {self.lowest:.3f}, "
                    f"gained < {c.schedule_min_rise} over the "
                    f"last {self.plateau_window} updates; threshold {c.schedule_threshold} not "
                    f"reached); warm-up ends, cost ramps in from step {step + 1}")
        why = "still rising at the hard limit" if self.rising() else "no longer rising"
        return (f"routing schedule: WARNING retrieval criterion NOT met within the maximum wait "
                f"(step {step + 1}: {why}; base {self.max_wait}, hard {self.hard_max_wait} steps; "
                f"retrieval = {self.signal:.3f} < {c.schedule_threshold}); "
                f"warm-up ends anyway at step {step + 1}, routing may collapse")

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        """Plain values only (checkpoints are read with ``weights_only=True``)."""
        return {"kind": self.kind, "phase": self.phase, "switch_step": self.switch_step,
                "fired_by": self.fired_by, "ema_hits": float(self.ema_hits),
                "ema_count": float(self.ema_count), "updates": self.updates,
                "signal_at_switch": self.signal_at_switch, "recent": list(self.recent),
                "lowest": self.lowest}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s output."""
        self.phase = state["phase"]
        self.switch_step = state["switch_step"]
        self.fired_by = state["fired_by"]
        self.ema_hits, self.ema_count = float(state["ema_hits"]), float(state["ema_count"])
        self.updates = int(state["updates"])
        self.signal_at_switch = state["signal_at_switch"]
        self.recent = [float(x) for x in state.get("recent", [])]
        lowest = state.get("lowest")  # absent in checkpoints written before issue 32
        self.lowest = None if lowest is None else float(lowest)

    def summary(self) -> dict:
        """What ``transition.json`` records about the schedule."""
        c = self.cfg
        out = {"kind": self.kind, "warmup_end": self.switch_step, "fired_by": self.fired_by}
        if self.kind == "learned":
            out.update(criterion="retrieval", threshold=c.schedule_threshold,
                       horizon=c.schedule_horizon, max_wait=self.max_wait,
                       hard_max_wait=self.hard_max_wait, min_rise=c.schedule_min_rise,
                       plateau_window=self.plateau_window, plateau_gain=c.schedule_plateau_gain,
                       signal_at_switch=self.signal_at_switch, signal_lowest=self.lowest,
                       criterion_met=self.fired_by == "criterion",
                       plateau_met=self.fired_by == "plateau",
                       max_wait_reached=self.fired_by in ("max_wait", None))
        return out


@torch.no_grad()
def measure_criterion(model, batch: dict, logits: torch.Tensor,
                      ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hits, count) of the retrieval criterion for the training forward's ``logits`` (B, T, V).

    Both are 0-dim tensors on the logits' device (nothing is read back to the host here).

    It runs one extra forward without gradients, every layer forced to working memory (hard
    routing: no attention is computed), as the no-retrieval baseline.
    """
    baseline = no_retrieval_logits(model, batch)
    return criterion_tensors(logits.detach(), batch["answer"], ignore_index, baseline)


@torch.no_grad()
def no_retrieval_logits(model, batch: dict) -> torch.Tensor:
    """Value logits (B, T, V) of ``model`` with every layer forced to working memory.

    Hard routing, no attention computed, no gradient; the model's train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    logits = model(batch, Route("hard", force="working")).value_logits  # (B, T, V)
    model.train(was_training)
    return logits


@torch.no_grad()
def answered_without_attention(model, batch: dict, ignore_index: int) -> torch.Tensor:
    """(B, T) float: 1.0 where a scored token is answered right with no attention anywhere.

    ``batch["answer"]`` holds the labels (``ignore_index`` where not scored); the mask of
    ``cost_gate="replaceable"`` (issue 32).
    """
    answer = batch["answer"]  # (B, T)
    right = no_retrieval_logits(model, batch).argmax(-1) == answer
    return (right & (answer != ignore_index)).float()
