"""Hard-routed evaluation on the fixed evaluation set: the numbers every metrics row carries.

Definitions (also in docs/run_folder.md):

- ``attention_fraction``: share of (token, layer) pairs that read episodic memory;
- a query *attends* if any layer reads episodic memory for it (``attention_query`` and the library /
  novel splits);
- ``attention_computed``: share of (token, layer) pairs where attention was actually computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cram.models.common import TIERS

from .layer_metrics import LayerCollector  # issue 13
from .srcd import EVENT_QUERY, SRCDBatch

LAG_EDGES = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


@dataclass
class EvalResult:
    metrics: dict
    pattern_rows: list[dict] = field(default_factory=list)
    retention_rows: list[dict] = field(default_factory=list)


def _is_cram(model) -> bool:
    return getattr(model, "family", "") == "cram"


def _nanmean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else float("nan")


@torch.no_grad()
def evaluate(model, data: SRCDBatch, batch_size: int, device, *, n_library: int,
             patterns: bool = False, retention: bool = False, autocast=None) -> EvalResult:
    was_training = model.training
    model.eval()
    cram = _is_cram(model)
    n_layers = len(model.blocks)
    acc = {k: [] for k in ("correct", "is_lib", "pattern", "lag", "q", "qhat", "attend",
                           "correct_sem", "correct_work", "correct_off")}
    sq_err = n_sig = 0.0
    layer_episodic = np.zeros(n_layers)
    layer_nonquery = np.zeros(n_layers)
    layer_computed = np.zeros(n_layers)
    tier_counts = np.zeros((n_layers, len(TIERS)))
    n_tokens = n_nonquery = 0
    per_layer = LayerCollector()  # issue 13: per-layer attention, q, q̂; both units
    ctx = autocast if autocast is not None else torch.autocast("cpu", enabled=False)
    for start in range(0, len(data), batch_size):
        b = data.slice(start, start + batch_size).to_torch(device)
        with ctx:
            out = model(b, mode="hard", diagnose=cram)
        query = b["event"] == EVENT_QUERY  # (B, T)
        per_layer.add(out.layers, query, b["is_library"], b["answer"])  # issue 13
        pred = out.value_logits.argmax(-1)
        acc["correct"].append((pred == b["answer"])[query].cpu().numpy())
        acc["is_lib"].append(b["is_library"][query].cpu().numpy())
        acc["pattern"].append(b["pattern"][query].cpu().numpy())
        acc["lag"].append(b["lag"][query].cpu().numpy())
        mask = b["signal_mask"]
        sq_err += float(((out.signal_pred.float() - b["target_signal"]) ** 2)[mask].sum())
        n_sig += float(mask.sum())
        n_tokens += query.numel()
        n_nonquery += int((~query).sum())
        attend = torch.zeros_like(query)
        qs, qhats = [], []
        for i, s in enumerate(out.layers):
            epi = s.episodic.float() > 0.5  # (B, T)
            attend |= epi
            layer_episodic[i] += float(epi.sum())
            layer_nonquery[i] += float(epi[~query].sum())
            layer_computed[i] += float(s.computed.sum())
            if s.choice is not None:
                tier_counts[i] += torch.bincount(s.choice.flatten(), minlength=3).cpu().numpy()
            if s.q is not None:
                qs.append(s.q[query].float().cpu().numpy())
                qhats.append(s.qhat[query].float().cpu().numpy())
        acc["attend"].append(attend[query].cpu().numpy())
        if qs:
            acc["q"].append(np.mean(qs, 0))
            acc["qhat"].append(np.mean(qhats, 0))
        if cram:
            for key, force in (("correct_sem", "semantic"), ("correct_work", "working"),
                               ("correct_off", "no-episodic")):
                if key == "correct_off" and not retention:
                    continue
                with ctx:
                    forced = model(b, mode="hard", force=force)
                acc[key].append((forced.value_logits.argmax(-1) == b["answer"])[query].cpu().numpy())
    cat = {k: (np.concatenate(v) if v else np.array([])) for k, v in acc.items()}
    lib, correct, attend = cat["is_lib"].astype(bool), cat["correct"], cat["attend"]
    m = {
        "attention_fraction": float(layer_episodic.sum() / (n_tokens * n_layers)),
        "attention_computed": float(layer_computed.sum() / (n_tokens * n_layers)),
        "attention_query": _nanmean(attend),
        "attention_library": _nanmean(attend[lib]),
        "attention_novel": _nanmean(attend[~lib]),
        "attention_nonquery": float(layer_nonquery.sum() / max(n_nonquery * n_layers, 1)),
        "retrieval_acc": _nanmean(correct),
        "retrieval_acc_library": _nanmean(correct[lib]),
        "retrieval_acc_novel": _nanmean(correct[~lib]),
        "dynamics_mse": sq_err / max(n_sig, 1.0),
    }
    m.update(per_layer.metrics())  # issue 13
    if cat["q"].size:
        m.update(q_library=_nanmean(cat["q"][lib]), q_novel=_nanmean(cat["q"][~lib]),
                 qhat_library=_nanmean(cat["qhat"][lib]), qhat_novel=_nanmean(cat["qhat"][~lib]))
    if cat["correct_sem"].size:
        m["acc_library_semantic_only"] = _nanmean(cat["correct_sem"][lib])
        m["acc_library_working_only"] = _nanmean(cat["correct_work"][lib])
    for i in range(n_layers):
        if tier_counts[i].sum() > 0:
            shares = tier_counts[i] / tier_counts[i].sum()
            for j, tier in enumerate(TIERS):
                m[f"share_{tier}_l{i}"] = float(shares[j])
        else:
            m[f"share_episodic_l{i}"] = float(layer_episodic[i] / n_tokens)
    result = EvalResult(m)
    if patterns:
        pat = cat["pattern"]
        for p in range(n_library):
            sel = pat == p
            if not sel.any():
                continue
            row = {"pattern": p, "episodic_share": _nanmean(attend[sel]), "n_queries": int(sel.sum())}
            row["q"] = _nanmean(cat["q"][sel]) if cat["q"].size else float("nan")
            row["qhat"] = _nanmean(cat["qhat"][sel]) if cat["qhat"].size else float("nan")
            result.pattern_rows.append(row)
    if retention:
        conditions = [("episodic_on", correct)]
        if cat["correct_off"].size:
            conditions.append(("episodic_off", cat["correct_off"]))
        for cond, corr in conditions:
            for binding, sel_b in (("novel", ~lib), ("library", lib)):
                for lo, hi in zip(LAG_EDGES[:-1], LAG_EDGES[1:]):
                    sel = sel_b & (cat["lag"] >= lo) & (cat["lag"] < hi)
                    if sel.any():
                        c = int(corr[sel].sum())
                        result.retention_rows.append({
                            "condition": cond, "binding": binding, "lag": lo, "lag_high": hi,
                            "n": int(sel.sum()), "correct": c, "accuracy": c / int(sel.sum())})
    model.train(was_training)
    return result
