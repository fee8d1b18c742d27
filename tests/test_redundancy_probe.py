"""Ridge probe, metrics, tokenizers and the causal check of cram.redundancy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cram import redundancy as R
from cram.core.errors import ConfigError, DataError
from cram.redundancy.causal import _make_override
from cram.redundancy.gpt2 import GPT2, GPT2Config
from cram.redundancy.text import _bytes_to_unicode


def test_fit_ridge_matches_numpy_closed_form_and_recovers_map():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 6)) * np.array([1, 2, 3, 0.5, 1, 4])
    W = rng.standard_normal((6, 3))
    Y = X @ W + np.array([1.0, -2.0, 0.5]) + 0.01 * rng.standard_normal((400, 3))
    p = R.fit_ridge(torch.from_numpy(X), torch.from_numpy(Y), alphas=(1e-6, 1e-2, 10.0))
    assert p.alpha == 1e-6  # tiny noise: the weakest penalty wins on validation
    # independent closed form with the same λ
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    W_ref = np.linalg.solve(Xc.T @ Xc + p.lam * np.eye(6), Xc.T @ Yc)
    np.testing.assert_allclose(p.W.numpy(), W_ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(p.W.numpy(), W, atol=5e-3)
    pred = p.predict(torch.from_numpy(X))
    assert R.pooled_r2(torch.from_numpy(Y), pred) > 0.999
    # with pure noise targets, validation picks the strongest penalty and R² is near 0
    noise = rng.standard_normal((400, 3))
    pn = R.fit_ridge(torch.from_numpy(X), torch.from_numpy(noise), alphas=(1e-6, 10.0))
    assert pn.alpha == 10.0


def test_metrics_identities():
    y = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    assert R.pooled_r2(y, y) == pytest.approx(1.0)
    assert R.pooled_r2(y, y.mean(0).expand_as(y)) == pytest.approx(0.0)
    np.testing.assert_allclose(R.token_cosine(y, 2 * y).numpy(), 1.0)
    np.testing.assert_allclose(R.token_cosine(y, -y).numpy(), -1.0)
    np.testing.assert_allclose(R.token_relerr(y, y * 1.5).numpy(), 0.5)
    assert float(R.token_cosine(y, torch.zeros_like(y))[0]) == 0.0


def test_byte_tokenizer_and_corpus_split():
    tok = R.ByteTokenizer()
    ids = tok.encode("To be, or not")
    assert ids.dtype == np.int64 and ids.max() < 256 and tok.decode(ids) == "To be, or not"
    train, val = R.load_corpus_text(val_fraction=0.1)
    assert len(train) > 1_000_000 and 0.08 < len(val) / (len(train) + len(val)) < 0.12
    assert "Hamlet" in train and not set(val) - set(train)  # ASCII both sides
    with pytest.raises(DataError, match="no corpus"):
        R.corpus_files("/nonexistent-dir")


def test_gpt2_bpe_tokenizer_on_a_tiny_vocabulary(tmp_path):
    bmap = _bytes_to_unicode()
    assert len(set(bmap.values())) == 256 and bmap[ord(" ")] == "Ġ"
    vocab = {c: i for i, c in enumerate(sorted(bmap.values()))}
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "w")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    lines = "\n".join(f"{a} {b}" for a, b in merges)
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + lines)
    tok = R.GPT2BPETokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt")
    ids = tok.encode("hello world")
    inv = {v: k for k, v in vocab.items()}
    assert [inv[i] for i in ids] == ["hell", "o", "Ġw", "o", "r", "l", "d"]
    (tmp_path / "merges.txt").write_text("a b c\n")
    with pytest.raises(DataError, match="line 1"):
        R.GPT2BPETokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt")


@pytest.fixture(scope="module")
def tiny_model():
    cfg = GPT2Config(vocab_size=256, n_positions=24, n_embd=32, n_layer=2, n_head=4)
    return GPT2(cfg).init_weights(seed=1).eval()


@pytest.fixture(scope="module")
def tiny_windows():
    pc = R.ProbeConfig(n_fit_seqs=24, n_eval_seqs=8, seed=3)
    fit, ev = R.probe_windows(R.ByteTokenizer(), 24, pc)
    return pc, fit, ev


def test_probe_rows_cover_layers_heads_and_both_token_sets(tiny_model, tiny_windows):
    pc, fit, ev = tiny_windows
    assert fit.shape == (24, 24) and ev.shape == (8, 25)
    rows, sens, probes = R.probe_model(tiny_model, fit, ev[:, :-1], pc, "ck", 0)
    assert len(rows) == 2 * 2 * (1 + 4)  # variants × layers × (layer + heads)
    for r in rows:
        assert {"checkpoint", "layer", "head", "r2", "predictable_fraction"} <= set(r)
        assert 0.0 <= r["predictable_fraction"] <= 1.0 and r["r2"] <= 1.0
    lay = {(r["tokens"], r["layer"]): r for r in rows if r["head"] is None}
    assert lay[("all_tokens", 0)]["n_eval"] == 8 * 24
    assert lay[("no_first_token", 0)]["n_eval"] == 8 * 23
    # sensitivity is monotone: stricter cosine → smaller fraction; larger error budget → larger
    for v, _ in R.VARIANTS:
        cs = [s["fraction"] for s in sens if s["tokens"] == v and s["layer"] == 1
              and s["criterion"] == "cosine>="]
        es = [s["fraction"] for s in sens if s["tokens"] == v and s["layer"] == 1
              and s["criterion"] == "relerr<="]
        assert cs == sorted(cs, reverse=True) and es == sorted(es)
    assert set(probes) == {(v, li) for v, _ in R.VARIANTS for li in range(2)}


def test_causal_check_thresholds_bracket_the_replacement(tiny_model, tiny_windows):
    pc, fit, ev = tiny_windows
    _, _, probes = R.probe_model(tiny_model, fit, ev[:, :-1], pc)
    # tau = -1: every eligible token is replaced, so it equals replacing all of them
    c_all = R.causal_check(tiny_model, probes, ev, R.ProbeConfig(cos_threshold=-1.0,
                                                                 batch_size=pc.batch_size))
    for c in c_all:
        assert c["replaced_fraction"] == pytest.approx(1.0)
        assert c["delta_loss_redundant"] == pytest.approx(c["delta_loss_probe_all"], abs=1e-6)
    # tau = 1: (almost) nothing is replaced and the loss does not move
    c_none = R.causal_check(tiny_model, probes, ev, R.ProbeConfig(cos_threshold=1.0))
    for c in c_none:
        assert c["replaced_fraction"] < 0.01 and abs(c["delta_loss_redundant"]) < 1e-3
    # mean ablation of every layer at once really changes the loss of a random model
    allrow = next(c for c in c_all if c["layer"] == "all")
    assert abs(allrow["delta_loss_mean_ablation"]) > 1e-4


def test_override_without_first_token_leaves_position_zero(tiny_model, tiny_windows):
    pc, fit, ev = tiny_windows
    _, _, probes = R.probe_model(tiny_model, fit, ev[:, :-1], pc)
    ovr = _make_override({0}, probes, "no_first_token", False, "all", 0.0)
    x = torch.from_numpy(ev[:2, :-1])
    with torch.no_grad():
        cap = tiny_model(x, capture=True).captures[0]
        new = ovr(0, cap.h, cap.a)
    torch.testing.assert_close(new[:, 0], cap.a[:, 0])
    assert (new[:, 1:] - cap.a[:, 1:]).abs().max() > 0
    torch.testing.assert_close(ovr(1, cap.h, cap.a), cap.a)  # other layers untouched


def test_config_errors():
    with pytest.raises(ConfigError, match="checkpoint_steps"):
        R.TrainSmallConfig(steps=10, checkpoint_steps=(0, 20))
    with pytest.raises(ConfigError, match="unknown --preset"):
        R.train_preset("huge")
    with pytest.raises(ConfigError, match="cos_threshold"):
        R.ProbeConfig(cos_threshold=1.5)
