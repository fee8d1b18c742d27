"""The readers of a run folder treat it as data, not code (issue "A run folder is data, not code").

1. A partial last row (a file that does not end with a newline: a kill or a full disk) is dropped
   with a warning by ``load_run`` and by everything that reads through it (model curves,
   ``cram data curves``, ``cram fit gamma --run``, the explorer); the CLI prints the warning.
2. Valid JSON of the wrong shape in config.json / transition.json is one line naming the file
   and the field (exit 2), or, for the optional transition.json, a warning and None.
3. Negative seeds end in one line (exit 2) and leave no run folder behind.
4. Random truncations of every file: complete rows equal to a prefix of the original, or a
   CramError of one line; never another exception, never a wrong value.

Everything runs in-process (``cram.cli.main``) on one cpu-tiny run and one synthetic run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from strategies import truncations

from cram.cli import main
from cram.core.errors import ConfigError, CramError, RunFolderError
from cram.core.runs import Run, load_run
from cram.testing import write_synthetic_run

TABLES = {"metrics.csv": "metrics", "patterns.csv": "patterns", "retention.csv": "retention"}
FIT = ["fit", "gamma", "--method", "mle", "--offset", "steps=1", "--no-figures",
       "--no-window-sensitivity", "--json", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One cpu-tiny run with its checkpoints (``cram eval`` and ``--resume`` read them)."""
    from cram.consolidation.config import resolve
    from cram.consolidation.train import train

    out = tmp_path_factory.mktemp("trained") / "tiny"
    train("cram", resolve("cram", "cpu-tiny"), out, progress=False)
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """A synthetic run (no torch): enough logged steps for curves and fits."""
    return write_synthetic_run(tmp_path_factory.mktemp("synthetic") / "syn", steps=300,
                               log_every=20, warmup_steps=100)


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _cut_last_row(file: Path) -> int:
    """Cut the last row of ``file`` inside its last-but-one cell; return the cut line's number."""
    text = file.read_text()
    lines = text.split("\n")[:-1]
    last = lines[-1]
    cut = last.rindex(",") - 1  # inside a number, or a string, but never at a cell boundary
    file.write_text("\n".join(lines[:-1]) + "\n" + last[:cut])
    return len(lines)


def _drop_last_row(file: Path) -> None:
    lines = file.read_text().split("\n")[:-1]
    file.write_text("\n".join(lines[:-1]) + "\n")


def _edit_json(file: Path, **changes) -> None:
    """Set dotted fields (``train__lr`` for train.lr) of a JSON object file."""
    doc = json.loads(file.read_text())
    for key, value in changes.items():
        *parents, leaf = key.split("__")
        target = doc
        for p in parents:
            target = target[p]
        target[leaf] = value
    file.write_text(json.dumps(doc))


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------- 1. partial last rows
@pytest.mark.parametrize("fname", list(TABLES))
def test_a_partial_last_row_is_dropped_with_a_warning(synthetic, tmp_path, fname):
    full = getattr(load_run(synthetic), TABLES[fname])
    run_dir = _copy(synthetic, tmp_path / "run")
    line = _cut_last_row(run_dir / fname)
    run = load_run(run_dir)
    table = getattr(run, TABLES[fname])
    assert len(table) == len(full) - 1
    pd.testing.assert_frame_equal(table, full.iloc[:-1], check_dtype=False)
    assert [w for w in run.warnings if f"{fname}: line {line} is incomplete" in w], run.warnings


def test_a_header_cut_short_is_an_error_for_metrics_and_a_warning_for_patterns(synthetic,
                                                                               tmp_path):
    run_dir = _copy(synthetic, tmp_path / "run")
    (run_dir / "patterns.csv").write_text("step,pattern,expo")
    run = load_run(run_dir)
    assert run.patterns is None
    assert any("patterns.csv: no complete header line" in w for w in run.warnings)
    (run_dir / "metrics.csv").write_text("step,pha")
    with pytest.raises(RunFolderError, match="metrics.csv: no complete header line"):
        load_run(run_dir)


