"""`cram app`: argument checks and the streamlit command line (without starting a server)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cram.cli import main


def test_dry_run_prints_loopback_command(tmp_path, capsys):
    assert main(["app", "--runs", str(tmp_path), "--port", "8765", "--dry-run"]) == 0
    doc = json.loads(capsys.readouterr().out)
    argv = doc["argv"]
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4].endswith("explorer.py")
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert argv[argv.index("--server.port") + 1] == "8765"
    assert doc["env"]["CRAM_APP_RUNS"] == str(tmp_path.resolve())
    assert "CRAM_APP_FITS" not in doc["env"]


@pytest.mark.parametrize("args, message", [
    (["--port", "0"], "--port 0"),
    (["--port", "70000"], "--port 70000"),
    (["--address", "0.0.0.0"], "not a loopback address"),
    (["--address", "localhost-ish"], "not an IP address"),
])
def test_bad_arguments_exit_nonzero(args, message, capsys):
    assert main(["app", *args, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cram: error:") and message in err


def test_runs_must_be_a_folder(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["app", "--runs", str(f), "--dry-run"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_remote_address_needs_opt_in(capsys):
    assert main(["app", "--address", "0.0.0.0", "--allow-remote", "--dry-run"]) == 0
    assert "0.0.0.0" in capsys.readouterr().out


def test_help_does_not_import_streamlit():
    code = ("import sys; from cram.cli import build_parser; build_parser(); "
            "print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
