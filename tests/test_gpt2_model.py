"""GPT-2 model and loader, checked against an independent NumPy forward pass.

A tiny Hugging Face-format checkpoint is written here, loaded, and its logits compared with the
NumPy pass kept in this file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cram.core.errors import CheckpointError, ConfigError
from cram.redundancy.checkpoints import load_gpt2_checkpoint, save_gpt2_checkpoint
from cram.redundancy.gpt2 import GPT2, PRESETS, GPT2Config
from cram.redundancy.hf import load_hf_dir, save_hf_dir

V, P, D, L, H = 50, 12, 16, 2, 4  # vocab, positions, width, layers, heads


def _hf_state(rng: np.random.Generator, prefix: str = "transformer.") -> dict[str, np.ndarray]:
    """Random weights under Hugging Face names in Conv1D layout (in, out)."""
    def f(*s):
        return (rng.standard_normal(s) * 0.3).astype(np.float32)

    sd = {f"{prefix}wte.weight": f(V, D), f"{prefix}wpe.weight": f(P, D),
          f"{prefix}ln_f.weight": 1 + f(D), f"{prefix}ln_f.bias": f(D)}
    for i in range(L):
        b = f"{prefix}h.{i}."
        sd |= {b + "ln_1.weight": 1 + f(D), b + "ln_1.bias": f(D),
               b + "attn.c_attn.weight": f(D, 3 * D), b + "attn.c_attn.bias": f(3 * D),
               b + "attn.c_proj.weight": f(D, D), b + "attn.c_proj.bias": f(D),
               b + "ln_2.weight": 1 + f(D), b + "ln_2.bias": f(D),
               b + "mlp.c_fc.weight": f(D, 4 * D), b + "mlp.c_fc.bias": f(4 * D),
               b + "mlp.c_proj.weight": f(4 * D, D), b + "mlp.c_proj.bias": f(D)}
        # the causal-mask buffer old HF checkpoints carry
        sd[b + "attn.bias"] = np.tril(np.ones((P, P), np.float32))[None, None]
    return sd


def _hf_config() -> dict:
    return {"model_type": "gpt2", "activation_function": "gelu_new", "vocab_size": V,
            "n_positions": P, "n_ctx": P, "n_embd": D, "n_layer": L, "n_head": H,
            "n_inner": None, "layer_norm_epsilon": 1e-5}


def _np_forward(sd: dict[str, np.ndarray], ids: np.ndarray, prefix="transformer.") -> np.ndarray:
    """GPT-2 forward in float64 NumPy, written from the paper/HF definitions."""
    w = {k[len(prefix):]: v.astype(np.float64) for k, v in sd.items()}

    def ln(x, g, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * g + b

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    T = len(ids)
    x = w["wte.weight"][ids] + w["wpe.weight"][:T]
    dh = D // H
    for i in range(L):
        def g(n, i=i):
            return w[f"h.{i}.{n}"]

        h1 = ln(x, g("ln_1.weight"), g("ln_1.bias"))
        qkv = h1 @ g("attn.c_attn.weight") + g("attn.c_attn.bias")
        out = np.zeros((T, D))
        for hh in range(H):
            q = qkv[:, hh * dh:(hh + 1) * dh]
            k = qkv[:, D + hh * dh:D + (hh + 1) * dh]
            v = qkv[:, 2 * D + hh * dh:2 * D + (hh + 1) * dh]
            s = q @ k.T / np.sqrt(dh)
            s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            out[:, hh * dh:(hh + 1) * dh] = p @ v
        x = x + out @ g("attn.c_proj.weight") + g("attn.c_proj.bias")
        h2 = ln(x, g("ln_2.weight"), g("ln_2.bias"))
        m = gelu(h2 @ g("mlp.c_fc.weight") + g("mlp.c_fc.bias"))
        x = x + m @ g("mlp.c_proj.weight") + g("mlp.c_proj.bias")
    return ln(x, w["ln_f.weight"], w["ln_f.bias"]) @ w["wte.weight"].T


def _write_dir(tmp_path, fmt: str, prefix="transformer.", seed=0):
    from safetensors.numpy import save_file

    sd = _hf_state(np.random.default_rng(seed), prefix)
    d = tmp_path / f"gpt2-{fmt}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(_hf_config()))
    if fmt == "safetensors":
        save_file(sd, str(d / "model.safetensors"))
    else:
        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, d / "pytorch_model.bin")
    return d, sd


@pytest.mark.parametrize("fmt,prefix", [("safetensors", "transformer."), ("bin", ""),
                                        ("safetensors", "")])
def test_tiny_checkpoint_logits_match_numpy_reference(tmp_path, fmt, prefix):
    d, sd = _write_dir(tmp_path, fmt, prefix)
    model = load_hf_dir(d)
    ids = np.random.default_rng(1).integers(0, V, size=(3, P))
    with torch.no_grad():
        logits = model(torch.from_numpy(ids)).logits.double().numpy()
    for b in range(3):
        ref = _np_forward(sd, ids[b], prefix)
        np.testing.assert_allclose(logits[b], ref, rtol=1e-4, atol=1e-4)
    # causal: a prefix gives the same logits as the full sequence on that prefix
    with torch.no_grad():
        short = model(torch.from_numpy(ids[:, :5])).logits.double().numpy()
    np.testing.assert_allclose(short, logits[:, :5], atol=1e-5)


def test_captures_sum_to_residual_and_override_changes_output(tmp_path):
    d, _ = _write_dir(tmp_path, "safetensors")
    model = load_hf_dir(d)
    ids = torch.randint(0, V, (2, P), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(ids, capture=True)
        cap = out.captures
        assert len(cap) == L and cap[0].h.shape == (2, P, D) and cap[0].z.shape == (2, P, H, D // H)
        blk = model.blocks[0]
        # a = c_proj(concat heads z): the capture points are consistent
        torch.testing.assert_close(blk.attn.c_proj(cap[0].z.reshape(2, P, D)), cap[0].a)
        # h of layer 1 = h0 + a0 + mlp(ln_2(h0 + a0))
        x = cap[0].h + cap[0].a
        torch.testing.assert_close(cap[1].h, x + blk.mlp(blk.ln_2(x)), atol=1e-5, rtol=1e-5)
        same = model(ids, attn_override=lambda i, h, a: a).logits
        torch.testing.assert_close(same, out.logits)
        zeroed = model(ids, attn_override=lambda i, h, a: torch.zeros_like(a)).logits
        assert (zeroed - out.logits).abs().max() > 1e-3


def test_roundtrip_save_hf_dir_and_checkpoint(tmp_path):
    cfg = GPT2Config(vocab_size=40, n_positions=10, n_embd=12, n_layer=2, n_head=3)
    m = GPT2(cfg).init_weights(seed=3).eval()
    ids = torch.randint(0, 40, (2, 10), generator=torch.Generator().manual_seed(1))
    ref = m(ids).logits
    for fmt in ("safetensors", "bin"):
        back = load_hf_dir(save_hf_dir(m, tmp_path / fmt, fmt=fmt))
        assert back.config == cfg
        torch.testing.assert_close(back(ids).logits, ref)
    save_gpt2_checkpoint(tmp_path / "ck" / "c.pt", m, step=7, tokenizer="bytes")
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["c.pt"]  # no staging left behind
    m2, extra = load_gpt2_checkpoint(tmp_path / "ck" / "c.pt")
    assert extra == {"model_name": "gpt2", "step": 7, "tokenizer": "bytes"} and m2.config == cfg
    torch.testing.assert_close(m2(ids).logits, ref)


def test_checkpoint_is_the_trainers_format(tmp_path):
    from cram.consolidation.checkpoint import FORMAT, load_checkpoint, save_checkpoint

    m = GPT2(GPT2Config(vocab_size=20, n_positions=6, n_embd=8, n_layer=1, n_head=2))
    path = save_gpt2_checkpoint(tmp_path / "g.pt", m.init_weights(seed=0), step=3)
    state = load_checkpoint(path, expect_model="gpt2")  # the trainer's own validating loader
    assert state["format"] == FORMAT and state["step"] == 3
    assert state["model_args"]["n_embd"] == 8
    # a checkpoint of another model is refused by name
    other = save_checkpoint(tmp_path / "cram", {"model_name": "cram", "model_args": {},
                                                "model": {}, "step": 0})
    with pytest.raises(CheckpointError, match="'cram'"):
        load_gpt2_checkpoint(other)


def test_presets_match_hugging_face_sizes():
    with torch.device("meta"):
        n124 = GPT2(PRESETS["gpt2"]).num_params()
        n355 = GPT2(PRESETS["gpt2-medium"]).num_params()
    assert n124 == 124_439_808  # HF GPT2LMHeadModel("gpt2"), tied head counted once
    assert n355 == 354_823_168


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def test_directory_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_hf_config()))
    with pytest.raises(CheckpointError, match="no weights file"):
        load_hf_dir(tmp_path)
    with pytest.raises(CheckpointError, match="no config.json"):
        load_hf_dir(_empty(tmp_path))
    with pytest.raises(CheckpointError, match="not a directory"):
        load_hf_dir(tmp_path / "missing")


def _empty(tmp_path):
    e = tmp_path / "empty"
    e.mkdir()
    return e


def test_config_and_weights_mismatch(tmp_path):
    d, _ = _write_dir(tmp_path, "safetensors")
    cfg = _hf_config() | {"n_embd": 32}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match"):
        load_hf_dir(d)
    (d / "config.json").write_text(json.dumps(_hf_config() | {"n_layer": 1}))
    with pytest.raises(CheckpointError, match="n_layer=1"):
        load_hf_dir(d)
    (d / "config.json").write_text(json.dumps(_hf_config() | {"n_layer": 3}))
    with pytest.raises(CheckpointError, match="missing tensors"):
        load_hf_dir(d)
    (d / "config.json").write_text(json.dumps(_hf_config() | {"n_head": 5}))
    with pytest.raises(ConfigError, match="n_head=5"):
        load_hf_dir(d)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_truncated_file(tmp_path, fmt):
    d, _ = _write_dir(tmp_path, fmt)
    f = d / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_hf_dir(d)


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_bin_with_arbitrary_objects_is_refused(tmp_path, capsys):
    d, _ = _write_dir(tmp_path, "bin")
    torch.save({"wte.weight": torch.zeros(2), "x": _Evil()}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused|truncated or corrupt"):
        load_hf_dir(d)
    assert "unpickled!" not in capsys.readouterr().out