def test_model_curves_and_the_explorer_never_see_a_partial_row(synthetic, tmp_path):
    from cram.apps.data import scan_runs
    from cram.fitting.model_curves import model_curves

    cut = _copy(synthetic, tmp_path / "runs" / "cut")
    clean = _copy(synthetic, tmp_path / "clean")
    for fname in TABLES:
        _cut_last_row(cut / fname)
        _drop_last_row(clean / fname)
    for kind in ("episodic_reliance", "per_pattern", "retention"):
        got, want = model_curves(cut, kind), model_curves(clean, kind)
        cols = ["delay_value", "value", "n"]
        pd.testing.assert_frame_equal(got[cols], want[cols])
    scan = scan_runs(tmp_path / "runs")
    assert list(scan.runs) == ["cut"]
    pd.testing.assert_frame_equal(scan.runs["cut"].metrics, load_run(clean).metrics,
                                  check_dtype=False)
    assert sum("is incomplete" in w for w in scan.warnings["cut"]) == 3


@pytest.mark.parametrize("verb", ["curves", "fit"])
def test_the_cli_prints_each_warning_on_one_line_and_uses_complete_rows(synthetic, tmp_path,
                                                                        capsys, verb):
    cut = _copy(synthetic, tmp_path / "cut")
    clean = _copy(synthetic, tmp_path / "clean")
    line = _cut_last_row(cut / "metrics.csv")
    _drop_last_row(clean / "metrics.csv")

    def run(d):
        argv = (["data", "curves", "--run", d, "--kind", "episodic_reliance", "--json"]
                if verb == "curves" else [*FIT, "--run", d])
        code, out, err = _cli(capsys, *argv)
        assert code == 0, err
        return json.loads(out), err

    got, err = run(cut)
    want, _ = run(clean)
    warned = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warned) == 1 and f"metrics.csv: line {line} is incomplete" in warned[0], err
    if verb == "curves":
        assert [r["value"] for r in got["rows"]] == [r["value"] for r in want["rows"]]
    else:
        assert got["curves"][0]["gamma"] == pytest.approx(want["curves"][0]["gamma"])
        assert got["curves"][0]["n_points"] == want["curves"][0]["n_points"]


# ------------------------------------------------------------------- 2. JSON of the wrong shape
CONFIG_SHAPES = [  # (edit of config.json, the field the one line must name)
    ({"train": 3}, "'train'"),
    ({"model_config": "x"}, "'model_config'"),
    ({"train__warmup_steps": "x"}, "train.warmup_steps"),
    ({"seed": [0]}, "'seed'"),
]


@pytest.mark.parametrize("edit,field", CONFIG_SHAPES, ids=[f for _, f in CONFIG_SHAPES])
def test_a_config_of_the_wrong_shape_is_one_line_naming_file_and_field(synthetic, tmp_path,
                                                                       capsys, edit, field):
    run_dir = _copy(synthetic, tmp_path / "run")
    _edit_json(run_dir / "config.json", **edit)
    with pytest.raises(RunFolderError, match="config.json") as err:
        load_run(run_dir)
    assert field in str(err.value) and "\n" not in str(err.value)
    for argv in (["data", "curves", "--run", run_dir, "--kind", "episodic_reliance"],
                 [*FIT, "--run", run_dir]):
        line = _one_line_error(*_cli(capsys, *argv)[::2])
        assert "config.json" in line and field in line, line


def test_a_config_that_is_not_an_object_is_one_line(synthetic, tmp_path, capsys):
    run_dir = _copy(synthetic, tmp_path / "run")
    (run_dir / "config.json").write_text("[]")
    line = _one_line_error(*_cli(capsys, *FIT, "--run", run_dir)[::2])
    assert "config.json: expected a JSON object" in line


