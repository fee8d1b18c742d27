"""Every notebook in notebooks/ runs top to bottom on small fixtures (nbclient, the venv kernel).

The notebooks fall back to synthetic fixture runs (and a tiny GPT-2 run) when the folders named by
their environment variables hold no data; here those variables point at empty folders so that the
fallbacks are what runs, whatever else is on disk. ``pytest --nbmake notebooks/`` does the same
without the environment.
"""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("CRAM_NOTEBOOK_RUNS", str(empty))
    monkeypatch.delenv("CRAM_NOTEBOOK_FIT", raising=False)
    monkeypatch.delenv("CRAM_NOTEBOOK_REDUNDANCY", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "SEED" in first.source, f"{path.name}: the first code cell must set the seed"
    imports = [line.split()[1] for c in nb.cells if c.cell_type == "code"
               for line in c.source.splitlines() if line.startswith(("import ", "from "))]
    roots = {"apps", "fitting", "models", "kernels", "consolidation", "psych_data", "redundancy",
             "tests"}
    project = [m for m in imports if m.split(".")[0] in roots]
    assert not project, f"{path.name}: import the package as cram.*, not {project}"
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    if path.stem != "gpt2_redundancy":
        assert "SYNTHETIC fixture runs" in outputs  # the notebook says it uses fixtures
    else:
        assert "TINY GPT-2" in outputs
