"""GPT-2, written to match Hugging Face's ``GPT2LMHeadModel`` so that its weights load unchanged.

Read top to bottom: config, attention, MLP, block, model, then loading and saving.

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

Weights load from a local directory in the Hugging Face layout (``config.json`` plus
``model.safetensors`` or ``pytorch_model.bin``), the latter read with ``torch.load(...,
weights_only=True)`` so that no arbitrary object is ever unpickled. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cram.core.errors import CheckpointError, ConfigError

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
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
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
    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None  # scalar mean cross-entropy when targets are given
    captures: list[LayerCapture] | None  # one per layer when capture=True


class CausalSelfAttention(nn.Module):
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
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.inner_dim)
        self.c_proj = nn.Linear(cfg.inner_dim, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # (B, T, d)


class Block(nn.Module):
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
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------------------------------------
# Hugging Face names ↔ ours
# ---------------------------------------------------------------------------------------------

#: HF suffix inside ``h.{i}.`` → our suffix inside ``blocks.{i}.``; Conv1D weights are (in, out).
_BLOCK_MAP = {
    "ln_1.weight": "ln_1.weight",
    "ln_1.bias": "ln_1.bias",
    "attn.c_attn.weight": "attn.c_attn.weight",
    "attn.c_attn.bias": "attn.c_attn.bias",
    "attn.c_proj.weight": "attn.c_proj.weight",
    "attn.c_proj.bias": "attn.c_proj.bias",
    "ln_2.weight": "ln_2.weight",
    "ln_2.bias": "ln_2.bias",
    "mlp.c_fc.weight": "mlp.c_fc.weight",
    "mlp.c_fc.bias": "mlp.c_fc.bias",
    "mlp.c_proj.weight": "mlp.c_proj.weight",
    "mlp.c_proj.bias": "mlp.c_proj.bias",
}
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
#: Buffers some HF checkpoints carry (causal masks); they hold no learned values.
_IGNORED_SUFFIXES = ("attn.bias", "attn.masked_bias")


def hf_to_ours(hf: dict[str, torch.Tensor], cfg: GPT2Config, source: str = "weights") -> dict:
    """Map a Hugging Face GPT-2 state dict (with or without the ``transformer.`` prefix) to ours.

    Raises
    ------
    CheckpointError
        On missing or unexpected tensors, or a shape that does not match ``cfg`` (the message
        names the tensor, both shapes and the config fields involved).
    """
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, t in hf.items():
        k = key.removeprefix("transformer.")
        if k == "lm_head.weight":
            continue  # tied to wte; checked below
        if k.startswith("h."):
            _, i, rest = k.split(".", 2)
            if rest in _IGNORED_SUFFIXES:
                continue
            if rest not in _BLOCK_MAP or not i.isdigit():
                unexpected.append(key)
                continue
            if int(i) >= cfg.n_layer:
                raise CheckpointError(
                    f"{source}: tensor {key!r} belongs to layer {i}, but config.json says "
                    f"n_layer={cfg.n_layer}: the config and the weights do not match"
                )
            ours = f"blocks.{i}.{_BLOCK_MAP[rest]}"
            out[ours] = t.t().contiguous() if rest in _CONV1D else t
        elif k in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"):
            ours = {"wte.weight": "tok_emb.weight", "wpe.weight": "pos_emb.weight"}.get(k, k)
            out[ours] = t
        else:
            unexpected.append(key)
    if unexpected:
        raise CheckpointError(f"{source}: unexpected tensors for GPT-2: {unexpected[:8]}")
    expected = _meta_shapes(cfg)
    missing = [k for k in expected if k not in out]
    if missing:
        raise CheckpointError(
            f"{source}: missing tensors {[ours_to_hf_name(k) for k in missing[:8]]}"
            + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        )
    for k, ref in expected.items():
        if tuple(out[k].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{source}: tensor {ours_to_hf_name(k)!r} has shape {tuple(out[k].shape)} "
                f"(as ours: after transposing Conv1D) but config.json (n_embd={cfg.n_embd}, "
                f"n_head={cfg.n_head}, vocab_size={cfg.vocab_size}, "
                f"n_positions={cfg.n_positions}) needs {tuple(ref.shape)}: "
                "the config and the weights do not match"
            )
    if "lm_head.weight" in hf and not torch.equal(hf["lm_head.weight"], out["tok_emb.weight"]):
        raise CheckpointError(f"{source}: lm_head.weight differs from wte.weight (GPT-2 ties them)")
    return {k: v.float() for k, v in out.items()}


def _meta_shapes(cfg: GPT2Config) -> dict:
    with torch.device("meta"):
        return GPT2(cfg).state_dict()


def ours_to_hf_name(k: str) -> str:
    if k.startswith("blocks."):
        _, i, rest = k.split(".", 2)
        return f"h.{i}.{rest}"
    return {"tok_emb.weight": "wte.weight", "pos_emb.weight": "wpe.weight"}.get(k, k)


def ours_to_hf(model: GPT2) -> dict[str, torch.Tensor]:
    """Our state dict under Hugging Face names, Conv1D weights transposed to (in, out)."""
    out = {}
    for k, t in model.state_dict().items():
        hk = ours_to_hf_name(k)
        rest = hk.split(".", 2)[2] if hk.startswith("h.") else ""
        out["transformer." + hk] = (t.t() if rest in _CONV1D else t).contiguous().clone()
    return out


# ---------------------------------------------------------------------------------------------
# Loading and saving
# ---------------------------------------------------------------------------------------------

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors or ``.bin`` file; never unpickles arbitrary objects."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(
                f"{path}: cannot read safetensors file ({err}); is it truncated or corrupt?"
            ) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - UnpicklingError, EOFError, RuntimeError (zip), ...
        raise CheckpointError(
            f"{path}: cannot read with torch.load(weights_only=True) ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); the file is truncated or corrupt, "
            "or holds objects other than tensors, which are refused"
        ) from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict)")
    return obj


def load_hf_dir(model_dir: str | os.PathLike) -> GPT2:
    """Load GPT-2 from a local Hugging Face directory (``config.json`` + weights), in eval mode.

    Weights are read from ``model.safetensors`` if present, else ``pytorch_model.bin`` (with
    ``weights_only=True``). Nothing is downloaded.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise CheckpointError(f"{d}: not a directory")
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{d}: no config.json (a Hugging Face GPT-2 directory has one)")
    try:
        cfg_dict = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({err})") from None
    cfg = GPT2Config.from_hf_dict(cfg_dict, where=str(cfg_path))
    weights = next((d / f for f in WEIGHT_FILES if (d / f).is_file()), None)
    if weights is None:
        raise CheckpointError(
            f"{d}: no weights file; expected one of {list(WEIGHT_FILES)} "
            "(sharded checkpoints are not supported)"
        )
    state = hf_to_ours(_read_tensor_file(weights), cfg, source=str(weights))
    model = GPT2(cfg)
    model.load_state_dict(state)
    return model.eval()