TRAINED_SHAPES = [  # config.json edits that cram eval and cram train --resume must refuse
    ({"train": 3}, "'train'"),
    ({"model_config": "x"}, "'model_config'"),
    ({"train__device": 3}, "train.device"),
    ({"train__lr": "x"}, "train.lr"),
    ({"data__length": "x"}, "data.length"),
    ({"model_config__attention_layers": "x"}, "model_config.attention_layers"),
    ({"data__bogus": 1}, "data.bogus"),
]


@pytest.mark.parametrize("edit,field", TRAINED_SHAPES, ids=[f for _, f in TRAINED_SHAPES])
def test_eval_and_resume_refuse_a_config_of_the_wrong_shape(trained, tmp_path, capsys, edit,
                                                            field):
    run_dir = _copy(trained, tmp_path / "run")
    _edit_json(run_dir / "config.json", **edit)
    meta = (run_dir / "meta.json").read_text()
    for argv in (["eval", run_dir, "--json"],
                 ["train", "--model", "cram", "--preset", "cpu-tiny", "--out", run_dir,
                  "--resume", "--quiet"]):
        line = _one_line_error(*_cli(capsys, *argv)[::2])
        assert "config.json" in line and field in line, line
    assert (run_dir / "meta.json").read_text() == meta  # still finished, not running


@pytest.mark.parametrize("section,value", [("data", 3), ("model_config", [1]), ("train", None),
                                           ("train", "x")])
def test_from_dict_names_the_source_and_the_section(trained, section, value):
    from cram.consolidation.config import ExperimentConfig

    doc = json.loads((trained / "config.json").read_text())
    doc[section] = value
    with pytest.raises(ConfigError, match=f"^RUN/config.json: field '{section}'"):
        ExperimentConfig.from_dict(doc, source="RUN/config.json")
    del doc[section]
    with pytest.raises(ConfigError, match=f"config.json: no '{section}' section"):
        ExperimentConfig.from_dict(doc)
    with pytest.raises(ConfigError, match="config.json: expected a JSON object"):
        ExperimentConfig.from_dict([])


TRANSITION_SHAPES = [
    ({"schedule": [1]}, "'schedule'"),
    ({"schedule": {"warmup_end": "x"}}, "schedule.warmup_end"),
    ({"familiarity_rise": 3}, "'familiarity_rise'"),
    ({"familiarity_rise": {"step": "x"}}, "familiarity_rise.step"),
    ({"step": "x"}, "'step'"),
    ({"low": [1]}, "'low'"),
]


@pytest.mark.parametrize("doc,field", TRANSITION_SHAPES, ids=[f for _, f in TRANSITION_SHAPES])
def test_a_transition_of_the_wrong_shape_is_a_warning_and_none(synthetic, tmp_path, capsys,
                                                               doc, field):
    from cram.apps.data import transitions

    run_dir = _copy(synthetic, tmp_path / "run")
    (run_dir / "transition.json").write_text(json.dumps(doc))
    run = load_run(run_dir)
    assert run.transition is None
    assert [w for w in run.warnings if "transition.json" in w and field in w], run.warnings
    assert run.warmup_steps == 100 and run.familiarity_rise_step is None
    assert transitions({"run": run}).empty
    code, out, err = _cli(capsys, *FIT, "--run", run_dir)
    assert code == 0, err
    assert any("warning" in ln and field in ln for ln in err.splitlines()), err


@pytest.mark.parametrize("config,transition", [
    ({"train": 3}, None), ({"train": {"warmup_steps": "x"}}, {"schedule": [1]}),
    ({"train": {"warmup_steps": [1]}}, {"schedule": {"warmup_end": "x"}}),
])
def test_run_properties_raise_one_line_on_odd_shapes_built_by_hand(config, transition):
    run = Run(Path("r"), config, {}, pd.DataFrame({"step": [0]}), transition=transition)
    with pytest.raises(RunFolderError, match="config.json: field 'train"):
        run.warmup_steps  # noqa: B018
    assert run.familiarity_rise_step is None


@pytest.mark.parametrize("transition", [[], {"familiarity_rise": [1]},
                                        {"familiarity_rise": {"step": "x"}}, "x"])
