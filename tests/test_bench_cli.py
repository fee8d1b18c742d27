"""`cram bench srcd` / `recurrence` on the cpu-tiny preset: rows, keys, reuse of finished runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SRCD_KEYS = {"model", "seed", "retrieval_acc", "retrieval_acc_library", "retrieval_acc_novel",
             "attention_fraction", "dynamics_mse", "train_seconds", "infer_ms_per_seq", "reduction",
             "reduction_all_tokens", "transition_step", "attention_library_queries",
             "attention_novel_queries"}


def _bench(*args, tmp_path):
    # the default results folder is pointed into tmp_path; --json writes only with --results
    env = {**ENV, "CRAM_RESULTS_DIR": str(tmp_path / "results")}
    return subprocess.run([sys.executable, "-m", "cram", "bench", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def _results(folder):
    """The result files under ``folder``: {study: [results, oldest first]}."""
    from cram.core.results import load_results

    return load_results(folder)


@pytest.mark.slow  # 2 models x 2 seeds; the default tier keeps test_bench_srcd_rank_sweep
def test_bench_srcd_rows_and_docs(tmp_path):
    runs = tmp_path / "runs"
    proc = _bench("srcd", "--preset", "cpu-tiny", "--models", "cram,transformer", "--seeds", "2",
                  "--runs-dir", str(runs), "--infer-length", "128", "--json", "--quiet",
                  "--results", str(tmp_path / "out"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert len(rows) == 4 and {r["model"] for r in rows} == {"cram", "transformer"}
    for row in rows:
        assert SRCD_KEYS <= set(row)
        assert 0 <= row["attention_fraction"] <= 1 and row["infer_ms_per_seq"] > 0
    dense = [r for r in rows if r["model"] == "transformer"]
    assert all(r["attention_fraction"] == 1.0 for r in dense)
    (result,) = _results(tmp_path / "out")["srcd-models-seeds-preset-cpu-tiny"]
    assert result.title == "SRCD: models × seeds (preset cpu-tiny)" and result.seeds == [0, 1]
    assert [r["retrieval_acc"] for r in result.rows] == [r["retrieval_acc"] for r in rows]
    assert result.tables[0]["caption"].startswith("Mean and 95% t-interval")
    assert "--results" in result.command and result.load and result.machine
    assert not (tmp_path / "results").exists()  # --results named the folder
    # a second invocation reuses the finished runs: same numbers, nothing retrained
    mtime = (runs / "cram-seed0" / "metrics.csv").stat().st_mtime
    again = _bench("srcd", "--preset", "cpu-tiny", "--models", "cram", "--seeds", "1",
                   "--runs-dir", str(runs), "--infer-length", "0", "--json", "--no-docs", "--quiet",
                   tmp_path=tmp_path)
    assert again.returncode == 0
    assert (runs / "cram-seed0" / "metrics.csv").stat().st_mtime == mtime
    assert json.loads(again.stdout)[0]["retrieval_acc"] == rows[0]["retrieval_acc"]


def test_bench_rejects_unknown_model(tmp_path):
    proc = _bench("srcd", "--preset", "cpu-tiny", "--models", "cram,gpt5", "--no-docs",
                  tmp_path=tmp_path)
    assert proc.returncode != 0 and "unknown model 'gpt5'" in proc.stderr


@pytest.mark.slow
def test_bench_recurrence(tmp_path):
    proc = _bench("recurrence", "--preset", "cpu-tiny", "--models", "cram", "--seeds", "1",
                  "--shares", "0,0.9", "--runs-dir", str(tmp_path / "r"), "--json", "--no-docs",
                  "--quiet", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert [r["library_share"] for r in rows] == [0.0, 0.9]


@pytest.mark.slow
def test_bench_transfer_rows(tmp_path):
    proc = _bench("transfer", "--preset", "cpu-tiny", "--seeds", "1", "--runs-dir",
                  str(tmp_path / "t"), "--finetune-steps", "12", "--json", "--no-docs", "--quiet",
                  tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert [r["task"] for r in rows] == ["dynamics", "query-format", "new-library"]
    assert all(0 <= r["attention_query_frozen"] <= 1 for r in rows)


def test_bench_schedule_rows_scale_the_preset(tmp_path):
    proc = _bench("schedule", "--preset", "cpu-tiny", "--variants", "fixed,warmup x2",
                  "--runs-dir", str(tmp_path / "s"), "--json", "--quiet",
                  "--results", str(tmp_path / "out"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert [r["variant"] for r in rows] == ["fixed", "warmup x2"]
    assert [r["warmup_end"] for r in rows] == [10, 20]  # cpu-tiny warm-up 10, doubled
    assert rows[1]["settings"] == "train.schedule=fixed train.warmup_steps=20"
    for row in rows:
        assert row["schedule_end"] == row["warmup_end"] + 5  # cpu-tiny cost ramp
        assert {"familiarity_rise_step", "transition_step", "lag_after_familiarity"} <= set(row)
    (result,) = _results(tmp_path / "out")["learned-or-scheduled-transition-preset-cpu-tiny"]
    assert [r["variant"] for r in result.rows] == ["fixed", "warmup x2"]


def test_bench_schedule_rejects_unknown_variant(tmp_path):
    proc = _bench("schedule", "--preset", "cpu-tiny", "--variants", "warmup x9", "--no-docs",
                  tmp_path=tmp_path)
    assert proc.returncode != 0 and "unknown schedule variant" in proc.stderr


def test_bench_srcd_rank_sweep(tmp_path):
    runs = tmp_path / "ranks"
    proc = _bench("srcd", "--preset", "cpu-tiny", "--models", "cram", "--seeds", "1",
                  "--ranks", "2,8", "--runs-dir", str(runs), "--json", "--quiet",
                  "--results", str(tmp_path / "out"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert [r["semantic_rank"] for r in rows] == [2, 8]
    for rank in (2, 8):
        config = json.loads((runs / f"rank{rank}" / "cram-seed0" / "config.json").read_text())
        assert config["model_config"]["semantic_rank"] == rank
    assert all(0 <= r["q_library"] <= 1 for r in rows)
    (result,) = _results(tmp_path / "out")["semantic-rank-sweep-preset-cpu-tiny"]
    assert result.title == "Semantic-rank sweep (preset cpu-tiny)"
    bad = _bench("srcd", "--preset", "cpu-tiny", "--models", "cram", "--ranks", "4,x",
                 "--no-docs", tmp_path=tmp_path)
    assert bad.returncode != 0 and "--ranks" in bad.stderr


def test_bench_refuses_zero_seeds(tmp_path):
    proc = _bench("srcd", "--preset", "cpu-tiny", "--models", "cram", "--seeds", "0",
                  tmp_path=tmp_path)
    assert proc.returncode == 2 and "--seeds" in proc.stderr and "at least 1" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_schedule_variants_scale_the_preset_and_keep_warmup_on_the_log_grid():
    from cram.consolidation.config import resolve
    from cram.experiments.schedule import SCHEDULE_VARIANTS, _scaled

    demo = resolve("cram", "demo")
    fixed = "train.schedule=fixed"  # every step-count variant runs the fixed schedule
    assert _scaled(SCHEDULE_VARIANTS["warmup /3"], demo) == [fixed, "train.warmup_steps=50"]
    assert _scaled(SCHEDULE_VARIANTS["cost ramp x3"], demo) == [
        fixed, f"train.cost_ramp_steps={3 * demo.train.cost_ramp_steps}"]
    tiny = resolve("cram", "cpu-tiny")  # 10 / 3 rounds to the log grid, never to 0
    assert _scaled(SCHEDULE_VARIANTS["warmup /3"], tiny) == [
        fixed, f"train.warmup_steps={tiny.train.log_every}"]
    for variant in SCHEDULE_VARIANTS:  # every variant resolves at every preset
        for preset in ("cpu-tiny", "demo", "cpu", "paper"):
            base = resolve("cram", preset)
            cfg = resolve("cram", preset, _scaled(SCHEDULE_VARIANTS[variant], base))
            assert cfg.train.warmup_steps % cfg.train.log_every == 0, (variant, preset)
            assert cfg.train.schedule == ("learned" if variant == "learned" else "fixed")


def test_summary_gives_lower_bound_ratios_a_median_and_range_not_an_interval():
    """A peak/end ratio that is a lower bound where the end is 0 never gets a t-interval."""
    from cram.experiments.bench import summarize

    rows = [{"model": "cram", "retrieval_acc": 1.0, "attention_per_token": 0.03, "reduction": r,
             "reduction_is_lower_bound": lb} for r, lb in ((582.0, True), (32.3, False),
                                                          (64.7, False))]
    (s,) = summarize(rows)
    assert s["reduction_median"] == 64.7 and s["reduction_range"] == "32.3-582"
    assert s["reduction_lower_bounds"] == 1 and "reduction_ci95" not in s
    assert s["attention_per_token"] == 0.03 and s["seeds"] == 3
