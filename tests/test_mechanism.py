"""`cram bench mechanism` (issue 15): ablation routes, matched baselines, a cpu-tiny run.

The ablation routes are evaluation-only; the cpu-tiny run's ablation columns must come from real
evaluations of the trained weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from cram.consolidation.config import resolve
from cram.consolidation.losses import compute_loss
from cram.core.errors import ConfigError
from cram.experiments.mechanism import (
    ABLATIONS,
    novel_floor,
    run_overrides,
    task_overrides,
    token_novel_floor,
)
from cram.models import HARD, DataSpec, Route, Tier, build_model
from cram.tasks.srcd_stream import SRCD

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _tiny(model: str, overrides=()):
    cfg = resolve(model, "cpu-tiny", list(overrides))
    d = cfg.data
    torch.manual_seed(0)
    net = build_model(model, cfg.model, DataSpec(d.n_keys, d.n_values, d.key_encoding, d.key_dim))
    batch = SRCD(d).sample(4, 0).to_torch()
    return net.eval(), batch, cfg


def test_ablate_is_checked_and_evaluation_only():
    with pytest.raises(ConfigError, match="Route.ablate='episodic'"):
        Route("hard", ablate="episodic")
    with pytest.raises(ConfigError, match="evaluation-only"):
        Route("soft", ablate="semantic")
    assert Route("hard", ablate="semantic").semantic_off and not HARD.semantic_off


def test_semantic_zeroed_removes_exactly_the_semantic_output():
    net, batch, _ = _tiny("cram")
    with torch.no_grad():
        for block in net.blocks:  # route every token to semantic memory
            block.router.bias.copy_(torch.tensor([0.0, 0.0, 50.0]))
        normal = net(batch, HARD)
        zeroed = net(batch, Route("hard", ablate="semantic"))
        working = net(batch, Route("hard", force="working"))
    assert all(bool((s.choice == Tier.SEMANTIC).all()) for s in normal.layers)
    assert not torch.allclose(normal.value_logits, zeroed.value_logits)
    # semantic output zeroed everywhere = no retrieval at all (the same tokens, nothing added)
    torch.testing.assert_close(zeroed.value_logits, working.value_logits, rtol=0, atol=0)


def test_semantic_zeroed_is_a_no_op_where_no_token_chose_semantic():
    net, batch, _ = _tiny("cram")
    with torch.no_grad():
        for block in net.blocks:
            block.router.bias.copy_(torch.tensor([0.0, 50.0, -50.0]))  # everything episodic
        a = net(batch, HARD).value_logits
        b = net(batch, Route("hard", ablate="semantic")).value_logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_forced_attention_computes_and_reads_every_token():
    net, batch, _ = _tiny("cram")
    with torch.no_grad():
        for block in net.blocks:  # the router alone would send every token to working memory
            block.router.bias.copy_(torch.tensor([50.0, -50.0, 0.0]))
        normal = net(batch, HARD)
        out = net(batch, Route("hard", force="episodic"))
    assert not any(bool(s.computed.any()) for s in normal.layers)
    for s in out.layers:
        assert bool(s.computed.all()) and bool((s.episodic == 1).all())


def test_seqboat_matched_is_charged_like_cram():
    net, batch, cfg = _tiny("seqboat-matched")
    t = cfg.train
    out = net(batch, Route())
    warm = compute_loss(out, batch, t, step=0).terms
    late = compute_loss(out, batch, t, step=t.warmup_steps + t.cost_ramp_steps).terms
    assert warm["loss_cost"] == 0.0 and warm["loss_aux"] == 0.0
    query = batch["event"] == 2
    gates = [s.extra["gate"].detach() for s in out.layers]
    want = np.mean([float(t.cost_query * g[query].mean() + t.cost_nonquery * g[~query].mean())
                    for g in gates])
    assert late["loss_cost"] == pytest.approx(want, rel=1e-5)
    assert late["loss_total"] > warm["loss_total"]


def test_seqboat_matched_cost_follows_a_learned_schedule():
    """Under the learned schedule the matched gate is charged from the switch, as CRAM is."""
    from cram.consolidation.routing_schedule import RoutingSchedule

    net, batch, cfg = _tiny("seqboat-matched", ["train.schedule=learned"])
    t = cfg.train
    out = net(batch, Route())
    schedule = RoutingSchedule(t)
    late = t.warmup_steps + t.cost_ramp_steps  # where the fixed step counts charge in full
    assert compute_loss(out, batch, t, step=late, schedule=schedule).terms["loss_cost"] == 0.0
    schedule.switch_step = late  # as if the criterion fired at ``late - 1``
    charged = compute_loss(out, batch, t, step=late + t.cost_ramp_steps, schedule=schedule)
    full = compute_loss(out, batch, t, step=late)  # no schedule: the config's fixed counts
    assert charged.terms["loss_cost"] == pytest.approx(float(full.terms["loss_cost"]), rel=1e-6)
    assert float(charged.terms["loss_cost"]) > 0


def test_seqboat_matched_gate_is_sampled_near_binary_as_evaluation_decides():
    """Training samples open/closed at the gate's odds; a hard-open token reads full attention."""
    from cram.models.seqboat import SeqBoatBlock

    g = torch.Generator().manual_seed(0)
    logit = torch.full((200, 50), -2.2)  # σ = 0.10: SeqBoat's soft mixing would read 0.1·Attn
    uniform = torch.rand((*logit.shape, 3), generator=g)
    weight = SeqBoatBlock._decision(logit, Route(temperature=0.05), uniform)
    assert bool(((weight < 0.01) | (weight > 0.99)).float().mean() > 0.9)  # near-binary
    assert float((weight > 0.5).float().mean()) == pytest.approx(0.1, abs=0.01)  # at σ(logit)
    net, batch, _ = _tiny("seqboat-matched")
    with torch.no_grad():
        for block in net.blocks:  # every gate wide open: σ ≈ 1 and a sampled 1
            block.gate.bias.fill_(30.0)
        route = net.with_route_noise(Route(temperature=0.2, generator=g), batch)
        assert route.uniforms is not None and len(route.uniforms) == len(net.blocks)
        soft = net(batch, route).value_logits
        hard = net(batch, HARD).value_logits  # selected everywhere, read at weight 1
        for block in net.blocks:
            block.relaxed = False  # SeqBoat's own hard read scales attention by σ(gate)
        plain = net(batch, HARD).value_logits
    torch.testing.assert_close(soft, hard, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(plain, hard, rtol=1e-4, atol=1e-4)  # σ(30) = 1: the same read


def test_learned_schedule_is_measured_on_matched_baselines_only(tmp_path):
    """seqboat-matched's warm-up ends on its own criterion; an uncharged baseline has none."""
    from cram.consolidation.train import train

    sets = ["train.schedule=learned", "train.schedule_horizon=3", "train.schedule_threshold=0",
            "train.steps=20"]
    ends = {}
    for model in ("seqboat-matched", "seqboat"):
        run = train(model, resolve(model, "cpu-tiny", sets), tmp_path / model, seed=0,
                    progress=False)
        ends[model] = json.loads((run / "transition.json").read_text())["schedule"]
    assert ends["seqboat-matched"]["fired_by"] == "criterion"
    assert ends["seqboat-matched"]["warmup_end"] == 3  # threshold 0: fires after the horizon
    assert ends["seqboat"]["fired_by"] is None  # never measured: nothing is charged by it


def test_mod_matched_capacity_is_the_novel_floor_of_the_task():
    floor = novel_floor("mod-matched", "cpu-tiny", [])
    cfg = resolve("mod-matched", "cpu-tiny")
    assert floor == pytest.approx(cfg.data.n_queries / cfg.data.length * (1 - 0.7))
    extra = run_overrides("mod-matched", "srcd-id", "cpu-tiny", ["data.library_share=0.5"])
    assert extra[-1] == f"model.mod_capacity={cfg.data.n_queries / cfg.data.length * 0.5:.6g}"
    assert run_overrides("cram", "srcd-permuted", "cpu-tiny", []) == [
        "data.key_encoding=id", "data.library_answer=permuted"]
    with pytest.raises(ConfigError, match="--tasks 'copy'.*recall-unmarked"):
        task_overrides("copy")


def test_token_tasks_join_with_their_own_floor():
    from cram.tasks import load_task

    assert task_overrides("recall-unmarked") == [] and task_overrides("phrases") == []
    with pytest.raises(ConfigError, match="--tasks 'srcd'"):
        task_overrides("srcd")  # SRCD joins as srcd-id / srcd-vector / ...
    args = ["length=64", "n_bindings=4", "n_fillers=16"]
    floor = token_novel_floor("recall-unmarked", args)
    batch = load_task("recall-unmarked", args).sample(256, 0)
    want = float(((batch.labels != -100) & (batch.pattern < 0)).mean())
    assert floor == want and 0 < floor < 0.2
    extra = run_overrides("mod-matched", "recall-unmarked", "cpu-tiny", [], args)
    assert extra == [f"model.mod_capacity={floor:.6g}"]


def test_ablation_names_cover_the_issue():
    assert [n for n, _ in ABLATIONS] == ["normal", "semantic_zeroed", "forced_working",
                                         "forced_attention"]


def _bench(*args, tmp_path):
    env = {**ENV, "CRAM_RESULTS_DIR": str(tmp_path / "results")}
    return subprocess.run([sys.executable, "-m", "cram", "bench", "mechanism", *args],
                          capture_output=True, text=True, env=env, timeout=900)


def test_bench_mechanism_cpu_tiny(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results-here"
    proc = _bench("--preset", "cpu-tiny", "--seeds", "1", "--tasks", "srcd-id",
                  "--runs-dir", str(runs), "--results", str(results), "--json", "--quiet",
                  "--timing",
                  "--timing-lengths", "96", "--timing-shares", "0.5,0.9",
                  "--timing-sequences", "3", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    rows = {r["model"]: r for r in out["rows"]}
    assert set(rows) == {"cram", "cram-ungated", "cram-no-consolidation",
                         "cram-no-consolidation-ungated", "seqboat-matched", "mod-matched"}
    for r in rows.values():
        for k in ("acc_library_normal", "acc_library_forced_working",
                  "acc_library_forced_attention", "attention_per_pair", "attention_per_token",
                  "novel_dip", "attention_library_queries"):
            assert 0 <= r[k] <= 1, (r["model"], k)
        assert r["attention_per_pair"] <= r["attention_per_token"] + 1e-9
    assert rows["seqboat-matched"]["acc_library_semantic_zeroed"] is None  # no semantic tier
    assert rows["cram"]["consolidation_loss"] and not rows["cram-ungated"]["cost_gated"]
    # the ablations are real evaluations: rerouting changes some model's library accuracy
    assert any(r["acc_library_forced_working"] != r["acc_library_normal"]
               or r["acc_library_forced_attention"] != r["acc_library_normal"]
               for r in rows.values())
    # ... and they agree with a direct evaluation of the same weights
    _check_against_direct_evaluation(rows["cram"]["run"], rows["cram"])
    # timing: every model at each share, forced dense is the reference, threads recorded
    timing = out["timing"]
    assert {t["model"] for t in timing} == {"cram", "cram-forced-dense", "cram-static",
                                            "cram-no-consolidation", "seqboat", "transformer"}
    assert {t["library_share"] for t in timing} == {0.5, 0.9} and len(timing) == 12
    for t in timing:
        assert t["sequences"] == 3 and t["ms_median"] > 0 and t["torch_threads"] == 1
        assert t["load_1min_before"] >= 0
    dense = [t for t in timing if t["model"] == "cram-forced-dense"]
    assert all(t["vs_forced_dense"] == 1.0 and t["attention_per_pair"] == 1.0 for t in dense)
    from cram.core.results import load_results

    titles = {r.title for study in load_results(results).values() for r in study}
    assert "Mechanism: is consolidation the cause? (srcd-id, preset cpu-tiny)" in titles
    assert "Mechanism timing: CRAM against its own weights forced dense (preset cpu-tiny)" in titles


def _check_against_direct_evaluation(run_dir: str, row: dict) -> None:
    from cram.consolidation.checkpoint import load_trained

    model, config, _ = load_trained(run_dir)
    model.eval()
    data = SRCD(config.data).eval_set(config.train.eval_sequences, config.train.eval_seed)
    b = data.to_torch()
    query, lib = b["event"] == 2, b["is_library"]
    with torch.no_grad():
        for name, route in (("forced_working", Route("hard", force="working")),
                            ("forced_attention", Route("hard", force="episodic"))):
            hit = model(b, route).value_logits.argmax(-1) == b["answer"]
            assert float(hit[query & lib].float().mean()) == pytest.approx(
                row[f"acc_library_{name}"], abs=1e-6), name


def test_bench_mechanism_refuses_an_unknown_task_before_training(tmp_path):
    proc = _bench("--preset", "cpu-tiny", "--seeds", "1", "--tasks", "srcd-id,copy",
                  "--runs-dir", str(tmp_path / "runs"), "--no-docs", "--quiet", tmp_path=tmp_path)
    assert proc.returncode != 0 and "--tasks 'copy'" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_bench_mechanism_on_a_token_task(tmp_path):
    """A token task trains through --task, and its rows are real evaluations.

    The variants keep their own cost gate, the ablation columns are evaluations on the task's
    scored tokens, and mod-matched sits at the task's floor.
    """
    from cram.consolidation.checkpoint import load_trained
    from cram.tasks import load_task

    runs, args = tmp_path / "runs", ["length=32", "n_bindings=2", "n_fillers=8"]
    proc = _bench("--preset", "cpu-tiny", "--seeds", "1", "--tasks", "recall-unmarked",
                  "--models", "cram,cram-ungated,mod-matched", "--runs-dir", str(runs),
                  *[x for a in args for x in ("--task-arg", a)], "--no-docs", "--json",
                  "--quiet", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["model"]: r for r in json.loads(proc.stdout)["rows"]}
    assert set(rows) == {"cram", "cram-ungated", "mod-matched"}
    gate = {m: json.loads((runs / "recall-unmarked" / f"{m}-seed0" / "config.json").read_text())
            ["train"]["cost_gate"] for m in rows}
    assert gate["cram"] == "replaceable" and gate["cram-ungated"] == "none"
    cap = json.loads((runs / "recall-unmarked" / "mod-matched-seed0" / "config.json")
                     .read_text())["model_config"]["mod_capacity"]
    assert cap == pytest.approx(token_novel_floor("recall-unmarked", args), rel=1e-5)
    row = rows["cram"]
    model, config, _ = load_trained(row["run"])
    b = load_task("recall-unmarked", args).eval_set(
        config.train.eval_sequences, config.train.eval_seed).to_torch()
    scored, lib = b["labels"] != -100, b["pattern"] >= 0
    with torch.no_grad():
        hit = model.eval()(b, Route("hard", force="working")).value_logits.argmax(-1) == b["labels"]
    assert float(hit[scored & lib].float().mean()) == pytest.approx(
        row["acc_library_forced_working"], abs=1e-6)
    for k in ("acc_library_normal", "acc_novel_normal", "attention_per_pair", "novel_dip"):
        assert 0 <= row[k] <= 1, k


def test_bench_mechanism_refuses_bad_task_args_before_training(tmp_path):
    proc = _bench("--preset", "cpu-tiny", "--seeds", "1", "--tasks", "recall-unmarked",
                  "--task-arg", "length=-3", "--runs-dir", str(tmp_path / "runs"), "--no-docs",
                  "--quiet", tmp_path=tmp_path)
    assert proc.returncode != 0 and "length" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()
    proc = _bench("--preset", "cpu-tiny", "--seeds", "1", "--tasks", "srcd-id", "--task-arg",
                  "length=32", "--runs-dir", str(tmp_path / "runs"), "--no-docs", "--quiet",
                  tmp_path=tmp_path)
    assert proc.returncode != 0 and "--task-arg needs a token task" in proc.stderr
