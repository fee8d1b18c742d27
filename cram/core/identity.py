"""What makes two records the same experiment: the one identity check behind every reuse of a run.

A run folder is reused in four ways: ``cram train --resume`` continues it, ``cram eval`` and the
readers rebuild its model from a checkpoint, and ``cram bench`` takes a finished run from its
cache instead of training again. Each reuse compares the *resolved experiment* it asks for (or
that the checkpoint records) with what the folder's ``config.json`` says, through
:func:`check_same_experiment`, and refuses a difference in one line that names the first fields
that differ. What counts:

- the model name and the seed;
- every field of ``data``, ``model_config`` and ``train`` (``train.steps`` only where the caller
  says so: ``--resume --steps N`` moves it legitimately, and an older checkpoint of the same run
  records the older value);
- the task record's identity (kind, name, version, factory, content hash, arguments, sizes), not
  where its file lies, so a moved folder still matches and an edited file does not.

Torch-free: a record is the plain dict of ``config.json`` (or a checkpoint's ``experiment``).
"""

from __future__ import annotations

import json
from typing import Any

from cram.core.errors import RunFolderError

#: parts of a config.json record that define the experiment (besides ``task``); ``study`` is
#: written only when the study protocol is on, so a run without it records no such section
SECTIONS = ("data", "model_config", "train", "study")
#: task-record keys that say *where* a task was found, not *what* it is
TASK_LOCATION_KEYS = ("path", "spec")


def task_identity(task: Any) -> Any:
    """The part of a ``task`` record that identifies the task (its location dropped)."""
    if not isinstance(task, dict):
        return task
    return {k: v for k, v in task.items() if k not in TASK_LOCATION_KEYS}


def experiment_identity(record: dict, *, steps: bool = True, task: bool = True) -> dict:
    """The fields of a run record that define its experiment, as canonical JSON values.

    ``steps=False`` leaves out ``train.steps``; ``task=False`` leaves out the task record (a
    checkpoint written before checkpoints recorded it).
    """
    out: dict[str, Any] = {"model": record.get("model"), "seed": record.get("seed")}
    for section in SECTIONS:
        value = record.get(section)
        if isinstance(value, dict) and section == "train" and not steps:
            value = {k: v for k, v in value.items() if k != "steps"}
        out[section] = value
    if task:
        out["task"] = task_identity(record.get("task"))
    return json.loads(json.dumps(out, sort_keys=True, default=list))


