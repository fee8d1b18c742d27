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
