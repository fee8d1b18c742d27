"""How predictable is GPT-2's attention from the residual stream? A probe, over training, a check.

The paper's motivating analysis (CRAM, arXiv 2602.12204) fits a linear map from the pre-attention
hidden state to the attention output and calls attention "redundant" where the map predicts it.
This module:

1. **Probe.** For every layer ``l`` (and every head), fit ridge regression from ``h_l`` (residual
   stream entering block ``l``, *before* ``ln_1``) to ``a_l`` (attention sub-layer output *after*
   ``c_proj``, bias included: what is added to the residual) or, per head, to ``z_{l,k}`` (head
   ``k``'s output *before* ``c_proj``). Fit on tokens of one set of sequences, evaluate on tokens
   of other, held-out sequences. Report pooled R² and the fraction of attention operations (token,
   layer) whose prediction has cosine similarity ≥ τ with the real output, with the sensitivity
   to τ and to a relative-error criterion. Everything is computed twice: with all positions, and
   without position 0 (the "attention sink": there attention sees only the token itself, so its
   output is a fixed function of ``h`` and trivially predictable).
2. **Over training.** :func:`train_small` trains a byte-level GPT-2 on the shipped public-domain
   corpus (``redundancy/corpus``) and saves checkpoints; the probe runs on each.
3. **Causal check.** Replace the attention outputs that the probe calls redundant with the
   probe's prediction and measure the change in next-token loss, per layer and in all layers at
   once; compare with replacing the same number of randomly chosen tokens and with mean
   ablation.

Definitions are in docs/redundancy.md. The package sits beside :mod:`cram.consolidation` (it may
import models, kernels, core and the trainer's checkpoint format, never the CLI). Modules, in the
order of the study:

- :mod:`~cram.redundancy.gpt2`: the GPT-2 model (Hugging Face layout), with captures and overrides;
- :mod:`~cram.redundancy.hf`: loading and saving a local Hugging Face GPT-2 directory;
- :mod:`~cram.redundancy.checkpoints`: GPT-2 checkpoints in the trainer's format;
- :mod:`~cram.redundancy.text`: tokenizers, the shipped corpus, random windows;
- :mod:`~cram.redundancy.config`: ``ProbeConfig``, ``TrainSmallConfig`` and presets;
- :mod:`~cram.redundancy.train`: training the small model;
- :mod:`~cram.redundancy.probe`: ridge probes and their metrics;
- :mod:`~cram.redundancy.causal`: the causal replacement check;
- :mod:`~cram.redundancy.report`: tables, summary and figure;
- :mod:`~cram.redundancy.study`: the two end-to-end runs (``run_train_small``, ``run_model_dir``).
"""

from __future__ import annotations

from cram.redundancy.causal import causal_check
from cram.redundancy.checkpoints import load_gpt2_checkpoint, save_gpt2_checkpoint
from cram.redundancy.config import TRAIN_PRESETS, ProbeConfig, TrainSmallConfig, train_preset
from cram.redundancy.probe import (
    VARIANTS,
    RidgeProbe,
    collect,
    fit_ridge,
    pooled_r2,
    probe_model,
    token_cosine,
    token_relerr,
)
from cram.redundancy.report import plot, prepare_out_dir, summarise, write_csv
from cram.redundancy.study import analyse_checkpoint, probe_windows, run_model_dir, run_train_small
from cram.redundancy.text import (
    CORPUS_DIR,
    ByteTokenizer,
    GPT2BPETokenizer,
    corpus_files,
    load_corpus_text,
    sample_windows,
)
from cram.redundancy.train import eval_loss, train_small

__all__ = [
    "CORPUS_DIR", "TRAIN_PRESETS", "VARIANTS", "ByteTokenizer", "GPT2BPETokenizer", "ProbeConfig",
    "RidgeProbe", "TrainSmallConfig", "analyse_checkpoint", "causal_check", "collect",
    "corpus_files", "eval_loss", "fit_ridge", "load_corpus_text", "load_gpt2_checkpoint", "plot",
    "pooled_r2", "prepare_out_dir", "probe_model", "probe_windows", "run_model_dir",
    "run_train_small", "sample_windows", "save_gpt2_checkpoint", "summarise", "token_cosine",
    "token_relerr", "train_preset", "train_small", "write_csv",
]