def identity_differences(expected: Any, found: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted field, expected value, found value)`` for every leaf that differs.

    A field one record lacks matches the other's value when that value is the field's entry in
    :data:`LEGACY_VALUES` (the behaviour cram had before the field existed).
    """
    if isinstance(expected, dict) and isinstance(found, dict):
        diffs = []
        for key in sorted(set(expected) | set(found), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            diffs += identity_differences(expected.get(key, ABSENT), found.get(key, ABSENT),
                                          name)
        return diffs
    if expected == found or _legacy_match(prefix, expected, found):
        return []
    return [(prefix or "record", expected, found)]


#: config fields added after run records existed, each with the one value that reproduces what
#: cram did before the field was added (checked in tests/test_faults_trust.py). A record without
#: the field is the same experiment as one with this value, and no other: a field whose default
#: changed behaviour when it was added (the routing schedule's plateau rule, say) is not listed,
#: so an older record is refused where it would train on differently
LEGACY_VALUES: dict[str, Any] = {
    "model_config.working_layout": "serial",  # 2026-12-06: the CT-ODE before the other tiers
    "model_config.working_dropout": 0.0,  # 2026-12-06: no working-memory dropout, nothing drawn
    "model_config.working_dropout_phase": "always",  # 2026-12-07: dropout (if any) at every
    #   training step
    "train.lr_decay_to": 1.0,  # 2026-12-07: a constant rate after the warm-up
    "train.adam_beta2": 0.999,  # 2026-12-07: torch's AdamW default second-moment decay
    "train.recurrence_lr_scale": 1.0,  # 2026-12-07: one learning rate for every weight
}


#: config fields removed from cram, each with the value at which a record that still holds it
#: trained exactly as cram trains now (the field's "off" value). Readers drop such a field at that
#: value (:func:`drop_retired`); a record with another value cannot be rebuilt by this version
#: and is refused naming the field. Identity checks treat the field as absent at that value.
RETIRED_FIELDS: dict[str, Any] = {
    "model_config.semantic_input": "hidden",  # 2026-12-07 (issue 28): a stop-grad semantic
    #   input was a candidate that lowered library accuracy (docs/cram.md, first screen)
    "train.schedule_criterion": "retrieval",  # 2026-12-07 (issue 28): plain training accuracy
    #   as the learned schedule's criterion, an ablation fooled by answers learned without
    #   attention; nothing measured it since
    "train.familiarity_scope": "all",  # 2026-12-07 (issue 28): the layer-scoped familiarity
    #   target of issue 13 took the cost signal from upper layers; nothing measured it since
}


def drop_retired(section: str, fields: dict, source: str) -> dict:
    """``fields`` (one config section) without the retired fields that sit at their off value.

    Raises :class:`ConfigError` (one line naming ``source`` and the field) for a retired field at
    another value: this version cannot train or rebuild that run.
    """
    from cram.core.errors import ConfigError

    out = dict(fields)
    for dotted, off in RETIRED_FIELDS.items():
        owner, name = dotted.split(".", 1)
        if owner != section or name not in out:
            continue
        if out[name] != off:
            raise ConfigError(f"{source}: {dotted}={out[name]!r} was removed from cram (only "
                              f"{off!r} is still trained); this run cannot be rebuilt by this "
                              "version")
        del out[name]
    return out


#: what a record without the field is the same experiment as: added fields and removed ones
_ABSENT_MEANS = {**LEGACY_VALUES, **RETIRED_FIELDS}


def _legacy_match(field: str, expected: Any, found: Any) -> bool:
    if field not in _ABSENT_MEANS:
        return False
    legacy = _ABSENT_MEANS[field]
    return (found is ABSENT and expected == legacy) or (expected is ABSENT and found == legacy)


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


#: the value :func:`identity_differences` reports for a field one record does not have (e.g. a
#: field added to cram after the record was written)
ABSENT = _Missing()


def describe_differences(diffs: list[tuple[str, Any, Any]], expected_name: str,
                         found_name: str, limit: int = 3) -> str:
    """``"train.lr: 0.001 in A, 0.002 in B; seed: ..."`` for the first ``limit`` differences."""
    parts = [f"{field}: {_short(a)} in {expected_name}, {_short(b)} in {found_name}"
             for field, a, b in diffs[:limit]]
    more = f" (and {len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(parts) + more


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_same_experiment(expected: dict, found: dict, *, expected_name: str, found_name: str,
                          where: str, hint: str = "", steps: bool = True,
                          task: bool = True) -> None:
    """Raise :class:`RunFolderError` (one line) unless both records are the same experiment.

    ``where`` opens the message (usually the run folder); ``hint`` closes it (what to do).
    """
    diffs = identity_differences(experiment_identity(expected, steps=steps, task=task),
                                 experiment_identity(found, steps=steps, task=task))
    if diffs:
        detail = describe_differences(diffs, expected_name, found_name)
        raise RunFolderError(f"{where}: {found_name} is not the same experiment as "
                             f"{expected_name} ({detail}){'; ' + hint if hint else ''}")


def refuse_newer_schema(run_dir) -> None:
    """Raise :class:`RunFolderError` if ``run_dir/meta.json`` was written by a newer cram."""
    from pathlib import Path

    from cram.core.runs import META_FILE, SCHEMA_VERSION, read_json

    meta_path = Path(run_dir) / META_FILE
    if not meta_path.is_file():
        return
    schema = read_json(meta_path).get("schema_version", SCHEMA_VERSION)
    if isinstance(schema, bool) or not isinstance(schema, int):
        raise RunFolderError(f"{meta_path}: schema_version {schema!r} is not an integer")
    if schema > SCHEMA_VERSION:
        raise RunFolderError(f"{run_dir}: written with run-folder schema {schema}, newer than "
                             f"this cram's {SCHEMA_VERSION}; upgrade cram to reuse it")
