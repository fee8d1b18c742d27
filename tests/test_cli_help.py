"""The command line says what it has: help texts and the README agree with the parser.

Every verb and sub-verb the README shows exists, every sub-verb a group has is named in the top
level's help line for that group (so ``cram --help`` lists ``data curves`` and ``bench
mechanism``), and every group and sub-verb appears in the README.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from cram.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subparsers here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _verbs() -> dict[str, set[str]]:
    """Each group and its sub-verbs (empty for a verb without sub-verbs)."""
    return {name: set(_subparsers(p)) for name, p in _subparsers(build_parser()).items()}


def _readme_commands() -> list[tuple[str, str | None]]:
    """``(verb, sub-verb or None)`` for every ``cram VERB [SUB]`` the README shows."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = []
    for verb, sub in re.findall(r"(?:^|[\s;(`])cram ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", text,
                                re.M):
        found.append((verb, sub or None))
    return found


def test_every_command_the_readme_shows_exists():
    verbs = _verbs()
    shown = _readme_commands()
    assert len(shown) > 10
    for verb, sub in shown:
        assert verb in verbs, f"README shows `cram {verb}`, which the CLI does not have"
        if verbs[verb] and sub is not None and not sub.startswith("-"):
            assert sub in verbs[verb], f"README shows `cram {verb} {sub}`: no such sub-verb"


def test_the_readme_names_every_verb_and_sub_verb():
    shown = set(_readme_commands())
    for verb, subs in _verbs().items():
        assert any(v == verb for v, _ in shown), f"README never shows `cram {verb}`"
        for sub in subs:
            assert (verb, sub) in shown, f"README never shows `cram {verb} {sub}`"


def test_top_level_help_names_every_sub_verb():
    parser = build_parser()
    text = parser.format_help()
    for verb, subs in _verbs().items():
        entry = re.search(rf"^    {re.escape(verb)}\b(.*?)(?=^    \S|^\S|\Z)", text, re.S | re.M)
        line = " ".join(entry.group(1).split())
        for sub in subs:
            assert re.search(rf"\b{re.escape(sub)}\b", line), (
                f"`cram --help` line for {verb!r} does not name its sub-verb {sub!r}: {line!r}")


def test_fit_gamma_help_says_its_default_and_its_example_writes_a_new_folder():
    parser = _subparsers(_subparsers(build_parser())["fit"])["gamma"]
    text = " ".join(parser.format_help().split())
    assert parser.get_default("method") == "mle"
    assert "mle (default" in text and "about a minute" in text
    assert "--out runs/demo/fit" not in text  # make demo writes that folder already


def test_a_user_csv_without_curve_or_source_is_named_by_its_stem(tmp_path):
    from cram.psych_data import load_curves_csv

    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    path = deep / "my_recall.csv"
    path.write_text("delay_value,delay_unit,measure,value\n1,days,recall,0.8\n2,days,recall,0.6\n"
                    "4,days,recall,0.5\n")
    relative = Path("..") / "b" / "my_recall.csv"
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path / "a" / "b")
    try:
        df = load_curves_csv(relative)
    finally:
        os.chdir(cwd)
    assert list(df["curve"].unique()) == ["my_recall"]
    assert list(df["source"].unique()) == ["my_recall.csv"]
