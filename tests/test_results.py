"""Results as data: the result-file schema, the renderer of docs/benchmarks.md, the migration."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from script_helpers import load_script

from cram.cli import main
from cram.core.render import render_benchmarks, render_benchmarks_file
from cram.core.results import (
    ResultFile,
    ResultFileError,
    load_results,
    read_result,
    study_id,
    title_with_settings,
    write_result,
)

REPO = Path(__file__).resolve().parents[1]


def _result(study="demo-study", date="2026-12-01T05:55:12Z", rows=None, **kw) -> ResultFile:
    fields = dict(study=study, title=f"Table of {study}", command="cram bench x --results r",
                  machine="test CPU; 2 cores", date=date, columns=["model", "acc"],
                  rows=rows if rows is not None else [{"model": "cram", "acc": 0.9964}],
                  load="1.00 / 1.00 / 1.00 (1 / 5 / 15 min)", commit="0123456789abcdef", seeds=[0])
    return ResultFile(**{**fields, **kw})


def _cram(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------- the schema
def test_result_file_round_trip(tmp_path):
    import numpy as np

    rows = [{"model": "cram", "acc": np.float64(0.5), "n": np.int64(3), "nan": float("nan"),
             "inf": -math.inf, "run": tmp_path / "run", "flag": True, "none": None}]
    original = _result(rows=rows, notes="Some *notes*.", variant="v1", extra={"k": [1, 2]},
                       tables=[{"caption": "Summary:", "columns": ["model"],
                                "rows": [{"model": "cram"}]}])
    path = write_result(original, tmp_path / "results")
    assert path == tmp_path / "results" / "demo-study" / "2026-12-01T055512Z-0123456789.json"
    back = read_result(path)
    assert back.rows == [{"model": "cram", "acc": 0.5, "n": 3, "nan": "nan", "inf": "-inf",
                          "run": str(tmp_path / "run"), "flag": True, "none": None}]
    for field in ("study", "title", "command", "machine", "date", "columns", "load", "commit",
                  "seeds", "variant", "tables", "notes", "extra"):
        assert getattr(back, field) == getattr(original, field), field
    json.loads(path.read_text())  # standard JSON: no NaN literals
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    again = write_result(original, tmp_path / "results")  # same second, same commit: kept too
    assert again.name == "2026-12-01T055512Z-0123456789_2.json"
    assert [r.path for r in load_results(tmp_path / "results")["demo-study"]] == [path, again]


def test_study_ids_are_stable_slugs():
    assert study_id("SRCD: models × seeds (preset demo)") == "srcd-models-seeds-preset-demo"
    assert study_id("γ of the consolidation curve") == "gamma-of-the-consolidation-curve"
    long = study_id("Token task x: " + " ".join(f"setting{i}=value" for i in range(20)))
    assert len(long) <= 80 and long == study_id("Token task x: " + " ".join(
        f"setting{i}=value" for i in range(20)))
    assert title_with_settings("SRCD (preset demo)", ["data.length=1024"]) == \
        "SRCD (preset demo; data.length=1024)"
    assert title_with_settings("S (preset demo; a=1)", ["a=1", "train.checkpoint_every=9"]) == \
        "S (preset demo; a=1)"


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.pop("machine"), "machine"),
    (lambda d: d.update(rows=[["cram", 1]]), "rows[0]"),
    (lambda d: d.update(rows={"a": 1}), "rows"),
    (lambda d: d.update(columns="model"), "columns"),
    (lambda d: d.update(date="yesterday"), "date"),
    (lambda d: d.update(seeds=[0, "1"]), "seeds"),
    (lambda d: d.update(study="Not An Id"), "study"),
    (lambda d: d.update(schema_version=99), "schema_version"),
    (lambda d: d.update(surprise=1), "surprise"),
    (lambda d: d.update(tables=[{"caption": "x", "columns": ["a"], "rows": [1]}]),
     "tables[0].rows[0]"),
    (lambda d: d.update(load=3), "load"),
])
def test_a_bad_file_is_one_line_naming_file_and_field(tmp_path, edit, field):
    data = _result().to_dict()
    edit(data)
    folder = tmp_path / "results" / "demo-study"
    folder.mkdir(parents=True)
    bad = folder / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ResultFileError) as err:
        load_results(tmp_path / "results")
    message = str(err.value)
    assert "\n" not in message and str(bad) in message and f"field '{field}'" in message


def test_unreadable_files_and_misplaced_studies_are_named(tmp_path):
    folder = tmp_path / "r" / "demo-study"
    folder.mkdir(parents=True)
    (folder / "a.json").write_text("{not json")
    with pytest.raises(ResultFileError, match=r"a\.json: not JSON \(line 1"):
        load_results(tmp_path / "r")
    (folder / "a.json").write_text(json.dumps(_result(study="other-study").to_dict()))
    with pytest.raises(ResultFileError, match="field 'study': 'other-study' but the file is in"):
        load_results(tmp_path / "r")


# ---------------------------------------------------------------------------------- rendering
def _three_results(root: Path) -> list[Path]:
    return [write_result(_result(date="2026-11-22T05:55:00Z", rows=[{"model": "old", "acc": 1}]),
                         root),
            write_result(_result(date="2026-12-02T04:40:00Z", rows=[{"model": "new", "acc": 2}],
                                 notes="Newest notes.", variant="re-run"), root),
            write_result(_result(study="another", date="2026-12-01T00:00:00Z"), root)]


def test_the_page_shows_the_newest_result_per_study_an_index_and_earlier_links(tmp_path):
    root, doc = tmp_path / "results", tmp_path / "docs" / "benchmarks.md"
    old, new, other = _three_results(root)
    text = render_benchmarks(load_results(root), doc)
    assert text == render_benchmarks(load_results(root), doc)  # deterministic
    index = text.split("## Index\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert index == [
        "- [Table of another](#table-of-another): 2026-12-01 00:00 UTC (1 result)",
        "- [Table of demo-study](#table-of-demo-study): 2026-12-02 04:40 UTC (2 results)"]
    section = text.split("## Table of demo-study\n", 1)[1]
    assert "| new | 2 |" in section and "| old |" not in text  # only the newest table
    assert "Newest notes." in section and "variant: re-run" in section
    assert "- date: 2026-12-02 04:40 UTC" in section and "- seeds: 0" in section
    assert "- commit: 0123456789" in section and "- load: 1.00 / 1.00" in section
    earlier = [ln for ln in section.splitlines() if ln.startswith("Earlier results:")]
    assert earlier == ["Earlier results: [2026-11-22 05:55 UTC]"
                       "(../results/demo-study/2026-11-22T055500Z-0123456789.json)."]
    assert (doc.parent / "../results/demo-study/2026-11-22T055500Z-0123456789.json").resolve() \
        == old.resolve()
    assert "Earlier results: none." in text.split("## Table of another\n", 1)[1]


def test_check_fails_on_a_hand_edited_page_and_passes_on_the_rendered_one(tmp_path, capsys):
    root, doc = tmp_path / "results", tmp_path / "benchmarks.md"
    _three_results(root)
    args = ["docs", "render", "--results", str(root), "--out", str(doc), "--no-claims"]
    code, _, err = _cram(capsys, *args, "--check")
    assert code == 1 and not doc.exists()  # --check writes nothing
    assert code == 1 and str(doc) in err and len(err.strip().splitlines()) == 1
    assert _cram(capsys, *args)[0] == 0 and doc.is_file()
    assert _cram(capsys, *args, "--check")[0] == 0
    doc.write_text(doc.read_text().replace("| new | 2 |", "| new | 3 |"))
    code, _, err = _cram(capsys, *args, "--check")
    assert code == 1 and f"{doc} differs" in err and len(err.strip().splitlines()) == 1
    assert "| new | 3 |" in doc.read_text()  # still nothing written
    assert render_benchmarks_file(root, doc) is True and render_benchmarks_file(root, doc) is False


def test_a_bench_result_ends_up_in_the_rendered_page(tmp_path, capsys):
    root, doc = tmp_path / "results", tmp_path / "docs" / "benchmarks.md"
    proc = subprocess.run([sys.executable, "-m", "cram", "srcd", "speed", "--presets", "cpu-tiny",
                           "--model", "ct-only", "--repeats", "1", "--results", str(root)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result,) = load_results(root)["srcd-generation-vs-one-training-step"]
    assert result.rows[0]["preset"] == "cpu-tiny"
    assert result.command == f"cram srcd speed --presets cpu-tiny --model ct-only --repeats 1 " \
                             f"--results {root}"
    assert result.machine and result.load and result.date.endswith("Z")
    code, _, err = _cram(capsys, "docs", "render", "--results", str(root), "--out", str(doc),
                         "--no-claims")
    assert code == 0, err
    text = doc.read_text()
    assert "## SRCD generation vs one training step" in text and "| cpu-tiny |" in text
    assert f"(../results/srcd-generation-vs-one-training-step/{result.path.name})" in text


def test_the_committed_page_is_the_rendering_of_the_committed_results():
    """The CI check: docs/benchmarks.md equals what `cram docs render` makes of results/."""
    differs = render_benchmarks_file(REPO / "results", REPO / "docs" / "benchmarks.md", check=True)
    assert not differs, "docs/benchmarks.md differs from results/: run `cram docs render`"


# ---------------------------------------------------------------------------------- migration
OLD_LOG = """\
## SRCD: models × seeds (preset demo)

