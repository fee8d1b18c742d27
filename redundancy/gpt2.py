"""GPT-2, written to match Hugging Face's ``GPT2LMHeadModel`` so that its weights load unchanged.

Read top to bottom: config, attention, MLP, block, model. Hugging Face loading and saving are in
:mod:`cram.redundancy.hf`, checkpoints in :mod:`cram.redundancy.checkpoints`.

Architecture (Radford et al. 2019, as implemented by Hugging Face ``transformers``): pre-LayerNorm
blocks ``x ← x + attn(ln_1(x)); x ← x + mlp(ln_2(x))``, learned absolute position embeddings,
GELU with the tanh approximation (HF ``"gelu_new"``), a final LayerNorm and an LM head tied to the
token embedding.

Where the redundancy probe reads (``capture=True``), per layer ``l``:

- ``h``: the residual stream entering block ``l``, **before** ``ln_1`` (the "pre-attention hidden
  state");
- ``z``: the per-head attention outputs, **before** the output projection ``c_proj``;
- ``a``: the attention sub-layer's output **after** ``c_proj`` (bias included), i.e. exactly what is
  added to the residual stream.

The attention is this module's own, not :class:`cram.models.attention.CausalSelfAttention`: it
keeps Hugging Face's fused ``c_attn`` layout, returns the per-head output before ``c_proj`` and
applies attention dropout (docs/redundancy.md, "Shared code").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cram.core.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPT2Config:
    """Hyper-parameters of a GPT-2 model; field names follow Hugging Face's ``GPT2Config``.

    Parameters
    ----------
    vocab_size : int
        Number of token ids (50257 for OpenAI's BPE; 256 for this package's byte tokenizer).
    n_positions : int
        Longest context (size of the learned position table).
    n_embd, n_layer, n_head : int
        Width, depth and heads; ``n_embd`` must be divisible by ``n_head``.
    n_inner : int or None
        MLP hidden width; ``None`` means ``4 * n_embd`` as in Hugging Face.
    layer_norm_epsilon : float
        LayerNorm epsilon (1e-5 in GPT-2).
    dropout : float
        Embedding, attention and residual dropout, used in training only (HF default 0.1).
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    layer_norm_epsilon: float = 1e-5
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"GPT2Config.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"GPT2Config: n_embd={self.n_embd} is not divisible by n_head={self.n_head}"
            )
        if self.n_inner is not None and self.n_inner < 1:
            raise ConfigError(f"GPT2Config.n_inner must be >= 1 or None, got {self.n_inner}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"GPT2Config.dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        """Width of one head."""
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        """MLP hidden width."""
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @classmethod
    def from_hf_dict(cls, d: dict, where: str = "config.json") -> GPT2Config:
        """Build from a Hugging Face ``config.json`` dict (unknown keys are ignored)."""
        act = d.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ConfigError(
                f"{where}: activation_function={act!r} is not supported (GPT-2 uses 'gelu_new')"
            )
        mt = d.get("model_type", "gpt2")
        if mt != "gpt2":
            raise ConfigError(f"{where}: model_type={mt!r}, expected 'gpt2'")
        missing = [k for k in ("n_embd", "n_layer", "n_head", "vocab_size") if k not in d]
        if missing:
            raise ConfigError(f"{where}: missing keys {missing}")
        try:
            return cls(
                vocab_size=int(d["vocab_size"]),
                n_positions=int(d.get("n_positions", d.get("n_ctx", 1024))),
                n_embd=int(d["n_embd"]),
                n_layer=int(d["n_layer"]),
                n_head=int(d["n_head"]),
                n_inner=None if d.get("n_inner") is None else int(d["n_inner"]),
                layer_norm_epsilon=float(d.get("layer_norm_epsilon", 1e-5)),
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None

    def to_hf_dict(self) -> dict:
        """The Hugging Face ``config.json`` fields that describe this model."""
        return {
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "activation_function": "gelu_new",
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": self.n_inner,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "resid_pdrop": self.dropout,
            "embd_pdrop": self.dropout,
            "attn_pdrop": self.dropout,
            "tie_word_embeddings": True,
        }


#: Hugging Face's GPT-2 sizes, plus small sizes for tests and CPU training (byte vocabulary).
PRESETS: dict[str, GPT2Config] = {
    "gpt2": GPT2Config(),  # 124M
    "gpt2-medium": GPT2Config(n_embd=1024, n_layer=24, n_head=16),  # 355M
    "gpt2-large": GPT2Config(n_embd=1280, n_layer=36, n_head=20),  # 774M
    "gpt2-xl": GPT2Config(n_embd=1600, n_layer=48, n_head=25),  # 1558M
    "test": GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2),
    "cpu-tiny": GPT2Config(vocab_size=256, n_positions=64, n_embd=64, n_layer=2, n_head=2),
    "cpu": GPT2Config(vocab_size=256, n_positions=128, n_embd=128, n_layer=4, n_head=4),
}


def preset(name: str) -> GPT2Config:
    """Return a named :class:`GPT2Config` (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown GPT-2 preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------

#: ``override(layer, h, a) -> a_new``: replaces the attention sub-layer output of ``layer``.
#: ``h`` and ``a`` are (B, T, d); returning ``a`` unchanged is a no-op.
AttnOverride = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


class LayerCapture(NamedTuple):
    """What the probe reads at one layer (see the module docstring)."""

    h: torch.Tensor  # (B, T, d)   residual entering the block, before ln_1
    z: torch.Tensor  # (B, T, H, dh) per-head attention output, before c_proj
    a: torch.Tensor  # (B, T, d)   attention sub-layer output after c_proj (added to the residual)


class GPT2Output(NamedTuple):
    """What :meth:`GPT2.forward` returns."""

    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None  # scalar mean cross-entropy when targets are given
    captures: list[LayerCapture] | None  # one per layer when capture=True


class CausalSelfAttention(nn.Module):
    """GPT-2's causal attention with Hugging Face's fused ``c_attn`` (q, k, v) and ``c_proj``."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)  # q, k, v stacked on the output dim
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.attn_dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(z, a)``: per-head outputs (B, T, H, dh) and the projected output (B, T, d)."""
        B, T, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=-1)  # 3 × (B, T, d)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, dh)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, dh)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, dh)
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, H, T, dh)
        z = y.transpose(1, 2)  # (B, T, H, dh)
        a = self.c_proj(z.reshape(B, T, d))  # (B, T, d)
        return z, a


class MLP(nn.Module):
    """GPT-2's MLP: ``c_proj(gelu_tanh(c_fc(x)))``."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.inner_dim)
        self.c_proj = nn.Linear(cfg.inner_dim, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP to x (B, T, d)."""
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # (B, T, d)


class Block(nn.Module):
    """One pre-LayerNorm block's modules; :meth:`GPT2.forward` runs them (to read h, z, a)."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = MLP(cfg)
        self.resid_dropout = nn.Dropout(cfg.dropout)


class GPT2(nn.Module):
    """GPT-2 language model with a tied LM head.

    Parameter names are ours (``tok_emb``, ``blocks.{i}.attn.c_attn`` as ``nn.Linear`` with
    weight (out, in)); :func:`hf_to_ours` maps Hugging Face names and Conv1D layout onto them.
    """

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)

    def init_weights(self, seed: int | torch.Generator | None = None) -> GPT2:
        """GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer)."""
        gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(
            0 if seed is None else int(seed)
        )
        std_proj = 0.02 / math.sqrt(2 * self.config.n_layer)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif ".ln_" in name or name.startswith("ln_f"):
                    p.fill_(1.0)
                else:
                    std = std_proj if name.endswith("c_proj.weight") else 0.02
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
        return self

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        capture: bool = False,
        attn_override: AttnOverride | None = None,
    ) -> GPT2Output:
        """Run the model on token ids ``idx`` (B, T).

        Parameters
        ----------
        idx : LongTensor (B, T)
        targets : LongTensor (B, T), optional
            Next-token targets; positions equal to -100 are ignored in the loss.
        capture : bool
            Return a :class:`LayerCapture` per layer (detached).
        attn_override : callable, optional
            ``override(layer, h, a) -> a_new`` replaces the attention output before it is added
            to the residual (used by the causal check).
        """
        _, T = idx.shape  # (B, T)
        if T > self.config.n_positions:
            raise ConfigError(
                f"sequence length {T} exceeds the model's n_positions={self.config.n_positions}"
            )
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, d)
        caps: list[LayerCapture] = []
        for i, blk in enumerate(self.blocks):
            h = x  # (B, T, d) pre-attention residual
            z, a = blk.attn(blk.ln_1(h))  # (B, T, H, dh), (B, T, d)
            if capture:
                caps.append(LayerCapture(h.detach(), z.detach(), a.detach()))
            if attn_override is not None:
                a = attn_override(i, h, a)
            x = h + blk.resid_dropout(a)
            x = x + blk.resid_dropout(blk.mlp(blk.ln_2(x)))
        logits = F.linear(self.ln_f(x), self.tok_emb.weight)  # (B, T, V), tied head
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return GPT2Output(logits, loss, caps if capture else None)

    def num_params(self) -> int:
        """Number of parameters (the tied head counted once)."""
        return sum(p.numel() for p in self.parameters())
