"""The causal check: replace what the probe calls redundant and measure the loss change.

The attention outputs the probe calls redundant are replaced by its prediction; the change in
next-token loss is compared with random replacement and with mean ablation.
"""

from __future__ import annotations

import numpy as np
import torch

from cram.redundancy.config import ProbeConfig
from cram.redundancy.probe import VARIANTS, token_cosine
from cram.redundancy.train import eval_loss


def _make_override(layers: set[int], probes: dict, variant: str, first: bool, mode: str,
                   tau: float, fraction_by_layer: dict[int, float] | None = None,
                   gen: torch.Generator | None = None,
                   mean_a: dict[int, torch.Tensor] | None = None, counter: dict | None = None):
    """Build ``override(layer, h, a)`` for the causal check.

    ``mode``: ``"redundant"`` replaces a by â where cos(a, â) ≥ τ; ``"random"`` replaces a by â
    at randomly chosen tokens, as many as ``fraction_by_layer`` says; ``"all"`` replaces every
    token; ``"mean"`` replaces every token by the mean attention output of the fit tokens. When
    ``first`` is False position 0 is never touched.
    """

    def override(layer: int, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if layer not in layers:
            return a
        p = probes[(variant, layer)]
        pred = p.predict(h) if mode != "mean" else mean_a[layer].to(a.dtype).expand_as(a)
        B, T, d = a.shape
        if mode == "redundant":
            mask = token_cosine(a.reshape(-1, d), pred.reshape(-1, d)).reshape(B, T) >= tau
        elif mode == "random":
            mask = torch.rand(B, T, generator=gen) < fraction_by_layer[layer]
        else:
            mask = torch.ones(B, T, dtype=torch.bool)
        if not first:
            mask[:, 0] = False
        if counter is not None:  # counter[layer] = [replaced, eligible]
            c = counter.setdefault(layer, [0, 0])
            c[0] += int(mask.sum())
            c[1] += B * T if first else B * (T - 1)
        return torch.where(mask[..., None], pred, a)  # (B, T, d)

    return override


@torch.no_grad()
def causal_check(model, probes: dict, eval_windows_plus1: np.ndarray, cfg: ProbeConfig,
                 checkpoint: str = "", step: int | None = None,
                 progress: bool = False) -> list[dict]:
    """Loss change when the outputs the probe calls redundant are replaced by its prediction.

    Per layer and in all layers at once.

    ``eval_windows_plus1`` is (N, T+1): inputs are ``[:, :-1]``, next-token targets ``[:, 1:]``.
    Each row gives the base loss and, for that layer (``layer`` = "all" for every layer at once),
    ``delta_loss_redundant`` (replace where cos ≥ τ), ``replaced_fraction``,
    ``delta_loss_random`` (replace that many random tokens), ``delta_loss_probe_all`` (replace
    every token) and ``delta_loss_mean_ablation`` (every token set to the fit-set mean output).
    """
    from tqdm.auto import tqdm

    L = model.config.n_layer
    base = eval_loss(model, eval_windows_plus1, cfg.batch_size)
    out = []
    jobs = [(v, f, layer) for v, f in VARIANTS for layer in [*range(L), "all"]]
    for variant, first, layer in tqdm(jobs, desc=f"causal {checkpoint}", disable=not progress,
                                      leave=False):
        layers = set(range(L)) if layer == "all" else {layer}
        mean_a = {li: probes[(variant, li)].y_mean for li in layers}  # fit-token mean of a
        counter: dict = {}
        ovr = _make_override(layers, probes, variant, first, "redundant", cfg.cos_threshold,
                             counter=counter)
        loss_red = eval_loss(model, eval_windows_plus1, cfg.batch_size, ovr)
        frac = sum(c[0] for c in counter.values()) / max(1, sum(c[1] for c in counter.values()))
        # the random control replaces as many tokens per layer, chosen at random
        per_layer = {li: c[0] / max(1, c[1]) for li, c in counter.items()}
        gen = torch.Generator().manual_seed(cfg.seed + 7919)
        loss_rand = eval_loss(model, eval_windows_plus1, cfg.batch_size,
                              _make_override(layers, probes, variant, first, "random", 0.0,
                                             per_layer, gen))
        loss_all = eval_loss(model, eval_windows_plus1, cfg.batch_size,
                             _make_override(layers, probes, variant, first, "all", 0.0))
        loss_mean = eval_loss(model, eval_windows_plus1, cfg.batch_size,
                              _make_override(layers, probes, variant, first, "mean", 0.0,
                                             mean_a=mean_a))
        out.append(dict(checkpoint=checkpoint, step=step, tokens=variant, layer=layer,
                        threshold=cfg.cos_threshold, base_loss=base,
                        replaced_fraction=frac, delta_loss_redundant=loss_red - base,
                        delta_loss_random=loss_rand - base, delta_loss_probe_all=loss_all - base,
                        delta_loss_mean_ablation=loss_mean - base))
    return out
