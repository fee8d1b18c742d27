"""The training objective: task losses plus the consolidation mechanism's terms.

For every CRAM layer (``LayerStats.q`` is set):

- **probe**: cross-entropy of the value probe on stop-grad r_E at query tokens. The probe defines
  "what an output says" for the value-space score q.
- **consolidation**: semantic output toward stop-grad episodic output on query tokens where
  attention was computed, in q's space: KL(p_E ‖ p_S) of the probe's readouts (value space; the
  probe is frozen for this term so it cannot cheat) or mean squared error (``q_space="raw"``), the
  same distances q is scored with (``cram.models.tiers``). An optional raw-vector term
  (``consolidation_raw_weight``) keeps the semantic output usable by the layers above.
- **familiarity**: q̂ regression (squared error) toward stop-grad q where q was computed; query and
  non-query tokens are averaged separately so the 5% of queries are not drowned out.
- **cost**: λ·E[g_E], the expected episodic share under the router's (noise-free) probabilities,
  with separate weights for query and non-query tokens, ramped in after warm-up. With
  ``cost_gate="familiarity"`` each token's share is weighted by its stop-grad q̂: attention costs
  only as much as the token is predicted to be consolidated; ``"familiarity-queries"`` gates query
  tokens only and charges non-query tokens (which hold no binding to consolidate) ungated;
  ``"replaceable"`` (issue 32) is ``"familiarity-queries"`` with each query's weight raised to 1
  where the batch's ``answered_without_attention`` mask says the model already answers that
  labelled token with attention switched off: attention costs in full where nothing needs it.
- **router consistency** (``router_consistency_weight``, off by default): at query tokens,
  labelled or not, the expected readout distance KL(p_E ‖ p_tier) from the stop-grad episodic
  readout over the two non-attention tiers, weighted by the router's softmax over their two
  logits (the semantic tier's distance is q's; the working tier adds nothing, so its readout is
  the probe's bias). The distances are stop-grad; the gradient moves only the working-vs-semantic
  logit difference (through the router and, as the cost term's, its input). Where no label
  trains that choice (an unlabelled library query), it tells the router which non-attention
  tier reproduces what attention would fetch; the attention share stays the cost's. After
  warm-up only, as the router term.
- **router** (``router_logit_weight``, off by default): the centred squared router logits, query
  and non-query tokens averaged apart. A saturated softmax passes almost no gradient, so a cost that
  arrives after the router has saturated cannot move it; this keeps the router where it can. It
  starts when warm-up ends: before, the router gets no other gradient, and the penalty alone would
  undo its episodic-biased start.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cram.models.common import ModelOutput
from cram.models.tiers import EVENT_QUERY, Tier, raw_mse, readout_kl
from cram.tasks.srcd_stream import IGNORE_INDEX

from .config import TrainConfig
from .restore import sync_free  # issue 16

#: batch key of the ``cost_gate="replaceable"`` mask (B, T): 1.0 where a labelled token is
#: answered right with attention switched off in every layer (set by the trainer, issue 32)
ANSWERED_WITHOUT_ATTENTION = "answered_without_attention"


@dataclass
class LossTerms:
    """The total loss (with graph) and its named terms."""

    total: torch.Tensor
    values: dict[str, torch.Tensor]  # detached 0-dim tensors, on the device (issue 16: no sync)

    @property
    def terms(self) -> dict[str, float]:
        """The terms as floats (reads them back from the device)."""
        return {k: float(v) for k, v in self.values.items()}


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def _probe_loss(logits: torch.Tensor, answer: torch.Tensor, where: torch.Tensor,
                resident: bool) -> torch.Tensor:
    """Mean cross-entropy of the probe's logits ``(B, T, V)`` at ``where`` (0 if none).

    The plain path selects the rows (a data-dependent shape: the host waits for the count) and
    is kept off the device path so CPU runs stay bit-identical to earlier ones; ``resident``
    (issue 16) takes the masked mean of every token's cross-entropy instead, with no read-back.
    The two agree to rounding (tests/test_losses.py).
    """
    if not resident:
        return F.cross_entropy(logits[where].float(), answer[where]) if where.any() \
            else logits.new_zeros((), dtype=torch.float32)
    where = where & (answer != IGNORE_INDEX)  # what the plain path's cross-entropy ignores
    target = torch.where(where, answer, 0)
    ce = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), reduction="none")
    return _masked_mean(ce.view_as(answer), where)


def _expected_readout_distance(s, log_p_e: torch.Tensor, kl_semantic: torch.Tensor
                               ) -> torch.Tensor:
    """Expected KL(p_E ‖ p_tier) over the two non-attention tiers, per token (B, T).

    The tiers are weighted by the router's softmax over its working and semantic logits alone,
    so the term moves only their difference: which of the two to read when not attending. It
    leaves the attention share to the cost (a first form over all three tiers, where attention's
    distance is 0, also pulled every token toward attention: docs/cram.md). ``log_p_e``
    (B, T, V): the stop-grad episodic readout; ``kl_semantic`` (B, T): the semantic tier's
    distance from it. The working tier's readout is the probe applied to a zero output (its
    bias). Distances are stop-grad: the gradient goes through the router's logits only.
    """
    if s.q_space != "value" or "probe_bias" not in s.extra:
        raise ValueError("router_consistency_weight needs a CRAM layer with a value-space q")
    log_p_w = F.log_softmax(s.extra["probe_bias"].float(), -1)  # (V,)
    kl_working = (log_p_e.exp() * (log_p_e - log_p_w)).sum(-1)  # (B, T)
    distance = torch.stack([kl_working, kl_semantic], -1).detach()  # (B, T, 2)
    pair = s.logits.float()[..., [Tier.WORKING, Tier.SEMANTIC]]  # (B, T, 2)
    return (torch.softmax(pair, -1) * distance).sum(-1)


def compute_loss(out: ModelOutput, batch: dict, cfg: TrainConfig, step: int,
                 schedule=None) -> LossTerms:  # issue 13: schedule = a RoutingSchedule
    """The training objective on one batch: value and signal losses, consolidation terms, cost."""
    answer = batch["answer"]  # (B, T)
    is_query = batch["event"] == EVENT_QUERY  # (B, T)
    loss_value = F.cross_entropy(out.value_logits.flatten(0, 1).float(), answer.flatten(),
                                 ignore_index=IGNORE_INDEX)
    loss_signal = _masked_mean((out.signal_pred.float() - batch["target_signal"]) ** 2,
                               batch["signal_mask"])
    total = loss_value + cfg.signal_weight * loss_signal
    terms = {"loss_value": loss_value, "loss_signal": loss_signal}

    cram_layers = [s for s in out.layers if s.q is not None]
    resident = sync_free(answer.device)  # issue 16: no data-dependent shapes on this path
    if cram_layers:
        probe = consolidation = familiarity = cost = router = loss_value.new_zeros(())
        consistency = loss_value.new_zeros(())
        cost_scale = (schedule or cfg).cost_scale(step)  # issue 13
        replaceable = batch.get(ANSWERED_WITHOUT_ATTENTION)  # (B, T) float or None (issue 32)
        for s in cram_layers:
            where = is_query & s.computed  # (B, T)
            probe = probe + _probe_loss(s.probe_episodic, answer, where, resident)
            log_p_e = F.log_softmax(s.probe_episodic.detach().float(), -1)  # (B, T, V)
            log_p_s = F.log_softmax(s.probe_semantic.float(), -1)
            kl = readout_kl(log_p_e, log_p_s)  # (B, T)
            mse = raw_mse(s.f_semantic.float(), s.r_episodic.detach().float())  # (B, T)
            primary = kl if s.q_space == "value" else mse
            consolidation = consolidation + cfg.consolidation_weight * _masked_mean(primary, where)
            if s.q_space == "value" and cfg.consolidation_raw_weight:
                consolidation = consolidation \
                    + cfg.consolidation_raw_weight * _masked_mean(mse, where)
            err = (s.qhat.float() - s.q.detach().float()) ** 2  # (B, T); q is the target
            familiarity = familiarity + _masked_mean(err, where) + _masked_mean(
                err, s.computed & ~is_query)
            if cost_scale > 0 and s.logits is not None:
                share = torch.softmax(s.logits.float(), -1)[..., Tier.EPISODIC]  # (B, T) expected
                gated = share * s.qhat.detach().float()  # charged only where q̂ says familiar
                share_query = share if cfg.cost_gate == "none" else gated
                share_nonquery = gated if cfg.cost_gate == "familiarity" else share
                if cfg.cost_gate == "replaceable" and replaceable is not None:
                    share_query = share * torch.maximum(s.qhat.detach().float(), replaceable)
                cost = cost + cost_scale * (
                    cfg.cost_query * _masked_mean(share_query, is_query)
                    + cfg.cost_nonquery * _masked_mean(share_nonquery, ~is_query))
            after_warmup = not schedule.warmup(step) if schedule else step >= cfg.warmup_steps
            if cfg.router_consistency_weight and s.logits is not None and after_warmup:
                consistency = consistency + cfg.router_consistency_weight * _masked_mean(
                    _expected_readout_distance(s, log_p_e, kl), is_query)
            if cfg.router_logit_weight and s.logits is not None and after_warmup:  # issue 13
                centred = s.logits.float() - s.logits.float().mean(-1, keepdim=True)  # (B, T, 3)
                spread = centred.pow(2).sum(-1)  # (B, T)
                router = router + cfg.router_logit_weight * (
                    _masked_mean(spread, is_query) + _masked_mean(spread, ~is_query))
        n = len(cram_layers)
        probe, consolidation, familiarity, cost, router = (
            probe / n, consolidation / n, familiarity / n, cost / n, router / n)
        total = total + cfg.probe_weight * probe + consolidation \
            + cfg.familiarity_weight * familiarity + cost + router
        terms.update(loss_probe=probe, loss_consolidation=consolidation,
                     loss_familiarity=familiarity, loss_cost=cost, loss_router=router)
        if cfg.router_consistency_weight:  # logged only when on (older logs keep their columns)
            total = total + consistency / n
            terms["loss_router_consistency"] = consistency / n
    charged = [s.extra["cost_share"] for s in out.layers if "cost_share" in s.extra]
    if charged:  # a baseline charged like CRAM (cram.models.matched): same λ, warm-up and ramp,
        scale = (schedule or cfg).cost_scale(step)  # under the run's schedule (fixed or learned)
        cost = sum(cfg.cost_query * _masked_mean(g.float(), is_query)
                   + cfg.cost_nonquery * _masked_mean(g.float(), ~is_query) for g in charged)
        terms["loss_cost"] = scale * cost / len(charged)
        total = total + terms["loss_cost"]
    if out.aux_loss is not None:
        total = total + out.aux_loss
        terms["loss_aux"] = out.aux_loss
    terms["loss_total"] = total
    return LossTerms(total, {k: v.detach() for k, v in terms.items()})


def task_loss(task, out: ModelOutput, batch: dict, cfg: TrainConfig, step: int,
              schedule=None, view: dict | None = None) -> LossTerms:
    """The objective on ``task``'s loss view of ``batch``, plus the task's own terms.

    ``view`` (``task.loss_view(batch)``) may be passed in when the caller has built it. Each
    extra term is added to the total and logged as ``loss_<name>``.
    """
    loss = compute_loss(out, view if view is not None else task.loss_view(batch), cfg, step,
                        schedule=schedule)
    extra = task.extra_loss(out, batch)
    if not extra:
        return loss
    total, values = loss.total, dict(loss.values)
    for name, value in extra.items():
        total = total + value
        values[f"loss_{name}"] = value.detach()
    values["loss_total"] = total.detach()
    return LossTerms(total, values)
