"""The claims registry (claims/registry.toml), its validation, and the docs/claims.md rendering."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cram.core.claims import (
    MAX_CELL,
    SHORT_FIELDS,
    STATUSES,
    Claim,
    ClaimsError,
    claims_frame,
    load_claims,
    load_registry,
    render_claims,
    render_markdown,
)

REPO = Path(__file__).resolve().parent.parent
REGISTRY = REPO / "claims" / "registry.toml"
DOC = REPO / "docs" / "claims.md"


@pytest.fixture(scope="module")
def claims() -> list[Claim]:
    return load_claims(REGISTRY)


def test_registry_loads(claims):
    assert len(claims) >= 30
    assert all(isinstance(c, Claim) for c in claims)
    with pytest.raises(AttributeError):
        claims[0].status = "reproduced"  # frozen


def test_every_status_is_one_of_four(claims):
    assert {c.status for c in claims} <= set(STATUSES)


def test_ids_unique_and_every_claim_has_a_command(claims):
    ids = [c.id for c in claims]
    assert len(ids) == len(set(ids))
    for c in claims:
        assert c.command.strip(), c.id
        assert c.summary.strip() and c.ours.strip() and c.seeds.strip(), c.id


def test_no_cell_over_400_characters(claims):
    for c in claims:
        for name in SHORT_FIELDS:
            assert len(getattr(c, name)) <= MAX_CELL, (c.id, name)
        assert len(c.ours_cell) <= MAX_CELL, c.id
    # and in the rendered page: every cell of every table
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("|"):
            for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1]):
                assert len(cell.strip()) <= MAX_CELL, cell[:80]


def test_result_files_exist_where_named(claims):
    for c in claims:
        if c.result:
            assert (REPO / c.result).is_file(), (c.id, c.result)


def test_no_internal_references_or_machine_paths():
    text = REGISTRY.read_text(encoding="utf-8")
    for pattern in (r"\bissue \d", r"\bthe lead\b", r"\bthis session\b", r"/work/", r"/tmp/",
                    r"\.\./shared"):
        assert not re.search(pattern, text, flags=re.IGNORECASE), pattern


def test_committed_doc_equals_the_rendering(tmp_path):
    assert render_claims(REGISTRY, DOC, check=True), (
        "docs/claims.md is out of date: run `cram docs render` (or "
        "cram.core.claims.render_claims) and commit it")
    out = tmp_path / "claims.md"
    assert render_claims(REGISTRY, out) is False  # written
    assert out.read_text(encoding="utf-8") == DOC.read_text(encoding="utf-8")
    assert render_claims(REGISTRY, out) is True  # unchanged, nothing written
    out.write_text("old\n", encoding="utf-8")
    assert render_claims(REGISTRY, out, check=True) is False
    assert out.read_text(encoding="utf-8") == "old\n"  # check writes nothing


def test_rendering_is_deterministic_and_links_every_claim(claims):
    text = render_markdown(load_registry(REGISTRY))
    assert text == render_markdown(load_registry(REGISTRY))
    for c in claims:
        assert f"](#{c.id})" in text and f'<a id="{c.id}"></a>' in text
    assert "## Details" in text
    for status in STATUSES:
        assert f"| {status} |" in text


def test_claims_frame(claims):
    df = claims_frame(claims)
    assert len(df) == len(claims)
    assert {"id", "section", "status", "ours", "ours_cell", "detail"} <= set(df.columns)
    assert list(df["id"]) == [c.id for c in claims]


# --------------------------------------------------------------------------------------------
# validation: one-line errors naming the file, the claim and the field

GOOD = {
    "id": "x-1", "section": "S", "claim": "c", "paper": "p", "status": "reproduced",
    "ours": "o", "interval": "", "seeds": "0", "units": "", "command": "cram x",
    "summary": "s", "detail": "",
}


def _write(tmp_path: Path, *tables: dict, extra: str = "") -> Path:
    lines = [extra]
    for t in tables:
        lines.append("[[claim]]")
        lines += [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in t.items()]
    path = tmp_path / "registry.toml"
    path.write_text("\n".join(lines).replace("'", '"') + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("change, field, message", [
    ({"status": "partly reproduced"}, "status", "unknown status"),
    ({"summary": "x" * 401}, "summary", "401 characters"),
    ({"ours": "y" * 300, "interval": "z" * 120}, "ours (with its interval)", "characters"),
    ({"seeds": 3}, "seeds", "must be a string"),
    ({"command": "  "}, "command", "is empty"),
    ({"colour": "red"}, "colour", "not a claim field"),
    ({"id": "Not A Slug"}, "id", "not a slug"),
    ({"result": "elsewhere/x.json"}, "result", "under results/"),
])
def test_validation_errors_name_the_field(tmp_path, change, field, message):
    path = _write(tmp_path, {**GOOD, **change})
    with pytest.raises(ClaimsError) as err:
        load_claims(path)
    text = str(err.value)
    assert "\n" not in text
    assert str(path) in text and f"field {field!r}" in text and message in text


def test_missing_field_and_duplicate_id(tmp_path):
    partial = {k: v for k, v in GOOD.items() if k != "paper"}
    with pytest.raises(ClaimsError, match=r"claim 'x-1': field 'paper' is missing"):
        load_claims(_write(tmp_path, partial))
    with pytest.raises(ClaimsError, match=r"claim 'x-1': field 'id': duplicate id"):
        load_claims(_write(tmp_path, GOOD, GOOD))
    no_id = {k: v for k, v in GOOD.items() if k != "id"}
    with pytest.raises(ClaimsError, match=r"claim #1: field 'id' is missing"):
        load_claims(_write(tmp_path, no_id))


def test_unreadable_registries(tmp_path):
    with pytest.raises(ClaimsError, match="no such file"):
        load_claims(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[claim]\nid = \n", encoding="utf-8")
    with pytest.raises(ClaimsError, match="not valid TOML") as err:
        load_claims(bad)
    assert "\n" not in str(err.value)
    empty = tmp_path / "empty.toml"
    empty.write_text("[doc]\ntitle = 't'\n", encoding="utf-8")
    with pytest.raises(ClaimsError, match=r"no \[\[claim\]\] tables"):
        load_claims(empty)


def test_minimal_registry_renders(tmp_path):
    path = _write(tmp_path, GOOD, {**GOOD, "id": "x-2", "status": "refuted", "section": "T",
                                   "result": "results/a.json", "stale": "re-run x"})
    out = tmp_path / "claims.md"
    assert render_claims(path, out) is False
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Claims of the paper\n")
    assert "| reproduced | 1 |" in text and "| refuted | 1 |" in text and "| all | 2 |" in text
    assert "[`results/a.json`](../results/a.json)" in text and "**Stale:** re-run x" in text
    assert text.index("## S") < text.index("## T") < text.index("## Details")
