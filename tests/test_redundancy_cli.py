"""`cram redundancy` end to end: --train-small on a shrunken cpu-tiny, --model-dir, bad input."""

from __future__ import annotations

import json

import pytest

from cram.cli import main
from cram.redundancy.gpt2 import GPT2, GPT2Config
from cram.redundancy.hf import save_hf_dir

SMALL = ["--set", "checkpoint_steps=0,3,6", "--set", "steps=6", "--set", "probe.n_fit_seqs=8",
         "--set", "probe.n_eval_seqs=4", "--set", "val_batches=1", "--no-progress"]


def _run_json(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    return code, out


def test_train_small_json_files_and_no_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    code, cap = _run_json(capsys, ["redundancy", "--train-small", "--preset", "cpu-tiny",
                                   "--out", str(out), "--json", *SMALL])
    assert code == 0, cap.err
    doc = json.loads(cap.out)
    probe, causal = doc["probe"], doc["causal"]
    cks = {r["checkpoint"] for r in probe}
    assert cks == {"step_000000", "step_000003", "step_000006"}
    # cpu-tiny: 2 layers × 2 heads; every (checkpoint, tokens, layer, head) present once
    keys = {(r["checkpoint"], r["tokens"], r["layer"], r["head"]) for r in probe}
    assert len(keys) == len(probe) == 3 * 2 * 2 * 3
    for r in probe:
        assert {"checkpoint", "layer", "head", "r2", "predictable_fraction"} <= set(r)
    assert {c["layer"] for c in causal} == {0, 1, "all"}
    assert all("delta_loss_redundant" in c for c in causal)
    for f in ("probe.csv", "sensitivity.csv", "causal.csv", "summary.json", "redundancy.png",
              "training.csv", "config.json", "checkpoints/step_000006.pt"):
        assert (out / f).is_file(), f
    assert (out / "redundancy.png").read_bytes()[:4] == b"\x89PNG"
    # same seed → same numbers
    code2, cap2 = _run_json(capsys, ["redundancy", "--train-small", "--out", str(tmp_path / "b"),
                                     "--json", *SMALL])
    assert code2 == 0
    assert json.loads(cap2.out)["probe"] == probe
    # an existing, non-empty --out is refused and left as it was
    before = (out / "probe.csv").read_bytes()
    code3, cap3 = _run_json(capsys, ["redundancy", "--train-small", "--out", str(out), *SMALL])
    assert code3 == 2 and "not empty" in cap3.err and cap3.out == ""
    assert (out / "probe.csv").read_bytes() == before


def test_model_dir_with_byte_vocab(tmp_path, capsys):
    cfg = GPT2Config(vocab_size=256, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    d = save_hf_dir(GPT2(cfg).init_weights(seed=0), tmp_path / "m")
    code, cap = _run_json(capsys, ["redundancy", "--model-dir", str(d), "--out",
                                   str(tmp_path / "o"), "--set", "n_fit_seqs=8", "--set",
                                   "n_eval_seqs=4", "--no-progress"])
    assert code == 0, cap.err
    assert "all_tokens" in cap.out and "no_first_token" in cap.out
    assert (tmp_path / "o" / "redundancy.png").is_file()


@pytest.mark.parametrize("setup,msg", [
    ("empty", "no config.json"),
    ("noweights", "no weights file"),
    ("badvocab", "vocab.json and merges.txt"),
])
def test_model_dir_bad_input(tmp_path, capsys, setup, msg):
    d = tmp_path / "m"
    if setup == "empty":
        d.mkdir()
    elif setup == "noweights":
        save_hf_dir(GPT2(GPT2Config(vocab_size=300, n_positions=8, n_embd=8, n_layer=1,
                                    n_head=2)), d)
        (d / "model.safetensors").unlink()
    else:
        save_hf_dir(GPT2(GPT2Config(vocab_size=300, n_positions=8, n_embd=8, n_layer=1,
                                    n_head=2)), d)
    code, cap = _run_json(capsys, ["redundancy", "--model-dir", str(d), "--out",
                                   str(tmp_path / "o"), "--no-progress"])
    assert code == 2 and msg in cap.err and "cram: error:" in cap.err
    assert not (tmp_path / "o").exists()
