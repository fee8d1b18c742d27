"""The study protocol (issue 29, item 1): study, delay, test, on SRCD and the recall tasks.

Library bindings follow a schedule (staggered cohorts, massed or spaced exposures, then retired),
and the tests query each binding with its store removed, so only the weights can answer; the run
folder's ``forgetting.csv`` holds one row per (test step, binding, ablation).
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

import cram
from cram.consolidation.config import ExperimentConfig, resolve
from cram.consolidation.train import train
from cram.core.columns import FORGETTING_COLUMNS
from cram.core.errors import ConfigError
from cram.core.events import EVENT_QUERY, EVENT_STORE
from cram.tasks import RecallConfig, RecallTask
from cram.tasks.srcd_stream import SRCD, SRCDConfig
from cram.tasks.study import StudiedTask, StudyConfig, StudySchedule, studied
from cram.tasks.view import training_task

ON = StudyConfig(protocol="study-test")
TINY_STUDY = ["study.protocol=study-test", "study.studied=10", "study.held_out=2",
              "study.cohorts=4",
              "study.spacing=5", "study.probes=24", "train.steps=120", "train.pattern_every=20",
              "train.log_every=10", "train.checkpoint_every=60"]


def test_delays_are_log_spaced_over_a_decade_and_a_half_at_the_demo_length():
    s = StudySchedule(ON, n_library=100, steps=700, per_sequence=13)
    assert len(s.delays) == ON.cohorts >= 6
    assert np.log10(s.delays.max() / s.delays.min()) >= 1.5
    ratios = s.delays[1:] / s.delays[:-1]
    assert np.allclose(ratios, ratios.mean(), rtol=0.25)  # geometric, up to rounding


def test_massed_and_spaced_bindings_of_a_cohort_end_on_the_same_step():
    s = StudySchedule(ON, n_library=100, steps=700, per_sequence=13)
    table = s.table()
    assert len(table) == ON.studied
    for cohort in range(ON.cohorts):
        rows = [r for r in table if r["cohort"] == cohort]
        assert {r["schedule"] for r in rows} == {"massed", "spaced"}
        assert len({r["last_exposure"] for r in rows}) == 1
        assert 700 - rows[0]["last_exposure"] == s.delays[cohort]
        for r in rows:
            assert r["last_exposure"] - r["first_exposure"] == (ON.exposures - 1) * r["spacing"]


def test_a_studied_binding_is_in_the_pool_on_its_exposure_steps_only():
    s = StudySchedule(ON, n_library=100, steps=700, per_sequence=13)
    p = int(s.studied_patterns[0])
    on_steps = [step for step in range(700) if p in s.pool(step)]
    assert (s.pool(int(s.last[p])) == p).sum() == ON.weight
    assert on_steps == s.exposure_steps[p].tolist()
    assert set(s.recurring) <= set(s.pool(0))
    assert s.phase(int(s.first[p]))[p] == "before"
    assert s.phase(int(s.last[p]))[p] == "study"
    assert s.phase(int(s.last[p]) + 1)[p] == "retired"
    assert s.exposures_done(int(s.last[p]) + 1)[p] == ON.exposures


@pytest.mark.parametrize("change, words", [
    ({"studied": 99}, "recurring library"),
    ({"cohorts": 30}, "fewer than two bindings"),
    ({"max_delay_share": 0.95, "spacing": 50}, "do not fit"),
])
def test_a_schedule_that_cannot_work_is_refused_naming_the_field(change, words):
    config = StudyConfig(protocol="study-test", **change)
    with pytest.raises(ConfigError, match=words):
        StudySchedule(config, n_library=100, steps=700, per_sequence=13)


def test_srcd_library_slots_draw_from_the_pool_and_the_default_draw_is_unchanged():
    gen = SRCD(SRCDConfig(length=256))
    pool = np.array([3, 7, 11, 50, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69])
    batch = gen.sample(16, 5, library=pool)
    assert set(np.unique(batch.pattern[batch.pattern >= 0])) <= set(pool.tolist())
    everything = gen.sample(16, 5, library=np.arange(100))
    default = gen.sample(16, 5)
    np.testing.assert_array_equal(everything.key, default.key)
    np.testing.assert_array_equal(everything.answer, default.answer)


@pytest.mark.parametrize("encoding", ["id", "vector"])
def test_srcd_probe_set_removes_every_library_store_and_keeps_the_queries(encoding):
    gen = SRCD(SRCDConfig(length=256, key_encoding=encoding))
    probe = gen.probe_set(np.arange(100), 32, seed=0)
    lib_queries = probe.is_library & (probe.event == EVENT_QUERY)
    assert lib_queries.sum() > 100
    assert (probe.answer[lib_queries] >= 0).all()  # labelled, as the evaluation set
    stores = (probe.event == EVENT_STORE).sum()
    queries = (probe.event == EVENT_QUERY).sum()
    assert stores == queries - lib_queries.sum()  # novel stores kept, library stores gone
    if encoding == "id":
        store_keys = probe.key[probe.event == EVENT_STORE]
        assert (store_keys > gen.config.n_library).all()  # no library key is ever stored


def test_recall_probe_set_shows_each_library_key_once_as_its_scored_query():
    task = RecallTask(RecallConfig(length=64, n_bindings=4, n_library=16, n_novel_keys=32,
                                   n_fillers=16))
    probe = task.probe_set(np.arange(16), 64, seed=0)
    c = task.config
    lib_key = (probe.tokens >= c.key_base) & (probe.tokens < c.key_base + c.n_library)
    scored_lib = (probe.labels >= 0) & (probe.pattern >= 0)
    assert scored_lib.sum() > 20
    np.testing.assert_array_equal(lib_key, scored_lib)  # the store's key became a filler
    assert training_task(task).takes_study


def test_a_task_without_the_hooks_is_refused_before_any_folder(tmp_path):
    from cram.tasks import get_task

    task = training_task(get_task("phrases"))
    with pytest.raises(ConfigError, match="does not take the study protocol"):
        studied(task, ON, 700)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "cram", "train", "--task", "phrases",
                           "--model", "cram", "--preset", "cpu-tiny", "--out", str(out),
                           "--set", "study.protocol=study-test"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "does not take the study protocol" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_the_studied_task_pickles_for_a_data_worker_process():
    task = studied(training_task(SRCD(SRCDConfig(length=64, query_rate=0.08, n_library=20,
                                                  n_novel_keys=200))),
                   StudyConfig(protocol="study-test", studied=10, held_out=2, cohorts=4,
                               spacing=5), 120)
    again = pickle.loads(pickle.dumps(task))
    assert isinstance(again, StudiedTask)
    a = task.sample_at(50, 4, np.random.default_rng(0))
    b = again.sample_at(50, 4, np.random.default_rng(0))
    np.testing.assert_array_equal(a.key, b.key)


def test_the_config_round_trips_and_a_run_without_the_protocol_records_no_study():
    plain = resolve("cram", "cpu-tiny")
    assert "study" not in plain.to_dict()
    on = resolve("cram", "cpu-tiny", TINY_STUDY)
    assert on.to_dict()["study"]["protocol"] == "study-test"
    assert ExperimentConfig.from_dict(on.to_dict()) == on
    assert ExperimentConfig.from_dict(plain.to_dict()) == plain


@pytest.mark.parametrize("model, ablations", [
    ("cram", {"none", "semantic_zeroed", "episodic_off", "working_only", "semantic_only"}),
    ("transformer", {"none"}),
])
def test_a_studied_run_writes_one_row_per_binding_and_ablation(tmp_path, model, ablations):
    run_dir = train(model, resolve(model, "cpu-tiny", TINY_STUDY), tmp_path / model,
                    progress=False)
    run = cram.load_run(run_dir)
    f = run.forgetting
    assert list(f.columns) == list(FORGETTING_COLUMNS)
    assert set(f["ablation"]) == ablations
    assert sorted(f["step"].unique()) == [0, 20, 40, 60, 80, 100, 120]
    retired = f[f["phase"] == "retired"]
    assert len(retired) > 0
    np.testing.assert_array_equal(retired["delay_steps"], retired["step"]
                                  - retired["last_exposure"])
    np.testing.assert_array_equal(retired["delay_sequences"],
                                  retired["delay_steps"] * run.config["train"]["batch_size"])
    assert f.loc[f["phase"] != "retired", "delay_steps"].isna().all()
    assert (f["correct"] <= f["n"]).all() and (f["n"] > 0).all()
    last = f[(f["step"] == 120) & (f["ablation"] == "none")]
    assert set(last["phase"]) == {"retired", "recurring", "never"}  # every studied one retired


def test_a_run_without_the_protocol_has_no_forgetting_file(tmp_path):
    run_dir = train("cram", resolve("cram", "cpu-tiny"), tmp_path / "plain", progress=False)
    assert not (run_dir / "forgetting.csv").exists()
    assert cram.load_run(run_dir).forgetting is None


def test_a_token_task_takes_the_protocol(tmp_path):
    task = RecallTask(RecallConfig(length=64, n_bindings=4, n_library=32, n_novel_keys=32,
                                   n_fillers=16))
    run_dir = train("cram", resolve("cram", "cpu-tiny", TINY_STUDY), tmp_path / "recall",
                    progress=False, data=task, task_record={"name": "recall-unmarked"})
    f = cram.load_run(run_dir).forgetting
    assert (f["phase"] == "retired").any() and f["n"].sum() > 0


def test_cue_answer_study_shows_a_studied_binding_without_its_store_and_labelled():
    gen = SRCD(SRCDConfig(length=256))
    task = studied(training_task(gen), ON, 700)  # cue-answer: the default
    s = task.schedule
    p = int(s.studied_patterns[0])
    step = int(s.last[p])
    batch = task.sample_at(step, 32, np.random.default_rng(1))
    studied_q = np.isin(batch.pattern, s.studied_patterns) & (batch.pattern >= 0)
    recurring_q = np.isin(batch.pattern, s.recurring) & (batch.pattern >= 0)
    assert studied_q.sum() > 0 and recurring_q.sum() > 0
    assert (batch.answer[studied_q] >= 0).all()  # labelled: the error teaches the weights
    assert (batch.lag[studied_q] == -1).all()  # no store before the query
    assert (batch.lag[recurring_q] >= 0).all()  # the recurring library keeps its stores
    stored_keys = set(batch.key[batch.event == EVENT_STORE].tolist())
    assert not stored_keys & set((1 + s.studied_patterns).tolist())
    shown = StudyConfig(protocol="study-test", presentation="in-context")
    in_context = studied(training_task(gen), shown, 700).sample_at(step, 32,
                                                                    np.random.default_rng(1))
    assert (in_context.lag[studied_q] >= 0).all()  # in context: the store is shown


def test_held_out_bindings_are_never_shown_and_never_studied():
    s = StudySchedule(ON, n_library=100, steps=700, per_sequence=13)
    assert len(s.held_out) == ON.held_out
    assert not set(s.held_out) & set(s.studied_patterns)
    assert not set(s.held_out) & set(s.recurring)
    for step in range(0, 700, 7):
        assert not set(s.held_out) & set(s.pool(step).tolist())
    assert (s.phase(350)[s.held_out] == "never").all()


def test_a_cached_run_without_the_protocol_is_not_the_studied_experiment():
    from cram.core.identity import experiment_identity, identity_differences

    plain = {"model": "cram", "seed": 0, **resolve("cram", "cpu-tiny").to_dict()}
    on = {"model": "cram", "seed": 0, **resolve("cram", "cpu-tiny", TINY_STUDY[:1]).to_dict()}
    diffs = identity_differences(experiment_identity(on), experiment_identity(plain))
    assert any(name.startswith("study") for name, _, _ in diffs)
    assert identity_differences(experiment_identity(plain), experiment_identity(plain)) == []
