"""scripts/bench_data_worker.py runs end to end and reports every way of drawing the data."""

from __future__ import annotations

from script_helpers import load_script


def _script():
    return load_script("bench_data_worker")


def test_the_table_has_every_way_with_the_loop_alone_as_floor(capsys, tmp_path):
    _script().main(["--presets", "demo", "--steps", "2", "--rounds", "1", "--loop-ms", "2",
                    "--results", str(tmp_path)])
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| demo")]
    assert [r[2] for r in rows] == ["none", "inline", "thread", "process"]
    assert rows[0][4].strip(" |") == "+0.0"
    assert all(float(r[3]) > 0 for r in rows)
    assert "- machine:" in out and "- command:" in out
    from cram.core.results import load_results

    (result,) = load_results(tmp_path)["where-the-data-are-drawn-thread-or-worker-process"]
    assert [r["way"] for r in result.rows] == ["none", "inline", "thread", "process"]
    assert result.rows[0]["over_loop_alone_ms"] == 0.0 and result.seeds == [0]
