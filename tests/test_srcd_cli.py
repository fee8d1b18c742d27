"""``cram srcd describe|sample|speed``: one JSON document with --json, clear errors otherwise."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cram.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_describe_json_is_one_document_matching_the_config(capsys):
    code, out, _ = run(capsys, "srcd", "describe", "--preset", "demo", "--samples", "16",
                         "--set", "library_share=0.5", "--set", "data.query_rate=0.1", "--json")
    assert code == 0
    stats = json.loads(out)  # raises if stdout holds anything but one JSON document
    assert out.count("\n") == 1
    assert stats["length"] == 256 and stats["samples"] == 16
    assert stats["config"]["library_share"] == 0.5
    assert stats["query_fraction"] == pytest.approx(round(0.1 * 256) / 256)
    assert stats["expected"]["query_fraction"] == stats["query_fraction"]
    assert set(stats["gap_quantiles"]) == set(stats["expected"]["gap_quantiles"])
    assert 0 <= stats["library_share"] <= 1


def test_describe_table_and_seed(capsys):
    code, out, _ = run(capsys, "srcd", "describe", "--preset", "cpu-tiny", "--samples", "8")
    assert code == 0
    assert "query_fraction" in out and "gap q0.5" in out and "expected" in out
    _, a, _ = run(capsys, "srcd", "describe", "--preset", "cpu-tiny", "--seed", "3", "--json")
    _, b, _ = run(capsys, "srcd", "describe", "--preset", "cpu-tiny", "--seed", "3", "--json")
    _, c, _ = run(capsys, "srcd", "describe", "--preset", "cpu-tiny", "--seed", "4", "--json")
    def strip(text):
        return {k: v for k, v in json.loads(text).items() if k != "generation_ms_per_sequence"}

    assert strip(a) == strip(b) and strip(a) != strip(c)


@pytest.mark.parametrize("argv,needle", [
    (["--set", "query_rate=1.5"], "query_rate"),
    (["--set", "length=-3"], "length"),
    (["--set", "no_such_field=1"], "no_such_field"),
    (["--set", "length=abc"], "length"),
    (["--set", "key_encoding=onehot"], "key_encoding"),
    (["--preset", "nope"], "nope"),
    (["--samples", "0"], "samples"),
])
def test_describe_bad_values_exit_nonzero_with_a_clear_message(capsys, argv, needle):
    code, out, err = run(capsys, "srcd", "describe", *argv, "--json")
    assert code != 0
    assert out == ""
    assert err.startswith("cram: error:") and needle in err


def test_sample_text_and_json(capsys):
    code, out, _ = run(capsys, "srcd", "sample", "--preset", "cpu-tiny", "--seed", "1",
                       "--length", "80")
    assert code == 0
    assert "store" in out and "query" in out and "lag" in out
    code, out, _ = run(capsys, "srcd", "sample", "--preset", "cpu-tiny", "--seed", "1",
                       "--length", "80", "--json")
    doc = json.loads(out)
    assert len(doc["event"]) == 80 and doc["config"]["length"] == 80
    assert sum(e == 2 for e in doc["event"]) == round(0.08 * 80)


def test_sample_bad_length(capsys):
    code, out, err = run(capsys, "srcd", "sample", "--preset", "cpu-tiny", "--length", "1")
    assert code != 0 and out == "" and "--length" in err


def test_speed_json(capsys):
    code, out, _ = run(capsys, "srcd", "speed", "--presets", "cpu-tiny", "--model", "ct-only",
                       "--repeats", "1", "--json")
    assert code == 0
    (row,) = json.loads(out)["rows"]
    assert row["length"] == 64 and row["gen_ms_per_batch"] > 0 and row["train_step_ms"] > 0


def test_cli_subprocess_json_and_exit_code():
    ok = subprocess.run([sys.executable, "-m", "cram", "srcd", "describe", "--preset", "cpu-tiny",
                         "--samples", "4", "--json"], capture_output=True, text=True, timeout=120,
                        check=False)
    assert ok.returncode == 0, ok.stderr
    json.loads(ok.stdout)
    bad = subprocess.run([sys.executable, "-m", "cram", "srcd", "describe", "--set",
                          "library_share=2"], capture_output=True, text=True, timeout=120,
                         check=False)
    assert bad.returncode == 2 and "library_share" in bad.stderr and bad.stdout == ""


def test_srcd_command_module_imports_nothing_heavy():
    code = ("import sys, cram.commands.srcd; "
            "sys.exit(1 if {'torch', 'numpy'} & set(sys.modules) else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stderr