def save_hf_dir(model: GPT2, model_dir: str | os.PathLike, fmt: str = "safetensors") -> Path:
    """Write ``config.json`` and weights in the Hugging Face layout (``fmt``: safetensors | bin)."""
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(model.config.to_hf_dict(), indent=2))
    sd = ours_to_hf(model)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(d / "model.safetensors"))
    elif fmt == "bin":
        torch.save(sd, d / "pytorch_model.bin")
    else:
        raise ConfigError(f"save_hf_dir: fmt must be 'safetensors' or 'bin', got {fmt!r}")
    return d


def save_checkpoint(path: str | os.PathLike, model: GPT2, **extra) -> Path:
    """Save a checkpoint that rebuilds its model: ``{"model_args", "model", **extra}``.

    ``extra`` values must be plain data (numbers, strings, lists, dicts, tensors), so that
    :func:`load_checkpoint` can read it with ``weights_only=True``. Written atomically.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"model_args": dataclasses.asdict(model.config), "model": model.state_dict(),
                **extra}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[GPT2, dict]:
    """Rebuild a model saved by :func:`save_checkpoint`; returns ``(model in eval mode, extra)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({type(err).__name__}); truncated or corrupt?"
        ) from None
    if not isinstance(obj, dict) or "model_args" not in obj or "model" not in obj:
        raise CheckpointError(f"{path}: not a cram GPT-2 checkpoint (needs model_args and model)")
    try:
        cfg = GPT2Config(**obj["model_args"])
    except TypeError as err:
        raise CheckpointError(f"{path}: model_args do not fit GPT2Config ({err})") from None
    model = GPT2(cfg)
    try:
        model.load_state_dict(obj["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match model_args: {err}") from None
    extra = {k: v for k, v in obj.items() if k not in ("model_args", "model")}
    return model.eval(), extra
