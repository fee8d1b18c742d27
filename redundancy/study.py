"""The study end to end: windows, probe and causal check per checkpoint, output folder."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from cram.core.errors import ConfigError, DataError
from cram.core.jsonio import atomic_write_json
from cram.redundancy.causal import causal_check
from cram.redundancy.checkpoints import load_gpt2_checkpoint
from cram.redundancy.config import ProbeConfig, TrainSmallConfig
from cram.redundancy.hf import load_hf_dir
from cram.redundancy.probe import probe_model
from cram.redundancy.report import plot, prepare_out_dir, summarise, write_csv
from cram.redundancy.text import ByteTokenizer, GPT2BPETokenizer, load_corpus_text, sample_windows
from cram.redundancy.train import train_small


def probe_windows(tokenizer, n_positions: int, cfg: ProbeConfig,
                  text: tuple[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit windows (N, T) and evaluation windows (N, T+1) of token ids.

    Fit windows come from the training split and evaluation windows from the held-out split of
    the corpus (or of ``text = (fit_text, eval_text)``).
    """
    fit_text, eval_text = text if text is not None else load_corpus_text()
    T = cfg.seq_len or n_positions
    if T > n_positions:
        raise ConfigError(f"probe seq_len={T} exceeds the model's n_positions={n_positions}")
    fit_ss, eval_ss = np.random.SeedSequence(cfg.seed + 1).spawn(2)
    fit = sample_windows(tokenizer.encode(fit_text), cfg.n_fit_seqs, T,
                         np.random.default_rng(fit_ss))
    # evaluation windows carry one extra token as the last target; T may not exceed n_positions
    ev = sample_windows(tokenizer.encode(eval_text), cfg.n_eval_seqs, T + 1,
                        np.random.default_rng(eval_ss))
    return fit, ev


def analyse_checkpoint(model, name: str, step, tokenizer, cfg: ProbeConfig, text=None,
                       progress: bool = True):
    """Probe + causal check for one model; returns ``(probe_rows, sensitivity, causal_rows)``."""
    fit, ev = probe_windows(tokenizer, model.config.n_positions, cfg, text)
    rows, sens, probes = probe_model(model, fit, ev[:, :-1], cfg, name, step, progress)
    causal = causal_check(model, probes, ev, cfg, name, step, progress)
    return rows, sens, causal


def run_train_small(cfg: TrainSmallConfig, out_dir, progress: bool = True) -> dict:
    """Train, probe every checkpoint, run the causal check, write tables, summary and figure."""
    out = prepare_out_dir(out_dir)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    t0 = time.perf_counter()
    saved = train_small(cfg, out, progress)
    tok = ByteTokenizer()
    rows, sens, causal = [], [], []
    for step, path in saved:
        model, _ = load_gpt2_checkpoint(path)
        r, s, c = analyse_checkpoint(model, path.stem, step, tok, cfg.probe, progress=progress)
        rows += r
        sens += s
        causal += c
    return _finish(out, rows, sens, causal, f"small GPT-2 ({cfg.model}) on Shakespeare, bytes",
                   time.perf_counter() - t0)


def run_model_dir(model_dir, cfg: ProbeConfig, out_dir, text_file=None, progress=True) -> dict:
    """Probe a Hugging Face GPT-2 directory on the shipped corpus's held-out split (or a text)."""
    model = load_hf_dir(model_dir)
    d = Path(model_dir)
    tok = _tokenizer_for(d, model.config.vocab_size)
    text = None if text_file is None else _split_text(text_file)
    out = prepare_out_dir(out_dir)
    (out / "config.json").write_text(json.dumps({"model_dir": str(d), "text": str(text_file),
                                                 "probe": dataclasses.asdict(cfg)}, indent=2))
    t0 = time.perf_counter()
    rows, sens, causal = analyse_checkpoint(model, d.name, None, tok, cfg, text, progress)
    return _finish(out, rows, sens, causal, f"{d.name}", time.perf_counter() - t0)


def _tokenizer_for(d: Path, vocab_size: int):
    """Bytes for a 256-token vocabulary, else GPT-2 BPE from the directory's vocab and merges."""
    if vocab_size == 256:
        return ByteTokenizer()
    if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
        tok = GPT2BPETokenizer(d / "vocab.json", d / "merges.txt")
        if tok.vocab_size != vocab_size:
            raise DataError(f"{d}/vocab.json has {tok.vocab_size} entries but config.json says "
                            f"vocab_size={vocab_size}")
        return tok
    raise DataError(f"{d}: needs vocab.json and merges.txt to tokenize text for a model with "
                    f"vocab_size={vocab_size}")


def _split_text(text_file) -> tuple[str, str]:
    """``--text``: the first half fits the probe, the second half evaluates it."""
    try:
        t = Path(text_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"--text {text_file}: {err}") from None
    cut = len(t) // 2
    return t[:cut], t[cut:]


def _finish(out: Path, rows, sens, causal, title: str, seconds: float) -> dict:
    write_csv(out / "probe.csv", rows)
    write_csv(out / "sensitivity.csv", sens)
    write_csv(out / "causal.csv", causal)
    summary = summarise(rows, causal) | {"seconds": round(seconds, 1), "out_dir": str(out)}
    fig = plot(rows, causal, out / "redundancy.png", title)
    summary["figure"] = str(fig)
    atomic_write_json(out / "summary.json", summary)
    return {"probe": rows, "sensitivity": sens, "causal": causal, "summary": summary}
