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


def test_localhost_is_a_loopback_address(capsys):
    assert main(["app", "--address", "localhost", "--dry-run"]) == 0
    argv = json.loads(capsys.readouterr().out)["argv"]
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_pids(parent: int) -> list[int]:
    """PIDs whose parent is ``parent`` (the streamlit server `cram app` started)."""
    from pathlib import Path

    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signal_stops_the_server(tmp_path, signame):
    """`cram app` started, then SIGTERM / SIGINT to `cram app` alone: its server is gone too."""
    import os
    import signal
    import time
    import urllib.request
    from pathlib import Path

    pytest.importorskip("streamlit")
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cram", "app", "--runs", str(tmp_path),
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                            timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.time() < deadline, "server did not start"
            time.sleep(0.3)
        servers = _server_pids(proc.pid)
        assert servers
        os.kill(proc.pid, getattr(signal, signame))
        code = proc.wait(timeout=30)
        assert code == 128 + getattr(signal, signame)
        assert f"stopped ({signame})" in proc.stderr.read()
        for pid in servers:
            for _ in range(50):
                if not Path(f"/proc/{pid}").exists() or \
                        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"server process {pid} still running after {signame}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