def test_run_properties_ignore_an_odd_transition_built_by_hand(transition):
    run = Run(Path("r"), {"train": {"warmup_steps": 7}}, {}, pd.DataFrame({"step": [0]}),
              transition=transition)
    assert run.warmup_steps == 7 and run.familiarity_rise_step is None


# ---------------------------------------------------------------------------- 3. negative seeds
NEGATIVE = ["train.eval_seed=-1", "data.library_seed=-1", "data.answer_permutation_seed=-1"]


@pytest.mark.parametrize("setting", NEGATIVE)
def test_eval_refuses_a_negative_seed_in_one_line(trained, capsys, setting):
    line = _one_line_error(*_cli(capsys, "eval", trained, "--set", setting)[::2])
    assert setting.split("=")[0].split(".")[1] in line, line


@pytest.mark.parametrize("args", [["--set", s] for s in NEGATIVE]
                         + [["--seed", "-1"], ["--set", "train.eval_sequences=-1"]])
def test_train_refuses_a_negative_seed_or_count_and_leaves_no_folder(tmp_path, capsys, args):
    out = tmp_path / "new"
    _one_line_error(*_cli(capsys, "train", "--model", "cram", "--preset", "cpu-tiny", "--out",
                          out, "--quiet", *args)[::2])
    assert not out.exists()


def test_a_saved_negative_seed_is_refused_on_resume(trained, tmp_path, capsys):
    run_dir = _copy(trained, tmp_path / "run")
    _edit_json(run_dir / "config.json", train__eval_seed=-1)
    line = _one_line_error(*_cli(capsys, "train", "--model", "cram", "--preset", "cpu-tiny",
                                 "--out", run_dir, "--resume", "--quiet")[::2])
    assert "config.json" in line and "eval_seed" in line


# ------------------------------------------------------------- 4. random truncations (property)
FILES = ("metrics.csv", "patterns.csv", "retention.csv", "config.json", "transition.json",
         "meta.json")


@pytest.fixture(scope="module")
def pristine(trained, tmp_path_factory):
    """A copy of the trained run without checkpoints, its files' bytes and what load_run reads."""
    folder = tmp_path_factory.mktemp("truncated") / "run"
    folder.mkdir()
    for name in FILES:
        shutil.copy(trained / name, folder / name)
    files = {name: (folder / name).read_bytes() for name in FILES}
    return folder, files, load_run(folder)


def _check_truncated(run_dir: Path, name: str, data: bytes, original: Run) -> None:
    """``load_run`` gives complete rows equal to a prefix, or one CramError line."""
    try:
        run = load_run(run_dir)
    except CramError as err:
        assert "\n" not in str(err) and name in str(err)
        assert name in ("metrics.csv", "config.json", "meta.json")  # optional files: warnings
        return
    if name in TABLES:
        table, full = getattr(run, TABLES[name]), getattr(original, TABLES[name])
        complete = data.count(b"\n") - 1  # newline-ended lines, less the header
        if complete < 0:
            assert table is None and any(name in w for w in run.warnings)
            return
        assert len(table) == complete <= len(full)
        pd.testing.assert_frame_equal(table, full.iloc[:complete], check_dtype=False,
                                      check_index_type=False)
        partial = not data.endswith(b"\n") and bool(data)
        assert partial == any("is incomplete" in w for w in run.warnings)
    elif name == "transition.json":
        assert run.transition in (None, original.transition)
        if run.transition is None:
            assert any("transition.json" in w for w in run.warnings)
    else:
        assert (run.config, run.meta) == (original.config, original.meta)


def test_random_truncations_give_a_prefix_or_one_line_error(pristine):
    folder, files, original = pristine

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(cut=truncations(files))
    def check(cut):
        name, offset = cut
        data = files[name][:offset]
        (folder / name).write_bytes(data)
        try:
            _check_truncated(folder, name, data, original)
        finally:
            (folder / name).write_bytes(files[name])

    check()
