"""Hugging Face GPT-2 names and layout ↔ ours; loading and saving a local HF directory.

Weights load from a local directory in the Hugging Face layout (``config.json`` plus
``model.safetensors`` or ``pytorch_model.bin``), the latter read with ``torch.load(...,
weights_only=True)`` so that no arbitrary object is ever unpickled. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from cram.core.errors import CheckpointError, ConfigError
from cram.redundancy.gpt2 import GPT2, GPT2Config

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
    """Hugging Face name of our parameter ``k`` (without the ``transformer.`` prefix)."""
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