- command: `cram bench srcd --preset demo --seeds 2 --set data.key_encoding=vector`
- machine: AMD EPYC; 2 cores; load 2.14 / 3.38 / 3.20 (1 / 5 / 15 min)
- date: 2026-11-22 05:55 UTC

| model | seed | acc | note |
|---|---|---|---|
| cram | 0 | 0.9964 | a \\| b |
| cram | 1 | 1.00 |  |

Mean and 95% t-interval over seeds:

| model | seeds |
|---|---|
| cram | 2 |

Notes under the table.

## Hand-written probe (CPU, 2026-12-01)

Prose first.

| a | b |
|---|---|
| 1 | 2 |

## No table here

- command: `python x.py`
- date: 2026-11-30, 22:40-22:49 UTC (check)

| broken | row |
|---|---|
| P(|Δγ| < 0.05) | 0.2 |
"""


def test_migration_keeps_every_section_and_groups_studies():
    mig = load_script("migrate_benchmarks")
    sections = mig.split_sections(OLD_LOG)
    parsed = [mig.migrate_section(n, t, body, ("f" * 40, "2026-12-03T00:00:00Z"))
              for n, t, body in sections]
    regular, probe, broken = parsed
    assert regular["command"].startswith("cram bench srcd") and regular["seeds"] == [0, 1]
    assert regular["machine"] == "AMD EPYC; 2 cores" and regular["load"].startswith("2.14 /")
    assert regular["date"] == "2026-11-22T05:55:00Z" and "date_text" not in regular["extra"]
    assert regular["rows"][0] == {"model": "cram", "seed": 0, "acc": 0.9964, "note": "a | b"}
    assert regular["rows"][1]["acc"] == "1.00"  # kept as written: 1.0 would render as "1"
    assert regular["tables"][0]["caption"] == "Mean and 95% t-interval over seeds:"
    assert regular["notes"] == "Notes under the table."
    assert probe["extra"]["table_in_notes"] and probe["notes"].startswith("Prose first.")
    assert probe["rows"] == [{"a": 1, "b": 2}] and probe["extra"]["date_from"] == "the title"
    assert broken["rows"] == [] and "P(|Δγ| < 0.05)" in broken["notes"]
    assert broken["date"] == "2026-11-30T22:40:00Z" and broken["extra"]["date_text"]
    studies = [mig.study_of(t, mig.plain_command(mig.metadata_block(b)[1].get("command", "")))
               for _, t, b in sections]
    assert studies[0] == ("SRCD: models × seeds (preset demo; data.key_encoding=vector)", None)
    assert studies[1] == ("Hand-written probe", "CPU, 2026-12-01")
    # a regular section renders back to its own table lines
    result = _result(columns=list(regular["rows"][0]), rows=regular["rows"])
    result.path = Path("results/demo-study/x.json")
    table = OLD_LOG.split("\n\n")[2].splitlines()
    assert render_benchmarks({"demo-study": [result]}, "x.md").count("\n".join(table)) == 1


def test_the_committed_results_hold_every_section_of_the_old_log():
    migrated = [r for results in load_results(REPO / "results").values() for r in results
                if r.extra.get("migrated_from") == "docs/benchmarks.md"]
    lines = [r.extra["section_line"] for r in migrated]
    assert len(migrated) == 79 and len(set(lines)) == 79
